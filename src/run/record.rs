//! What a run did, as facts: each branch's outcome and timing, the merge's result,
//! and the verdict. The orchestrator produces a [`RunRecord`]; the report module
//! turns it into the [`RunReport`](crate::report::RunReport) users read (derived
//! counts, costs, rendering).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::code::Conflict;
use super::outcome::{BranchError, BranchOutcome, RunFailure, Synthesis, SynthesisError};
use super::policy::Policy;
use crate::agent::{AgentOutput, RunId};
use crate::provider::{PriceTable, Usage};

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
    /// What its earlier attempts (the step's `retries`) spent: attempts and tokens.
    pub earlier: (u32, Usage),
    /// Ended after the run had already merged without it (a deferred straggler).
    pub late: bool,
    /// A map step's items, in item order.
    pub items: Vec<ItemRecord>,
    /// What a code step found upstream steps disagreeing on.
    pub conflicts: Vec<Conflict>,
    /// Its output was taken from an earlier attempt at the run, not called again.
    pub reused: Option<super::Reused>,
    /// The cluster node it ended on, if it ran in one.
    pub node: Option<String>,
    /// The run it made, if it runs a workflow whole.
    pub sub_run: Option<SubRun>,
    /// The runs its tool calls started (`run_workflow`; its items' too), in the
    /// order they ended.
    pub delegated: Vec<SubRun>,
}

/// One item of a map step, as it ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ItemRecord {
    pub outcome: BranchOutcome,
    pub started: Option<Duration>,
    pub ended: Duration,
    pub retries: u32,
    /// What its earlier attempts (the step's `retries`) spent.
    pub earlier: (u32, Usage),
    pub late: bool,
    /// Taken from an earlier attempt at the run.
    pub reused: Option<super::Reused>,
    /// The cluster node it ended on, if it ran in one.
    pub node: Option<String>,
    /// The run it made, if its step runs a workflow whole.
    pub sub_run: Option<SubRun>,
    /// Its input (the item), once the map had its items.
    pub asked: Option<Asked>,
}

/// The run a branch made by running a workflow whole
/// ([`Action::Workflow`](crate::run::Action::Workflow)): its own report is
/// [`SubRun::report`].
#[derive(Clone)]
pub struct SubRun {
    pub(crate) record: Arc<RunRecord>,
    pub(crate) prices: Arc<PriceTable>,
}

impl std::fmt::Debug for SubRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubRun")
            .field("run", &self.record.run)
            .finish_non_exhaustive()
    }
}

impl SubRun {
    /// The nested run's id.
    pub fn run_id(&self) -> RunId {
        self.record.run
    }

    /// True if the nested run succeeded.
    pub fn succeeded(&self) -> bool {
        self.record.failure.is_none()
    }

    /// What the branch that ran `workflow` whole answers: the merged text (without a
    /// merge, the outputs of the workflow's ends, each under its step's name), with
    /// everything the nested run spent; or its failure, in one line.
    pub(crate) fn outcome(&self, workflow: &str) -> BranchOutcome {
        let r = &*self.record;
        if let Some(failure) = &r.failure {
            let error = BranchError::Workflow {
                workflow: workflow.to_owned(),
                reason: failure.to_string(),
            };
            return BranchOutcome::Failed { error };
        }
        let mut out = AgentOutput::text(String::new());
        let (attempts, usage, wasted, refused) = self.spent();
        out.attempts = attempts;
        out.wasted_calls = wasted;
        out.rate_limited = refused;
        out.text = match &r.synthesis {
            Some(SynthesisRecord { result: Ok(s), .. }) => s.text.clone(),
            _ => self.ends(),
        };
        out.usage = usage;
        BranchOutcome::Ok(out)
    }

    /// What the nested run spent, whether or not it succeeded: its model calls,
    /// tokens (its merge's included), wasted calls and calls refused for load.
    pub(crate) fn spent(&self) -> (u32, Usage, u32, u32) {
        let r = &*self.record;
        let (mut attempts, mut usage, mut wasted, mut refused) =
            (0u32, Usage::default(), 0u32, 0u32);
        for b in &r.branches.records {
            let outcomes: Vec<&BranchOutcome> = if b.items.is_empty() {
                vec![&b.outcome]
            } else {
                b.items.iter().map(|i| &i.outcome).collect()
            };
            for o in outcomes {
                let (a, spent) = o.spent();
                let (w, r) = o.waste();
                attempts += a;
                usage += spent;
                wasted += w;
                refused += r;
            }
            usage += b.earlier.1;
            attempts = attempts.saturating_add(b.earlier.0);
        }
        if let Some(SynthesisRecord { result: Ok(s), .. }) = &r.synthesis {
            usage += s.usage;
        }
        (attempts, usage, wasted, refused)
    }

    /// The outputs of the steps no other step waits for, each under its name when
    /// there are several.
    fn ends(&self) -> String {
        let r = &*self.record;
        let mut end = vec![true; r.branches.records.len()];
        for deps in &r.branches.edges {
            for &d in deps {
                if let Some(e) = end.get_mut(d) {
                    *e = false;
                }
            }
        }
        let ends: Vec<&BranchRecord> = r
            .branches
            .records
            .iter()
            .zip(end)
            .filter(|(_, e)| *e)
            .map(|(b, _)| b)
            .collect();
        let text = |b: &BranchRecord| b.outcome.output().map(|o| o.text.clone());
        match ends.as_slice() {
            [one] => text(one).unwrap_or_default(),
            many => many
                .iter()
                .filter_map(|b| Some(format!("## {}\n{}", b.step, text(b)?)))
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

/// Two are equal when they hold the same run's record.
impl PartialEq for SubRun {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SynthesisRecord {
    /// `llm`, `code` or `best`.
    pub strategy: &'static str,
    pub result: Result<Synthesis, SynthesisError>,
    /// Start and end since the run started.
    pub start: Duration,
    pub end: Duration,
}

/// A run's steps as they ended: what a report's branches are built from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Branches {
    /// In input order.
    pub records: Vec<BranchRecord>,
    /// Each step's dependencies (the graph's edges), in input order.
    pub edges: Vec<Vec<usize>>,
}

/// What a run was asked, kept in its report: the task's SHA-256 and, up to
/// [`Asked::KEPT`] bytes, the task itself — so that a repair from the report can
/// run the same task again without it being typed again, and refuse another one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Asked {
    /// The task's SHA-256, in hex.
    pub task_sha256: String,
    /// The task, when it is at most [`Asked::KEPT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl Asked {
    /// The largest task a report keeps whole.
    pub const KEPT: usize = 64 * 1024;

    /// What a run of `task` was asked.
    pub fn of(task: &str) -> Self {
        Self {
            task_sha256: Self::digest(task),
            task: (task.len() <= Self::KEPT).then(|| task.to_owned()),
        }
    }

    /// The SHA-256 of `task`, in hex.
    pub fn digest(task: &str) -> String {
        use std::fmt::Write as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, task.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// Whether `task` is the task asked.
    pub fn is(&self, task: &str) -> bool {
        self.task_sha256 == Self::digest(task)
    }
}

/// A whole run, as it ended. `B` is its branches: as they ended ([`Branches`]), or
/// what the run's caller made of them the moment they had all ended, before the
/// merge answered (see the orchestrator's `Admitted::execute`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunRecord<B = Branches> {
    pub run: RunId,
    pub asked: Asked,
    pub policy: Policy,
    /// `None`: the run met its policy and its merge (if any) succeeded.
    pub failure: Option<RunFailure>,
    pub provider: String,
    pub simulated: bool,
    pub started_at: SystemTime,
    pub wall: Duration,
    pub branches: B,
    pub synthesis: Option<SynthesisRecord>,
}

impl RunRecord {
    /// The same record with its branches turned into what `settle` makes of them.
    pub(crate) fn settle<B>(self, settle: impl FnOnce(Branches) -> B) -> RunRecord<B> {
        RunRecord {
            run: self.run,
            asked: self.asked,
            policy: self.policy,
            failure: self.failure,
            provider: self.provider,
            simulated: self.simulated,
            started_at: self.started_at,
            wall: self.wall,
            branches: settle(self.branches),
            synthesis: self.synthesis,
        }
    }
}
