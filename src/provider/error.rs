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
#[error("{provider} ({model}) for `{agent}`: {kind}{}{}", attempts_note(*.attempts, .earlier), gave_up_note(.gave_up.as_ref()))]
pub struct ProviderError {
    /// Provider name.
    pub provider: String,
    /// Model asked.
    pub model: String,
    /// The agent (branch) that asked.
    pub agent: String,
    /// Attempts made, retries included.
    pub attempts: u32,
    /// What went wrong (on the last attempt).
    pub kind: ProviderErrorKind,
    /// What went wrong on the earlier attempts, oldest first (at most
    /// [`ProviderError::EARLIER_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<ProviderErrorKind>,
    /// Set when the call stopped because of the caller's deadline, not on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<GaveUp>,
}

impl ProviderError {
    /// Passes every text a server's answer put in the error (excerpts, messages,
    /// a redirect's location), this attempt's and the earlier ones', through `f`.
    pub(crate) fn redact(&mut self, f: &dyn Fn(&mut String)) {
        self.kind.redact(f);
        for kind in &mut self.earlier {
            kind.redact(f);
        }
    }
}

impl ProviderErrorKind {
    fn redact(&mut self, f: &dyn Fn(&mut String)) {
        match self {
            ProviderErrorKind::RateLimited { excerpt, .. }
            | ProviderErrorKind::Overloaded { excerpt, .. }
            | ProviderErrorKind::Status { excerpt, .. }
            | ProviderErrorKind::ContextOverflow { excerpt, .. } => f(excerpt),
            ProviderErrorKind::Transport { message, .. }
            | ProviderErrorKind::Decode { message } => f(message),
            ProviderErrorKind::NotListening { address } => f(address),
            ProviderErrorKind::Redirected {
                location: Some(location),
                ..
            } => f(location),
            ProviderErrorKind::Redirected { location: None, .. }
            | ProviderErrorKind::Timeout { .. }
            | ProviderErrorKind::TooLarge { .. }
            | ProviderErrorKind::NotAdmitted { .. } => {}
        }
    }
}

/// Why a call stopped short of what it would otherwise have done: the deadline of
/// the branch it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GaveUp {
    /// The wait before the next attempt (the server's `retry-after`, or the backoff)
    /// would pass the deadline, so the call failed at once instead of waiting it out.
    WaitPastDeadline {
        /// The wait, in milliseconds.
        wait_ms: u64,
        /// What was left before the deadline, in milliseconds.
        left_ms: u64,
    },
    /// The deadline came while an attempt (or the wait for admission) was in flight.
    DeadlineReached,
}

fn attempts_note(attempts: u32, earlier: &[ProviderErrorKind]) -> String {
    if attempts <= 1 {
        return String::new();
    }
    // "after 8 attempts; earlier: 7 × HTTP 529"
    let mut counts: Vec<(String, usize)> = Vec::new();
    for kind in earlier {
        let label = kind.short();
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    let earlier: Vec<String> = counts
        .into_iter()
        .map(|(label, n)| format!("{n} × {label}"))
        .collect();
    if earlier.is_empty() {
        format!(" (after {attempts} attempts)")
    } else {
        format!(
            " (after {attempts} attempts; earlier: {})",
            earlier.join(", ")
        )
    }
}

fn gave_up_note(gave_up: Option<&GaveUp>) -> String {
    match gave_up {
        Some(GaveUp::WaitPastDeadline { wait_ms, left_ms }) => format!(
            "; not retried: the next try was due in {wait_ms} ms, only {left_ms} ms were left before the deadline"
        ),
        Some(GaveUp::DeadlineReached) => "; stopped at the branch deadline".to_owned(),
        None => String::new(),
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
    /// Nothing listens at the address, and it is this machine's (a loopback
    /// address refused the connection): a local server is not running, or the base
    /// URL names the wrong port. Retried once, for a server that is starting.
    #[error("nothing is listening at {address} (connection refused): is the server running, and is the base URL right?")]
    NotListening {
        /// The host and port.
        address: String,
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
    /// The answer was larger than the cap on response bodies.
    #[error("the answer is larger than {limit_bytes} bytes; it was not read further")]
    TooLarge {
        /// The cap.
        limit_bytes: u64,
    },
    /// The admission gate could not admit the call.
    #[error("not admitted: {reason}")]
    NotAdmitted {
        /// Why.
        reason: NotAdmitted,
    },
    /// The prompt is longer than the model's context window (a 400 whose body says
    /// so; see [`overflow`](super::context::overflow)). Not retried as it is.
    #[error("the prompt does not fit the model's context window{}: {excerpt}", overflow_note(.overflow))]
    ContextOverflow {
        /// The numbers the server gave.
        overflow: super::context::Overflow,
        /// The start of the response body.
        excerpt: String,
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

/// Why the admission gate did not let a call out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotAdmitted {
    /// The call alone needs more tokens than the tokens-per-minute limit allows.
    LargerThanTpm {
        /// Its estimate.
        tokens: u64,
        /// The limit.
        tpm: u32,
    },
    /// A cluster's gate (held on the orchestrator node) could not be asked.
    GateUnreachable {
        /// Why.
        reason: String,
    },
    /// It could not have started before its deadline (a server's hold, or calls
    /// queued ahead of it), so it was refused at once instead of queued.
    WouldMissDeadline {
        /// The least it would have waited, in milliseconds.
        wait_ms: u64,
        /// What was left before its deadline, in milliseconds.
        left_ms: u64,
        /// Calls queued before it.
        ahead: usize,
        /// What it would have waited for.
        waiting_for: Wait,
    },
    /// The deadline came while it waited for admission.
    DeadlineWhileWaiting {
        /// How long it waited, in milliseconds.
        waited_ms: u64,
        /// What it was waiting for.
        waiting_for: Wait,
    },
}

/// What a call waits for at the admission gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// A hold the server asked for (`retry-after`, exhausted rate-limit headers).
    ServerHold,
    /// The requests-per-minute limit.
    Rpm,
    /// The tokens-per-minute limit.
    Tpm,
    /// The server's rate-limit headers: no requests left until their reset.
    ServerLimit,
    /// A free slot under the concurrency cap.
    Concurrency,
}

impl Wait {
    /// What it is, in a few words.
    fn what(self) -> &'static str {
        match self {
            Wait::ServerHold => "the server's retry-after hold",
            Wait::Rpm => "the requests-per-minute limit",
            Wait::Tpm => "the tokens-per-minute limit",
            Wait::ServerLimit => "the server's rate limit (its headers said none left)",
            Wait::Concurrency => "a free slot under the concurrency cap",
        }
    }
}

impl std::fmt::Display for NotAdmitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAdmitted::LargerThanTpm { tokens, tpm } => write!(
                f,
                "the call needs ~{tokens} tokens but the limit is {tpm} tokens per minute (raise --tpm or lower max_tokens)"
            ),
            NotAdmitted::DeadlineWhileWaiting {
                waited_ms,
                waiting_for,
            } => write!(
                f,
                "the deadline came after {waited_ms} ms waiting for {}",
                waiting_for.what()
            ),
            NotAdmitted::WouldMissDeadline {
                wait_ms,
                left_ms,
                ahead,
                waiting_for,
            } => {
                write!(
                    f,
                    "not queued: it could not start before its deadline ({left_ms} ms left, at least {wait_ms} ms of waiting for {}",
                    waiting_for.what()
                )?;
                if *waiting_for == Wait::Concurrency {
                    write!(f, ", {ahead} calls queued ahead")?;
                }
                f.write_str(")")
            }
            NotAdmitted::GateUnreachable { reason } => write!(
                f,
                "the cluster's admission gate (on the orchestrator node) could not be asked: {reason}"
            ),
        }
    }
}

fn overflow_note(o: &super::context::Overflow) -> String {
    match (o.window, o.prompt_tokens) {
        (Some(w), Some(p)) => format!(" ({p} tokens asked, {w} fit)"),
        (Some(w), None) => format!(" ({w} tokens fit)"),
        (None, Some(p)) => format!(" ({p} tokens asked)"),
        (None, None) => String::new(),
    }
}

fn retry_note(ms: Option<u64>) -> String {
    ms.map(|ms| format!(", retry after {ms} ms"))
        .unwrap_or_default()
}

impl ProviderErrorKind {
    /// A few words for summaries: `HTTP 529`, `transport error`, `timeout`, …
    pub fn short(&self) -> String {
        match self {
            ProviderErrorKind::RateLimited { .. } => "HTTP 429".to_owned(),
            ProviderErrorKind::Overloaded { status, .. }
            | ProviderErrorKind::Status { status, .. }
            | ProviderErrorKind::Redirected { status, .. } => format!("HTTP {status}"),
            ProviderErrorKind::Transport { .. } => "transport error".to_owned(),
            ProviderErrorKind::NotListening { .. } => "connection refused".to_owned(),
            ProviderErrorKind::Decode { .. } => "undecodable answer".to_owned(),
            ProviderErrorKind::Timeout { .. } => "timeout".to_owned(),
            ProviderErrorKind::TooLarge { .. } => "answer too large".to_owned(),
            ProviderErrorKind::NotAdmitted { .. } => "not admitted".to_owned(),
            ProviderErrorKind::ContextOverflow { .. } => "context overflow".to_owned(),
        }
    }

    /// Whether a retry may succeed: 429, 529, 500–504 and transport errors. Never
    /// 400/401/403/404/422, decode errors or timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderErrorKind::RateLimited { .. } | ProviderErrorKind::Overloaded { .. } => true,
            ProviderErrorKind::Status { status, .. } => (500..=504).contains(status),
            ProviderErrorKind::Transport { .. } | ProviderErrorKind::NotListening { .. } => true,
            _ => false,
        }
    }

    /// A refusal for load: 429 (rate-limited) or 529 / overloaded.
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            ProviderErrorKind::RateLimited { .. } | ProviderErrorKind::Overloaded { .. }
        )
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
    /// How many earlier attempts' errors an error keeps.
    pub const EARLIER_KEPT: usize = 20;

    /// An error of `kind` for `request`, attributed to `provider` and `model`.
    pub fn new(
        provider: &str,
        model: &str,
        request: &CompletionRequest,
        kind: ProviderErrorKind,
    ) -> Self {
        Self::for_agent(provider, model, request.agent.clone(), kind)
    }

    /// An error of `kind` for a request `agent` made, attributed to `provider` and
    /// `model`: for a caller that keeps only the agent's name of its request.
    pub(crate) fn for_agent(
        provider: &str,
        model: &str,
        agent: String,
        kind: ProviderErrorKind,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            agent,
            attempts: 1,
            kind,
            earlier: Vec::new(),
            gave_up: None,
        }
    }
}
