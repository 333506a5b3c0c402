//! How a branch ends ([`BranchOutcome`]), how a merge ends ([`Synthesis`],
//! [`SynthesisError`]) and why a run fails ([`RunFailure`]).
//!
//! Every branch of every run ends in exactly one [`BranchOutcome`]; the scheduler
//! never drops one, whatever the policy decides.

mod failure;

pub use failure::{FinalStep, RunFailure};

use serde::{Deserialize, Serialize};

use super::code::CodeError;
use super::synthesis::fit::MergeTree;
use crate::agent::{AgentError, AgentOutput};
use crate::provider::{ProviderError, Usage};
use crate::supervision::DownReason;

/// Serialises a `Duration` as fractional seconds (the unit of reports and events).
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// [`secs`] for an optional `Duration`.
pub(crate) mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The one terminal state of a branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BranchOutcome {
    /// The specialist answered.
    Ok(AgentOutput),
    /// The specialist could not answer.
    Failed {
        /// Why.
        error: BranchError,
    },
    /// A deadline passed first; the specialist was told to cancel.
    TimedOut {
        /// Which deadline.
        deadline: DeadlineKind,
        /// What the model call was doing when the deadline came (its attempts and
        /// their errors), when the agent passed the deadline on to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<Box<ProviderError>>,
        /// The text its model had streamed when the deadline came (its last attempt's),
        /// kept rather than thrown away: it was paid for. Not an answer: the branch
        /// did not succeed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partial: Option<String>,
    },
    /// The run no longer needed this branch; it was cancelled (or never dispatched).
    Cancelled {
        /// Why.
        reason: CancelReason,
    },
    /// Never dispatched: the run's budget could not cover it.
    Refused {
        /// Why.
        reason: RefusalReason,
    },
}

impl BranchOutcome {
    /// True for [`BranchOutcome::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, BranchOutcome::Ok(_))
    }

    /// Short lowercase label: `ok`, `failed`, `timed_out`, `cancelled`.
    pub fn label(&self) -> &'static str {
        match self {
            BranchOutcome::Ok(_) => "ok",
            BranchOutcome::Failed { .. } => "failed",
            BranchOutcome::TimedOut { .. } => "timed_out",
            BranchOutcome::Cancelled { .. } => "cancelled",
            BranchOutcome::Refused { .. } => "refused",
        }
    }

    /// The output, if the branch succeeded.
    pub fn output(&self) -> Option<&AgentOutput> {
        match self {
            BranchOutcome::Ok(out) => Some(out),
            _ => None,
        }
    }

    /// Whether a step's retry may try it again: it failed or timed out, and not
    /// because a call it would repeat was refused (after a crash, a retry ran again
    /// the very call the branch had refused to repeat, and those before it).
    pub(crate) fn retriable(&self) -> bool {
        match self {
            BranchOutcome::Failed {
                error: BranchError::Agent(e),
            } => {
                let cause = match e {
                    AgentError::Spent { cause, .. } => cause.as_ref(),
                    other => other,
                };
                !matches!(cause, AgentError::NotRepeated { .. })
            }
            BranchOutcome::Failed { .. } | BranchOutcome::TimedOut { .. } => true,
            _ => false,
        }
    }

    /// The model its tokens are priced by: the answer's, or the one a failed or
    /// timed-out branch's calls went to when its error says (a failed branch on
    /// a priced model was reported with no cost, as "unpriced").
    pub fn model(&self) -> Option<&str> {
        match self {
            BranchOutcome::Ok(o) => o.model.as_deref(),
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Spent { model, .. }),
            } => model.as_deref(),
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Provider(e)),
            }
            | BranchOutcome::TimedOut {
                last_error: Some(e),
                ..
            } => Some(e.model.as_str()).filter(|m| !m.is_empty()),
            _ => None,
        }
    }

    /// Provider attempts and tokens it spent (what a failed call's error counted).
    pub(crate) fn spent(&self) -> (u32, Usage) {
        match self {
            BranchOutcome::Ok(o) => (o.attempts, o.usage),
            BranchOutcome::Failed {
                error:
                    BranchError::Agent(AgentError::Spent {
                        usage, attempts, ..
                    }),
            } => (*attempts, *usage),
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Provider(e)),
            }
            | BranchOutcome::TimedOut {
                last_error: Some(e),
                ..
            } => (e.attempts, Usage::default()),
            _ => (0, Usage::default()),
        }
    }

    /// Calls made for it whose answer was not used, and how many of its attempts
    /// were refused for load (429 / 529).
    pub(crate) fn waste(&self) -> (u32, u32) {
        let failed = |e: &ProviderError| {
            let refused = std::iter::once(&e.kind)
                .chain(&e.earlier)
                .filter(|k| k.is_rate_limit())
                .count() as u32;
            (e.attempts, refused)
        };
        match self {
            BranchOutcome::Ok(o) => (o.wasted_calls, o.rate_limited),
            // Its answered calls led to no answer: every one was wasted (40 calls of
            // 10 failed attempts were counted as none).
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Spent { attempts, .. }),
            } => (*attempts, 0),
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Provider(e)),
            }
            | BranchOutcome::TimedOut {
                last_error: Some(e),
                ..
            } => failed(e),
            _ => (0, 0),
        }
    }

    /// A one-line description of why the branch did not succeed (`None` if it did).
    pub fn problem(&self) -> Option<String> {
        match self {
            BranchOutcome::Ok(_) => None,
            BranchOutcome::Failed { error } => Some(error.to_string()),
            BranchOutcome::TimedOut {
                deadline,
                last_error,
                partial,
            } => {
                let mut why = format!("timed out ({deadline})");
                if let Some(e) = last_error {
                    why.push_str(&format!(": {e}"));
                }
                if let Some(text) = partial {
                    why.push_str(&format!(
                        " (its partial answer, {} characters, is kept)",
                        text.chars().count()
                    ));
                }
                Some(why)
            }
            BranchOutcome::Cancelled { reason } => Some(format!("cancelled: {reason}")),
            BranchOutcome::Refused { reason } => Some(format!("refused: {reason}")),
        }
    }
}

/// Why a branch failed. In JSON the variant is `failure` (not `kind`, which the
/// errors it wraps use themselves).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "failure", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BranchError {
    /// The specialist answered with an error (a provider error, a rejection, a panic).
    #[error("{0}")]
    Agent(AgentError),
    /// The specialist died while holding the task (its reply port closed unanswered).
    #[error("specialist `{agent}` died before answering")]
    SpecialistDied {
        /// The specialist.
        agent: String,
    },
    /// The node running it (a cluster's worker) was lost: its connection dropped or
    /// it stopped answering the heartbeat.
    #[error("specialist `{agent}` was running on node `{node}`, which went down: {reason}")]
    NodeDown {
        /// The specialist.
        agent: String,
        /// The node.
        node: String,
        /// How its loss was noticed.
        reason: String,
    },
    /// Too few items of a map step succeeded.
    #[error("only {ok} of {of} items succeeded ({quorum} needed)")]
    Items {
        /// Items that succeeded.
        ok: usize,
        /// Items in all.
        of: usize,
        /// Items needed.
        quorum: usize,
    },
    /// A code step failed.
    #[error("{0}")]
    Code(Box<CodeError>),
    /// A map step's list has more items than the run allows one map.
    #[error(
        "the output of `{from}` lists {count} items, more than the {limit} one map may fan out to"
    )]
    TooManyItems {
        /// The upstream step.
        from: String,
        /// Its items.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A map step found no list to map over in its upstream step's output.
    #[error("no items to map over: the output of `{from}` {problem}")]
    NoItems {
        /// The upstream step.
        from: String,
        /// What is wrong with its output.
        problem: String,
    },
    /// The step's input template rendered to more than the limit on one branch's
    /// input, so it was not called.
    #[error("the input of step `{step}` came to {bytes} bytes, more than the limit of {limit} on one branch's input")]
    InputTooLarge {
        /// The step.
        step: String,
        /// What it came to when refused.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The workflow it ran whole did not succeed (its own report says how).
    #[error("workflow `{workflow}` failed: {reason}")]
    Workflow {
        /// The workflow.
        workflow: String,
        /// Why its run failed, in one line.
        reason: String,
    },
    /// The specialist is not routable.
    #[error("specialist `{agent}` is unavailable: {reason}")]
    SpecialistUnavailable {
        /// The specialist.
        agent: String,
        /// Why.
        reason: Unavailable,
    },
}

/// Why a specialist could not take a branch. In JSON the variant is `unavailable`
/// (the `DownReason` it may wrap uses `kind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "unavailable", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unavailable {
    /// No specialist has this name.
    UnknownName,
    /// Its supervisor took it down (circuit open, not restarted, restart failed).
    Down(DownReason),
    /// The supervisor is gone (the runtime is shutting down).
    SupervisorGone,
    /// The task running the branch itself panicked.
    BranchTaskPanicked,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::UnknownName => f.write_str("no specialist has this name"),
            Unavailable::Down(reason) => write!(f, "{reason}"),
            Unavailable::SupervisorGone => f.write_str("the supervisor is gone"),
            Unavailable::BranchTaskPanicked => f.write_str("branch task panicked"),
        }
    }
}

/// Why a branch was refused before dispatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalReason {
    /// The run's token cap could not cover the branch's estimate.
    TokenBudget {
        /// The cap.
        cap: u64,
        /// Tokens spent plus reserved by branches in flight.
        committed: u64,
        /// This branch's estimate.
        needed: u64,
    },
    /// The run's cost cap could not cover the branch's estimate.
    CostBudget {
        /// The cap, USD.
        cap_usd: f64,
        /// Spent plus reserved, USD.
        committed_usd: f64,
        /// This branch's estimate, USD.
        #[serde(default)]
        needed_usd: f64,
    },
    /// The run has a cost cap and the branch's model has no known price, so the cap
    /// could not be kept.
    Unpriced {
        /// The model.
        model: String,
    },
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::TokenBudget {
                cap,
                committed,
                needed,
            } => write!(
                f,
                "token budget: {committed} of {cap} tokens committed, this branch needs ~{needed}"
            ),
            RefusalReason::CostBudget {
                cap_usd,
                committed_usd,
                needed_usd,
            } => write!(
                f,
                "cost budget: ${committed_usd:.4} of ${cap_usd:.4} committed, this branch needs ~${needed_usd:.4}"
            ),
            RefusalReason::Unpriced { model } => write!(
                f,
                "no price for model `{model}`, so the cost cap cannot be kept (add its price with a price table)"
            ),
        }
    }
}

/// Which deadline ended a branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    /// The per-branch timeout.
    Branch,
    /// The run's overall deadline.
    Run,
}

impl std::fmt::Display for DeadlineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeadlineKind::Branch => "branch timeout",
            DeadlineKind::Run => "run deadline",
        })
    }
}

/// Why a branch was cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelReason {
    /// Fail-fast: another branch failed first.
    SiblingFailed {
        /// The failed branch's index.
        index: u32,
        /// Its agent.
        agent: String,
    },
    /// Tolerate-partial: the quorum could no longer be met.
    QuorumUnreachable,
    /// A step this one depends on did not succeed.
    UpstreamFailed {
        /// The upstream step's agent.
        agent: String,
    },
    /// The caller stopped waiting for the run.
    CallerGone,
    /// The caller stopped the run ([`RunFailure::Stopped`]) before this branch ended.
    Stopped,
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelReason::SiblingFailed { index, agent } => {
                write!(f, "fail-fast after branch {index} ({agent}) failed")
            }
            CancelReason::QuorumUnreachable => f.write_str("quorum could no longer be met"),
            CancelReason::UpstreamFailed { agent } => {
                write!(f, "upstream step `{agent}` did not succeed")
            }
            CancelReason::CallerGone => f.write_str("the caller stopped waiting"),
            CancelReason::Stopped => f.write_str("the run was stopped"),
        }
    }
}

/// A merged answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Synthesis {
    /// The merged text.
    pub text: String,
    /// Tokens spent on the merge (zero for code merges).
    pub usage: Usage,
    /// The model that merged, for LLM merges.
    pub model: Option<String>,
    /// The chosen agent, for select-best.
    pub chosen: Option<String>,
    /// How an LLM merge was made to fit its model's context window.
    pub tree: Option<MergeTree>,
}

/// Why a merge failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SynthesisError {
    /// No branch succeeded, so there is nothing to merge.
    #[error("no branch succeeded; nothing to merge")]
    NothingToMerge,
    /// The merge model call failed.
    #[error("merge call failed: {0}")]
    Provider(Box<ProviderError>),
    /// The merge model answered with no text.
    #[error("the merge model answered with no text")]
    EmptyAnswer,
    /// The select-best scorer panicked.
    #[error("the select-best scorer panicked")]
    ScorerPanicked,
    /// The merge did not finish before the run deadline.
    #[error("synthesis timed out (run deadline)")]
    TimedOut,
    /// The merge model's context window cannot hold even the fixed part of a merge
    /// prompt and a short answer.
    #[error("the merge model's context window ({window} tokens) is too small for a merge: the system prompt, the task and the notes need about {needed}; use a model with a larger window, or a code merge")]
    WindowTooSmall {
        /// The window, in tokens.
        window: u32,
        /// About what a merge needs.
        needed: u32,
    },
    /// The server kept refusing the merge prompts as too long, or the partial merges
    /// did not shrink the work.
    #[error("the merge did not fit the model's context window after {} refused call(s) and {} level(s) of partial merges", .tree.overflows, .tree.levels.len())]
    DoesNotFit {
        /// How far it got.
        tree: Box<MergeTree>,
    },
    /// The synthesiser is not running (the runtime is shutting down).
    #[error("the synthesiser is not running")]
    SynthesiserGone,
    /// The run's budget has no room for the merge call after what its branches
    /// spent: it was not sent.
    #[error("the merge call was not sent: {reason}")]
    OverBudget {
        /// What the budget had left and the merge needed.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
