//! The Chat Completions wire format: request and answer bodies and stream events, private to
//! this provider and converted to the neutral types here.

use serde::{Deserialize, Serialize};

use crate::provider::http;
use crate::provider::{Completion, ProviderErrorKind, Usage};

#[derive(Serialize)]
pub(super) struct WireRequest<'a> {
    pub(super) model: &'a str,
    pub(super) messages: Vec<WireMessage<'a>>,
    pub(super) max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) stop: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_format: Option<ResponseFormat<'a>>,
}

/// `{"type": "json_schema", "json_schema": {"name": …, "schema": …}}`.
#[derive(Serialize)]
pub(super) struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) json_schema: JsonSchema<'a>,
}

#[derive(Serialize)]
pub(super) struct JsonSchema<'a> {
    pub(super) name: &'a str,
    pub(super) schema: &'a serde_json::Value,
}

#[derive(Serialize)]
pub(super) struct StreamOptions {
    pub(super) include_usage: bool,
}

#[derive(Serialize)]
pub(super) struct WireMessage<'a> {
    pub(super) role: &'static str,
    pub(super) content: &'a str,
}

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) model: Option<String>,
    pub(super) choices: Vec<WireChoice>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub(super) struct WireChoice {
    #[serde(default)]
    pub(super) message: Option<WireContent>,
    #[serde(default)]
    pub(super) delta: Option<WireContent>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireContent {
    #[serde(default)]
    pub(super) content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) prompt_tokens: u64,
    #[serde(default)]
    pub(super) completion_tokens: u64,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize, Clone, Copy)]
pub(super) struct WirePromptDetails {
    #[serde(default)]
    pub(super) cached_tokens: u64,
}

impl From<WireUsage> for Usage {
    /// OpenAI counts cached prompt tokens inside `prompt_tokens`; here, as Anthropic
    /// reports them, they are apart (`cache_read_input_tokens`), so that each is
    /// priced at its rate.
    fn from(u: WireUsage) -> Self {
        let cached = u
            .prompt_tokens_details
            .map_or(0, |d| d.cached_tokens)
            .min(u.prompt_tokens);
        Usage {
            input_tokens: u.prompt_tokens - cached,
            output_tokens: u.completion_tokens,
            cache_read_input_tokens: cached,
            ..Usage::default()
        }
    }
}

fn decode_error(what: &str, e: impl std::fmt::Display, text: &str) -> ProviderErrorKind {
    ProviderErrorKind::Decode {
        message: format!("{what} ({e}): {}", http::excerpt(text, 200)),
    }
}

/// Decodes a plain (not streamed) answer from `model`.
pub(crate) fn decode_answer(body: &str, model: &str) -> Result<Completion, ProviderErrorKind> {
    let wire: WireResponse =
        serde_json::from_str(body).map_err(|e| decode_error("bad answer", e, body))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| decode_error("bad answer", "no choices", body))?;
    Ok(Completion {
        text: choice.message.and_then(|m| m.content).unwrap_or_default(),
        model: wire.model.unwrap_or_else(|| model.to_owned()),
        usage: wire.usage.map(Usage::from).unwrap_or_default(),
        stop_reason: choice.finish_reason,
        attempts: 1,
        ..Completion::default()
    })
}

/// What one stream chunk brought.
pub(crate) enum Chunk {
    /// `[DONE]`: the completion is whole.
    Done,
    /// Text deltas (possibly none), already appended to the completion.
    Deltas(Vec<String>),
}

/// Applies one SSE data payload to `completion`.
pub(crate) fn on_chunk(
    completion: &mut Completion,
    data: &str,
) -> Result<Chunk, ProviderErrorKind> {
    if data.trim() == "[DONE]" {
        return Ok(Chunk::Done);
    }
    let chunk: WireResponse =
        serde_json::from_str(data).map_err(|e| decode_error("bad stream chunk", e, data))?;
    if let Some(m) = chunk.model {
        completion.model = m;
    }
    if let Some(u) = chunk.usage {
        completion.usage = u.into();
    }
    let mut deltas = Vec::new();
    for choice in chunk.choices {
        if let Some(text) = choice.delta.and_then(|d| d.content) {
            completion.text.push_str(&text);
            deltas.push(text);
        }
        if choice.finish_reason.is_some() {
            completion.stop_reason = choice.finish_reason;
        }
    }
    Ok(Chunk::Deltas(deltas))
}
