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
                    content: &m.content,
                })
                .collect(),
            temperature: request.temperature,
            stop_sequences: &request.stop,
            stream,
            tools: request
                .schema
                .as_deref()
                .map(|s| WireTool {
                    name: &s.name,
                    description: ANSWER_TOOL,
                    input_schema: &s.schema,
                })
                .into_iter()
                .collect(),
            tool_choice: request.schema.as_deref().map(|s| ToolChoice {
                kind: "tool",
                name: &s.name,
            }),
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
}
