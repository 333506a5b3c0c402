//! `openai`: the Chat Completions API (`POST {base}/chat/completions`), plain and
//! streamed, against OpenAI or any compatible server (vLLM, llama.cpp, Ollama).
//!
//! The base URL includes `/v1` (as in OpenAI's SDKs): the default is
//! `https://api.openai.com/v1`; `OPENAI_BASE_URL=http://127.0.0.1:8080/v1` points it at
//! a local server. Streams ask for `stream_options.include_usage` so usage is known.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

mod wire;

use wire::*;
pub(crate) use wire::{decode_answer, on_chunk, Chunk, StreamState};

use super::http::wire::{Endpoint, HttpProvider, Streamed, Wire};
use super::http::{self, ApiKey, ConfigError};

/// Where a 404 most likely comes from.
const HINT_404: &str =
    "is the base URL right? OpenAI-compatible base URLs end in /v1 (e.g. http://127.0.0.1:8080/v1)";
use super::{
    BoxFuture, Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Role,
    ToolChoice,
};

/// Settings of an [`OpenAiProvider`].
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Base URL including `/v1`.
    pub base_url: String,
    /// The bearer token; `None` for local servers that need none.
    pub api_key: Option<ApiKey>,
    /// Model used when a request names none.
    pub default_model: String,
    /// Limit on one HTTP call, response body included.
    pub timeout: Duration,
    /// The most bytes an answer may have (streamed or not); a longer one is an
    /// error, read no further.
    pub max_response_bytes: u64,
}

impl OpenAiConfig {
    /// The public API's base URL.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";
    /// The default model.
    pub const DEFAULT_MODEL: &'static str = "gpt-4o-mini";

    /// Defaults with `api_key`.
    pub fn new(api_key: Option<ApiKey>) -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key,
            default_model: Self::DEFAULT_MODEL.to_owned(),
            timeout: Duration::from_secs(120),
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Key from `OPENAI_API_KEY` (if set), base URL from `OPENAI_BASE_URL` (if set).
    pub fn from_env() -> Self {
        let mut config = Self::new(ApiKey::from_env("OPENAI_API_KEY"));
        if let Ok(url) = std::env::var("OPENAI_BASE_URL") {
            if !url.trim().is_empty() {
                config.base_url = url.trim().to_owned();
            }
        }
        config
    }
}

/// The OpenAI Chat Completions provider.
#[derive(Clone, Debug)]
pub struct OpenAiProvider {
    http: HttpProvider<Chat>,
}

/// The Chat Completions wire format, with the bearer token it sends, if any.
#[derive(Clone, Debug)]
struct Chat {
    auth: Option<reqwest::header::HeaderValue>,
}

impl OpenAiProvider {
    /// A provider with `config`; checks the base URL and the key first, so a bad one
    /// is an error here rather than on every call.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let auth = match &config.api_key {
            Some(key) => Some(http::secret_header(&format!("Bearer {}", key.expose()))?),
            None => None,
        };
        let at = Endpoint {
            base_url: &config.base_url,
            path: "/chat/completions",
            default_model: &config.default_model,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            redactor: config
                .api_key
                .as_ref()
                .map(ApiKey::redactor)
                .unwrap_or_default(),
        };
        Ok(Self {
            http: HttpProvider::new(Chat { auth }, at)?,
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

impl Wire for Chat {
    const NAME: &'static str = "openai";
    const HINT_404: &'static str = HINT_404;
    const STREAM_END: &'static str = "[DONE]";
    const USAGE_MAY_BE_MISSING: bool = true;
    type Stream = StreamState;

    fn request(
        &self,
        post: reqwest::RequestBuilder,
        request: &CompletionRequest,
        model: &str,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        // The shared prefix leads the system message: the same bytes first in every
        // branch's prompt, which OpenAI and llama.cpp cache.
        let system = request.system_with_prefix();
        if !system.is_empty() {
            messages.push(WireMessage::text("system", &system));
        }
        for m in request.messages.iter() {
            // Tool results are one `tool` message each.
            messages.extend(m.tool_results.iter().map(|r| WireMessage {
                role: "tool",
                content: Some(&r.content),
                tool_calls: Vec::new(),
                tool_call_id: Some(&r.call_id),
            }));
            if !m.tool_results.is_empty() && m.content.is_empty() {
                continue;
            }
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(WireMessage {
                role,
                content: (!m.content.is_empty() || m.tool_calls.is_empty()).then_some(&*m.content),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| OutCall {
                        id: &c.id,
                        kind: "function",
                        function: OutFunction {
                            name: &c.name,
                            arguments: match &c.input {
                                serde_json::Value::String(raw) if c.malformed => raw.clone(),
                                input => input.to_string(),
                            },
                        },
                    })
                    .collect(),
                tool_call_id: None,
            });
        }
        let body = WireRequest {
            model,
            messages,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stop: &request.stop,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            response_format: request.schema.as_deref().map(|s| ResponseFormat {
                kind: "json_schema",
                json_schema: JsonSchema {
                    name: &s.name,
                    schema: &s.schema,
                },
            }),
            tools: request
                .tools
                .iter()
                .map(|t| WireTool {
                    kind: "function",
                    function: WireFunction {
                        name: &t.name,
                        description: &t.description,
                        parameters: &t.input_schema,
                    },
                })
                .collect(),
            tool_choice: (!request.tools.is_empty()).then(|| match &request.tool_choice {
                ToolChoice::Auto => serde_json::json!("auto"),
                ToolChoice::Required => serde_json::json!("required"),
                ToolChoice::Never => serde_json::json!("none"),
                ToolChoice::Tool(name) => {
                    serde_json::json!({"type": "function", "function": {"name": name}})
                }
            }),
        };
        let post = post.json(&body);
        match &self.auth {
            Some(auth) => post.header(reqwest::header::AUTHORIZATION, auth.clone()),
            None => post,
        }
    }

    fn decode(body: &str, model: &str) -> Result<Completion, ProviderErrorKind> {
        decode_answer(body, model)
    }

    fn stream_state(model: &str) -> StreamState {
        StreamState::new(model)
    }

    fn on_event(state: &mut StreamState, data: &str) -> Result<Streamed, ProviderErrorKind> {
        Ok(match on_chunk(state, data)? {
            Chunk::Done => Streamed::Done(state.finish()),
            Chunk::Deltas(texts) => Streamed::More(texts),
        })
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        Chat::NAME
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
        let provider = OpenAiProvider::new(OpenAiConfig::new(None)).unwrap();
        let built = provider.http.post(request, false).build().unwrap();
        serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn a_shared_prefix_starts_the_system_message_byte_for_byte() {
        let mut request = CompletionRequest::new("legal", "You are the legal reviewer.", "Go.");
        request.shared_prefix = Some("Task:\nThe document.".into());
        let b = body(&request);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(
            b["messages"][0]["content"],
            "Task:\nThe document.\n\nYou are the legal reviewer."
        );
        assert_eq!(b["messages"][1]["content"], "Go.");
    }

    #[test]
    fn a_schema_is_a_json_schema_response_format() {
        let mut request = CompletionRequest::new("legal", "s", "u");
        request.schema = Some(std::sync::Arc::new(crate::provider::OutputSchema {
            name: "risk".into(),
            schema: serde_json::json!({"type": "object"}),
        }));
        let b = body(&request);
        assert_eq!(
            b["response_format"],
            serde_json::json!({"type": "json_schema", "json_schema": {"name": "risk", "schema": {"type": "object"}}})
        );
    }

    #[test]
    fn cached_prompt_tokens_are_counted_apart() {
        let answer = r#"{"model": "m", "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 673, "completion_tokens": 8, "prompt_tokens_details": {"cached_tokens": 644}}}"#;
        let c = decode_answer(answer, "m").unwrap();
        assert_eq!(c.usage.input_tokens, 29);
        assert_eq!(c.usage.cache_read_input_tokens, 644);
        assert_eq!(c.usage.output_tokens, 8);
        // A server counting more cached tokens than prompt tokens is not believed.
        let odd = answer.replace("644", "9999");
        let c = decode_answer(&odd, "m").unwrap();
        assert_eq!(
            (c.usage.input_tokens, c.usage.cache_read_input_tokens),
            (0, 673)
        );
    }

    #[test]
    fn tools_calls_and_results_are_chat_completions_messages() {
        use crate::provider::{Message, ToolCall, ToolResult, ToolSpec};
        let mut request = CompletionRequest::new("legal", "s", "What time is it?");
        request.tools = std::sync::Arc::from([ToolSpec {
            name: "clock".into(),
            description: "The time now.".into(),
            input_schema: serde_json::json!({"type": "object"}),
        }]);
        request.tool_choice = ToolChoice::Required;
        request.messages.push(Message::calling(
            "",
            vec![ToolCall::from_raw("call_1", "clock", r#"{"tz": "UTC"}"#)],
        ));
        request.messages.push(Message::results(vec![ToolResult {
            call_id: "call_1".into(),
            content: "12:00".into(),
            is_error: false,
        }]));
        let b = body(&request);
        assert_eq!(
            b["tools"],
            serde_json::json!([{"type": "function", "function": {"name": "clock", "description": "The time now.", "parameters": {"type": "object"}}}])
        );
        assert_eq!(b["tool_choice"], "required");
        assert_eq!(
            b["messages"][2],
            serde_json::json!({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{\"tz\":\"UTC\"}"}}]})
        );
        assert_eq!(
            b["messages"][3],
            serde_json::json!({"role": "tool", "content": "12:00", "tool_call_id": "call_1"})
        );
        assert_eq!(b["messages"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn an_answer_calling_tools_is_read_plain_and_streamed() {
        let answer = r#"{"model": "m", "choices": [{"finish_reason": "tool_calls", "message": {"content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"x\": 1}"}},
                           {"id": "c2", "type": "function", "function": {"name": "add", "arguments": "{x"}}]}}]}"#;
        let c = decode_answer(answer, "m").unwrap();
        assert_eq!(c.text, "");
        assert_eq!(c.tool_calls[0].input, serde_json::json!({"x": 1}));
        assert!(
            c.tool_calls[1].malformed,
            "arguments that are not JSON are kept, marked"
        );
        // Streamed: the arguments in pieces, two calls by index.
        let mut state = StreamState::new("m");
        for chunk in [
            r#"{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "add", "arguments": ""}}]}}]}"#,
            r#"{"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "clock", "arguments": "{}"}}]}}]}"#,
            r#"{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\""}}]}}]}"#,
            r#"{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 2}"}}]}, "finish_reason": "tool_calls"}]}"#,
        ] {
            assert!(matches!(
                on_chunk(&mut state, chunk).unwrap(),
                Chunk::Deltas(_)
            ));
        }
        assert!(matches!(
            on_chunk(&mut state, "[DONE]").unwrap(),
            Chunk::Done
        ));
        let c = state.finish();
        assert_eq!(c.stop_reason.as_deref(), Some("tool_calls"));
        let calls: Vec<(&str, &str, &serde_json::Value)> = c
            .tool_calls
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str(), &t.input))
            .collect();
        assert_eq!(
            calls,
            [
                ("c1", "add", &serde_json::json!({"x": 2})),
                ("c2", "clock", &serde_json::json!({}))
            ]
        );
    }
}
