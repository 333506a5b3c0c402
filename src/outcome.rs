//! How a branch ends, and the events a run streams while it goes on.
//!
//! Every branch of every run ends in exactly one [`BranchOutcome`]; the scheduler
//! never drops one, whatever the policy decides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentError, AgentOutput};
use crate::task::RunId;

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

    /// A one-line description of why the branch did not succeed (`None` if it did).
    pub fn problem(&self) -> Option<String> {
        match self {
            BranchOutcome::Ok(_) => None,
            BranchOutcome::Failed { error } => Some(error.to_string()),
            BranchOutcome::TimedOut { deadline } => Some(format!("timed out ({deadline})")),
            BranchOutcome::Cancelled { reason } => Some(format!("cancelled: {reason}")),
            BranchOutcome::Refused { reason } => Some(format!("refused: {reason}")),
        }
    }
}

/// Why a branch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
    /// The specialist is not routable.
    #[error("specialist `{agent}` is unavailable: {reason}")]
    SpecialistUnavailable {
        /// The specialist.
        agent: String,
        /// Why.
        reason: String,
    },
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
    /// The run's cost cap is reached (or its estimate would pass it).
    CostBudget {
        /// The cap, USD.
        cap_usd: f64,
        /// Spent plus reserved, USD.
        committed_usd: f64,
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
            } => {
                write!(
                    f,
                    "cost budget: ${committed_usd:.4} of ${cap_usd:.4} committed"
                )
            }
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
        }
    }
}

/// What a run reports while it goes on, in completion order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEvent {
    /// A branch reached its terminal state.
    BranchFinished {
        /// The run.
        run: RunId,
        /// The branch's position in the request.
        index: u32,
        /// Its agent.
        agent: String,
        /// How it ended.
        outcome: BranchOutcome,
        /// When, since the run started.
        #[serde(with = "crate::report::secs")]
        at: Duration,
        /// It ended after the run had merged without it (soft deadline).
        late: bool,
    },
    /// Synthesis began, with this many successful branches.
    SynthesisStarted {
        /// The run.
        run: RunId,
        /// Inputs to the merge.
        branches_ok: usize,
    },
    /// Synthesis ended (with the merged text, or why not). With a soft deadline this
    /// comes before the stragglers' late `BranchFinished` events.
    SynthesisFinished {
        /// The run.
        run: RunId,
        /// The merged text.
        text: Option<String>,
        /// Why the merge failed.
        error: Option<String>,
    },
    /// The run is over; the report follows on the reply.
    RunFinished {
        /// The run.
        run: RunId,
        /// Whether it succeeded.
        succeeded: bool,
    },
}
