//! The scheduler as a pure state machine: step events in, [`Command`]s out.
//!
//! It holds a run's steps (a DAG; a fan-out is the case with no dependencies), their
//! states, the policy, the budget ledger and the soft deadline, and decides: which
//! steps (and map items) to dispatch and when, which to retry, refuse or cancel, when
//! to merge early, and the verdict. It never awaits, spawns or reads a clock: the
//! driver (`execute`) passes the time since the run started with every event and
//! carries the commands out. So every policy, dependency, map and budget case is a
//! unit test (`tests.rs`) and its invariants are properties (`properties.rs`).
//!
//! Invariants:
//! - every step, and every item of a map step, gets exactly one [`Command::Finished`],
//!   whatever the policy decides;
//! - a step is dispatched only once every step it depends on has succeeded, and then
//!   at once (no rounds: a fast chain never waits for an unrelated slow one); if a
//!   dependency does not succeed, the step ends `Cancelled(UpstreamFailed)` without
//!   being dispatched — failures propagate to dependents only;
//! - a map step has at most its concurrency of items in flight; its items' outcomes
//!   under its own policy decide the step's;
//! - a branch that fails or times out is dispatched again while its step has retries
//!   left;
//! - with a budget, a branch is dispatched only after reserving its estimate;
//!   otherwise it ends `Refused`, which the policy treats as a failure;
//! - after [`Command::Done`] it emits nothing more;
//! - nothing is dispatched at or after the run's deadline: what would be ends
//!   `TimedOut(Run)` at once, never started (a map of 200,000 items past its
//!   deadline dispatched every one, each timing out, until the run was given up
//!   with no report).
//!
//! The code: this file holds the types and the driver's entry points; `dispatch`
//! what goes out (dispatch, budget reservation, a map's items), `settle` what comes
//! back (retries, a step's and a map's end, cancellation, the early merge, the run's
//! end); `map` one map step's items.

mod dispatch;
mod map;
mod settle;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{Budget, Estimate, Ledger};
use super::outcome::{BranchOutcome, CancelReason, RunFailure};
use super::policy::Policy;
use super::record::{BranchRecord, ItemRecord};
use super::step::Step;
use crate::agent::UpstreamOutput;
use crate::provider::PriceTable;
use map::MapRun;

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    /// Start step `index` (item `item` of a map step); its task carries `upstream`
    /// (its dependencies' outputs).
    Dispatch {
        index: usize,
        item: Option<usize>,
        upstream: Arc<[UpstreamOutput]>,
    },
    /// Map step `index` is ready: find its items (from `upstream` or the request) and
    /// answer with [`Scheduler::expanded`].
    Expand {
        index: usize,
        upstream: Arc<[UpstreamOutput]>,
    },
    /// Stop item `item` of step `index`, which is running (its outcome is decided).
    Abort { index: usize, item: usize },
    /// Step `index` (or its item) ended, and its outcome is recorded: tell the
    /// caller, who reads it with [`Scheduler::outcome`] if anyone listens (the
    /// command does not carry a copy of every outcome for nobody).
    Finished {
        index: usize,
        item: Option<usize>,
        at: Duration,
        late: bool,
    },
    /// The soft deadline has passed with the quorum met: merge now with each step's
    /// outcome so far (`None`: still running); the stragglers keep running.
    MergeNow(Vec<(String, Option<BranchOutcome>)>),
    /// The run's branches are over: drop whatever still runs.
    Done,
}

/// Estimates what step `index` (its item `item`) may use, given its dependencies'
/// outputs.
pub(crate) type Estimator<'a> =
    Box<dyn Fn(usize, Option<usize>, &Arc<[UpstreamOutput]>) -> Estimate + Send + 'a>;

/// A run's budget as the scheduler sees it.
pub(crate) struct BudgetPlan<'a> {
    pub budget: Budget,
    pub estimate: Estimator<'a>,
    pub prices: &'a PriceTable,
}

/// A step's (or item's) record while the run goes on.
#[derive(Clone, Debug, Default)]
struct Entry {
    outcome: Option<BranchOutcome>,
    started: Option<Duration>,
    ended: Duration,
    /// Crash retries (the branch call's own).
    retries: u32,
    /// Times it was dispatched again after failing (the step's `retries`).
    reruns: u32,
    /// What the attempts before the last spent (they were paid for).
    earlier: (u32, crate::provider::Usage),
    late: bool,
}

#[derive(Clone, Debug)]
enum StepState {
    /// Waiting on this many unfinished dependencies.
    Waiting(usize),
    /// Dispatched (a single branch).
    Running,
    /// A map step waiting for its items to be found.
    Expanding(Arc<[UpstreamOutput]>),
    /// A map step with its items.
    Mapping(MapRun),
    Done,
}

/// Where the soft deadline stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Soft {
    /// No soft deadline (or no merge, or fail-fast).
    Off,
    /// Not passed yet.
    Armed,
    /// Passed, but the quorum is not met yet.
    Passed,
    /// The merge went ahead; what ends from now on is late.
    Merged,
}

/// The state machine; see the module docs.
pub(crate) struct Scheduler<'a> {
    policy: Policy,
    names: Vec<String>,
    doers: Vec<String>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// Per step: its map's concurrency and policy.
    maps: Vec<Option<(usize, Policy)>>,
    retries: Vec<u32>,
    state: Vec<StepState>,
    records: Vec<Entry>,
    items: Vec<Vec<Entry>>,
    ok: usize,
    not_ok: usize,
    /// Steps before this index are all `Done` (a step never leaves `Done`), so
    /// asking whether every step is done costs O(1) amortised, not O(steps).
    done_prefix: usize,
    failure: Option<RunFailure>,
    budget: Option<(BudgetPlan<'a>, Ledger)>,
    soft: Soft,
    /// The run's deadline, from its start.
    deadline: Option<Duration>,
    done: bool,
}

/// A branch that ended and awaits processing.
type Ended = (usize, Option<usize>, BranchOutcome);

impl<'a> Scheduler<'a> {
    /// A scheduler for `steps` under `policy`; `soft_deadline` says whether the run
    /// may merge without stragglers (the driver keeps the timer).
    pub(crate) fn new(
        steps: &[Step],
        policy: Policy,
        budget: Option<BudgetPlan<'a>>,
        soft_deadline: bool,
    ) -> Self {
        let n = steps.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, step) in steps.iter().enumerate() {
            for &d in &step.depends_on {
                dependents[d].push(i);
            }
        }
        let soft = match policy {
            Policy::TolerantPartial { .. } if soft_deadline => Soft::Armed,
            _ => Soft::Off,
        };
        Self {
            policy,
            names: steps.iter().map(|s| s.name.clone()).collect(),
            doers: steps.iter().map(Step::doer).collect(),
            deps: steps.iter().map(|s| s.depends_on.clone()).collect(),
            dependents,
            maps: steps
                .iter()
                .map(|s| s.map.as_ref().map(|m| (m.concurrency.max(1), m.policy)))
                .collect(),
            retries: steps.iter().map(|s| s.retries).collect(),
            state: steps
                .iter()
                .map(|s| StepState::Waiting(s.depends_on.len()))
                .collect(),
            records: vec![Entry::default(); n],
            items: vec![Vec::new(); n],
            ok: 0,
            not_ok: 0,
            done_prefix: 0,
            failure: None,
            budget: budget.map(|b| (b, Ledger::default())),
            soft,
            deadline: None,
            done: false,
        }
    }

    /// The run's deadline, from its start: nothing is dispatched at or after it.
    pub(crate) fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Whether step `index` (its item `item`) was ever dispatched.
    pub(crate) fn dispatched(&self, index: usize, item: Option<usize>) -> bool {
        match item {
            None => self.records.get(index).is_some_and(|e| e.started.is_some()),
            Some(k) => self
                .items
                .get(index)
                .and_then(|i| i.get(k))
                .is_some_and(|e| e.started.is_some()),
        }
    }

    /// Starts the run: dispatches every step with no dependency, in input order.
    pub(crate) fn start(&mut self, now: Duration) -> Vec<Command> {
        let ready: Vec<usize> = (0..self.state.len())
            .filter(|&i| matches!(self.state[i], StepState::Waiting(0)))
            .collect();
        let mut out = Vec::new();
        let mut ended = VecDeque::new();
        for i in ready {
            self.begin(i, now, &mut out, &mut ended);
        }
        self.drain(ended, now, &mut out);
        if self.state.is_empty() {
            self.finish_run(&mut out);
        }
        out
    }

    /// Map step `index` has `count` items.
    pub(crate) fn expanded(&mut self, index: usize, count: usize, now: Duration) -> Vec<Command> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let StepState::Expanding(upstream) = &self.state[index] else {
            return out;
        };
        let upstream = upstream.clone();
        let (concurrency, policy) = self.maps[index].unwrap_or((1, Policy::FailFast));
        self.items[index] = vec![Entry::default(); count];
        self.state[index] = StepState::Mapping(MapRun::new(count, concurrency, policy, upstream));
        let mut ended = VecDeque::new();
        self.fill(index, now, &mut out, &mut ended);
        self.settle_map(index, now, &mut out, &mut ended);
        self.drain(ended, now, &mut out);
        out
    }

    /// Map step `index` could not read its items (`outcome` says why): it fails
    /// as a step, not retried (its upstream output would say the same again).
    pub(crate) fn expand_failed(
        &mut self,
        index: usize,
        outcome: BranchOutcome,
        now: Duration,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        if self.done || !matches!(self.state[index], StepState::Expanding(_)) {
            return out;
        }
        self.state[index] = StepState::Running;
        let mut ended = VecDeque::new();
        self.step_ended(index, outcome, now, &mut out, &mut ended);
        if !self.done {
            self.maybe_merge_early(&mut out);
            if self.all_done() {
                self.finish_run(&mut out);
                return out;
            }
        }
        self.drain(ended, now, &mut out);
        out
    }

    /// Step `index` (its item `item`) ended with `outcome` after `retries` crash
    /// retries.
    pub(crate) fn ended(
        &mut self,
        index: usize,
        item: Option<usize>,
        outcome: BranchOutcome,
        retries: u32,
        now: Duration,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        let running = match (&self.state.get(index), item) {
            (Some(StepState::Running), None) => true,
            (Some(StepState::Mapping(m)), Some(k)) => m.is_running(k),
            _ => false,
        };
        if self.done || !running {
            return out;
        }
        self.entry(index, item).retries += retries;
        self.drain(VecDeque::from([(index, item, outcome)]), now, &mut out);
        out
    }

    /// The soft deadline's timer fired.
    pub(crate) fn soft_deadline_passed(&mut self, _now: Duration) -> Vec<Command> {
        let mut out = Vec::new();
        if self.soft == Soft::Armed && !self.done {
            self.soft = Soft::Passed;
            self.maybe_merge_early(&mut out);
        }
        out
    }

    /// True while the soft deadline's timer should run.
    pub(crate) fn soft_deadline_armed(&self) -> bool {
        self.soft == Soft::Armed && !self.done
    }

    /// Each step's record, and why the run failed (`None`: it met its policy). Steps
    /// that never ended (the driver stopped early) end `Cancelled(CallerGone)`.
    pub(crate) fn into_verdict(self) -> (Vec<BranchRecord>, Option<RunFailure>) {
        let gone = || BranchOutcome::Cancelled {
            reason: CancelReason::CallerGone,
        };
        let records = self
            .records
            .into_iter()
            .zip(self.items)
            .zip(self.names.into_iter().zip(self.doers))
            .map(|((r, items), (step, agent))| BranchRecord {
                step,
                agent,
                outcome: r.outcome.unwrap_or_else(gone),
                started: r.started,
                ended: r.ended,
                retries: r.retries + r.reruns,
                earlier: r.earlier,
                late: r.late,
                items: items
                    .into_iter()
                    .map(|e| ItemRecord {
                        outcome: e.outcome.unwrap_or_else(gone),
                        started: e.started,
                        ended: e.ended,
                        retries: e.retries + e.reruns,
                        earlier: e.earlier,
                        late: e.late,
                        reused: None,
                        node: None,
                        sub_run: None,
                        asked: None,
                    })
                    .collect(),
                conflicts: Vec::new(),
                reused: None,
                node: None,
                sub_run: None,
                delegated: Vec::new(),
            })
            .collect();
        (records, self.failure)
    }

    /// How step `index` (or its item `item`) ended, once it has.
    pub(crate) fn outcome(&self, index: usize, item: Option<usize>) -> Option<&BranchOutcome> {
        match item {
            None => self.records.get(index)?.outcome.as_ref(),
            Some(k) => self.items.get(index)?.get(k)?.outcome.as_ref(),
        }
    }

    /// What branch (`index`, `item`), dispatched, may use in all under the run's
    /// budget (see `Ledger::headroom`); `None` without a budget.
    pub(crate) fn headroom(&self, index: usize, item: Option<usize>) -> Option<u64> {
        let (plan, ledger) = self.budget.as_ref()?;
        ledger.headroom(&plan.budget, (index, item))
    }

    /// How many times branch (`index`, `item`) was run again so far (a retry waits
    /// longer the more there were).
    pub(crate) fn reruns(&self, index: usize, item: Option<usize>) -> u32 {
        match item {
            None => self.records.get(index).map_or(0, |e| e.reruns),
            Some(k) => self
                .items
                .get(index)
                .and_then(|items| items.get(k))
                .map_or(0, |e| e.reruns),
        }
    }

    fn entry(&mut self, index: usize, item: Option<usize>) -> &mut Entry {
        match item {
            None => &mut self.records[index],
            Some(k) => &mut self.items[index][k],
        }
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
