//! The completion trait every model backend implements, and its neutral types.
//!
//! A [`Provider`] turns one [`CompletionRequest`] into one [`Completion`]. It is
//! deliberately small (one method): retries, timeouts and admission control are
//! added by wrapping a provider, not by growing this trait. Wire formats stay private
//! to each provider module and are converted to these neutral types at the boundary.
//!
//! Cancellation is by dropping: the runtime aborts the task that polls
//! [`Provider::complete`], so an implementation must not rely on running to the end
//! (an HTTP provider's request is cancelled when its future is dropped).

pub mod admission;
pub mod anthropic;
pub mod hedge;
mod http;
pub mod openai;
pub mod retry;
pub mod sim;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use admission::{Admission, AdmissionConfig, AdmissionMetrics};
pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use hedge::{Hedge, HedgeConfig};
pub use http::ApiKey;
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use retry::{Retry, RetryPolicy};
pub use sim::{SimConfig, SimProfile, SimProvider, SimStats};

/// A boxed, sendable future, as returned by [`Provider::complete`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message of a conversation sent to a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

/// The speaker of a [`Message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The caller.
    User,
    /// The model.
    Assistant,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// A provider-neutral completion request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model to ask; `None` lets the provider use its default.
    pub model: Option<String>,
    /// The system prompt.
    pub system: String,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Sampling temperature, if the caller cares.
    pub temperature: Option<f32>,
    /// Sequences that end generation.
    pub stop: Vec<String>,
    /// Which agent (or `synthesiser`) asks: used for attribution in errors and logs,
    /// and by the simulated provider for per-agent latency profiles.
    pub agent: String,
    /// Ask for a streamed answer (SSE) where the provider supports it; the
    /// completion is the same, assembled from the stream.
    #[serde(default)]
    pub stream: bool,
    /// The branch this call serves, if any (wrappers use it for per-run limits).
    #[serde(default)]
    pub branch: Option<crate::task::BranchId>,
}

impl CompletionRequest {
    /// A single-turn request: `system` prompt plus one user message.
    pub fn new(
        agent: impl Into<String>,
        system: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        Self {
            model: None,
            system: system.into(),
            messages: vec![Message::user(user)],
            max_tokens: 512,
            temperature: None,
            stop: Vec::new(),
            agent: agent.into(),
            stream: false,
            branch: None,
        }
    }

    /// Estimated prompt tokens: the system prompt and every message.
    pub fn prompt_tokens(&self) -> u64 {
        let words = self.system.split_whitespace().count()
            + self
                .messages
                .iter()
                .map(|m| m.content.split_whitespace().count())
                .sum::<usize>();
        (words as u64 * 4).div_ceil(3)
    }
}

/// Roughly four tokens for every three words, as English text goes: the one estimate
/// used wherever a count is needed before (or instead of) a provider's own.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.split_whitespace().count() as u64 * 4).div_ceil(3)
}

/// Token counts reported by a provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (not counting cache reads/writes, as Anthropic reports them).
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// All tokens: input (cache included) plus output.
    pub fn total(&self) -> u64 {
        self.input_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
            + self.output_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens += rhs.input_tokens;
        self.output_tokens += rhs.output_tokens;
        self.cache_creation_input_tokens += rhs.cache_creation_input_tokens;
        self.cache_read_input_tokens += rhs.cache_read_input_tokens;
    }
}

/// What a provider's rate-limit headers said about the remaining budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitInfo {
    /// Requests left in the current window.
    pub requests_remaining: Option<u64>,
    /// Tokens left in the current window.
    pub tokens_remaining: Option<u64>,
    /// When the window resets, from now.
    pub reset_ms: Option<u64>,
}

/// A finished completion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Token usage.
    pub usage: Usage,
    /// Why generation stopped (`end_turn`, `max_tokens`, …), as the provider said it.
    pub stop_reason: Option<String>,
    /// How many HTTP attempts this took (1 without retries).
    pub attempts: u32,
    /// Time spent waiting for admission (concurrency and rate limits), all attempts.
    #[serde(default)]
    pub permit_wait_ms: u64,
    /// The provider's rate-limit headers on the answer, if it sent any.
    #[serde(default)]
    pub rate_limit: Option<RateLimitInfo>,
    /// A hedge (a duplicate request) was sent for this call.
    #[serde(default)]
    pub hedged: bool,
}

/// Why a completion failed: which provider, model and agent, after how many
/// attempts, and what went wrong ([`ProviderErrorKind`]).
///
/// Plain data (no boxed sources) so that it can cross a process boundary with the
/// branch reply it is part of. It never holds credentials or request headers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{provider} ({model}) for `{agent}`: {kind}{}", attempts_note(*.attempts))]
pub struct ProviderError {
    /// Provider name.
    pub provider: String,
    /// Model asked.
    pub model: String,
    /// The agent (branch) that asked.
    pub agent: String,
    /// Attempts made, retries included.
    pub attempts: u32,
    /// What went wrong.
    pub kind: ProviderErrorKind,
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

/// The kinds of [`ProviderError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// HTTP 429.
    #[error("rate limited (HTTP 429){}: {excerpt}", retry_note(*.retry_after_ms))]
    RateLimited {
        /// What the server asked us to wait, if it said.
        retry_after_ms: Option<u64>,
        /// The start of the response body.
        excerpt: String,
    },
    /// HTTP 529 (Anthropic's "overloaded") or 503 with an overload body.
    #[error("overloaded (HTTP {status}){}: {excerpt}", retry_note(*.retry_after_ms))]
    Overloaded {
        /// The status code.
        status: u16,
        /// What the server asked us to wait, if it said.
        retry_after_ms: Option<u64>,
        /// The start of the response body.
        excerpt: String,
    },
    /// Any other non-success status.
    #[error("HTTP {status}{}: {excerpt}", retry_note(*.retry_after_ms))]
    Status {
        /// The status code.
        status: u16,
        /// What the server asked us to wait, if it said.
        retry_after_ms: Option<u64>,
        /// The start of the response body.
        excerpt: String,
    },
    /// The connection could not be made, or broke.
    #[error("transport error: {message}")]
    Transport {
        /// What went wrong.
        message: String,
        /// True if no connection was established (safe to retry).
        connect: bool,
    },
    /// The answer could not be understood.
    #[error("undecodable answer: {message}")]
    Decode {
        /// What went wrong, with an excerpt of the body.
        message: String,
    },
    /// The per-call timeout passed.
    #[error("no answer within {after_ms} ms")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
    /// The provider is misconfigured (no key, bad URL).
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

fn retry_note(ms: Option<u64>) -> String {
    ms.map(|ms| format!(", retry after {ms} ms"))
        .unwrap_or_default()
}

impl ProviderErrorKind {
    /// Whether a retry may succeed: 429, 529, 500–504 and transport errors. Never
    /// 400/401/403/404/422, decode errors or timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderErrorKind::RateLimited { .. } | ProviderErrorKind::Overloaded { .. } => true,
            ProviderErrorKind::Status { status, .. } => (500..=504).contains(status),
            ProviderErrorKind::Transport { .. } => true,
            _ => false,
        }
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ProviderErrorKind::RateLimited { retry_after_ms, .. }
            | ProviderErrorKind::Overloaded { retry_after_ms, .. }
            | ProviderErrorKind::Status { retry_after_ms, .. } => {
                retry_after_ms.map(std::time::Duration::from_millis)
            }
            _ => None,
        }
    }
}

impl ProviderError {
    /// An error of `kind` for `request`, attributed to `provider` and `model`.
    pub fn new(
        provider: &str,
        model: &str,
        request: &CompletionRequest,
        kind: ProviderErrorKind,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            agent: request.agent.clone(),
            attempts: 1,
            kind,
        }
    }
}

/// A model backend: one request in, one completion out.
pub trait Provider: Send + Sync + 'static {
    /// Short name used in reports and errors (`sim`, `anthropic`, `openai`).
    fn name(&self) -> &str;

    /// True when the output is simulated rather than produced by a model; the CLI
    /// and reports say so plainly.
    fn is_simulated(&self) -> bool {
        false
    }

    /// Ask the model. Dropping the returned future cancels the request.
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>>;
}

/// Wraps a provider so that every request asks for a streamed answer.
#[derive(Debug)]
pub struct Streamed<P>(pub P);

impl<P: Provider> Provider for Streamed<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn is_simulated(&self) -> bool {
        self.0.is_simulated()
    }

    fn complete(
        &self,
        mut request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        request.stream = true;
        self.0.complete(request)
    }
}

macro_rules! forward_provider {
    ($($ptr:ty),*) => {$(
        /// Forwards to the provider behind the pointer, so wrappers compose with
        /// boxed and shared providers alike.
        impl<P: Provider + ?Sized> Provider for $ptr {
            fn name(&self) -> &str {
                (**self).name()
            }

            fn is_simulated(&self) -> bool {
                (**self).is_simulated()
            }

            fn complete(&self, request: CompletionRequest) -> BoxFuture<'_, Result<Completion, ProviderError>> {
                (**self).complete(request)
            }
        }
    )*};
}

forward_provider!(Box<P>, std::sync::Arc<P>);
