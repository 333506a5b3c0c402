//! `anthropic`: the Messages API (`POST {base}/v1/messages`), plain and streamed.
//!
//! The base URL does not include `/v1` (as in Anthropic's SDKs): the default is
//! `https://api.anthropic.com`, `ANTHROPIC_BASE_URL` overrides it. Wire types are
//! private to this module and converted to the neutral types at the boundary.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::http::{self, ApiKey};
use super::{
    BoxFuture, Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Role,
    Usage,
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
    url: String,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    fn merge_into(self, usage: &mut Usage) {
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
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {},
    ContentBlockDelta {
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
struct WireStartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

impl AnthropicProvider {
    /// A provider with `config`.
    pub fn new(config: AnthropicConfig) -> Self {
        let url = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
        Self {
            client: http::client(Duration::from_secs(10)),
            url,
            config,
        }
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
            system: &request.system,
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
        };
        self.client
            .post(&self.url)
            .header("x-api-key", self.config.api_key.expose())
            .header("anthropic-version", AnthropicConfig::VERSION)
            .json(&body)
    }

    async fn complete_once(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let model = self.model(&request).to_owned();
        let err = |kind| ProviderError::new("anthropic", &model, &request, kind);
        let response = http::send(
            "anthropic",
            &model,
            &request,
            self.post(&request, false),
            self.config.timeout,
        )
        .await?;
        let rate_limit = http::rate_limits(response.headers());
        let body = http::read_body(response, self.config.timeout)
            .await
            .map_err(err)?;
        let wire: WireResponse = serde_json::from_str(&body).map_err(|e| {
            err(ProviderErrorKind::Decode {
                message: format!("{e}; body starts: {}", http::excerpt(&body, 200)),
            })
        })?;
        let text: String = wire
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        let mut usage = Usage::default();
        wire.usage.merge_into(&mut usage);
        Ok(Completion {
            text,
            model: wire.model.unwrap_or(model),
            usage,
            stop_reason: wire.stop_reason,
            attempts: 1,
            rate_limit,
            ..Completion::default()
        })
    }

    /// Asks for a streamed answer (SSE), sends each text delta to `deltas` as it
    /// arrives (if given), and returns the assembled completion.
    pub async fn complete_streaming(
        &self,
        request: CompletionRequest,
        deltas: Option<&UnboundedSender<String>>,
    ) -> Result<Completion, ProviderError> {
        let model = self.model(&request).to_owned();
        let err = |kind| ProviderError::new("anthropic", &model, &request, kind);
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let response = http::send(
            "anthropic",
            &model,
            &request,
            self.post(&request, true),
            self.config.timeout,
        )
        .await?;
        let rate_limit = http::rate_limits(response.headers());
        let response = http::expect_sse(response).await.map_err(err)?;
        let events = http::sse_events(response);
        futures::pin_mut!(events);
        let mut state = StreamState {
            text: String::new(),
            usage: Usage::default(),
            stop_reason: None,
            model: model.clone(),
        };
        loop {
            let event =
                http::next_event(&mut events, deadline, self.config.timeout, "message_stop")
                    .await
                    .map_err(err)?;
            match on_event(&mut state, &event.data).map_err(err)? {
                Some(StreamEvent::Text(t)) => {
                    if let Some(d) = deltas {
                        let _ = d.send(t);
                    }
                }
                Some(StreamEvent::Done(c)) => return Ok(Completion { rate_limit, ..c }),
                None => {}
            }
        }
    }
}

struct StreamState {
    text: String,
    usage: Usage,
    stop_reason: Option<String>,
    model: String,
}

enum StreamEvent {
    Text(String),
    Done(Completion),
}

/// Applies one SSE data payload; returns what to yield, if anything.
fn on_event(state: &mut StreamState, data: &str) -> Result<Option<StreamEvent>, ProviderErrorKind> {
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
        WireEvent::ContentBlockDelta { delta } if delta.kind == "text_delta" => {
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

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            if request.stream {
                self.complete_streaming(request, None).await
            } else {
                self.complete_once(request).await
            }
        })
    }
}
