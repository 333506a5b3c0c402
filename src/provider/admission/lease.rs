//! A permit held apart from the call it admits: [`Lease`]. The gate's own calls
//! take one per attempt; a cluster's orchestrator hands them to worker nodes, whose
//! calls then count against the one gate. [`CallEnd`] is what the call's end
//! teaches the gate (a 429 cuts the window, a hold from the server, tokens used
//! beyond the estimate), in a form that can cross a process boundary.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::allowance::Heard;
use super::lane::{Lane, Slot};
use crate::provider::{Completion, ProviderError, ProviderErrorKind};

/// What an answer's rate-limit headers said of the requests left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestsLeft {
    /// Requests left.
    pub remaining: u64,
    /// Until the count resets, in milliseconds.
    pub reset_ms: u64,
    /// Requests allowed per window, if the headers named it.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// How a call made under a [`Lease`] ended, as far as the gate is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum CallEnd {
    /// The provider answered.
    Answered {
        /// Tokens used beyond the lease's estimate (charged to the TPM budget).
        extra_tokens: u64,
        /// The rate-limit headers said no request or no token is left: hold the
        /// lane this long.
        hold_ms: Option<u64>,
        /// The rate-limit headers said this many requests are left until their
        /// reset: the lane lets no more than that out before it.
        #[serde(default)]
        requests_left: Option<RequestsLeft>,
    },
    /// A 429: the window is cut, and the lane held for the server's `retry-after`.
    RateLimited {
        /// The server's `retry-after`, if it gave one.
        hold_ms: Option<u64>,
    },
    /// A 529 or "overloaded": the window is cut.
    Overloaded,
    /// Any other failure (or a cancelled call): nothing to learn.
    Failed,
}

impl CallEnd {
    /// What `result` teaches a gate that admitted it with an estimate of `estimate`
    /// tokens.
    pub fn of(result: &Result<Completion, ProviderError>, estimate: u64) -> Self {
        match result {
            Ok(completion) => CallEnd::Answered {
                extra_tokens: completion.usage.total().saturating_sub(estimate),
                hold_ms: completion
                    .rate_limit
                    .filter(|info| {
                        info.requests_remaining == Some(0) || info.tokens_remaining == Some(0)
                    })
                    .map(|info| info.reset_ms.unwrap_or(1000)),
                requests_left: completion.rate_limit.and_then(|info| {
                    Some(RequestsLeft {
                        remaining: info.requests_remaining?,
                        reset_ms: info.reset_ms?,
                        limit: info.requests_limit,
                    })
                }),
            },
            Err(error) => match &error.kind {
                ProviderErrorKind::RateLimited { .. } => CallEnd::RateLimited {
                    hold_ms: error.kind.retry_after().map(|d| d.as_millis() as u64),
                },
                ProviderErrorKind::Overloaded { .. } => CallEnd::Overloaded,
                _ => CallEnd::Failed,
            },
        }
    }
}

/// One admitted call's permit, held until [`Lease::settle`] (or dropped: the permit
/// comes back and the gate learns nothing, as for a cancelled call).
pub struct Lease {
    pub(super) slot: Slot,
    pub(super) lane: Arc<Lane>,
    pub(super) waited: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("waited", &self.waited)
            .finish()
    }
}

impl Lease {
    /// How long it waited to be admitted.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Returns the permit and tells the gate how the call ended.
    pub fn settle(self, end: CallEnd) {
        let Lease { slot, lane, .. } = self;
        let took = slot.since.elapsed();
        drop(slot);
        match end {
            CallEnd::Answered {
                extra_tokens,
                hold_ms,
                requests_left,
            } => {
                lane.on_success(took);
                if let Some(left) = requests_left {
                    lane.heard(Heard {
                        remaining: left.remaining,
                        reset: Duration::from_millis(left.reset_ms),
                        limit: left.limit,
                    });
                }
                if extra_tokens > 0 && lane.limits_tokens() {
                    // Settle the overage without holding back this answer: later
                    // calls wait for it instead.
                    let lane = lane.clone();
                    tokio::spawn(async move { lane.wait_tokens(extra_tokens).await });
                }
                if let Some(ms) = hold_ms {
                    lane.hold(Duration::from_millis(ms));
                }
            }
            CallEnd::RateLimited { hold_ms } => {
                lane.on_pushback(false);
                if let Some(ms) = hold_ms {
                    lane.hold(Duration::from_millis(ms));
                }
            }
            CallEnd::Overloaded => lane.on_pushback(true),
            CallEnd::Failed => {}
        }
    }
}
