//! The scheduling core: run a set of steps (a DAG) against the roster under a policy.
//!
//! A plain fan-out is the one-level case: every step is ready at once. A step that
//! depends on others is dispatched when they have all succeeded and receives their
//! outputs; if one of them does not succeed, it ends `Cancelled(UpstreamFailed)`.
//! Independent chains run concurrently; only dependencies serialise.
//!
//! Invariants:
//! - every step ends with exactly one [`BranchOutcome`], emitted once as an event and
//!   recorded once in the result, whatever the policy decides;
//! - no branch outlives the call to [`execute`]: each in-flight call lives in a
//!   `JoinSet` owned here, and dropping a call (policy decision, deadline, the
//!   caller's future being dropped) sends `Cancel` to its specialist through a guard,
//!   so the specialist aborts the model call;
//! - no step ends later than the run deadline.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use crate::agent::{AgentError, AgentMsg, AgentReply};
use crate::orchestrator::Budget;
use crate::orchestrator::{Policy, Step};
use crate::outcome::{
    BranchError, BranchOutcome, CancelReason, DeadlineKind, RefusalReason, RunEvent,
};
use crate::pricing::PriceTable;
use crate::provider::estimate_tokens;
use crate::supervisor::{Roster, Slot};
use crate::task::{BranchId, RunId, Task, UpstreamOutput};

/// One finished step, as the scheduler saw it.
#[derive(Clone, Debug)]
pub(crate) struct BranchRecord {
    pub agent: String,
    pub outcome: BranchOutcome,
    /// Dispatch time since the run started; `None` if it was never dispatched.
    pub started: Option<Duration>,
    pub ended: Duration,
    /// Retries after the specialist crashed under this branch.
    pub retries: u32,
    /// Ended after the run had already merged without it (a deferred straggler).
    pub late: bool,
}

/// A soft deadline: once it has passed and the quorum is met, the scheduler hands
/// a snapshot to `merge_now` (so synthesis can proceed without the stragglers) and
/// keeps running them; what they return later is marked late.
pub(crate) struct Defer {
    pub at: Instant,
    /// Each step's agent and outcome so far (`None`: still running).
    pub merge_now: tokio::sync::oneshot::Sender<Vec<(String, Option<BranchOutcome>)>>,
}

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
}

/// What a run has spent and has reserved for branches in flight.
#[derive(Default)]
struct Ledger {
    spent_tokens: u64,
    spent_cost: f64,
    reserved_tokens: u64,
    reserved_cost: f64,
    /// Per running step: its reservation.
    held: std::collections::HashMap<usize, (u64, f64)>,
}

impl Ledger {
    /// Reserves a branch's estimate, or says why the budget cannot cover it.
    fn reserve(&mut self, budget: &Budget, i: usize, tokens: u64) -> Result<(), RefusalReason> {
        // Cost per token seen so far prices the estimate; before any answer it is
        // unknown (0), so the first wave goes out and the overspend is bounded by the
        // calls in flight.
        let per_token = if self.spent_tokens > 0 {
            self.spent_cost / self.spent_tokens as f64
        } else {
            0.0
        };
        let cost = tokens as f64 * per_token;
        if let Some(cap) = budget.max_tokens {
            let committed = self.spent_tokens + self.reserved_tokens;
            if committed.saturating_add(tokens) > cap {
                return Err(RefusalReason::TokenBudget {
                    cap,
                    committed,
                    needed: tokens,
                });
            }
        }
        if let Some(cap) = budget.max_cost_usd {
            let committed = self.spent_cost + self.reserved_cost;
            if committed >= cap || committed + cost > cap {
                return Err(RefusalReason::CostBudget {
                    cap_usd: cap,
                    committed_usd: committed,
                });
            }
        }
        self.reserved_tokens += tokens;
        self.reserved_cost += cost;
        self.held.insert(i, (tokens, cost));
        Ok(())
    }

    /// Releases step `i`'s reservation and books what it actually used.
    fn settle(&mut self, i: usize, outcome: &BranchOutcome, prices: &PriceTable) {
        if let Some((tokens, cost)) = self.held.remove(&i) {
            self.reserved_tokens -= tokens;
            self.reserved_cost -= cost;
        }
        if let Some(out) = outcome.output() {
            self.spent_tokens += out.usage.total();
            if let Some(c) = out
                .model
                .as_deref()
                .and_then(|m| prices.cost(m, &out.usage))
            {
                self.spent_cost += c;
            }
        }
    }
}

/// What the policy concluded.
pub(crate) struct Verdict {
    pub records: Vec<BranchRecord>,
    /// `None` if the run's branches succeeded under the policy; else why not.
    pub failure: Option<String>,
}

/// Sends `Cancel` to the specialist unless disarmed: dropping an unfinished call
/// (deadline, policy, caller gone) must stop the work behind it.
struct CancelOnDrop {
    actor: Option<ActorRef<AgentMsg>>,
    branch: BranchId,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.actor = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(actor) = self.actor.take() {
            let _ = actor.cast(AgentMsg::Cancel(self.branch));
        }
    }
}

/// Runs one branch: resolve the agent, call it with the branch deadline, map the
/// result to an outcome. If the actor it finds has just died (or is restarting),
/// waits for the supervisor to publish its replacement (within the deadline) and
/// tries that one. With `crash_retries`, a branch whose specialist crashed under it
/// (a panic, or killed with a crashing sibling) is retried on the restarted actor.
/// Returns the outcome and how many such retries it took.
async fn call_branch(
    agent: String,
    slot: Option<watch::Receiver<Slot>>,
    task: Task,
    deadline: Instant,
    deadline_kind: DeadlineKind,
    crash_retries: u32,
) -> (BranchOutcome, u32) {
    let Some(mut slot) = slot else {
        let error = BranchError::SpecialistUnavailable {
            agent,
            reason: "no specialist has this name".to_owned(),
        };
        return (BranchOutcome::Failed { error }, 0);
    };
    let mut retried = 0;
    loop {
        let current = slot.borrow_and_update().clone();
        let actor = match current {
            Slot::Down { reason } => {
                let error = BranchError::SpecialistUnavailable { agent, reason };
                return (BranchOutcome::Failed { error }, retried);
            }
            Slot::Restarting { .. } => None,
            Slot::Up { actor, .. } => Some(actor),
        };
        let crashed = match actor {
            None => None,
            Some(actor) => {
                let mut guard = CancelOnDrop {
                    actor: Some(actor.clone()),
                    branch: task.branch,
                };
                let call = actor.call(
                    |reply| AgentMsg::Run {
                        task: task.clone(),
                        reply,
                    },
                    None,
                );
                let result: Result<Result<CallResult<AgentReply>, _>, _> =
                    timeout_at(deadline, call).await;
                match result {
                    Err(_) | Ok(Ok(CallResult::Timeout)) => {
                        return (
                            BranchOutcome::TimedOut {
                                deadline: deadline_kind,
                            },
                            retried,
                        )
                    }
                    Ok(Ok(CallResult::Success(reply))) => {
                        guard.disarm();
                        match reply {
                            Ok(output) => return (BranchOutcome::Ok(output), retried),
                            // Not taken: the specialist is retiring. Wait for its
                            // replacement, as if the task had not been delivered.
                            Err(AgentError::Retiring) => None,
                            Err(error @ AgentError::Panicked { .. }) => {
                                Some(BranchOutcome::Failed {
                                    error: BranchError::Agent(error),
                                })
                            }
                            Err(error) => {
                                let error = BranchError::Agent(error);
                                return (BranchOutcome::Failed { error }, retried);
                            }
                        }
                    }
                    Ok(Ok(CallResult::SenderError)) => {
                        guard.disarm();
                        Some(BranchOutcome::Failed {
                            error: BranchError::SpecialistDied {
                                agent: agent.clone(),
                            },
                        })
                    }
                    // Not delivered: the actor is gone before it saw the task. Not a
                    // retry; the supervisor will publish a replacement or mark it down.
                    Ok(Err(_not_delivered)) => {
                        guard.disarm();
                        None
                    }
                }
            }
        };
        if let Some(outcome) = crashed {
            if retried >= crash_retries {
                return (outcome, retried);
            }
            retried += 1;
        }
        // Wait for the supervisor's next word on this specialist.
        match timeout_at(deadline, slot.changed()).await {
            Err(_elapsed) => {
                return (
                    BranchOutcome::TimedOut {
                        deadline: deadline_kind,
                    },
                    retried,
                )
            }
            Ok(Err(_closed)) => {
                let error = BranchError::SpecialistUnavailable {
                    agent,
                    reason: "the supervisor is gone".to_owned(),
                };
                return (BranchOutcome::Failed { error }, retried);
            }
            Ok(Ok(())) => {}
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

enum State {
    /// Waiting on this many unfinished dependencies.
    Waiting(usize),
    Running,
    Done,
}

/// Runs every step to a terminal outcome under `s.policy`. See the module docs.
pub(crate) async fn execute(s: Schedule<'_>, mut defer: Option<Defer>) -> Verdict {
    let n = s.steps.len();
    let mut records: Vec<Option<BranchRecord>> = vec![None; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut state: Vec<State> = Vec::with_capacity(n);
    for (i, step) in s.steps.iter().enumerate() {
        for &d in &step.depends_on {
            dependents[d].push(i);
        }
        state.push(State::Waiting(step.depends_on.len()));
    }
    let mut set: JoinSet<(usize, BranchOutcome, Instant, u32)> = JoinSet::new();
    let mut running_ids = std::collections::HashMap::new();
    let mut ok = 0usize;
    let mut not_ok = 0usize;
    let mut failure: Option<String> = None;

    let mut ready: Vec<usize> = (0..n)
        .filter(|&i| s.steps[i].depends_on.is_empty())
        .collect();
    let mut ledger = Ledger::default();
    let mut late = false;
    let mut finished: std::collections::VecDeque<(usize, BranchOutcome, Instant, u32)> =
        std::collections::VecDeque::new();
    loop {
        // Dispatch everything that is ready, in input order.
        for i in ready.drain(..) {
            let step = &s.steps[i];
            let upstream = step
                .depends_on
                .iter()
                .filter_map(|&d| records[d].as_ref())
                .filter_map(|r| {
                    r.outcome.output().map(|o| UpstreamOutput {
                        agent: r.agent.clone(),
                        text: o.text.clone(),
                    })
                })
                .collect();
            let branch = BranchId {
                run: s.run,
                index: i as u32,
            };
            let task = Task {
                branch,
                input: s.input.to_owned(),
                upstream,
            };
            let now = Instant::now();
            if let Some(budget) = &s.budget {
                let estimate = estimate_tokens(&task.prompt()).saturating_add(budget.branch_tokens);
                if let Err(reason) = ledger.reserve(budget, i, estimate) {
                    tracing::info!(branch = i, %reason, "refused by the run budget");
                    finished.push_back((i, BranchOutcome::Refused { reason }, now, 0));
                    continue;
                }
            }
            let (deadline, kind) = match now.checked_add(s.branch_timeout) {
                Some(d) if d < s.deadline => (d, DeadlineKind::Branch),
                _ => (s.deadline, DeadlineKind::Run),
            };
            let agent = step.agent.clone();
            let slot = s.roster.watch(&agent);
            state[i] = State::Running;
            records[i] = Some(BranchRecord {
                agent: agent.clone(),
                outcome: BranchOutcome::Cancelled {
                    reason: CancelReason::CallerGone,
                },
                started: Some(now - s.started),
                ended: Duration::ZERO,
                retries: 0,
                late: false,
            });
            let crash_retries = s.crash_retries;
            let handle = set.spawn(async move {
                let (outcome, retries) =
                    call_branch(agent, slot, task, deadline, kind, crash_retries).await;
                (i, outcome, Instant::now(), retries)
            });
            running_ids.insert(handle.id(), i);
        }

        // Soft deadline passed and the quorum met: merge now, keep the stragglers.
        if let (Some(d), Policy::TolerantPartial { quorum }) = (&defer, s.policy) {
            let pending = state.iter().any(|st| !matches!(st, State::Done));
            if pending && ok >= quorum && Instant::now() >= d.at {
                let snapshot = state
                    .iter()
                    .zip(&records)
                    .enumerate()
                    .map(|(i, (st, r))| {
                        let done = matches!(st, State::Done);
                        let outcome = r.as_ref().filter(|_| done).map(|r| r.outcome.clone());
                        (s.steps[i].agent.clone(), outcome)
                    })
                    .collect();
                if let Some(d) = defer.take() {
                    tracing::info!(ok, "soft deadline: merging without the stragglers");
                    let _ = d.merge_now.send(snapshot);
                    late = true;
                }
            }
        }
        // Arm the soft-deadline timer only before it passes: afterwards, deferral is
        // decided as branches end (re-arming a past timer would spin).
        let soft = defer
            .as_ref()
            .map(|d| d.at)
            .filter(|at| *at > Instant::now());
        let (i, outcome, ended, retries) = match finished.pop_front() {
            Some(refused) => refused,
            None => match tokio::select! {
                joined = set.join_next_with_id() => Some(joined),
                () = sleep_until_opt(soft) => None,
            } {
                None => continue,
                Some(joined) => match joined {
                    None => break,
                    Some(Ok((_, result))) => result,
                    Some(Err(e)) => {
                        // The branch future itself panicked: still one outcome for that step.
                        let Some(&i) = running_ids.get(&e.id()) else {
                            continue;
                        };
                        let message = if e.is_panic() {
                            "branch task panicked"
                        } else {
                            "branch task aborted"
                        };
                        let error = BranchError::SpecialistUnavailable {
                            agent: s.steps[i].agent.clone(),
                            reason: message.to_owned(),
                        };
                        (i, BranchOutcome::Failed { error }, Instant::now(), 0)
                    }
                },
            },
        };
        let succeeded = outcome.is_ok();
        ledger.settle(i, &outcome, s.prices);
        finish(
            &s,
            &mut records,
            &mut state,
            i,
            outcome,
            ended - s.started,
            late,
        );
        if let Some(r) = records[i].as_mut() {
            r.retries = retries;
        }
        if succeeded {
            ok += 1;
            for &d in &dependents[i] {
                if let State::Waiting(k) = &mut state[d] {
                    *k -= 1;
                    if *k == 0 {
                        ready.push(d);
                    }
                }
            }
            ready.sort_unstable();
        } else {
            not_ok += 1;
            let agent = s.steps[i].agent.clone();
            not_ok += cancel_dependents(&s, &mut records, &mut state, &dependents, i, &agent);
            match s.policy {
                Policy::FailFast => {
                    let problem = records[i]
                        .as_ref()
                        .and_then(|r| r.outcome.problem())
                        .unwrap_or_default();
                    failure = Some(format!("branch {i} ({agent}) {problem}"));
                    let reason = CancelReason::SiblingFailed {
                        index: i as u32,
                        agent,
                    };
                    cancel_rest(&s, &mut records, &mut state, reason);
                    break;
                }
                Policy::TolerantPartial { quorum } => {
                    if n - not_ok < quorum {
                        failure = Some(format!(
                            "quorum {quorum} unreachable: {not_ok} of {n} branches did not succeed"
                        ));
                        cancel_rest(
                            &s,
                            &mut records,
                            &mut state,
                            CancelReason::QuorumUnreachable,
                        );
                        break;
                    }
                }
            }
        }
    }
    // Dropping the set aborts whatever still runs; their guards send Cancel. Every
    // such branch already has its terminal record from `cancel_rest`.
    drop(set);
    let records: Vec<BranchRecord> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| BranchRecord {
                agent: s.steps[i].agent.clone(),
                outcome: BranchOutcome::Cancelled {
                    reason: CancelReason::CallerGone,
                },
                started: None,
                ended: Instant::now() - s.started,
                retries: 0,
                late: false,
            })
        })
        .collect();
    if failure.is_none() {
        if let Policy::TolerantPartial { quorum } = s.policy {
            if ok < quorum {
                failure = Some(format!(
                    "quorum {quorum} not met: {ok} of {n} branches succeeded"
                ));
            }
        }
    }
    Verdict { records, failure }
}

/// Records a terminal outcome for step `i` and emits its event.
fn finish(
    s: &Schedule<'_>,
    records: &mut [Option<BranchRecord>],
    state: &mut [State],
    i: usize,
    outcome: BranchOutcome,
    at: Duration,
    late: bool,
) {
    state[i] = State::Done;
    let agent = s.steps[i].agent.clone();
    if let Some(events) = s.events {
        let _ = events.send(RunEvent::BranchFinished {
            run: s.run,
            index: i as u32,
            agent: agent.clone(),
            outcome: outcome.clone(),
            at,
            late,
        });
    }
    let started = records[i].as_ref().and_then(|r| r.started);
    records[i] = Some(BranchRecord {
        agent,
        outcome,
        started,
        ended: at,
        retries: 0,
        late,
    });
}

/// Cancels, transitively, every step waiting on step `i`; returns how many.
fn cancel_dependents(
    s: &Schedule<'_>,
    records: &mut [Option<BranchRecord>],
    state: &mut [State],
    dependents: &[Vec<usize>],
    i: usize,
    agent: &str,
) -> usize {
    let mut count = 0;
    let mut stack = dependents[i].clone();
    let now = Instant::now() - s.started;
    while let Some(d) = stack.pop() {
        if matches!(state[d], State::Waiting(_)) {
            let reason = CancelReason::UpstreamFailed {
                agent: agent.to_owned(),
            };
            finish(
                s,
                records,
                state,
                d,
                BranchOutcome::Cancelled { reason },
                now,
                false,
            );
            count += 1;
            stack.extend(dependents[d].iter().copied());
        }
    }
    count
}

/// Ends every step that is not done yet with `Cancelled(reason)`.
fn cancel_rest(
    s: &Schedule<'_>,
    records: &mut [Option<BranchRecord>],
    state: &mut [State],
    reason: CancelReason,
) {
    let now = Instant::now() - s.started;
    for i in 0..state.len() {
        if !matches!(state[i], State::Done) {
            let outcome = BranchOutcome::Cancelled {
                reason: reason.clone(),
            };
            finish(s, records, state, i, outcome, now, false);
        }
    }
}
