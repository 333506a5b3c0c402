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
//! - after [`Command::Done`] it emits nothing more.

mod map;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{BranchKey, Budget, Estimate, Ledger};
use super::outcome::{BranchError, BranchOutcome, CancelReason, RunFailure};
use super::policy::Policy;
use super::record::{BranchRecord, ItemRecord};
use super::step::Step;
use crate::agent::{AgentOutput, UpstreamOutput};
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
    /// Step `index` (or its item) ended (already recorded): tell the caller.
    Finished {
        index: usize,
        item: Option<usize>,
        outcome: BranchOutcome,
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
            done: false,
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
                late: r.late,
                items: items
                    .into_iter()
                    .map(|e| ItemRecord {
                        outcome: e.outcome.unwrap_or_else(gone),
                        started: e.started,
                        ended: e.ended,
                        retries: e.retries + e.reruns,
                        late: e.late,
                        reused: false,
                        node: None,
                        sub_run: None,
                    })
                    .collect(),
                conflicts: Vec::new(),
                reused: false,
                node: None,
                sub_run: None,
            })
            .collect();
        (records, self.failure)
    }

    fn entry(&mut self, index: usize, item: Option<usize>) -> &mut Entry {
        match item {
            None => &mut self.records[index],
            Some(k) => &mut self.items[index][k],
        }
    }

    /// The outputs of step `i`'s dependencies.
    fn upstream(&self, i: usize) -> Arc<[UpstreamOutput]> {
        self.deps[i]
            .iter()
            .filter_map(|&d| {
                let output = self.records[d].outcome.as_ref()?.output()?;
                Some(UpstreamOutput {
                    agent: self.names[d].clone(),
                    text: output.text.clone(),
                    items: self.items[d]
                        .iter()
                        .filter_map(|e| e.outcome.as_ref()?.output().map(|o| o.text.clone()))
                        .collect(),
                })
            })
            .collect()
    }

    /// Step `i`'s dependencies have succeeded: dispatch it (or have it expanded).
    fn begin(
        &mut self,
        i: usize,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        let upstream = self.upstream(i);
        if self.maps[i].is_some() {
            self.records[i].started = Some(now);
            self.state[i] = StepState::Expanding(upstream.clone());
            out.push(Command::Expand { index: i, upstream });
            return;
        }
        self.state[i] = StepState::Running;
        self.send(i, None, upstream, now, out, ended);
    }

    /// Reserves and dispatches one branch, or refuses it.
    fn send(
        &mut self,
        index: usize,
        item: Option<usize>,
        upstream: Arc<[UpstreamOutput]>,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        if let Some((plan, ledger)) = &mut self.budget {
            let estimate = (plan.estimate)(index, item, &upstream);
            let key: BranchKey = (index, item);
            if let Err(reason) = ledger.reserve(&plan.budget, key, &estimate) {
                tracing::info!(branch = index, ?item, %reason, "refused by the run budget");
                ended.push_back((index, item, BranchOutcome::Refused { reason }));
                return;
            }
        }
        let e = self.entry(index, item);
        if e.started.is_none() {
            e.started = Some(now);
        }
        out.push(Command::Dispatch {
            index,
            item,
            upstream,
        });
    }

    /// Dispatches map step `i`'s next items, up to its concurrency.
    fn fill(
        &mut self,
        i: usize,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        loop {
            let StepState::Mapping(m) = &mut self.state[i] else {
                return;
            };
            let Some(k) = m.next_item() else {
                return;
            };
            let upstream = m.upstream().clone();
            self.send(i, Some(k), upstream, now, out, ended);
        }
    }

    /// Processes ended branches (and the refusals their consequences cause) in order.
    fn drain(&mut self, mut ended: VecDeque<Ended>, now: Duration, out: &mut Vec<Command>) {
        while let Some((i, item, outcome)) = ended.pop_front() {
            if self.done {
                return;
            }
            if let Some((plan, ledger)) = &mut self.budget {
                ledger.settle((i, item), &outcome, plan.prices);
            }
            let retriable = matches!(
                outcome,
                BranchOutcome::Failed { .. } | BranchOutcome::TimedOut { .. }
            );
            if retriable && self.entry(i, item).reruns < self.retries[i] {
                self.entry(i, item).reruns += 1;
                let upstream = match &self.state[i] {
                    StepState::Mapping(m) => m.upstream().clone(),
                    _ => self.upstream(i),
                };
                self.send(i, item, upstream, now, out, &mut ended);
                continue;
            }
            match item {
                Some(k) => {
                    self.finish_item(i, k, outcome, now, out);
                    self.fill(i, now, out, &mut ended);
                    self.settle_map(i, now, out, &mut ended);
                }
                None => self.step_ended(i, outcome, now, out, &mut ended),
            }
            if self.done {
                return;
            }
            self.maybe_merge_early(out);
            if self.all_done() {
                self.finish_run(out);
                return;
            }
        }
    }

    fn finish_item(
        &mut self,
        i: usize,
        k: usize,
        outcome: BranchOutcome,
        now: Duration,
        out: &mut Vec<Command>,
    ) {
        let late = self.soft == Soft::Merged;
        if let StepState::Mapping(m) = &mut self.state[i] {
            m.ended(k, outcome.is_ok());
        }
        let e = &mut self.items[i][k];
        e.outcome = Some(outcome.clone());
        e.ended = now;
        e.late = late;
        out.push(Command::Finished {
            index: i,
            item: Some(k),
            outcome,
            at: now,
            late,
        });
    }

    /// If map step `i`'s items have decided it, ends it (cancelling what is left).
    fn settle_map(
        &mut self,
        i: usize,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        let StepState::Mapping(m) = &self.state[i] else {
            return;
        };
        let Some(verdict) = m.verdict() else {
            return;
        };
        let (running, pending) = m.unfinished();
        let name = self.names[i].clone();
        let outcome = match verdict {
            map::Verdict::Succeeded => BranchOutcome::Ok(self.aggregate(i)),
            map::Verdict::Failed {
                first_failed,
                ok,
                of,
                quorum,
            } => {
                let reason = match first_failed {
                    Some(item) => CancelReason::SiblingFailed {
                        index: item as u32,
                        agent: format!("{name} item {}", item + 1),
                    },
                    None => CancelReason::QuorumUnreachable,
                };
                for k in running.iter().chain(&pending) {
                    if running.contains(k) {
                        out.push(Command::Abort { index: i, item: *k });
                    }
                    let outcome = BranchOutcome::Cancelled {
                        reason: reason.clone(),
                    };
                    self.finish_item(i, *k, outcome, now, out);
                }
                BranchOutcome::Failed {
                    error: BranchError::Items { ok, of, quorum },
                }
            }
        };
        self.step_ended(i, outcome, now, out, ended);
    }

    /// The output of a map step that succeeded: its items' outputs, in item order.
    fn aggregate(&self, i: usize) -> AgentOutput {
        let mut text = String::new();
        let mut out = AgentOutput::text("");
        for (k, e) in self.items[i].iter().enumerate() {
            if let Some(o) = e.outcome.as_ref().and_then(BranchOutcome::output) {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&format!(
                    "### {} {}\n{}",
                    self.names[i],
                    k + 1,
                    o.text.trim()
                ));
                out.usage += o.usage;
                out.attempts += o.attempts;
                out.permit_wait_ms += o.permit_wait_ms;
                out.wasted_calls += o.wasted_calls;
                out.rate_limited += o.rate_limited;
                if out.model.is_none() {
                    out.model.clone_from(&o.model);
                }
            }
        }
        out.text = text;
        out
    }

    /// Step `i` has its outcome: record it, then what follows for the run.
    fn step_ended(
        &mut self,
        i: usize,
        outcome: BranchOutcome,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        let late = self.soft == Soft::Merged;
        let succeeded = outcome.is_ok();
        self.finish_step(i, outcome.clone(), now, late, out);
        if succeeded {
            self.ok += 1;
            let mut ready = Vec::new();
            for &d in &self.dependents[i] {
                if let StepState::Waiting(k) = &mut self.state[d] {
                    *k -= 1;
                    if *k == 0 {
                        ready.push(d);
                    }
                }
            }
            ready.sort_unstable();
            for d in ready {
                self.begin(d, now, out, ended);
            }
            return;
        }
        self.not_ok += 1;
        self.not_ok += self.cancel_dependents(i, now, out);
        let n = self.state.len();
        match self.policy {
            Policy::FailFast => {
                self.failure = Some(RunFailure::Branch {
                    index: i as u32,
                    agent: self.names[i].clone(),
                    outcome: Box::new(outcome),
                });
                let reason = CancelReason::SiblingFailed {
                    index: i as u32,
                    agent: self.names[i].clone(),
                };
                self.cancel_rest(reason, now, out);
                self.finish_run(out);
            }
            Policy::TolerantPartial { quorum } if n - self.not_ok < quorum => {
                self.failure = Some(RunFailure::QuorumUnreachable {
                    quorum,
                    not_ok: self.not_ok,
                    of: n,
                });
                self.cancel_rest(CancelReason::QuorumUnreachable, now, out);
                self.finish_run(out);
            }
            Policy::TolerantPartial { .. } => {}
        }
    }

    fn finish_step(
        &mut self,
        i: usize,
        outcome: BranchOutcome,
        now: Duration,
        late: bool,
        out: &mut Vec<Command>,
    ) {
        self.state[i] = StepState::Done;
        let r = &mut self.records[i];
        r.outcome = Some(outcome.clone());
        r.ended = now;
        r.late = late;
        out.push(Command::Finished {
            index: i,
            item: None,
            outcome,
            at: now,
            late,
        });
    }

    /// Cancels, transitively, every step waiting on step `i`; returns how many.
    fn cancel_dependents(&mut self, i: usize, now: Duration, out: &mut Vec<Command>) -> usize {
        let mut count = 0;
        let mut stack = self.dependents[i].clone();
        while let Some(d) = stack.pop() {
            if matches!(self.state[d], StepState::Waiting(_)) {
                let reason = CancelReason::UpstreamFailed {
                    agent: self.names[i].clone(),
                };
                self.finish_step(d, BranchOutcome::Cancelled { reason }, now, false, out);
                count += 1;
                stack.extend(self.dependents[d].iter().copied());
            }
        }
        count
    }

    /// Ends every step (and map item) not done yet with `Cancelled(reason)`.
    fn cancel_rest(&mut self, reason: CancelReason, now: Duration, out: &mut Vec<Command>) {
        for i in 0..self.state.len() {
            if let StepState::Mapping(m) = &self.state[i] {
                let (running, pending) = m.unfinished();
                for k in running.into_iter().chain(pending) {
                    let outcome = BranchOutcome::Cancelled {
                        reason: reason.clone(),
                    };
                    self.finish_item(i, k, outcome, now, out);
                }
            }
            if !matches!(self.state[i], StepState::Done) {
                let outcome = BranchOutcome::Cancelled {
                    reason: reason.clone(),
                };
                self.finish_step(i, outcome, now, false, out);
            }
        }
    }

    /// Soft deadline passed and the quorum met: merge now, keep the stragglers.
    fn maybe_merge_early(&mut self, out: &mut Vec<Command>) {
        let Policy::TolerantPartial { quorum } = self.policy else {
            return;
        };
        if self.soft == Soft::Passed && self.ok >= quorum && !self.all_done() {
            tracing::info!(
                ok = self.ok,
                "soft deadline: merging without the stragglers"
            );
            self.soft = Soft::Merged;
            let snapshot = self
                .records
                .iter()
                .zip(&self.names)
                .map(|(r, name)| (name.clone(), r.outcome.clone()))
                .collect();
            out.push(Command::MergeNow(snapshot));
        }
    }

    /// Whether every step is `Done`. Asked at every step's end: a scan each time was
    /// quadratic in the steps (it showed in the 10,000-branch profile).
    fn all_done(&mut self) -> bool {
        while self
            .state
            .get(self.done_prefix)
            .is_some_and(|s| matches!(s, StepState::Done))
        {
            self.done_prefix += 1;
        }
        self.done_prefix == self.state.len()
    }

    fn finish_run(&mut self, out: &mut Vec<Command>) {
        if self.failure.is_none() {
            if let Policy::TolerantPartial { quorum } = self.policy {
                if self.ok < quorum {
                    self.failure = Some(RunFailure::QuorumNotMet {
                        quorum,
                        ok: self.ok,
                        of: self.state.len(),
                    });
                }
            }
        }
        self.done = true;
        out.push(Command::Done);
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
