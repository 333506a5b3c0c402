//! What a run did, as facts: each branch's outcome and timing, the merge's result,
//! and the verdict. The orchestrator produces a [`RunRecord`]; the report module
//! turns it into the [`RunReport`](crate::report::RunReport) users read (derived
//! counts, costs, rendering).

use std::time::{Duration, SystemTime};

use super::code::Conflict;
use super::outcome::{BranchOutcome, RunFailure, Synthesis, SynthesisError};
use super::policy::Policy;
use crate::agent::RunId;

/// One step of a run, as it ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BranchRecord {
    /// The step's name.
    pub step: String,
    /// Its agent, or `code:FUNCTION`.
    pub agent: String,
    pub outcome: BranchOutcome,
    /// Dispatch time since the run started; `None` if it was never dispatched.
    pub started: Option<Duration>,
    pub ended: Duration,
    /// Retries after the specialist crashed under this branch.
    pub retries: u32,
    /// Ended after the run had already merged without it (a deferred straggler).
    pub late: bool,
    /// A map step's items, in item order.
    pub items: Vec<ItemRecord>,
    /// What a code step found upstream steps disagreeing on.
    pub conflicts: Vec<Conflict>,
    /// Its output was taken from an earlier attempt at the run, not called again.
    pub reused: bool,
    /// The cluster node it ended on, if it ran in one.
    pub node: Option<String>,
}

/// One item of a map step, as it ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ItemRecord {
    pub outcome: BranchOutcome,
    pub started: Option<Duration>,
    pub ended: Duration,
    pub retries: u32,
    pub late: bool,
    /// Taken from an earlier attempt at the run.
    pub reused: bool,
    /// The cluster node it ended on, if it ran in one.
    pub node: Option<String>,
}

/// The merge step, as it ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SynthesisRecord {
    /// `llm`, `code` or `best`.
    pub strategy: &'static str,
    pub result: Result<Synthesis, SynthesisError>,
    /// Start and end since the run started.
    pub start: Duration,
    pub end: Duration,
}

/// A whole run, as it ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunRecord {
    pub run: RunId,
    pub policy: Policy,
    /// `None`: the run met its policy and its merge (if any) succeeded.
    pub failure: Option<RunFailure>,
    pub provider: String,
    pub simulated: bool,
    pub started_at: SystemTime,
    pub wall: Duration,
    /// In input order.
    pub branches: Vec<BranchRecord>,
    /// Each step's dependencies (the graph's edges), in input order.
    pub edges: Vec<Vec<usize>>,
    pub synthesis: Option<SynthesisRecord>,
}
