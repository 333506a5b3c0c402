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

pub mod sim;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

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
        }
    }
}

/// Token counts reported by a provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens += rhs.input_tokens;
        self.output_tokens += rhs.output_tokens;
    }
}

/// A finished completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

/// Why a completion failed. Every variant names the provider and model.
///
/// Plain data (no boxed sources) so that it can cross a process boundary with the
/// branch reply it is part of.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderError {
    /// The server answered with a non-success status.
    #[error("{provider} ({model}) answered HTTP {status}: {excerpt}")]
    Status {
        /// Provider name.
        provider: String,
        /// Model asked.
        model: String,
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        excerpt: String,
    },
    /// The connection failed or broke.
    #[error("{provider} ({model}) transport error: {message}")]
    Transport {
        /// Provider name.
        provider: String,
        /// Model asked.
        model: String,
        /// What went wrong.
        message: String,
    },
    /// The answer could not be understood.
    #[error("{provider} ({model}) sent an answer that could not be decoded: {message}")]
    Decode {
        /// Provider name.
        provider: String,
        /// Model asked.
        model: String,
        /// What went wrong, with an excerpt of the body.
        message: String,
    },
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
