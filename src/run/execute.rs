//! The scheduler's driver: the thin async shell around [`Scheduler`]. It spawns a
//! task per dispatched branch into a `JoinSet` it owns (an agent's call, or a code
//! function on the blocking pool), builds each branch's input (its template, or the
//! run's input and upstream outputs), finds a map step's items, feeds each branch's
//! end (and the soft-deadline timer) to the scheduler, and carries out its commands.
//!
//! Invariant: no branch outlives [`execute`]. Each call lives in the `JoinSet`; when
//! the scheduler says `Done`, or the future of `execute` is dropped (the caller gave
//! up), the set is dropped, which aborts the calls, whose guards send `Cancel` to
//! their specialists. A map item the scheduler cancels is aborted at once.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::branch::call_branch;
use super::budget::Estimate;
use super::code::{CodeInput, CodeRegistry, Conflict};
use super::outcome::{BranchError, BranchOutcome, DeadlineKind, RunEvent, RunFailure, Unavailable};
use super::policy::Policy;
use super::record::BranchRecord;
use super::request::{Budget, Reuse};
use super::scheduler::{BudgetPlan, Command, Scheduler};
use super::step::{Action, MapSource, Step};
use super::warm::{Go, Held, Warm};
use crate::agent::{AgentOutput, BranchId, CallEstimate, RunId, Task, UpstreamOutput};
use crate::provider::{estimate_tokens, Delta, DeltaSink, PriceTable, Usage};
use crate::supervision::Roster;

/// A soft deadline: once it has passed and the quorum is met, the scheduler hands a
/// snapshot to `merge_now` (so synthesis can proceed without the stragglers) and keeps
/// running them; what they return later is marked late.
pub(crate) struct Defer {
    pub at: Instant,
    /// Each step's name and outcome so far (`None`: still running).
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
    pub code: &'a CodeRegistry,
    pub events: Option<&'a mpsc::UnboundedSender<RunEvent>>,
    pub crash_retries: u32,
    pub budget: Option<Budget>,
    pub prices: &'a PriceTable,
    /// The provider's default model, for steps whose agent names none.
    pub default_model: Option<&'a str>,
    /// Outputs from an earlier attempt at this run, taken instead of calling.
    pub reuse: &'a [Reuse],
    /// Send the first agent branch alone until its answer starts (see `warm`).
    pub cache_warm: bool,
}

/// What one branch task returns.
struct Ended {
    index: usize,
    item: Option<usize>,
    outcome: BranchOutcome,
    at: Instant,
    retries: u32,
    conflicts: Vec<Conflict>,
}

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

/// A map step's items from an upstream output: its items if it was a map, else a
/// JSON array (strings as they are, anything else as JSON), else its non-empty lines.
fn items_of(upstream: &UpstreamOutput) -> Vec<String> {
    if !upstream.items.is_empty() {
        return upstream.items.clone();
    }
    if let Ok(serde_json::Value::Array(values)) = serde_json::from_str(upstream.text.trim()) {
        return values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
    }
    upstream
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The driver's view of one run; see the module docs.
struct Driver<'s, 'a> {
    s: &'s Schedule<'a>,
    /// Each map step's items, once found.
    items: HashMap<usize, Vec<String>>,
}

impl Driver<'_, '_> {
    /// The task a branch of step `index` (item `item`) gets.
    fn task(&self, index: usize, item: Option<usize>, upstream: &[UpstreamOutput]) -> Task {
        let step = &self.s.steps[index];
        let item_text = item.and_then(|k| self.items.get(&index)?.get(k).cloned());
        let (input, templated) = match (&step.input, &item_text) {
            (Some(t), _) => {
                let rendered = t.render(self.s.input, item.zip(item_text.as_deref()), |name| {
                    upstream
                        .iter()
                        .find(|u| u.agent == name)
                        .map(|u| u.text.clone())
                });
                (rendered, true)
            }
            (None, Some(text)) => (text.clone(), true),
            (None, None) => (self.s.input.to_owned(), false),
        };
        Task {
            branch: BranchId {
                run: self.s.run,
                index: index as u32,
                item: item.map(|k| k as u32),
            },
            input,
            upstream: upstream.to_vec(),
            model: step.model.clone(),
            templated,
            schema: step.schema.clone(),
            deadline: None,
            deltas: None,
        }
    }

    /// What a branch may use: its agent's own estimate of its call, or (for agents that
    /// give none) the task's prompt plus the budget's `branch_tokens`; priced on the
    /// model it names, else the provider's default. A code step uses nothing.
    fn estimate(
        &self,
        budget: Budget,
        index: usize,
        item: Option<usize>,
        upstream: &[UpstreamOutput],
    ) -> Estimate {
        let step = &self.s.steps[index];
        let Some(agent) = step.agent_name() else {
            return Estimate {
                tokens: 0,
                model: None,
                cost_usd: Some(0.0),
            };
        };
        let task = self.task(index, item, upstream);
        let call = self
            .s
            .roster
            .estimate(agent, &task)
            .unwrap_or_else(|| CallEstimate {
                model: task.model.clone(),
                input_tokens: estimate_tokens(&task.prompt()),
                max_output_tokens: budget.branch_tokens,
            });
        let model = call
            .model
            .or_else(|| self.s.default_model.map(str::to_owned));
        let usage = Usage {
            input_tokens: call.input_tokens,
            output_tokens: call.max_output_tokens,
            ..Usage::default()
        };
        Estimate {
            tokens: usage.total(),
            cost_usd: model.as_deref().and_then(|m| self.s.prices.cost(m, &usage)),
            model,
        }
    }
}

/// Runs every step to a terminal outcome under `s.policy`; see the module docs.
pub(crate) async fn execute(
    s: Schedule<'_>,
    mut defer: Option<Defer>,
) -> (Vec<BranchRecord>, Option<RunFailure>) {
    let mut driver = Driver {
        s: &s,
        items: HashMap::new(),
    };
    // The estimator needs the items found so far; it reads them through a snapshot
    // kept in step with the driver's (items are only added, at expansion).
    let found: std::sync::Arc<std::sync::Mutex<HashMap<usize, Vec<String>>>> = Default::default();
    let seen = found.clone();
    let plan = &s;
    let budget = s.budget.map(|budget| BudgetPlan {
        budget,
        estimate: Box::new(move |i, item, upstream: &[_]| {
            let items = seen.lock().map(|m| m.clone()).unwrap_or_default();
            Driver { s: plan, items }.estimate(budget, i, item, upstream)
        }),
        prices: s.prices,
    });
    let mut machine = Scheduler::new(s.steps, s.policy, budget, defer.is_some());
    let since = |at: Instant| at.saturating_duration_since(s.started);
    let mut live = Launched::default();
    let mut conflicts: HashMap<usize, Vec<Conflict>> = HashMap::new();
    let mut warm = Warm::new(s.cache_warm);
    let mut warm_signal: Option<oneshot::Receiver<()>> = None;
    let mut release: Vec<Held> = Vec::new();
    let mut held_until: Vec<(usize, Option<usize>, Duration)> = Vec::new();
    let mut commands: VecDeque<Command> = machine.start(since(Instant::now())).into();
    'run: loop {
        for h in release.drain(..) {
            live.launch(&driver, h.index, h.item, &h.upstream, None);
            // It was held: it started now, not when the scheduler dispatched it.
            held_until.push((h.index, h.item, since(Instant::now())));
        }
        while let Some(command) = commands.pop_front() {
            match command {
                Command::Dispatch {
                    index,
                    item,
                    upstream,
                } => {
                    let calls =
                        s.steps[index].agent_name().is_some() && !live.reuses(&s, index, item);
                    let go = if calls {
                        warm.dispatch(index, item, &upstream)
                    } else {
                        Go::Now
                    };
                    match go {
                        Go::Now => live.launch(&driver, index, item, &upstream, None),
                        Go::First => {
                            let (tx, rx) = oneshot::channel();
                            warm_signal = Some(rx);
                            live.launch(&driver, index, item, &upstream, Some(first_text(tx)));
                        }
                        Go::Held => {}
                    }
                }
                Command::Expand { index, upstream } => {
                    let items = match s.steps[index].map.as_ref().map(|m| &m.over) {
                        Some(MapSource::Items(items)) => items.clone(),
                        Some(MapSource::Step(from)) => upstream
                            .iter()
                            .find(|u| u.agent == s.steps[*from].name)
                            .map(items_of)
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    let count = items.len();
                    if let Ok(mut f) = found.lock() {
                        f.insert(index, items.clone());
                    }
                    driver.items.insert(index, items);
                    commands.extend(machine.expanded(index, count, since(Instant::now())));
                }
                Command::Abort { index, item } => {
                    if !warm.abort(index, Some(item)) {
                        if let Some(h) = live.handles.remove(&(index, Some(item))) {
                            h.abort();
                        }
                    }
                }
                Command::Finished {
                    index,
                    item,
                    outcome,
                    at,
                    late,
                } => {
                    live.handles.remove(&(index, item));
                    if let Some(events) = s.events {
                        let _ = events.send(RunEvent::BranchFinished {
                            run: s.run,
                            index: index as u32,
                            item: item.map(|k| k as u32),
                            agent: s.steps[index].name.clone(),
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
            joined = live.set.join_next_with_id() => match joined {
                // Nothing runs and the scheduler is not done: cannot happen, but a
                // loop with nothing to wait for must not spin.
                None => break 'run,
                Some(Ok((_, ended))) => {
                    if !ended.conflicts.is_empty() {
                        conflicts.entry(ended.index).or_default().extend(ended.conflicts);
                    }
                    let at = since(ended.at);
                    release.extend(warm.ended(ended.index, ended.item));
                    commands.extend(machine.ended(ended.index, ended.item, ended.outcome, ended.retries, at));
                }
                Some(Err(e)) => {
                    // The branch future itself panicked (or was aborted: then its
                    // outcome is already decided and this is ignored).
                    if let Some(&(index, item)) = live.running.get(&e.id()) {
                        let error = BranchError::SpecialistUnavailable {
                            agent: s.steps[index].doer(),
                            reason: Unavailable::BranchTaskPanicked,
                        };
                        let outcome = BranchOutcome::Failed { error };
                        commands.extend(machine.ended(index, item, outcome, 0, since(Instant::now())));
                    }
                }
            },
            () = sleep_until_opt(soft) => {
                commands.extend(machine.soft_deadline_passed(since(Instant::now())));
            }
            // The first branch's answer started (or it ended without text): the
            // cache is warm; the held branches go.
            _ = recv_opt(&mut warm_signal), if warm.warming() => {
                warm_signal = None;
                release.extend(warm.warmed());
            }
        }
    }
    // Dropping the set aborts whatever still runs; their guards send Cancel. Every
    // such branch already has its terminal record from the scheduler.
    let reused = std::mem::take(&mut live.reused);
    drop(live);
    let (mut records, failure) = machine.into_verdict();
    for (index, found) in conflicts {
        if let Some(r) = records.get_mut(index) {
            r.conflicts = found;
        }
    }
    for (index, item, at) in held_until {
        let Some(r) = records.get_mut(index) else {
            continue;
        };
        match item {
            None => r.started = Some(at),
            Some(k) => {
                if let Some(i) = r.items.get_mut(k) {
                    i.started = Some(at);
                }
            }
        }
    }
    for (index, item) in reused {
        let Some(r) = records.get_mut(index) else {
            continue;
        };
        match item {
            None => r.reused = true,
            Some(k) => {
                if let Some(i) = r.items.get_mut(k) {
                    i.reused = true;
                }
            }
        }
    }
    (records, failure)
}

/// The branches the driver has launched, and how to reach them.
#[derive(Default)]
struct Launched {
    set: JoinSet<Ended>,
    running: HashMap<tokio::task::Id, (usize, Option<usize>)>,
    handles: HashMap<(usize, Option<usize>), AbortHandle>,
    /// Branches whose output came from an earlier attempt at the run.
    reused: Vec<(usize, Option<usize>)>,
}

impl Launched {
    /// Whether branch (`index`, `item`) takes an earlier output instead of a call.
    fn reuses(&self, s: &Schedule<'_>, index: usize, item: Option<usize>) -> bool {
        s.reuse
            .iter()
            .any(|r| r.index as usize == index && r.item.map(|k| k as usize) == item)
    }

    /// Launches a branch the scheduler dispatched: its started event, then its
    /// earlier output if the run reuses one, else its call (with `extra` receiving
    /// its streamed text too).
    fn launch(
        &mut self,
        driver: &Driver<'_, '_>,
        index: usize,
        item: Option<usize>,
        upstream: &[UpstreamOutput],
        extra: Option<DeltaSink>,
    ) {
        let s = driver.s;
        if let Some(events) = s.events {
            let _ = events.send(RunEvent::BranchStarted {
                run: s.run,
                index: index as u32,
                item: item.map(|k| k as u32),
                agent: s.steps[index].name.clone(),
                at: Instant::now().saturating_duration_since(s.started),
            });
        }
        let earlier = s
            .reuse
            .iter()
            .find(|r| r.index as usize == index && r.item.map(|k| k as usize) == item);
        let handle = match earlier {
            Some(r) => {
                self.reused.push((index, item));
                self.set.spawn(std::future::ready(Ended {
                    index,
                    item,
                    outcome: BranchOutcome::Ok(r.output.clone()),
                    at: Instant::now(),
                    retries: 0,
                    conflicts: Vec::new(),
                }))
            }
            None => dispatch(driver, &mut self.set, index, item, upstream, extra),
        };
        self.running.insert(handle.id(), (index, item));
        self.handles.insert((index, item), handle);
    }
}

/// A sink that fires `tx` at the first text of an answer.
fn first_text(tx: oneshot::Sender<()>) -> DeltaSink {
    let tx = std::sync::Mutex::new(Some(tx));
    DeltaSink::new(move |delta| {
        if matches!(&delta, Delta::Text(t) if !t.is_empty()) {
            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
        }
    })
}

/// Waits on `rx`, or forever without one.
async fn recv_opt(rx: &mut Option<oneshot::Receiver<()>>) {
    match rx {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

/// A sink that turns a branch's streamed text into `BranchDelta` events, each
/// with the attempt it belongs to.
fn branch_sink(
    events: &mpsc::UnboundedSender<RunEvent>,
    run: RunId,
    index: u32,
    item: Option<u32>,
    agent: String,
) -> DeltaSink {
    let events = events.clone();
    let attempt = AtomicU32::new(1);
    DeltaSink::new(move |delta| match delta {
        Delta::Restart { attempt: a } => attempt.store(a, Ordering::Relaxed),
        Delta::Text(text) => {
            let _ = events.send(RunEvent::BranchDelta {
                run,
                index,
                item,
                agent: agent.clone(),
                attempt: attempt.load(Ordering::Relaxed),
                text,
            });
        }
    })
}

/// Spawns one branch: a code function on the blocking pool, or an agent's call.
fn dispatch(
    driver: &Driver<'_, '_>,
    set: &mut JoinSet<Ended>,
    index: usize,
    item: Option<usize>,
    upstream: &[UpstreamOutput],
    extra: Option<DeltaSink>,
) -> AbortHandle {
    let s = driver.s;
    let step = &s.steps[index];
    match &step.action {
        Action::Code { function, options } => {
            let code = s.code.get(function);
            let task = s.input.to_owned();
            let upstream = upstream.to_vec();
            let options = options.clone();
            let function = function.clone();
            set.spawn(async move {
                let run = move || {
                    let Some(f) = code else {
                        return Err(super::code::CodeError::BadOption {
                            option: "code".to_owned(),
                            problem: format!("no code function is named `{function}`"),
                        });
                    };
                    f(&CodeInput {
                        task: &task,
                        upstream: &upstream,
                        options: &options,
                    })
                };
                let (outcome, conflicts) = match tokio::task::spawn_blocking(run).await {
                    Ok(Ok(out)) => (
                        BranchOutcome::Ok(AgentOutput::text(out.text)),
                        out.conflicts,
                    ),
                    Ok(Err(e)) => {
                        let conflicts = match &e {
                            super::code::CodeError::Conflicts(c) => c.clone(),
                            _ => Vec::new(),
                        };
                        let error = BranchError::Code(Box::new(e));
                        (BranchOutcome::Failed { error }, conflicts)
                    }
                    Err(join) => {
                        let message = if join.is_panic() {
                            "a panic"
                        } else {
                            "cancelled"
                        };
                        let error = BranchError::Code(Box::new(super::code::CodeError::Panicked(
                            message.to_owned(),
                        )));
                        (BranchOutcome::Failed { error }, Vec::new())
                    }
                };
                Ended {
                    index,
                    item,
                    outcome,
                    at: Instant::now(),
                    retries: 0,
                    conflicts,
                }
            })
        }
        Action::Agent(agent) => {
            let now = Instant::now();
            let timeout = step.timeout.unwrap_or(s.branch_timeout);
            let (deadline, kind) = match now.checked_add(timeout) {
                Some(d) if d < s.deadline => (d, DeadlineKind::Branch),
                _ => (s.deadline, DeadlineKind::Run),
            };
            let mut task = driver.task(index, item, upstream);
            // A hair before the branch deadline, so that a model call cut by it
            // reports what it was doing before the branch gives up.
            task.deadline = Some(deadline - handover(deadline - now));
            let watched = s.events.map(|events| {
                branch_sink(
                    events,
                    s.run,
                    index as u32,
                    item.map(|k| k as u32),
                    step.name.clone(),
                )
            });
            task.deltas = match (watched, extra) {
                (Some(a), Some(b)) => Some(DeltaSink::new(move |d| {
                    b.send(d.clone());
                    a.send(d);
                })),
                (a, b) => a.or(b),
            };
            let agent = agent.clone();
            let slot = s.roster.watch(&agent);
            let crash_retries = s.crash_retries;
            set.spawn(async move {
                let (outcome, retries) =
                    call_branch(agent, slot, task, deadline, kind, crash_retries).await;
                Ended {
                    index,
                    item,
                    outcome,
                    at: Instant::now(),
                    retries,
                    conflicts: Vec::new(),
                }
            })
        }
    }
}
