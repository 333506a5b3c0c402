//! The scheduler's driver: the thin async shell around [`Scheduler`]. It launches
//! each dispatched branch (`launch`: a task in a `JoinSet` it owns — an agent's
//! call, or a code function on the blocking pool), holds branches back during a
//! cache warm-up (`warm`), finds a map step's items, feeds each branch's end (and
//! the soft-deadline timer) to the scheduler, and carries out its commands.
//!
//! Invariant: no branch outlives [`execute`]. Each call lives in the `JoinSet`; when
//! the scheduler says `Done`, or the future of `execute` is dropped (the caller gave
//! up), the set is dropped, which aborts the calls, whose guards send `Cancel` to
//! their specialists. A map item the scheduler cancels is aborted at once.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::code::Conflict;
use super::event::RunEvent;
use super::items::items_of;
use super::launch::{Attempt, Driver, Launched, Panicked};
use super::outcome::{BranchError, BranchOutcome, CancelReason, RunFailure, Unavailable};
use super::record::{BranchRecord, SubRun};
use super::scheduler::{BudgetPlan, Command, Scheduler};
use super::step::MapSource;
use super::stream;
use super::warm::{Go, Held, Warm};

pub(crate) use super::launch::Schedule;

/// A soft deadline: once it has passed and the quorum is met, the scheduler hands a
/// snapshot to `merge_now` (so synthesis can proceed without the stragglers) and keeps
/// running them; what they return later is marked late.
pub(crate) struct Defer {
    pub at: Instant,
    /// Each step's name and outcome so far (`None`: still running).
    pub merge_now: oneshot::Sender<Vec<(String, Option<BranchOutcome>)>>,
}

/// What the driver learns about a branch beyond its outcome, kept until the
/// scheduler's records exist and then written into them.
#[derive(Default)]
struct Extra {
    /// When a branch held back by the warm-up really went.
    started: Option<Duration>,
    /// The cluster node it ended on.
    node: Option<String>,
    /// The run it made, if its step runs a workflow whole.
    sub_run: Option<SubRun>,
    /// Its output came from an earlier attempt at the run.
    reused: Option<super::Reused>,
}

impl Extra {
    fn apply(
        self,
        started: &mut Option<Duration>,
        node: &mut Option<String>,
        sub_run: &mut Option<SubRun>,
        reused: &mut Option<super::Reused>,
    ) {
        if self.started.is_some() {
            *started = self.started;
        }
        if self.node.is_some() {
            *node = self.node;
        }
        if self.sub_run.is_some() {
            *sub_run = self.sub_run;
        }
        if self.reused.is_some() {
            *reused = self.reused;
        }
    }
}

/// Until the caller stops the run (forever if it cannot).
pub(crate) async fn stopped(stop: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            if rx.wait_for(|s| *s).await.is_err() {
                // The sender is gone without a stop: the run goes on.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Says of every branch (and item) the stop left unended that the run was stopped,
/// not that its caller went away, and tells a listener that each has ended (an item
/// that never started has no event, as at a deadline).
fn mark_stopped(s: &Schedule<'_>, records: &mut [BranchRecord], at: Duration) {
    let stopped = |o: &mut BranchOutcome| match o {
        BranchOutcome::Cancelled { reason } if *reason == CancelReason::CallerGone => {
            *reason = CancelReason::Stopped;
            true
        }
        _ => false,
    };
    let tell = |index: usize, item: Option<usize>, outcome: &BranchOutcome| {
        if let Some(events) = s.events {
            let _ = events.send(RunEvent::BranchFinished {
                run: s.run,
                index: index as u32,
                item: item.map(|k| k as u32),
                agent: s.steps[index].name.clone(),
                outcome: outcome.clone(),
                at,
                late: false,
                sub_run: None,
            });
        }
    };
    for (index, r) in records.iter_mut().enumerate() {
        for (k, item) in r.items.iter_mut().enumerate() {
            if stopped(&mut item.outcome) && item.started.is_some() {
                tell(index, Some(k), &item.outcome);
            }
        }
        if stopped(&mut r.outcome) {
            tell(index, None, &r.outcome);
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
    type Items = HashMap<usize, std::sync::Arc<[String]>>;
    let found: std::sync::Arc<std::sync::Mutex<Items>> = Default::default();
    let seen = found.clone();
    let plan = &s;
    let budget = s.budget.map(|budget| BudgetPlan {
        budget,
        estimate: Box::new(move |i, item, upstream: &std::sync::Arc<[_]>| {
            let items = seen.lock().map(|m| m.clone()).unwrap_or_default();
            Driver { s: plan, items }.estimate(budget, i, item, upstream)
        }),
        prices: s.prices,
    });
    let since = |at: Instant| at.saturating_duration_since(s.started);
    let mut machine =
        Scheduler::new(s.steps, s.policy, budget, defer.is_some()).with_deadline(since(s.deadline));
    let mut live = Launched::default();
    let mut conflicts: HashMap<usize, Vec<Conflict>> = HashMap::new();
    let mut extras: HashMap<(usize, Option<usize>), Extra> = HashMap::new();
    let mut warm = Warm::new(s.cache_warm);
    let mut warm_signal: Option<oneshot::Receiver<()>> = None;
    let mut release: Vec<Held> = Vec::new();
    let mut commands: VecDeque<Command> = machine.start(since(Instant::now())).into();
    let mut stop = s.stop.clone();
    let mut was_stopped = false;
    'run: loop {
        for h in release.drain(..) {
            let attempt = Attempt {
                rerun: machine.reruns(h.index, h.item),
                allowance: machine.headroom(h.index, h.item),
            };
            live.launch(&driver, h.index, h.item, &h.upstream, None, attempt);
            // It was held: it started now, not when the scheduler dispatched it.
            extras.entry((h.index, h.item)).or_default().started = Some(since(Instant::now()));
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
                    let attempt = Attempt {
                        rerun: machine.reruns(index, item),
                        allowance: machine.headroom(index, item),
                    };
                    match go {
                        Go::Now => live.launch(&driver, index, item, &upstream, None, attempt),
                        Go::First => {
                            let (tx, rx) = oneshot::channel();
                            warm_signal = Some(rx);
                            live.launch(
                                &driver,
                                index,
                                item,
                                &upstream,
                                Some(stream::first_text(tx)),
                                attempt,
                            );
                        }
                        Go::Held => {}
                    }
                }
                Command::Expand { index, upstream } => {
                    let from_step = |from: usize, path: Option<&str>| {
                        let name = &s.steps[from].name;
                        let items = upstream
                            .iter()
                            .find(|u| &u.agent == name)
                            .map_or(Ok(Vec::new()), |u| items_of(u, path))
                            .map_err(|problem| BranchError::NoItems {
                                from: name.clone(),
                                problem,
                            })?;
                        match s.max_items {
                            Some(limit) if items.len() > limit => Err(BranchError::TooManyItems {
                                from: name.clone(),
                                count: items.len(),
                                limit,
                            }),
                            _ => Ok(items),
                        }
                    };
                    let items = match s.steps[index].map.as_ref().map(|m| &m.over) {
                        Some(MapSource::Items(items)) => Ok(items.clone()),
                        Some(MapSource::Step(from)) => from_step(*from, None),
                        Some(MapSource::Within { step, path }) => from_step(*step, Some(path)),
                        None => Ok(Vec::new()),
                    };
                    let items = match items {
                        Ok(items) => items,
                        Err(error) => {
                            let failed = BranchOutcome::Failed { error };
                            commands.extend(machine.expand_failed(
                                index,
                                failed,
                                since(Instant::now()),
                            ));
                            continue;
                        }
                    };
                    let count = items.len();
                    let items: std::sync::Arc<[String]> = items.into();
                    if let Ok(mut f) = found.lock() {
                        f.insert(index, items.clone());
                    }
                    driver.items.insert(index, items);
                    commands.extend(machine.expanded(index, count, since(Instant::now())));
                }
                Command::Abort { index, item } => {
                    if !warm.abort(index, Some(item)) {
                        if let Some(h) = live.items.remove(&(index, item)) {
                            h.abort();
                        }
                    }
                }
                Command::Finished {
                    index,
                    item,
                    at,
                    late,
                } => {
                    if let Some(item) = item {
                        live.items.remove(&(index, item));
                    }
                    // Only a listener gets a copy of the outcome; without one it is
                    // not even looked up. An item that was never dispatched (the
                    // run's deadline came first) has no event: the report lists it,
                    // and a map past its deadline wrote one per item.
                    let told = item.is_none() || machine.dispatched(index, item);
                    let listened = s.events.filter(|_| told).and_then(|events| {
                        let outcome = machine.outcome(index, item)?.clone();
                        Some((events, outcome))
                    });
                    if let Some((events, outcome)) = listened {
                        let _ = events.send(RunEvent::BranchFinished {
                            run: s.run,
                            index: index as u32,
                            item: item.map(|k| k as u32),
                            agent: s.steps[index].name.clone(),
                            outcome,
                            at,
                            late,
                            sub_run: extras.get(&(index, item)).and_then(|e| e.sub_run.clone()),
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
        let mut joined = tokio::select! {
            joined = live.set.join_next() => match joined {
                // Nothing runs and the scheduler is not done: cannot happen, but a
                // loop with nothing to wait for must not spin.
                None => break 'run,
                joined => joined,
            },
            () = sleep_until_opt(soft) => {
                commands.extend(machine.soft_deadline_passed(since(Instant::now())));
                None
            }
            // The caller stopped the run: what ended is kept, the rest cancelled.
            () = stopped(&mut stop) => {
                was_stopped = true;
                break 'run;
            }
            // The first branch's answer started (or it ended without text): the
            // cache is warm; the held branches go.
            _ = recv_opt(&mut warm_signal), if warm.warming() => {
                warm_signal = None;
                release.extend(warm.warmed());
                None
            }
        };
        // Branches that ended meanwhile are taken as they are, without another turn
        // of the select: at the end of a wide fan-out they end in a burst, and a turn
        // per branch was about half of what the driver spent on each.
        while let Some(result) = joined {
            match result {
                Ok(Ok(ended)) => {
                    if !ended.conflicts.is_empty() {
                        conflicts
                            .entry(ended.index)
                            .or_default()
                            .extend(ended.conflicts);
                    }
                    if let Some(node) = ended.node {
                        extras.entry((ended.index, ended.item)).or_default().node = Some(node);
                    }
                    if let Some(sub) = ended.sub_run {
                        extras.entry((ended.index, ended.item)).or_default().sub_run = Some(sub);
                    }
                    let at = since(ended.at);
                    release.extend(warm.ended(ended.index, ended.item));
                    commands.extend(machine.ended(
                        ended.index,
                        ended.item,
                        ended.outcome,
                        ended.retries,
                        at,
                    ));
                }
                // The branch future itself panicked.
                Ok(Err(Panicked { index, item })) => {
                    let error = BranchError::SpecialistUnavailable {
                        agent: s.steps[index].doer(),
                        reason: Unavailable::BranchTaskPanicked,
                    };
                    let outcome = BranchOutcome::Failed { error };
                    commands.extend(machine.ended(index, item, outcome, 0, since(Instant::now())));
                }
                // Aborted: its outcome is already decided.
                Err(_aborted) => {}
            }
            joined = live.set.try_join_next();
        }
    }
    // Dropping the set aborts whatever still runs; their guards send Cancel. Every
    // such branch already has its terminal record from the scheduler.
    let reused = std::mem::take(&mut live.reused);
    let meters = std::mem::take(&mut live.meters);
    drop(live);
    let (mut records, mut failure) = machine.into_verdict();
    // What branches cut in a tool loop (timed out, cancelled, aborted) were paid
    // for and no outcome reports: counted as their earlier spend (they reported 0
    // tokens after paid turns).
    // And what earlier attempts' turns, replaced by a later attempt's before a
    // restart, had used (a crash in a retried step's second attempt lost the
    // first's spend).
    let replaced = s.replay.iter().map(|(key, kept)| (*key, kept.earlier));
    let unreported = meters
        .into_iter()
        .map(|(key, meter)| (key, meter.take()))
        .chain(replaced);
    for ((index, item), (attempts, usage)) in unreported {
        if attempts == 0 && usage.total() == 0 {
            continue;
        }
        let earlier = match (records.get_mut(index), item) {
            (Some(r), None) => &mut r.earlier,
            (Some(r), Some(k)) => match r.items.get_mut(k) {
                Some(i) => &mut i.earlier,
                None => continue,
            },
            (None, _) => continue,
        };
        earlier.0 = earlier.0.saturating_add(attempts);
        earlier.1 += usage;
    }
    if was_stopped {
        failure = Some(RunFailure::Stopped);
        mark_stopped(&s, &mut records, since(Instant::now()));
    }
    for (index, found) in conflicts {
        if let Some(r) = records.get_mut(index) {
            r.conflicts = found;
        }
    }
    for (key, from) in reused {
        extras.entry(key).or_default().reused = Some(from);
    }
    // Each item's input goes in its record, as the run's task does in the report.
    for (index, texts) in &driver.items {
        if let Some(r) = records.get_mut(*index) {
            for (record, text) in r.items.iter_mut().zip(texts.iter()) {
                record.asked = Some(super::Asked::of(text));
            }
        }
    }
    for ((index, item), extra) in extras {
        let Some(r) = records.get_mut(index) else {
            continue;
        };
        match item {
            None => extra.apply(&mut r.started, &mut r.node, &mut r.sub_run, &mut r.reused),
            Some(k) => {
                if let Some(i) = r.items.get_mut(k) {
                    extra.apply(&mut i.started, &mut i.node, &mut i.sub_run, &mut i.reused);
                }
            }
        }
    }
    (records, failure)
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
