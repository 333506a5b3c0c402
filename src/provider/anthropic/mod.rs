//! `anthropic`: the Messages API (`POST {base}/v1/messages`), plain and streamed.
//!
//! The base URL does not include `/v1` (as in Anthropic's SDKs): the default is
//! `https://api.anthropic.com`, `ANTHROPIC_BASE_URL` overrides it. Wire types are
//! private to this module and converted to the neutral types at the boundary.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

mod wire;

use wire::*;
pub(crate) use wire::{decode_answer, on_event, StreamState};

use super::http::wire::{Endpoint, HttpProvider, Streamed, Wire};
use super::http::{self, ApiKey, ConfigError};

/// Where a 404 most likely comes from.
const HINT_404: &str =
    "is the base URL right? Anthropic's has no /v1 (e.g. https://api.anthropic.com)";
use super::{
    BoxFuture, Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Role,
};

/// Settings of an [`AnthropicProvider`].
#[derive(Clone, Debug)]
pub struct AnthropicConfig {
    /// Base URL without `/v1`.
    pub base_url: String,
    /// The key sent as `x-api-key`.
    pub api_key: ApiKey,
    /// Model used when a request names none.
    pub default_model: String,
    /// Limit on one HTTP call, response body included.
    pub timeout: Duration,
    /// The most bytes an answer may have (streamed or not); a longer one is an
    /// error, read no further.
    pub max_response_bytes: u64,
}

impl AnthropicConfig {
    /// The public API's base URL.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";
    /// The default model.
    pub const DEFAULT_MODEL: &'static str = "claude-sonnet-4-5";
    /// The API version header value.
    pub const VERSION: &'static str = "2023-06-01";

    /// Defaults with `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key,
            default_model: Self::DEFAULT_MODEL.to_owned(),
            timeout: Duration::from_secs(120),
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Key from `ANTHROPIC_API_KEY`, base URL from `ANTHROPIC_BASE_URL` if set.
    pub fn from_env() -> Option<Self> {
        let mut config = Self::new(ApiKey::from_env("ANTHROPIC_API_KEY")?);
        if let Ok(url) = std::env::var("ANTHROPIC_BASE_URL") {
            if !url.trim().is_empty() {
                config.base_url = url.trim().to_owned();
            }
        }
        Some(config)
    }
}

/// The Anthropic Messages API provider.
#[derive(Clone, Debug)]
pub struct AnthropicProvider {
    http: HttpProvider<Messages>,
}

/// The Messages wire format, with the key it sends.
#[derive(Clone, Debug)]
struct Messages {
    key: reqwest::header::HeaderValue,
}

impl AnthropicProvider {
    /// A provider with `config`; checks the base URL and the key first, so a bad one
    /// is an error here rather than on every call.
    pub fn new(config: AnthropicConfig) -> Result<Self, ConfigError> {
        let wire = Messages {
            key: http::secret_header(config.api_key.expose())?,
        };
        let at = Endpoint {
            base_url: &config.base_url,
            path: "/v1/messages",
            default_model: &config.default_model,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            redactor: config.api_key.redactor(),
        };
        Ok(Self {
            http: HttpProvider::new(wire, at)?,
        })
    }

    /// Asks for a streamed answer (SSE), sends each text delta to `deltas` as it
    /// arrives (if given), and returns the assembled completion.
    pub async fn complete_streaming(
        &self,
        request: CompletionRequest,
        deltas: Option<&UnboundedSender<String>>,
    ) -> Result<Completion, ProviderError> {
        self.http.complete_streaming(request, deltas).await
    }
}

impl Wire for Messages {
    const NAME: &'static str = "anthropic";
    const HINT_404: &'static str = HINT_404;
    const STREAM_END: &'static str = "message_stop";
    const USAGE_MAY_BE_MISSING: bool = false;
    type Stream = StreamState;

    fn request(
        &self,
        post: reqwest::RequestBuilder,
        request: &CompletionRequest,
        model: &str,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let body = WireRequest {
            model,
            max_tokens: request.max_tokens,
            system: match request.shared_prefix.as_deref() {
                None => WireSystem::Plain(&request.system),
                Some(prefix) => WireSystem::Blocks(
                    [
                        SystemBlock {
                            kind: "text",
                            text: prefix,
                            cache_control: Some(CacheControl { kind: "ephemeral" }),
                        },
                        SystemBlock {
                            kind: "text",
                            text: &request.system,
                            cache_control: None,
                        },
                    ]
                    .into_iter()
                    .filter(|b| !b.text.is_empty())
                    .collect(),
                ),
            },
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage {
                    role: match m.role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    },
                    content: WireContent::of(m),
                })
                .collect(),
            temperature: request.temperature,
            stop_sequences: &request.stop,
            stream,
            // A structured answer is a call of its own tool (forced, unless other
            // tools are offered: then the model may call those first).
            tools: request
                .schema
                .as_deref()
                .map(|s| WireTool {
                    name: &s.name,
                    description: ANSWER_TOOL,
                    input_schema: &s.schema,
                })
                .into_iter()
                .chain(request.tools.iter().map(|t| WireTool {
                    name: &t.name,
                    description: &t.description,
                    input_schema: &t.input_schema,
                }))
                .collect(),
            tool_choice: tool_choice(request),
        };
        post.header("x-api-key", self.key.clone())
            .header("anthropic-version", AnthropicConfig::VERSION)
            .json(&body)
    }

    fn decode(body: &str, model: &str) -> Result<Completion, ProviderErrorKind> {
        decode_answer(body, model)
    }

    fn stream_state(model: &str) -> StreamState {
        StreamState::new(model)
    }

    fn on_event(state: &mut StreamState, data: &str) -> Result<Streamed, ProviderErrorKind> {
        Ok(match on_event(state, data)? {
            Some(StreamEvent::Text(t)) => Streamed::More(vec![t]),
            Some(StreamEvent::Done(c)) => Streamed::Done(c),
            None => Streamed::More(Vec::new()),
        })
    }
}

/// What the request says of calling tools: a structured answer alone is a forced
/// call of its tool; offered tools follow the request's choice.
fn tool_choice(request: &CompletionRequest) -> Option<ToolChoice<'_>> {
    let choice = |kind, name| Some(ToolChoice { kind, name });
    match (&request.schema, request.tools.is_empty()) {
        (Some(s), true) => choice("tool", Some(&s.name)),
        (_, true) => None,
        (schema, false) => match &request.tool_choice {
            crate::provider::ToolChoice::Auto => choice("auto", None),
            // With an answer tool too, "must call a tool" may be that one.
            crate::provider::ToolChoice::Required => choice("any", None),
            // No other tool: only the answer's, when there is one.
            crate::provider::ToolChoice::Never if schema.is_some() => {
                choice("tool", schema.as_deref().map(|s| s.name.as_str()))
            }
            crate::provider::ToolChoice::Never => choice("none", None),
            crate::provider::ToolChoice::Tool(name) => choice("tool", Some(name)),
        },
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        Messages::NAME
    }

    fn default_model(&self) -> Option<&str> {
        Some(self.http.default_model())
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        self.http.complete(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON body `request` is sent with.
    fn body(request: &CompletionRequest) -> serde_json::Value {
        let provider = AnthropicProvider::new(AnthropicConfig::new(ApiKey::new("k"))).unwrap();
        let built = provider.http.post(request, false).build().unwrap();
        serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn a_shared_prefix_leads_the_system_prompt_marked_for_caching() {
        let mut request = CompletionRequest::new("legal", "You are the legal reviewer.", "Go.");
        let plain = body(&request);
        assert_eq!(plain["system"], "You are the legal reviewer.");
        request.shared_prefix = Some("Task:\nThe document.".into());
        let cached = body(&request);
        assert_eq!(
            cached["system"],
            serde_json::json!([
                {"type": "text", "text": "Task:\nThe document.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "You are the legal reviewer."}
            ])
        );
        assert_eq!(cached["messages"][0]["content"], "Go.");
    }

    #[test]
    fn a_schema_is_a_forced_tool() {
        let mut request = CompletionRequest::new("legal", "s", "u");
        request.schema = Some(std::sync::Arc::new(crate::provider::OutputSchema {
            name: "risk".into(),
            schema: serde_json::json!({"type": "object"}),
        }));
        let b = body(&request);
        assert_eq!(b["tools"][0]["name"], "risk");
        assert_eq!(
            b["tools"][0]["input_schema"],
            serde_json::json!({"type": "object"})
        );
        assert_eq!(
            b["tool_choice"],
            serde_json::json!({"type": "tool", "name": "risk"})
        );
    }

    /// A conversation that called a tool, as it goes back: the call's block in the
    /// model's turn, its result in the next.
    fn with_a_call() -> CompletionRequest {
        use crate::provider::{Message, ToolCall, ToolResult, ToolSpec};
        let mut request = CompletionRequest::new("legal", "s", "What time is it?");
        request.tools = std::sync::Arc::from([ToolSpec {
            name: "clock".into(),
            description: "The time now.".into(),
            input_schema: serde_json::json!({"type": "object"}),
        }]);
        request.messages.push(Message::calling(
            "Let me look.",
            vec![ToolCall::from_raw("tu_1", "clock", "{}")],
        ));
        request.messages.push(Message::results(vec![ToolResult {
            call_id: "tu_1".into(),
            content: "12:00".into(),
            is_error: false,
        }]));
        request
    }

    #[test]
    fn tools_calls_and_results_are_messages_api_blocks() {
        let b = body(&with_a_call());
        assert_eq!(
            b["tools"],
            serde_json::json!([{"name": "clock", "description": "The time now.", "input_schema": {"type": "object"}}])
        );
        assert_eq!(b["tool_choice"], serde_json::json!({"type": "auto"}));
        assert_eq!(b["messages"][0]["content"], "What time is it?");
        assert_eq!(
            b["messages"][1]["content"],
            serde_json::json!([
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "clock", "input": {}}
            ])
        );
        assert_eq!(
            b["messages"][2],
            serde_json::json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "12:00"}]})
        );
    }

    #[test]
    fn an_answer_calling_tools_is_read_plain_and_streamed() {
        let answer = r#"{"model": "m", "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7},
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "a", "name": "clock", "input": {}},
                        {"type": "tool_use", "id": "b", "name": "add", "input": {"x": 1}}]}"#;
        let c = decode_answer(answer, "m").unwrap();
        assert_eq!(c.text, "Checking.");
        let calls: Vec<(&str, &str, String)> = c
            .tool_calls
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str(), t.input.to_string()))
            .collect();
        assert_eq!(
            calls,
            [
                ("a", "clock", "{}".to_owned()),
                ("b", "add", r#"{"x":1}"#.to_owned())
            ]
        );
        // The same, streamed: two calls' inputs in pieces, interleaved by block.
        let mut state = StreamState::new("m");
        for event in [
            r#"{"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "a", "name": "clock"}}"#,
            r#"{"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "b", "name": "add"}}"#,
            r#"{"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"x\""}}"#,
            r#"{"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}"#,
        ] {
            assert!(on_event(&mut state, event).unwrap().is_none());
        }
        let Some(StreamEvent::Done(c)) =
            on_event(&mut state, r#"{"type": "message_stop"}"#).unwrap()
        else {
            panic!("the stream ends")
        };
        assert_eq!(c.tool_calls[0].input, serde_json::json!({}));
        assert_eq!(c.tool_calls[1].input, serde_json::json!({"x": 1}));
    }

    #[test]
    fn a_structured_answer_with_tools_offered_lets_the_model_choose() {
        let mut request = with_a_call();
        request.schema = Some(std::sync::Arc::new(crate::provider::OutputSchema {
            name: "risk".into(),
            schema: serde_json::json!({"type": "object"}),
        }));
        let b = body(&request);
        let names: Vec<&str> = b["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["risk", "clock"]);
        assert_eq!(b["tool_choice"], serde_json::json!({"type": "auto"}));
        request.tool_choice = crate::provider::ToolChoice::Never;
        assert_eq!(
            body(&request)["tool_choice"],
            serde_json::json!({"type": "tool", "name": "risk"})
        );
    }
}
