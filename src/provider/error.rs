//! [`ProviderError`]: which provider, model and agent, after how many attempts, and
//! what went wrong ([`ProviderErrorKind`]).

use serde::{Deserialize, Serialize};

use super::CompletionRequest;

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
    /// The server answered with a redirect, which is never followed (it would take
    /// the key and the prompt to another host).
    #[error("the server redirected (HTTP {status}) to {}; redirects are not followed, so the key never goes to another host — set the base URL to the final address", .location.as_deref().unwrap_or("an unnamed location"))]
    Redirected {
        /// The status code.
        status: u16,
        /// Where it pointed, if it said.
        location: Option<String>,
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
