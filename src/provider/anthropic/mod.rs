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

use super::http::{self, ApiKey, ConfigError};

/// Where a 404 most likely comes from.
const HINT_404: &str =
    "is the base URL right? Anthropic's has no /v1 (e.g. https://api.anthropic.com)";
use super::{BoxFuture, Completion, CompletionRequest, Provider, ProviderError, Role};

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
    config: AnthropicConfig,
    url: reqwest::Url,
    key: reqwest::header::HeaderValue,
    /// Takes the key out of what the server says back.
    redactor: http::Redactor,
    client: reqwest::Client,
}

impl AnthropicProvider {
    /// A provider with `config`; checks the base URL and the key first, so a bad one
    /// is an error here rather than on every call.
    pub fn new(config: AnthropicConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            url: http::endpoint(&config.base_url, "/v1/messages")?,
            key: http::secret_header(config.api_key.expose())?,
            redactor: config.api_key.redactor(),
            client: http::client(Duration::from_secs(10))?,
            config,
        })
    }

    fn model<'a>(&'a self, request: &'a CompletionRequest) -> &'a str {
        request
            .model
            .as_deref()
            .unwrap_or(&self.config.default_model)
    }

    fn post(&self, request: &CompletionRequest, stream: bool) -> reqwest::RequestBuilder {
        let body = WireRequest {
            model: self.model(request),
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
        self.client
            .post(self.url.clone())
            .header("x-api-key", self.key.clone())
            .header("anthropic-version", AnthropicConfig::VERSION)
            .json(&body)
    }

    fn complete_once(
        &self,
        mut request: CompletionRequest,
    ) -> impl std::future::Future<Output = Result<Completion, ProviderError>> + '_ {
        let model = self.model(&request).to_owned();
        let limit = self.config.max_response_bytes;
        let call = http::call(
            self.post(&request, false),
            HINT_404,
            self.config.timeout,
            limit,
        );
        // The rest of the request is freed now, while it is fresh, not after the answer.
        let agent = std::mem::take(&mut request.agent);
        http::answer(
            "anthropic",
            model,
            agent,
            call,
            decode_answer,
            self.redactor.clone(),
        )
    }

    /// Asks for a streamed answer (SSE), sends each text delta to `deltas` as it
    /// arrives (if given), and returns the assembled completion.
    pub async fn complete_streaming(
        &self,
        request: CompletionRequest,
        deltas: Option<&UnboundedSender<String>>,
    ) -> Result<Completion, ProviderError> {
        self.stream(request, |text| {
            if let Some(d) = deltas {
                let _ = d.send(text);
            }
        })
        .await
    }

    /// Asks for a streamed answer and hands each text delta to `on_text`.
    async fn stream(
        &self,
        request: CompletionRequest,
        on_text: impl Fn(String),
    ) -> Result<Completion, ProviderError> {
        let model = self.model(&request).to_owned();
        let err = |kind| {
            self.redactor
                .error(ProviderError::new("anthropic", &model, &request, kind))
        };
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let builder = self.post(&request, true);
        let (rate_limit, response) =
            http::open_stream(builder, HINT_404, deadline, self.config.timeout)
                .await
                .map_err(err)?;
        let events = http::sse_events(response, self.config.max_response_bytes);
        futures::pin_mut!(events);
        let mut state = StreamState::new(&model);
        loop {
            let event =
                http::next_event(&mut events, deadline, self.config.timeout, "message_stop")
                    .await
                    .map_err(err)?;
            match on_event(&mut state, &event.data).map_err(err)? {
                Some(StreamEvent::Text(t)) => on_text(t),
                Some(StreamEvent::Done(c)) => return Ok(Completion { rate_limit, ..c }),
                None => {}
            }
        }
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.config.default_model)
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        // Each way boxed on its own: a streamed call's future is three times the size
        // of a plain one's, and one future holding either took the larger room (and
        // its copy) for every call.
        if request.stream {
            Box::pin(async move {
                let sink = request.deltas.clone();
                self.stream(request, |text| {
                    if let Some(sink) = &sink {
                        sink.send(crate::provider::Delta::Text(text));
                    }
                })
                .await
            })
        } else {
            Box::pin(self.complete_once(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON body `request` is sent with.
    fn body(request: &CompletionRequest) -> serde_json::Value {
        let provider = AnthropicProvider::new(AnthropicConfig::new(ApiKey::new("k"))).unwrap();
        let built = provider.post(request, false).build().unwrap();
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
