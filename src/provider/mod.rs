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

//!
//! # Layout
//! - `request`, `error`: the neutral types ([`CompletionRequest`], [`Completion`],
//!   [`Usage`], [`ProviderError`]);
//! - [`anthropic`], [`openai`]: the wire providers, one folder each, wire types
//!   private; `http`: what they share (the redacted [`ApiKey`], status mapping,
//!   `retry-after` parsing, the SSE reader);
//! - the wrappers: [`Retry`] (with a [`RetryPolicy`]), [`Hedge`], [`Admission`],
//!   [`Timeout`], [`Streamed`]; [`Stack`] composes them in the one right order;
//! - [`sim`]: the embedded simulated model; [`pricing`]: prices per model;
//!   [`context`]: context windows (known models, and what overflow errors say);
//! - `Scripted` (feature `testing`): a scripted test model that records requests.

pub mod admission;
pub mod anthropic;
pub mod context;
mod error;
mod estimate;
pub mod hedge;
pub(crate) mod http;
pub mod openai;
pub mod pricing;
mod request;
pub mod retry;
#[cfg(any(test, feature = "testing"))]
mod scripted;
pub mod sim;
mod stack;
mod streamed;
mod timeout;
mod tools;

use std::future::Future;
use std::pin::Pin;

pub use admission::{
    not_admitted, Admission, AdmissionConfig, AdmissionMetrics, CallEnd, Learned, Lease,
    RequestsLeft, DEFAULT_MAX_CONCURRENCY, LEARNED_KEEPS_FOR,
};
pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use error::{GaveUp, NotAdmitted, ProviderError, ProviderErrorKind, Wait};
pub(crate) use estimate::estimate_shared_tokens;
pub use estimate::estimate_tokens;
pub use hedge::{Hedge, HedgeConfig};
pub use http::{endpoint_id, redact_url, ApiKey, ConfigError, Redactor};
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use pricing::{Price, PriceError, PriceTable};
pub use request::{
    Completion, CompletionRequest, Delta, DeltaSink, Message, OutputSchema, RateLimitInfo, Role,
    Usage,
};
pub use retry::{ExponentialBackoff, Retry, RetryPolicy};
#[cfg(any(test, feature = "testing"))]
pub use scripted::Scripted;
pub use sim::{SimConfig, SimProfile, SimProvider, SimStats};
pub use stack::{Gate, Stack};
pub use streamed::Streamed;
pub use timeout::Timeout;
pub use tools::{ApprovalState, ToolCall, ToolChoice, ToolResult, ToolSpec};

/// A boxed, sendable future, as returned by [`Provider::complete`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A model backend: one request in, one completion out.
pub trait Provider: Send + Sync + 'static {
    /// Short name used in reports and errors (`sim`, `anthropic`, `openai`).
    fn name(&self) -> &str;

    /// True when the output is simulated rather than produced by a model; the CLI
    /// and reports say so plainly.
    fn is_simulated(&self) -> bool {
        false
    }

    /// The model a request that names none is sent to, if the provider knows it
    /// (budgets price such requests with it).
    fn default_model(&self) -> Option<&str> {
        None
    }

    /// Ask the model. Dropping the returned future cancels the request.
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>>;
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

            fn default_model(&self) -> Option<&str> {
                (**self).default_model()
            }

            fn complete(&self, request: CompletionRequest) -> BoxFuture<'_, Result<Completion, ProviderError>> {
                (**self).complete(request)
            }
        }
    )*};
}

forward_provider!(Box<P>, std::sync::Arc<P>);
