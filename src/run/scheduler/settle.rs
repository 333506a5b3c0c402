//! What comes back: each ended branch is retried, or recorded as its step's (or
//! map item's) end; a map step is decided by its items; a step's end releases its
//! dependents or, failed, cancels them and asks the policy whether the run is over;
//! the soft deadline's early merge; the run's end.

use std::collections::VecDeque;
use std::time::Duration;

use super::map;
use super::{Command, Ended, Scheduler, Soft, StepState};
use crate::agent::AgentOutput;
use crate::run::outcome::{BranchError, BranchOutcome, CancelReason, RunFailure};
use crate::run::policy::Policy;

impl Scheduler<'_> {
    /// Processes ended branches (and the refusals their consequences cause) in order.
    pub(super) fn drain(
        &mut self,
        mut ended: VecDeque<Ended>,
        now: Duration,
        out: &mut Vec<Command>,
    ) {
        while let Some((i, item, outcome)) = ended.pop_front() {
            if self.done {
                return;
            }
            if let Some((plan, ledger)) = &mut self.budget {
                ledger.settle((i, item), &outcome, plan.prices);
            }
            let retriable = outcome.retriable();
            if retriable && self.entry(i, item).reruns < self.retries[i] {
                let (attempts, usage) = outcome.spent();
                let entry = self.entry(i, item);
                entry.reruns += 1;
                // Its attempt was paid for: the report counts it.
                entry.earlier.0 = entry.earlier.0.saturating_add(attempts);
                entry.earlier.1 += usage;
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

    pub(super) fn finish_item(
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
        e.outcome = Some(outcome);
        e.ended = now;
        e.late = late;
        out.push(Command::Finished {
            index: i,
            item: Some(k),
            at: now,
            late,
        });
    }

    /// If map step `i`'s items have decided it, ends it (cancelling what is left).
    pub(super) fn settle_map(
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
    pub(super) fn aggregate(&self, i: usize) -> AgentOutput {
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
    pub(super) fn step_ended(
        &mut self,
        i: usize,
        outcome: BranchOutcome,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        let late = self.soft == Soft::Merged;
        let succeeded = outcome.is_ok();
        // The record keeps the outcome; only a fail-fast failure also needs a copy
        // (it says why the run failed). Copying it for every branch copied every
        // answer's text once more.
        let fails_run = match self.policy {
            Policy::FailFast if !succeeded => Some(RunFailure::Branch {
                index: i as u32,
                agent: self.names[i].clone(),
                outcome: Box::new(outcome.clone()),
            }),
            _ => None,
        };
        self.finish_step(i, outcome, now, late, out);
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
                self.failure = fails_run;
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

    pub(super) fn finish_step(
        &mut self,
        i: usize,
        outcome: BranchOutcome,
        now: Duration,
        late: bool,
        out: &mut Vec<Command>,
    ) {
        self.state[i] = StepState::Done;
        let r = &mut self.records[i];
        r.outcome = Some(outcome);
        r.ended = now;
        r.late = late;
        out.push(Command::Finished {
            index: i,
            item: None,
            at: now,
            late,
        });
    }

    /// Cancels, transitively, every step waiting on step `i`; returns how many.
    pub(super) fn cancel_dependents(
        &mut self,
        i: usize,
        now: Duration,
        out: &mut Vec<Command>,
    ) -> usize {
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
    pub(super) fn cancel_rest(
        &mut self,
        reason: CancelReason,
        now: Duration,
        out: &mut Vec<Command>,
    ) {
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
    pub(super) fn maybe_merge_early(&mut self, out: &mut Vec<Command>) {
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
    pub(super) fn all_done(&mut self) -> bool {
        while self
            .state
            .get(self.done_prefix)
            .is_some_and(|s| matches!(s, StepState::Done))
        {
            self.done_prefix += 1;
        }
        self.done_prefix == self.state.len()
    }

    pub(super) fn finish_run(&mut self, out: &mut Vec<Command>) {
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
