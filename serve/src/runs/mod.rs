//! The run manager: accepts runs into the journal and the queue, drives each one on
//! the runtime, journals its events as they come, cancels, drains and resumes.
//!
//! Lifecycle of a run: `queued` (journaled, in the [`RunQueue`]) → `running` (a
//! driver task holds the runtime's [`RunHandle`](fanfare::RunHandle)) → `succeeded` | `failed` |
//! `cancelled`, or `interrupted` when the server stops first. A run found queued,
//! running or interrupted at start-up is resumed.
//!
//! Invariants: a run's id is answered only after its row is committed; each event
//! is committed before the `changed` counter moves (the event streams wait on it);
//! every driver task is tracked, so a shutdown knows when the last run is journaled.

mod approvals;
mod drive;
mod errors;
mod kept;
mod repair;
mod submit;

pub(crate) use approvals::Undecided;
pub use errors::{CancelError, SubmitError, Submitted};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fanfare::{Fanfare, RunRequest};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::journal::{Journal, Status};
use crate::metrics::Metrics;
use crate::queue::{Admit, RunQueue};
use crate::spec::{Catalog, Defaults};

/// Runs `work` on a task of its own, so that it ends whole even if the future
/// awaiting it is dropped (an HTTP handler whose client went away); `None` if the
/// runtime is shutting down. A panic in it is the caller's.
async fn whole<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    match tokio::spawn(work).await {
        Ok(done) => Some(done),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

/// Why a driver stops a run before it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// A client cancelled it.
    Cancel,
    /// The server is stopping; resume it at the next start.
    Interrupt,
}

/// A run being driven.
struct Driven {
    stop: Option<oneshot::Sender<Stop>>,
    task: Option<JoinHandle<()>>,
    /// What its request holds ([`held`]), counted in `State::running_bytes`.
    bytes: usize,
}

#[derive(Default)]
struct State {
    queue: Option<RunQueue<i64>>,
    /// Requests of the runs waiting in the queue, each with what it holds
    /// ([`held`], counted once at admission).
    waiting: HashMap<i64, (RunRequest, usize)>,
    /// About the memory those requests hold ([`held`]).
    waiting_bytes: usize,
    driven: HashMap<i64, Driven>,
    /// About the memory the running runs' requests hold.
    running_bytes: usize,
}

/// How a run comes to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// A client submitted it: refused when there is no room.
    Submit,
    /// It was unfinished at the last stop: never refused.
    Resume,
}

/// The most memory the requests of waiting and running runs may hold between them:
/// a submission past it is refused as the queue being full (256 queued runs of
/// 10,000 agents each held 744 MB; 20 repairs at once of a run with 10 MB of
/// answers held 758 MB). Resumed runs are never refused.
const HELD_BYTES: usize = 256 << 20;

/// About the memory `request` holds: its input, its steps, and the outputs it
/// reuses — four times over, as a run in progress holds them in its request, its
/// records, its events and its report.
fn held(request: &RunRequest) -> usize {
    let steps: usize = request
        .steps
        .iter()
        .map(|s| std::mem::size_of_val(s) + s.name.len() + 64)
        .sum();
    let reused: usize = request.reuse.iter().map(|r| r.output.text.len() + 64).sum();
    request.input.len() + steps + 4 * reused
}

/// The run manager; shared by every request handler.
pub struct Runs {
    fanfare: Fanfare,
    journal: Journal,
    catalog: Catalog,
    defaults: Defaults,
    /// New runs are refused while the journal's disk has less free (0: no floor).
    min_free_disk: u64,
    /// One repair reads its earlier outputs at a time.
    repairing: Arc<tokio::sync::Semaphore>,
    state: Mutex<State>,
    /// Moves after every journal commit that a stream may want to read.
    changed: watch::Sender<u64>,
    /// True once the server is shutting down.
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// Tool calls waiting for a client's approval.
    desk: Arc<approvals::Desk>,
}

impl Runs {
    /// A manager over `journal`, running at most `max_running` at once with at most
    /// `max_waiting` queued.
    pub fn new(
        fanfare: Fanfare,
        journal: Journal,
        catalog: Catalog,
        defaults: Defaults,
        max_running: usize,
        max_waiting: usize,
        min_free_disk: u64,
    ) -> Arc<Runs> {
        let desk = Arc::new(approvals::Desk::new(
            defaults.approval_timeout,
            defaults.approval_default,
        ));
        Arc::new(Runs {
            fanfare,
            journal,
            min_free_disk,
            repairing: Arc::new(tokio::sync::Semaphore::new(1)),
            catalog,
            defaults,
            state: Mutex::new(State {
                queue: Some(RunQueue::new(max_running, max_waiting)),
                ..State::default()
            }),
            changed: watch::channel(0).0,
            closing: watch::channel(false).0,
            metrics: Arc::new(Metrics::new()),
            desk,
        })
    }

    /// Run `run`'s tool calls waiting for approval.
    pub(crate) fn approvals(&self, run: i64) -> Vec<fanfare::agent::tools::ApprovalRequest> {
        self.desk.waiting(run)
    }

    /// Decides run `run`'s approval `id`.
    pub(crate) fn decide(
        &self,
        run: i64,
        id: &str,
        decision: fanfare::agent::tools::Decision,
    ) -> Result<(), Undecided> {
        self.desk.decide(run, id, decision)
    }

    /// Why the journal cannot take a new run now, if it cannot: its file is gone
    /// (a run accepted then would be lost at the next start), a write failed, or its
    /// disk is low.
    pub fn refuses_new_runs(&self) -> Option<String> {
        let path = self.journal.path();
        if !path.exists() {
            return Some(format!(
                "the journal {} is gone (deleted, or its directory): what runs write now is lost at the next start, so new runs are refused",
                path.display()
            ));
        }
        if let Some(why) = self.journal.write_failure() {
            return Some(format!(
                "the journal cannot be written ({why}): runs in progress wait until it can, and new runs are refused"
            ));
        }
        self.disk_low()
    }

    /// Why new runs are refused for disk space, if they are: the journal's file
    /// system has less free than the floor. (A file system that cannot say is not
    /// a reason to refuse.)
    pub fn disk_low(&self) -> Option<String> {
        if self.min_free_disk == 0 {
            return None;
        }
        let free = self.journal.free_space().ok()?;
        (free < self.min_free_disk).then(|| {
            format!(
                "the journal's disk has {} MiB free, under the floor of {} MiB (--min-free-disk-mb): new runs are refused until there is room",
                free >> 20,
                self.min_free_disk >> 20
            )
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue<T>(&self, f: impl FnOnce(&mut RunQueue<i64>) -> T) -> Option<T> {
        self.state().queue.as_mut().map(f)
    }

    /// The metrics runs feed.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts what the supervisor does, until the runtime stops.
    pub fn watch_supervision(self: &Arc<Self>) -> JoinHandle<()> {
        let mut events = self.fanfare.supervision_events();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => metrics.supervision(&e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "metrics: supervision events lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }

    /// What runs may run.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The runtime the runs run on.
    pub fn fanfare(&self) -> &Fanfare {
        &self.fanfare
    }

    /// A receiver that changes after each journal commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A receiver that turns true when the server starts shutting down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Runs in progress and waiting.
    pub fn load(&self) -> (usize, usize) {
        self.queue(|q| (q.running(), q.waiting())).unwrap_or((0, 0))
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Puts run `id` to the queue with `how` (submit or resume) and starts it or
    /// keeps its request waiting — under one lock, so that a slot freed meanwhile
    /// cannot pick the run before its request is there.
    fn admit(self: &Arc<Self>, id: i64, request: RunRequest, how: How) -> Admit {
        let mut state = self.state();
        let bytes = held(&request);
        if how == How::Submit && state.waiting_bytes + state.running_bytes + bytes > HELD_BYTES {
            return Admit::Full;
        }
        let admit = state.queue.as_mut().map_or(Admit::Closing, |q| match how {
            How::Submit => q.submit(id),
            How::Resume => q.resume(id),
        });
        match admit {
            Admit::Start => self.start_locked(&mut state, id, request, bytes),
            Admit::Wait { .. } => {
                state.waiting_bytes += bytes;
                state.waiting.insert(id, (request, bytes));
            }
            Admit::Full | Admit::Closing => {}
        }
        admit
    }

    /// Starts driving run `id` (the queue has admitted it), whose request holds
    /// `bytes`; the state is locked.
    fn start_locked(
        self: &Arc<Self>,
        state: &mut State,
        id: i64,
        request: RunRequest,
        bytes: usize,
    ) {
        let (stop, stopped) = oneshot::channel();
        let this = self.clone();
        state.running_bytes += bytes;
        let task = tokio::spawn(async move { this.drive(id, request, stopped).await });
        state.driven.insert(
            id,
            Driven {
                stop: Some(stop),
                task: Some(task),
                bytes,
            },
        );
    }

    /// A driven run ended: forget it, and start what the queue lets start.
    fn ended(self: &Arc<Self>, id: i64) {
        // Under one lock: a cancel sees each run either waiting or driven.
        let mut state = self.state();
        if let Some(d) = state.driven.remove(&id) {
            state.running_bytes = state.running_bytes.saturating_sub(d.bytes);
        }
        let next = state
            .queue
            .as_mut()
            .map(|q| q.finished(id))
            .unwrap_or_default();
        for k in next {
            if let Some((request, bytes)) = state.waiting.remove(&k) {
                state.waiting_bytes = state.waiting_bytes.saturating_sub(bytes);
                self.start_locked(&mut state, k, request, bytes);
            }
        }
    }

    /// Cancels run `id`: a waiting run leaves the queue; a running one has its
    /// branches' calls aborted. Returns once the journal says `cancelled`.
    pub async fn cancel(self: &Arc<Self>, id: i64) -> Result<Status, CancelError> {
        // Runs whole even if the caller goes away: stopped halfway, it left a run
        // withdrawn from the queue but journaled `queued` (resumed at the next
        // start), or a running run whose stop had been taken and not sent.
        let this = self.clone();
        whole(async move { this.cancel_whole(id).await })
            .await
            .unwrap_or(Err(CancelError::Closing))
    }

    async fn cancel_whole(self: &Arc<Self>, id: i64) -> Result<Status, CancelError> {
        let driven = {
            let mut state = self.state();
            if state.queue.as_mut().is_some_and(|q| q.withdraw(id)) {
                if let Some((_, bytes)) = state.waiting.remove(&id) {
                    state.waiting_bytes = state.waiting_bytes.saturating_sub(bytes);
                }
                None
            } else {
                state
                    .driven
                    .get_mut(&id)
                    .map(|d| (d.stop.take(), d.task.take()))
            }
        };
        let row = self
            .journal
            .get(id)
            .await?
            .ok_or(CancelError::NotFound(id))?;
        match driven {
            Some((stop, task)) => {
                if let Some(stop) = stop {
                    let _ = stop.send(Stop::Cancel);
                }
                if let Some(task) = task {
                    let _ = task.await;
                }
            }
            None if row.status.is_final() => {
                return Err(CancelError::Ended {
                    id,
                    status: row.status,
                })
            }
            None => {
                // Waiting (withdrawn above), or interrupted and not resumed.
                self.journal
                    .finish(
                        id,
                        Status::Cancelled,
                        None,
                        Some("cancelled by a client".to_owned()),
                    )
                    .await?;
                self.bump();
            }
        }
        let row = self
            .journal
            .get(id)
            .await?
            .ok_or(CancelError::NotFound(id))?;
        Ok(row.status)
    }

    /// Stops accepting and starting runs; event streams end.
    pub fn begin_closing(&self) {
        self.closing.send_replace(true);
        let _ = self.queue(|q| q.close());
    }

    /// Stops accepting runs, gives the running ones up to `drain` to end, then
    /// interrupts the rest (journaled `interrupted`, resumed at the next start).
    /// Waiting runs stay `queued` in the journal. Returns how many were interrupted.
    pub async fn shut_down(&self, drain: Duration) -> usize {
        self.begin_closing();
        let mut changed = self.subscribe();
        let until = tokio::time::Instant::now() + drain;
        loop {
            changed.borrow_and_update();
            if self.state().driven.is_empty() {
                return 0;
            }
            if tokio::time::timeout_at(until, changed.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = self.state();
            state
                .driven
                .values_mut()
                .filter_map(|d| {
                    if let Some(stop) = d.stop.take() {
                        let _ = stop.send(Stop::Interrupt);
                    }
                    d.task.take()
                })
                .collect()
        };
        let interrupted = tasks.len();
        for task in tasks {
            let _ = task.await;
        }
        interrupted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_request_is_counted_by_what_it_holds() {
        // The probe measured 2.8 MB per queued run of 10,000 agents: the estimate
        // must be of that order, or the budget would let 744 MB queue again.
        let wide = RunRequest::fan_out("x", (0..10_000).map(|i| format!("agent-{i}")));
        let narrow = RunRequest::fan_out("x".repeat(1000), ["a"]);
        // A repair holds the answers it reuses several times over while it runs (20
        // repairs at once of a run with 10 MB of answers held 758 MB).
        let repair = RunRequest::fan_out("x", ["a"]).reuse(vec![fanfare::run::Reuse {
            index: 0,
            item: None,
            output: fanfare::AgentOutput::text("y".repeat(1 << 20)),
            from: fanfare::run::Reused::EarlierRun,
        }]);
        assert!(held(&repair) >= 4 << 20, "{}", held(&repair));
        assert!(held(&wide) > 2 << 20, "{}", held(&wide));
        assert!(held(&narrow) < 4 << 10, "{}", held(&narrow));
        assert!(
            HELD_BYTES / held(&wide) < 100,
            "under a hundred such runs wait"
        );
    }
}
