//! The scheduler's driver: the thin async shell around [`Scheduler`]. It spawns a
//! task per dispatched branch into a `JoinSet` it owns, feeds each branch's end (and
//! the soft-deadline timer) to the scheduler, and carries out its commands: spawn,
//! send the event, hand the merge a snapshot, stop.
//!
//! Invariant: no branch outlives [`execute`]. Each call lives in the `JoinSet`; when
//! the scheduler says `Done`, or the future of `execute` is dropped (the caller gave
//! up), the set is dropped, which aborts the calls, whose guards send `Cancel` to
//! their specialists.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::branch::call_branch;
use super::budget::Estimate;
use super::outcome::{BranchError, BranchOutcome, DeadlineKind, RunEvent, RunFailure, Unavailable};
use super::record::BranchRecord;
use super::request::{Budget, Policy, Step};
use super::scheduler::{BudgetPlan, Command, Scheduler};
use crate::agent::{BranchId, CallEstimate, RunId, Task, UpstreamOutput};
use crate::provider::{estimate_tokens, PriceTable, Usage};
use crate::supervision::Roster;

/// A soft deadline: once it has passed and the quorum is met, the scheduler hands a
/// snapshot to `merge_now` (so synthesis can proceed without the stragglers) and keeps
/// running them; what they return later is marked late.
pub(crate) struct Defer {
    pub at: Instant,
    /// Each step's agent and outcome so far (`None`: still running).
    pub merge_now: oneshot::Sender<Vec<(String, Option<BranchOutcome>)>>,
}

/// Everything one run's branches need.
pub(crate) struct Schedule<'a> {
    pub run: RunId,
    pub input: &'a str,
    pub steps: &'a [Step],
    pub policy: Policy,
    pub started: Instant,
    pub deadline: Instant,
    pub branch_timeout: Duration,
    pub roster: &'a Roster,
    pub events: Option<&'a mpsc::UnboundedSender<RunEvent>>,
    pub crash_retries: u32,
    pub budget: Option<Budget>,
    pub prices: &'a PriceTable,
    /// The provider's default model, for steps whose agent names none.
    pub default_model: Option<&'a str>,
}

/// What one branch task returns: its step, outcome, end time and crash retries.
type Ended = (usize, BranchOutcome, Instant, u32);

/// How much earlier than the branch deadline the task's own deadline is: enough for
/// the specialist's answer to arrive first, a small share of a short branch.
fn handover(branch_time: Duration) -> Duration {
    (branch_time / 50).min(Duration::from_millis(25))
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What step `i` may use: its agent's own estimate of its call, or (for agents that
/// give none) the task's prompt plus the budget's `branch_tokens`; priced on the model
/// it names, else the provider's default.
fn estimate(s: &Schedule<'_>, budget: Budget, i: usize, upstream: &[UpstreamOutput]) -> Estimate {
    let task = Task {
        branch: BranchId {
            run: s.run,
            index: i as u32,
        },
        input: s.input.to_owned(),
        upstream: upstream.to_vec(),
        deadline: None,
    };
    let call = s
        .roster
        .estimate(&s.steps[i].agent, &task)
        .unwrap_or_else(|| CallEstimate {
            model: None,
            input_tokens: estimate_tokens(&task.prompt()),
            max_output_tokens: budget.branch_tokens,
        });
    let model = call.model.or_else(|| s.default_model.map(str::to_owned));
    let usage = Usage {
        input_tokens: call.input_tokens,
        output_tokens: call.max_output_tokens,
        ..Usage::default()
    };
    Estimate {
        tokens: usage.total(),
        cost_usd: model.as_deref().and_then(|m| s.prices.cost(m, &usage)),
        model,
    }
}

/// Runs every step to a terminal outcome under `s.policy`; see the module docs.
pub(crate) async fn execute(
    s: Schedule<'_>,
    mut defer: Option<Defer>,
) -> (Vec<BranchRecord>, Option<RunFailure>) {
    let plan = &s;
    let budget = s.budget.map(|budget| BudgetPlan {
        budget,
        estimate: Box::new(move |i, upstream: &[_]| estimate(plan, budget, i, upstream)),
        prices: s.prices,
    });
    let mut machine = Scheduler::new(s.steps, s.policy, budget, defer.is_some());
    let since = |at: Instant| at.saturating_duration_since(s.started);
    let mut set: JoinSet<Ended> = JoinSet::new();
    let mut running = HashMap::new();
    let mut commands: VecDeque<Command> = machine.start(since(Instant::now())).into();
    'run: loop {
        while let Some(command) = commands.pop_front() {
            match command {
                Command::Dispatch { index, upstream } => {
                    let now = Instant::now();
                    let (deadline, kind) = match now.checked_add(s.branch_timeout) {
                        Some(d) if d < s.deadline => (d, DeadlineKind::Branch),
                        _ => (s.deadline, DeadlineKind::Run),
                    };
                    let agent = s.steps[index].agent.clone();
                    let slot = s.roster.watch(&agent);
                    let task = Task {
                        branch: BranchId {
                            run: s.run,
                            index: index as u32,
                        },
                        input: s.input.to_owned(),
                        upstream,
                        // A hair before the branch deadline, so that a model call cut
                        // by it reports what it was doing before the branch gives up.
                        deadline: Some(deadline - handover(deadline - now)),
                    };
                    let crash_retries = s.crash_retries;
                    let handle = set.spawn(async move {
                        let (outcome, retries) =
                            call_branch(agent, slot, task, deadline, kind, crash_retries).await;
                        (index, outcome, Instant::now(), retries)
                    });
                    running.insert(handle.id(), index);
                }
                Command::Finished {
                    index,
                    outcome,
                    at,
                    late,
                } => {
                    if let Some(events) = s.events {
                        let _ = events.send(RunEvent::BranchFinished {
                            run: s.run,
                            index: index as u32,
                            agent: s.steps[index].agent.clone(),
                            outcome,
                            at,
                            late,
                        });
                    }
                }
                Command::MergeNow(snapshot) => {
                    if let Some(d) = defer.take() {
                        let _ = d.merge_now.send(snapshot);
                    }
                }
                Command::Done => break 'run,
            }
        }
        // Arm the soft-deadline timer only before it passes: afterwards, deferral is
        // decided as branches end (re-arming a past timer would spin).
        let soft = defer
            .as_ref()
            .map(|d| d.at)
            .filter(|_| machine.soft_deadline_armed());
        tokio::select! {
            joined = set.join_next_with_id() => match joined {
                // Nothing runs and the scheduler is not done: cannot happen, but a
                // loop with nothing to wait for must not spin.
                None => break 'run,
                Some(Ok((_, (index, outcome, ended, retries)))) => {
                    commands.extend(machine.ended(index, outcome, retries, since(ended)));
                }
                Some(Err(e)) => {
                    // The branch future itself panicked: still one outcome for that step.
                    if let Some(&index) = running.get(&e.id()) {
                        let error = BranchError::SpecialistUnavailable {
                            agent: s.steps[index].agent.clone(),
                            reason: Unavailable::BranchTaskPanicked,
                        };
                        let outcome = BranchOutcome::Failed { error };
                        commands.extend(machine.ended(index, outcome, 0, since(Instant::now())));
                    }
                }
            },
            () = sleep_until_opt(soft) => {
                commands.extend(machine.soft_deadline_passed(since(Instant::now())));
            }
        }
    }
    // Dropping the set aborts whatever still runs; their guards send Cancel. Every
    // such branch already has its terminal record from the scheduler.
    drop(set);
    machine.into_verdict()
}
