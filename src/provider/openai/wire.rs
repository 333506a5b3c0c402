//! The Chat Completions wire format: request and answer bodies and stream events, private to
//! this provider and converted to the neutral types here.

use serde::{Deserialize, Serialize};

use crate::provider::http;
use crate::provider::{Completion, ProviderErrorKind, ToolCall, Usage};

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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<serde_json::Value>,
}

/// `{"type": "function", "function": {"name", "description", "parameters"}}`.
#[derive(Serialize)]
pub(super) struct WireTool<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: WireFunction<'a>,
}

#[derive(Serialize)]
pub(super) struct WireFunction<'a> {
    pub(super) name: &'a str,
    pub(super) description: &'a str,
    pub(super) parameters: &'a serde_json::Value,
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
    /// Absent on an assistant turn that only calls tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tool_calls: Vec<OutCall<'a>>,
    /// A `tool` message's call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_call_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    /// A message with text only.
    pub(super) fn text(role: &'static str, content: &'a str) -> Self {
        Self {
            role,
            content: Some(content),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A call the model made, as sent back: its arguments as JSON text.
#[derive(Serialize)]
pub(super) struct OutCall<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: OutFunction<'a>,
}

#[derive(Serialize)]
pub(super) struct OutFunction<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: String,
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
    /// Calls (whole in an answer; in pieces, by `index`, in a stream).
    #[serde(default)]
    pub(super) tool_calls: Vec<WireCall>,
}

#[derive(Deserialize)]
pub(super) struct WireCall {
    #[serde(default)]
    pub(super) index: usize,
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) function: Option<WireCallFunction>,
}

#[derive(Deserialize)]
pub(super) struct WireCallFunction {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) arguments: Option<String>,
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
    let (text, calls) = match choice.message {
        Some(m) => (m.content.unwrap_or_default(), m.tool_calls),
        None => (String::new(), Vec::new()),
    };
    Ok(Completion {
        text,
        model: wire.model.unwrap_or_else(|| model.to_owned()),
        usage: wire.usage.map(Usage::from).unwrap_or_default(),
        stop_reason: choice.finish_reason,
        attempts: 1,
        tool_calls: calls
            .into_iter()
            .map(|c| {
                let f = c.function.unwrap_or(WireCallFunction {
                    name: None,
                    arguments: None,
                });
                ToolCall::from_raw(
                    c.id.unwrap_or_default(),
                    f.name.unwrap_or_default(),
                    f.arguments.as_deref().unwrap_or(""),
                )
            })
            .collect(),
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

/// A streamed answer as it is assembled.
#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) completion: Completion,
    /// The calls begun, by their `index`: id, name, and arguments as streamed.
    calls: Vec<(usize, String, String, String)>,
}

impl StreamState {
    /// The state before the first chunk, for an answer from `model`.
    pub(crate) fn new(model: &str) -> Self {
        Self {
            completion: Completion {
                model: model.to_owned(),
                attempts: 1,
                ..Completion::default()
            },
            calls: Vec::new(),
        }
    }

    /// The whole completion, its calls' arguments parsed.
    pub(crate) fn finish(&mut self) -> Completion {
        let mut c = std::mem::take(&mut self.completion);
        c.tool_calls = self
            .calls
            .drain(..)
            .map(|(_, id, name, args)| ToolCall::from_raw(id, name, &args))
            .collect();
        c
    }
}

/// Applies one SSE data payload to `state`.
pub(crate) fn on_chunk(state: &mut StreamState, data: &str) -> Result<Chunk, ProviderErrorKind> {
    if data.trim() == "[DONE]" {
        return Ok(Chunk::Done);
    }
    let chunk: WireResponse =
        serde_json::from_str(data).map_err(|e| decode_error("bad stream chunk", e, data))?;
    let completion = &mut state.completion;
    if let Some(m) = chunk.model {
        completion.model = m;
    }
    if let Some(u) = chunk.usage {
        completion.usage = u.into();
    }
    let mut deltas = Vec::new();
    for choice in chunk.choices {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content {
                completion.text.push_str(&text);
                deltas.push(text);
            }
            for piece in delta.tool_calls {
                let at = match state.calls.iter().position(|c| c.0 == piece.index) {
                    Some(at) => at,
                    None => {
                        state.calls.push((
                            piece.index,
                            String::new(),
                            String::new(),
                            String::new(),
                        ));
                        state.calls.len() - 1
                    }
                };
                let call = &mut state.calls[at];
                if let Some(id) = piece.id {
                    call.1 = id;
                }
                if let Some(f) = piece.function {
                    if let Some(name) = f.name {
                        call.2.push_str(&name);
                    }
                    if let Some(args) = f.arguments {
                        call.3.push_str(&args);
                    }
                }
            }
        }
        if choice.finish_reason.is_some() {
            completion.stop_reason = choice.finish_reason;
        }
    }
    Ok(Chunk::Deltas(deltas))
}
