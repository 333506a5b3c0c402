//! Why a request is refused ([`RequestError`], [`StepProblem`]), why a duration cannot
//! be parsed, and why a run produces no report ([`RunError`]).

use std::time::Duration;

use super::RunRequest;

/// What is wrong with one step of a request.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StepProblem {
    /// Its input names a step whose name more than one step has.
    #[error("its input names step `{name}`, but more than one step has that name (the first is step {first})")]
    DuplicateName {
        /// The name.
        name: String,
        /// The first step with it.
        first: usize,
    },
    /// No code function has this name.
    #[error("no code function is named `{function}` (known: {})", known.join(", "))]
    UnknownCode {
        /// The name.
        function: String,
        /// The functions the runtime has.
        known: Vec<String>,
    },
    /// Its input names a step that is not upstream of it.
    #[error("its input names step `{0}`, which is not upstream of it (add it to `after`)")]
    NotUpstream(String),
    /// Its input uses `{{item}}` but it is not a map step.
    #[error("its input uses {{{{item}}}}, but it maps over nothing")]
    ItemOutsideMap,
    /// A map with a concurrency of 0.
    #[error("a map's concurrency must be at least 1")]
    MapConcurrency,
    /// A map whose quorum is 0.
    #[error("a map's quorum must be at least 1")]
    MapQuorum,
    /// The workflow it runs whole is not a valid request.
    #[error("its workflow `{workflow}` is not valid: {problem}")]
    Workflow {
        /// The workflow's name.
        workflow: String,
        /// What is wrong with it.
        problem: Box<RequestError>,
    },
    /// A map over a step it does not wait for.
    #[error("it maps over step {0}, which it does not wait for")]
    MapNotUpstream(usize),
    /// A timeout of zero or beyond the longest accepted.
    #[error("its timeout must be more than zero and at most 30 days")]
    Timeout,
    /// More retries than a step may have: each one is a billed call.
    #[error("its retries must be at most {max}, not {retries} (each retry is another model call)")]
    TooManyRetries {
        /// The retries asked for.
        retries: u32,
        /// The most accepted.
        max: u32,
    },
}

/// Which duration of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`RunRequest::deadline`].
    Deadline,
    /// [`RunRequest::branch_timeout`].
    BranchTimeout,
    /// [`RunRequest::soft_deadline`].
    SoftDeadline,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Deadline => "deadline",
            Limit::BranchTimeout => "branch timeout",
            Limit::SoftDeadline => "soft deadline",
        })
    }
}

/// A duration that could not be parsed (see [`parse_duration`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a duration.
    #[error("`{text}`: {reason} (try 30s, 2m or 500ms)")]
    Unreadable {
        /// The text.
        text: String,
        /// The parser's reason.
        reason: String,
    },
    /// Zero: a deadline or timeout of nothing.
    #[error("`{0}`: must be greater than zero")]
    Zero(String),
    /// Longer than [`RunRequest::LONGEST`].
    #[error("`{text}`: must be at most {max_days} days")]
    TooLong {
        /// The text.
        text: String,
        /// The longest accepted, in days.
        max_days: u64,
    },
}

/// Parses a deadline or timeout with its unit (`90s`, `2m`, `1500ms`, `1h 30m`): more
/// than zero and at most [`RunRequest::LONGEST`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| DurationError::Unreadable {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    if d.is_zero() {
        return Err(DurationError::Zero(text.to_owned()));
    }
    if d > RunRequest::LONGEST {
        return Err(DurationError::TooLong {
            text: text.to_owned(),
            max_days: RunRequest::LONGEST.as_secs() / 86_400,
        });
    }
    Ok(d)
}

/// What is wrong with a [`RunRequest`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request has no step.
    #[error("the run has no steps")]
    NoSteps,
    /// A reused output names no step of this request (or an item of a step that is
    /// not a map, or no item of one that is).
    #[error("a reused output names step {index}{}, which this run does not have", .item.map(|k| format!(" item {k}")).unwrap_or_default())]
    BadReuse {
        /// The step it named.
        index: u32,
        /// The item it named.
        item: Option<u32>,
    },
    /// A step names an agent the runtime does not have.
    #[error("step {step} names unknown agent `{agent}` (known: {})", known.join(", "))]
    UnknownAgent {
        /// The step's index.
        step: usize,
        /// The name it gave.
        agent: String,
        /// The names the runtime knows, sorted.
        known: Vec<String>,
    },
    /// A step is malformed.
    #[error("step {step} (`{name}`): {problem}")]
    BadStep {
        /// The step's index.
        step: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        problem: StepProblem,
    },
    /// A step depends on itself or on a later step.
    #[error("step {step} depends on step {on}, which does not come before it")]
    BadDependency {
        /// The step's index.
        step: usize,
        /// The step it names.
        on: usize,
    },
    /// The quorum is 0 or more than the steps.
    #[error("quorum {quorum} must be between 1 and the {steps} steps")]
    BadQuorum {
        /// The quorum asked.
        quorum: usize,
        /// The steps in the request.
        steps: usize,
    },
    /// The overall deadline is zero.
    #[error("the deadline must be greater than zero")]
    ZeroDeadline,
    /// A soft deadline lets the merge go ahead without stragglers: it needs a merge
    /// and a tolerate-partial policy (under fail-fast every branch must succeed).
    #[error("a soft deadline needs a merge and a partial policy (partial:K); under fail-fast or without a merge it would do nothing")]
    SoftDeadlineUnused,
    /// The cost cap is negative, infinite or not a number.
    #[error("the cost cap must be a finite number of dollars ≥ 0, not {0}")]
    BadCostCap(f64),
    /// A duration is longer than [`RunRequest::LONGEST`].
    #[error("the {what} must be at most {max_days} days")]
    TooLong {
        /// Which duration.
        what: Limit,
        /// The longest accepted, in days.
        max_days: u64,
    },
}

/// Why a run produced no report at all. (A run that ran but did not succeed still
/// produces a report whose status says it failed.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The request is malformed.
    #[error("invalid run request: {0}")]
    InvalidRequest(#[from] RequestError),
    /// The orchestrator is not running.
    #[error("the orchestrator is not running")]
    OrchestratorGone,
    /// The runtime is shutting down and accepts no new runs.
    #[error("the runtime is shutting down; no new runs are accepted")]
    ShuttingDown,
}
