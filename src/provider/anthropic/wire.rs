//! The Messages API wire format: request and answer bodies and stream events, private to
//! this provider and converted to the neutral types here.

use serde::{Deserialize, Serialize};

use crate::provider::http;
use crate::provider::{Completion, ProviderErrorKind, ToolCall, Usage};

#[derive(Serialize)]
pub(super) struct WireRequest<'a> {
    pub(super) model: &'a str,
    pub(super) max_tokens: u32,
    #[serde(skip_serializing_if = "WireSystem::is_empty")]
    pub(super) system: WireSystem<'a>,
    pub(super) messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
    /// For a structured answer: one tool whose input schema is the answer's.
    #[serde(skip_serializing_if = "<[WireTool<'a>]>::is_empty")]
    pub(super) tools: Vec<WireTool<'a>>,
    /// For a structured answer: that tool, forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<ToolChoice<'a>>,
}

/// The system prompt: a string, or (with a shared prefix) two blocks, the first
/// marked for caching.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum WireSystem<'a> {
    Plain(&'a str),
    Blocks(Vec<SystemBlock<'a>>),
}

impl WireSystem<'_> {
    fn is_empty(&self) -> bool {
        match self {
            WireSystem::Plain(s) => s.is_empty(),
            WireSystem::Blocks(b) => b.is_empty(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct SystemBlock<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cache_control: Option<CacheControl>,
}

/// `{"type": "ephemeral"}`: cache the prompt up to and including this block.
#[derive(Serialize)]
pub(super) struct CacheControl {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
}

#[derive(Serialize)]
pub(super) struct WireTool<'a> {
    pub(super) name: &'a str,
    pub(super) description: &'a str,
    pub(super) input_schema: &'a serde_json::Value,
}

/// `{"type": "auto" | "any" | "none"}`, or `{"type": "tool", "name": …}`.
#[derive(Serialize)]
pub(super) struct ToolChoice<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<&'a str>,
}

/// The description of the answer tool of a structured request.
pub(super) const ANSWER_TOOL: &str =
    "Give your answer by calling this tool; its input is the whole answer.";

#[derive(Serialize)]
pub(super) struct WireMessage<'a> {
    pub(super) role: &'static str,
    pub(super) content: WireContent<'a>,
}

/// A message's content: its text, or blocks (text, tool calls, tool results).
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a serde_json::Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

impl<'a> WireContent<'a> {
    /// `m` as the Messages API takes it: plain text when it is only text.
    pub(super) fn of(m: &'a crate::provider::Message) -> Self {
        if m.tool_calls.is_empty() && m.tool_results.is_empty() {
            return WireContent::Text(&m.content);
        }
        let text = (!m.content.is_empty()).then_some(OutBlock::Text { text: &m.content });
        let calls = m.tool_calls.iter().map(|c| OutBlock::ToolUse {
            id: &c.id,
            name: &c.name,
            input: &c.input,
        });
        let results = m.tool_results.iter().map(|r| OutBlock::ToolResult {
            tool_use_id: &r.call_id,
            content: &r.content,
            is_error: r.is_error,
        });
        WireContent::Blocks(text.into_iter().chain(calls).chain(results).collect())
    }
}

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) model: Option<String>,
    pub(super) content: Vec<WireBlock>,
    pub(super) stop_reason: Option<String>,
    pub(super) usage: WireUsage,
}

#[derive(Deserialize)]
pub(super) struct WireBlock {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: Option<String>,
    /// A `tool_use` block's id, name and input.
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) input: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn merge_into(self, usage: &mut Usage) {
        if let Some(v) = self.input_tokens {
            usage.input_tokens = v;
        }
        if let Some(v) = self.output_tokens {
            usage.output_tokens = v;
        }
        if let Some(v) = self.cache_creation_input_tokens {
            usage.cache_creation_input_tokens = v;
        }
        if let Some(v) = self.cache_read_input_tokens {
            usage.cache_read_input_tokens = v;
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: usize,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: usize,
        delta: WireDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(default)]
        delta: WireMessageDelta,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop {},
    Ping {},
    Error {
        error: WireError,
    },
}

#[derive(Deserialize)]
pub(super) struct WireStartMessage {
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) usage: WireUsage,
}

#[derive(Deserialize)]
pub(super) struct WireDelta {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: Option<String>,
    /// An `input_json_delta`'s piece of a tool call's input.
    #[serde(default)]
    pub(super) partial_json: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireMessageDelta {
    #[serde(default)]
    pub(super) stop_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireError {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) message: String,
}

pub(crate) struct StreamState {
    pub(super) text: String,
    /// The tool calls begun, by content block: their id, name and input as streamed.
    pub(super) calls: Vec<StreamedCall>,
    pub(super) usage: Usage,
    pub(super) stop_reason: Option<String>,
    pub(super) model: String,
}

/// A `tool_use` block as it streams.
pub(crate) struct StreamedCall {
    index: usize,
    id: String,
    name: String,
    input: String,
}

impl StreamState {
    /// The state before the first event, for an answer from `model`.
    pub(crate) fn new(model: &str) -> Self {
        Self {
            text: String::new(),
            calls: Vec::new(),
            usage: Usage::default(),
            stop_reason: None,
            model: model.to_owned(),
        }
    }
}

/// Decodes a plain (not streamed) answer from `model`.
pub(crate) fn decode_answer(body: &str, model: &str) -> Result<Completion, ProviderErrorKind> {
    let wire: WireResponse = serde_json::from_str(body).map_err(|e| ProviderErrorKind::Decode {
        message: format!("{e}; body starts: {}", http::excerpt(body, 200)),
    })?;
    let text: String = wire
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect();
    let tool_calls = wire
        .content
        .into_iter()
        .filter(|b| b.kind == "tool_use")
        .map(|b| ToolCall {
            id: b.id.unwrap_or_default(),
            name: b.name.unwrap_or_default(),
            input: b.input.unwrap_or_else(|| serde_json::json!({})),
            malformed: false,
        })
        .collect();
    let mut usage = Usage::default();
    wire.usage.merge_into(&mut usage);
    Ok(Completion {
        text,
        model: wire.model.unwrap_or_else(|| model.to_owned()),
        usage,
        stop_reason: wire.stop_reason,
        attempts: 1,
        tool_calls,
        ..Completion::default()
    })
}

pub(crate) enum StreamEvent {
    Text(String),
    Done(Completion),
}

/// Applies one SSE data payload; returns what to yield, if anything.
pub(crate) fn on_event(
    state: &mut StreamState,
    data: &str,
) -> Result<Option<StreamEvent>, ProviderErrorKind> {
    let event: WireEvent = serde_json::from_str(data).map_err(|e| ProviderErrorKind::Decode {
        message: format!("bad stream event ({e}): {}", http::excerpt(data, 200)),
    })?;
    match event {
        WireEvent::MessageStart { message } => {
            if let Some(m) = message.model {
                state.model = m;
            }
            message.usage.merge_into(&mut state.usage);
            Ok(None)
        }
        WireEvent::ContentBlockStart {
            index,
            content_block,
        } if content_block.kind == "tool_use" => {
            state.calls.push(StreamedCall {
                index,
                id: content_block.id.unwrap_or_default(),
                name: content_block.name.unwrap_or_default(),
                input: String::new(),
            });
            Ok(None)
        }
        WireEvent::ContentBlockDelta { index, delta } if delta.kind == "input_json_delta" => {
            let piece = delta.partial_json.unwrap_or_default();
            // Its block's call; a delta for a block that did not start is the last one's.
            let call = match state.calls.iter().position(|c| c.index == index) {
                Some(i) => state.calls.get_mut(i),
                None => state.calls.last_mut(),
            };
            if let Some(call) = call {
                call.input.push_str(&piece);
            }
            Ok(None)
        }
        WireEvent::ContentBlockDelta { delta, .. } if delta.kind == "text_delta" => {
            let text = delta.text.unwrap_or_default();
            state.text.push_str(&text);
            Ok(Some(StreamEvent::Text(text)))
        }
        WireEvent::MessageDelta { delta, usage } => {
            usage.merge_into(&mut state.usage);
            if delta.stop_reason.is_some() {
                state.stop_reason = delta.stop_reason;
            }
            Ok(None)
        }
        WireEvent::MessageStop {} => Ok(Some(StreamEvent::Done(Completion {
            text: std::mem::take(&mut state.text),
            model: state.model.clone(),
            usage: state.usage,
            stop_reason: state.stop_reason.take(),
            attempts: 1,
            tool_calls: state
                .calls
                .drain(..)
                .map(|c| ToolCall::from_raw(c.id, c.name, &c.input))
                .collect(),
            ..Completion::default()
        }))),
        WireEvent::Error { error } => {
            let kind = if error.kind == "overloaded_error" {
                ProviderErrorKind::Overloaded {
                    status: 529,
                    retry_after_ms: None,
                    excerpt: error.message,
                }
            } else {
                ProviderErrorKind::Status {
                    status: 500,
                    retry_after_ms: None,
                    excerpt: format!("{}: {}", error.kind, error.message),
                }
            };
            Err(kind)
        }
        _ => Ok(None),
    }
}
