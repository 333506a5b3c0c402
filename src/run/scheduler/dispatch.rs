//! What goes out: a step whose dependencies have succeeded is dispatched (or, for a
//! map step, expanded), each branch after reserving its estimate from the budget,
//! and a map step's items up to its concurrency.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{Command, Ended, Scheduler, StepState};
use crate::agent::UpstreamOutput;
use crate::run::budget::BranchKey;
use crate::run::outcome::{BranchOutcome, DeadlineKind};

impl Scheduler<'_> {
    /// The outputs of step `i`'s dependencies.
    pub(super) fn upstream(&self, i: usize) -> Arc<[UpstreamOutput]> {
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
    pub(super) fn begin(
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
    pub(super) fn send(
        &mut self,
        index: usize,
        item: Option<usize>,
        upstream: Arc<[UpstreamOutput]>,
        now: Duration,
        out: &mut Vec<Command>,
        ended: &mut VecDeque<Ended>,
    ) {
        if self.deadline.is_some_and(|d| now >= d) {
            // Past the run's deadline it could only time out: it ends so, unstarted.
            let outcome = BranchOutcome::TimedOut {
                deadline: DeadlineKind::Run,
                last_error: None,
                partial: None,
            };
            ended.push_back((index, item, outcome));
            return;
        }
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
    pub(super) fn fill(
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
}
