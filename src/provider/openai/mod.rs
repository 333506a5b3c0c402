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
pub(crate) use wire::{decode_answer, on_chunk, Chunk};

use super::http::wire::{Endpoint, HttpProvider, Streamed, Wire};
use super::http::{self, ApiKey, ConfigError};

/// Where a 404 most likely comes from.
const HINT_404: &str =
    "is the base URL right? OpenAI-compatible base URLs end in /v1 (e.g. http://127.0.0.1:8080/v1)";
use super::{
    BoxFuture, Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Role,
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
    /// The completion as it is assembled.
    type Stream = Completion;

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
            messages.push(WireMessage {
                role: "system",
                content: &system,
            });
        }
        messages.extend(request.messages.iter().map(|m| WireMessage {
            role: match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &m.content,
        }));
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

    fn stream_state(model: &str) -> Completion {
        Completion {
            model: model.to_owned(),
            attempts: 1,
            ..Completion::default()
        }
    }

    fn on_event(state: &mut Completion, data: &str) -> Result<Streamed, ProviderErrorKind> {
        Ok(match on_chunk(state, data)? {
            Chunk::Done => Streamed::Done(std::mem::take(state)),
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
}
