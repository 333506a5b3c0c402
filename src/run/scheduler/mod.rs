//! The scheduler as a pure state machine: step events in, [`Command`]s out.
//!
//! It holds a run's steps (a DAG; a fan-out is the case with no dependencies), their
//! states, the policy, the budget ledger and the soft deadline, and decides: which
//! steps to dispatch and when, which to refuse, which to cancel, when to merge early,
//! and the verdict. It never awaits, spawns or reads a clock: the driver
//! (`execute`) passes the time since the run started with every event and carries the
//! commands out. So every policy, dependency and budget case is a unit test below.
//!
//! Invariants:
//! - every step gets exactly one [`Command::Finished`], whatever the policy decides;
//! - a step is dispatched only once every step it depends on has succeeded, and then
//!   at once (no rounds: a fast chain never waits for an unrelated slow one); if a
//!   dependency does not succeed, the step ends `Cancelled(UpstreamFailed)` without
//!   being dispatched;
//! - with a budget, a step is dispatched only after reserving its estimate; otherwise
//!   it ends `Refused`, which the policy treats as a failure;
//! - after [`Command::Done`] it emits nothing more.

use std::collections::VecDeque;
use std::time::Duration;

use super::budget::{Estimate, Ledger};
use super::outcome::{BranchOutcome, CancelReason, RunFailure};
use super::record::BranchRecord;
use super::request::{Budget, Policy, Step};
use crate::agent::UpstreamOutput;
use crate::provider::PriceTable;

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    /// Start step `index`; its task carries `upstream` (its dependencies' outputs).
    Dispatch {
        index: usize,
        upstream: Vec<UpstreamOutput>,
    },
    /// Step `index` ended (already recorded): tell the caller.
    Finished {
        index: usize,
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

/// Estimates what step `index` may use, given its dependencies' outputs.
pub(crate) type Estimator<'a> = Box<dyn Fn(usize, &[UpstreamOutput]) -> Estimate + Send + 'a>;

/// A run's budget as the scheduler sees it.
pub(crate) struct BudgetPlan<'a> {
    pub budget: Budget,
    pub estimate: Estimator<'a>,
    pub prices: &'a PriceTable,
}

/// A step's record while the run goes on.
#[derive(Clone, Debug)]
struct Entry {
    agent: String,
    outcome: Option<BranchOutcome>,
    started: Option<Duration>,
    ended: Duration,
    retries: u32,
    late: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepState {
    /// Waiting on this many unfinished dependencies.
    Waiting(usize),
    Running,
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
    agents: Vec<String>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    state: Vec<StepState>,
    records: Vec<Entry>,
    ok: usize,
    not_ok: usize,
    failure: Option<RunFailure>,
    budget: Option<(BudgetPlan<'a>, Ledger)>,
    soft: Soft,
    done: bool,
}

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
            agents: steps.iter().map(|s| s.agent.clone()).collect(),
            deps: steps.iter().map(|s| s.depends_on.clone()).collect(),
            dependents,
            state: steps
                .iter()
                .map(|s| StepState::Waiting(s.depends_on.len()))
                .collect(),
            records: steps
                .iter()
                .map(|s| Entry {
                    agent: s.agent.clone(),
                    outcome: None,
                    started: None,
                    ended: Duration::ZERO,
                    retries: 0,
                    late: false,
                })
                .collect(),
            ok: 0,
            not_ok: 0,
            failure: None,
            budget: budget.map(|b| (b, Ledger::default())),
            soft,
            done: false,
        }
    }

    /// Starts the run: dispatches every step with no dependency, in input order.
    pub(crate) fn start(&mut self, now: Duration) -> Vec<Command> {
        let ready: Vec<usize> = (0..self.state.len())
            .filter(|&i| self.state[i] == StepState::Waiting(0))
            .collect();
        let mut out = Vec::new();
        let mut ended = VecDeque::new();
        for i in ready {
            self.dispatch(i, now, &mut out, &mut ended);
        }
        self.drain(ended, now, &mut out);
        if self.state.is_empty() {
            self.finish_run(&mut out);
        }
        out
    }

    /// Step `index` ended with `outcome` after `retries` crash retries.
    pub(crate) fn ended(
        &mut self,
        index: usize,
        outcome: BranchOutcome,
        retries: u32,
        now: Duration,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        if self.done || self.state.get(index) != Some(&StepState::Running) {
            return out;
        }
        self.records[index].retries = retries;
        self.drain(VecDeque::from([(index, outcome)]), now, &mut out);
        out
    }

    /// The soft deadline's timer fired.
    pub(crate) fn soft_deadline_passed(&mut self, now: Duration) -> Vec<Command> {
        let mut out = Vec::new();
        if self.soft == Soft::Armed && !self.done {
            self.soft = Soft::Passed;
            self.maybe_merge_early(&mut out);
        }
        let _ = now;
        out
    }

    /// True while the soft deadline's timer should run.
    pub(crate) fn soft_deadline_armed(&self) -> bool {
        self.soft == Soft::Armed && !self.done
    }

    /// Each step's record, and why the run failed (`None`: it met its policy). Steps
    /// that never ended (the driver stopped early) end `Cancelled(CallerGone)`.
    pub(crate) fn into_verdict(self) -> (Vec<BranchRecord>, Option<RunFailure>) {
        let records = self
            .records
            .into_iter()
            .map(|r| BranchRecord {
                agent: r.agent,
                outcome: r.outcome.unwrap_or(BranchOutcome::Cancelled {
                    reason: CancelReason::CallerGone,
                }),
                started: r.started,
                ended: r.ended,
                retries: r.retries,
                late: r.late,
            })
            .collect();
        (records, self.failure)
    }

    fn dispatch(
        &mut self,
        i: usize,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<(usize, BranchOutcome)>,
    ) {
        let upstream: Vec<UpstreamOutput> = self.deps[i]
            .iter()
            .filter_map(|&d| {
                let r = &self.records[d];
                r.outcome
                    .as_ref()
                    .and_then(BranchOutcome::output)
                    .map(|o| UpstreamOutput {
                        agent: r.agent.clone(),
                        text: o.text.clone(),
                    })
            })
            .collect();
        self.state[i] = StepState::Running;
        if let Some((plan, ledger)) = &mut self.budget {
            let estimate = (plan.estimate)(i, &upstream);
            if let Err(reason) = ledger.reserve(&plan.budget, i, &estimate) {
                tracing::info!(branch = i, %reason, "refused by the run budget");
                ended.push_back((i, BranchOutcome::Refused { reason }));
                return;
            }
        }
        self.records[i].started = Some(now);
        out.push(Command::Dispatch { index: i, upstream });
    }

    /// Processes ended steps (and the refusals their consequences cause) in order.
    fn drain(
        &mut self,
        mut ended: VecDeque<(usize, BranchOutcome)>,
        now: Duration,
        out: &mut Vec<Command>,
    ) {
        while let Some((i, outcome)) = ended.pop_front() {
            if self.done {
                return;
            }
            let late = self.soft == Soft::Merged;
            if let Some((plan, ledger)) = &mut self.budget {
                ledger.settle(i, &outcome, plan.prices);
            }
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
                    self.dispatch(d, now, out, &mut ended);
                }
            } else {
                self.not_ok += 1;
                self.not_ok += self.cancel_dependents(i, now, out);
                let n = self.state.len();
                match self.policy {
                    Policy::FailFast => {
                        self.failure = Some(RunFailure::Branch {
                            index: i as u32,
                            agent: self.agents[i].clone(),
                            outcome: Box::new(outcome),
                        });
                        let reason = CancelReason::SiblingFailed {
                            index: i as u32,
                            agent: self.agents[i].clone(),
                        };
                        self.cancel_rest(reason, now, out);
                        self.finish_run(out);
                        return;
                    }
                    Policy::TolerantPartial { quorum } if n - self.not_ok < quorum => {
                        self.failure = Some(RunFailure::QuorumUnreachable {
                            quorum,
                            not_ok: self.not_ok,
                            of: n,
                        });
                        self.cancel_rest(CancelReason::QuorumUnreachable, now, out);
                        self.finish_run(out);
                        return;
                    }
                    Policy::TolerantPartial { .. } => {}
                }
            }
            self.maybe_merge_early(out);
            if self.state.iter().all(|s| *s == StepState::Done) {
                self.finish_run(out);
                return;
            }
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
                    agent: self.agents[i].clone(),
                };
                self.finish_step(d, BranchOutcome::Cancelled { reason }, now, false, out);
                count += 1;
                stack.extend(self.dependents[d].iter().copied());
            }
        }
        count
    }

    /// Ends every step not done yet with `Cancelled(reason)`.
    fn cancel_rest(&mut self, reason: CancelReason, now: Duration, out: &mut Vec<Command>) {
        for i in 0..self.state.len() {
            if self.state[i] != StepState::Done {
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
        let pending = self.state.iter().any(|s| *s != StepState::Done);
        if self.soft == Soft::Passed && pending && self.ok >= quorum {
            tracing::info!(
                ok = self.ok,
                "soft deadline: merging without the stragglers"
            );
            self.soft = Soft::Merged;
            let snapshot = self
                .records
                .iter()
                .map(|r| (r.agent.clone(), r.outcome.clone()))
                .collect();
            out.push(Command::MergeNow(snapshot));
        }
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
