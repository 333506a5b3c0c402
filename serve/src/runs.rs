//! The run manager: accepts runs into the journal and the queue, drives each one on
//! the runtime, journals its events as they come, cancels, drains and resumes.
//!
//! Lifecycle of a run: `queued` (journaled, in the [`RunQueue`]) → `running` (a
//! driver task holds the runtime's [`RunHandle`]) → `succeeded` | `failed` |
//! `cancelled`, or `interrupted` when the server stops first. A run found queued,
//! running or interrupted at start-up is resumed.
//!
//! Invariants: a run's id is answered only after its row is committed; each event
//! is committed before the `changed` counter moves (the event streams wait on it);
//! every driver task is tracked, so a shutdown knows when the last run is journaled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fanfare::run::Reuse;
use fanfare::{BranchOutcome, Fanfare, RunEvent, RunHandle, RunRequest};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::journal::{Inserted, Journal, JournalError, RunRow, Status};
use crate::metrics::Metrics;
use crate::queue::{Admit, RunQueue};
use crate::spec::{Catalog, Defaults, FieldError, RunSpec};

/// Why a run was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request is not valid.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Too many runs are in progress and waiting.
    #[error("too many runs: {running} in progress and {waiting} waiting")]
    Full {
        /// In progress.
        running: usize,
        /// Waiting.
        waiting: usize,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Closing,
    /// The idempotency key was used before for a different request.
    #[error("the Idempotency-Key was used before (run-{run}) with a different request")]
    KeyReused {
        /// The run that has it.
        run: i64,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What a submission produced.
#[derive(Debug)]
pub struct Submitted {
    /// The run.
    pub id: i64,
    /// Its status now.
    pub status: Status,
    /// False when an idempotency key matched an earlier run.
    pub created: bool,
}

/// Why a cancel did nothing.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No run has this id.
    #[error("no run-{0}")]
    NotFound(i64),
    /// The run already ended.
    #[error("run-{id} already ended ({})", .status.as_str())]
    Ended {
        /// The run.
        id: i64,
        /// How it ended.
        status: Status,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
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
}

#[derive(Default)]
struct State {
    queue: Option<RunQueue<i64>>,
    /// Requests of the runs waiting in the queue.
    waiting: HashMap<i64, RunRequest>,
    driven: HashMap<i64, Driven>,
}

/// The run manager; shared by every request handler.
pub struct Runs {
    fanfare: Fanfare,
    journal: Journal,
    catalog: Catalog,
    defaults: Defaults,
    state: Mutex<State>,
    /// Moves after every journal commit that a stream may want to read.
    changed: watch::Sender<u64>,
    /// True once the server is shutting down.
    closing: watch::Sender<bool>,
    metrics: Arc<Metrics>,
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
    ) -> Arc<Runs> {
        Arc::new(Runs {
            fanfare,
            journal,
            catalog,
            defaults,
            state: Mutex::new(State {
                queue: Some(RunQueue::new(max_running, max_waiting)),
                ..State::default()
            }),
            changed: watch::channel(0).0,
            closing: watch::channel(false).0,
            metrics: Arc::new(Metrics::new()),
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

    /// Checks `spec`, journals it, and starts or queues it. With `key`, a retry of
    /// the same request returns the run it first made.
    pub async fn submit(
        self: &Arc<Self>,
        spec: RunSpec,
        key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let mut request = spec.request(&self.catalog, &self.defaults)?;
        if let Some(of) = &spec.repair_of {
            request = request.reuse(self.repairable(of, &spec).await?);
        }
        self.fanfare.validate(&request).map_err(|e| {
            let field = if spec.workflow.is_some() || spec.agents.is_none() {
                "workflow"
            } else {
                "agents"
            };
            FieldError {
                field: field.to_owned(),
                message: e.to_string(),
            }
        })?;
        let text = serde_json::to_string(&spec).map_err(|e| FieldError {
            field: String::new(),
            message: e.to_string(),
        })?;
        if let Some(key) = &key {
            if let Some(row) = self.journal.find_key(key.clone()).await? {
                return Self::same_request(row, &text);
            }
        }
        // Shed load before writing anything.
        if *self.closing.borrow() {
            return Err(SubmitError::Closing);
        }
        match self.queue(|q| (q.has_room(), q.running(), q.waiting())) {
            None => return Err(SubmitError::Closing),
            Some((false, running, waiting)) => return Err(SubmitError::Full { running, waiting }),
            Some((true, ..)) => {}
        }
        let id = match self.journal.insert_run(text.clone(), key).await? {
            Inserted::Existing(row) => return Self::same_request(row, &text),
            Inserted::New(id) => id,
        };
        self.bump();
        match self.admit(id, request, RunQueue::submit) {
            Admit::Start | Admit::Wait { .. } => {}
            admit @ (Admit::Full | Admit::Closing) => {
                // Refused after all (the queue filled, or shutdown began, since the
                // check): the run was never acknowledged, so it leaves no trace.
                self.journal.forget(id).await?;
                let (running, waiting) = self.load();
                return Err(if admit == Admit::Full {
                    SubmitError::Full { running, waiting }
                } else {
                    SubmitError::Closing
                });
            }
        }
        Ok(Submitted {
            id,
            status: Status::Queued,
            created: true,
        })
    }

    /// What a repair of run `of` reuses: its successful branches, once it has
    /// ended and if it ran the same request.
    async fn repairable(&self, of: &str, spec: &RunSpec) -> Result<Vec<Reuse>, SubmitError> {
        let bad = |message: String| {
            SubmitError::Invalid(FieldError {
                field: "repair_of".to_owned(),
                message,
            })
        };
        let id = of
            .strip_prefix("run-")
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| bad(format!("`{of}` is not a run id (run-N)")))?;
        let row = self
            .journal
            .get(id)
            .await?
            .ok_or_else(|| bad(format!("no run `{of}`")))?;
        if !row.status.is_final() {
            return Err(bad(format!(
                "{of} has not ended ({}); repair it once it has",
                row.status.as_str()
            )));
        }
        let earlier = crate::spec::parse(row.spec.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let same = RunSpec {
            repair_of: None,
            ..earlier
        } == RunSpec {
            repair_of: None,
            ..spec.clone()
        };
        if !same {
            return Err(bad(format!(
                "{of} ran a different request; a repair runs the same one again"
            )));
        }
        Ok(self.earlier_outputs(id).await?)
    }

    /// The answer to a submission whose idempotency key `row` already has.
    fn same_request(row: RunRow, text: &str) -> Result<Submitted, SubmitError> {
        if row.spec != text {
            return Err(SubmitError::KeyReused { run: row.id });
        }
        Ok(Submitted {
            id: row.id,
            status: row.status,
            created: false,
        })
    }

    /// Puts run `id` to the queue with `how` (submit or resume) and starts it or
    /// keeps its request waiting — under one lock, so that a slot freed meanwhile
    /// cannot pick the run before its request is there.
    fn admit(
        self: &Arc<Self>,
        id: i64,
        request: RunRequest,
        how: fn(&mut RunQueue<i64>, i64) -> Admit,
    ) -> Admit {
        let mut state = self.state();
        let admit = state.queue.as_mut().map_or(Admit::Closing, |q| how(q, id));
        match admit {
            Admit::Start => self.start_locked(&mut state, id, request),
            Admit::Wait { .. } => {
                state.waiting.insert(id, request);
            }
            Admit::Full | Admit::Closing => {}
        }
        admit
    }

    /// Starts driving run `id` (the queue has admitted it); the state is locked.
    fn start_locked(self: &Arc<Self>, state: &mut State, id: i64, request: RunRequest) {
        let (stop, stopped) = oneshot::channel();
        let this = self.clone();
        let task = tokio::spawn(async move { this.drive(id, request, stopped).await });
        state.driven.insert(
            id,
            Driven {
                stop: Some(stop),
                task: Some(task),
            },
        );
    }

    /// Drives one run to its end, journaling as it goes.
    async fn drive(
        self: Arc<Self>,
        id: i64,
        request: RunRequest,
        mut stop: oneshot::Receiver<Stop>,
    ) {
        if let Err(e) = self.journal.set_status(id, Status::Running, None).await {
            tracing::error!(run = id, error = %e, "journal: cannot mark the run running");
        }
        self.bump();
        let mut handle: RunHandle = self.fanfare.start_run(request);
        let mut starts: HashMap<(u32, Option<u32>), Duration> = HashMap::new();
        let stopped = loop {
            tokio::select! {
                event = handle.events.recv() => match event {
                    Some(first) => {
                        let mut batch = vec![first];
                        while let Ok(more) = handle.events.try_recv() {
                            batch.push(more);
                        }
                        // Journal first: a branch the metrics count is one a crash
                        // cannot lose.
                        self.record(id, &batch).await;
                        self.observe(&batch, &mut starts);
                    }
                    None => break None,
                },
                Ok(why) = &mut stop => break Some(why),
            }
        };
        let (status, report, error) = match stopped {
            Some(why) => {
                // Dropping the handle cancels the run: its branches' calls are aborted.
                drop(handle);
                match why {
                    Stop::Cancel => (
                        Status::Cancelled,
                        None,
                        Some("cancelled by a client".to_owned()),
                    ),
                    Stop::Interrupt => (
                        Status::Interrupted,
                        None,
                        Some(
                            "the server stopped before the run ended; it resumes at the next start"
                                .to_owned(),
                        ),
                    ),
                }
            }
            None => match handle.report().await {
                Ok(report) => {
                    let status = if report.status.is_success() {
                        Status::Succeeded
                    } else {
                        Status::Failed
                    };
                    self.metrics.report(&report);
                    let error = match &report.status {
                        fanfare::RunStatus::Failed { reason } => Some(reason.to_string()),
                        fanfare::RunStatus::Succeeded => None,
                    };
                    (status, serde_json::to_string(&report).ok(), error)
                }
                Err(e) => (Status::Failed, None, Some(e.to_string())),
            },
        };
        let result = if status == Status::Interrupted {
            self.journal.set_status(id, status, error).await
        } else {
            self.journal.finish(id, status, report, error).await
        };
        if let Err(e) = result {
            tracing::error!(run = id, error = %e, "journal: cannot record the run's end");
        }
        self.bump();
        self.ended(id);
    }

    /// Feeds branch latencies to the metrics.
    fn observe(&self, batch: &[RunEvent], starts: &mut HashMap<(u32, Option<u32>), Duration>) {
        for event in batch {
            match event {
                RunEvent::BranchStarted {
                    index, item, at, ..
                } => {
                    starts.insert((*index, *item), *at);
                }
                RunEvent::BranchFinished {
                    index,
                    item,
                    agent,
                    outcome,
                    at,
                    ..
                } => {
                    let took = starts
                        .remove(&(*index, *item))
                        .map_or(Duration::ZERO, |s| at.saturating_sub(s));
                    self.metrics
                        .branch(agent, outcome.label(), took.as_secs_f64());
                }
                _ => {}
            }
        }
    }

    /// Journals a batch of a run's events in one transaction.
    async fn record(&self, id: i64, batch: &[RunEvent]) {
        let rows = batch
            .iter()
            .filter_map(|e| {
                let mut value = serde_json::to_value(e).ok()?;
                let kind = value.get("event")?.as_str()?.to_owned();
                // The runtime's own run number means nothing to a client: name the
                // run as the API does.
                value["run"] = serde_json::Value::String(format!("run-{id}"));
                Some((kind, value.to_string()))
            })
            .collect();
        if let Err(e) = self.journal.append_events(id, rows).await {
            tracing::error!(run = id, error = %e, "journal: cannot record events");
        }
        self.bump();
    }

    /// A driven run ended: forget it, and start what the queue lets start.
    fn ended(self: &Arc<Self>, id: i64) {
        // Under one lock: a cancel sees each run either waiting or driven.
        let mut state = self.state();
        state.driven.remove(&id);
        let next = state
            .queue
            .as_mut()
            .map(|q| q.finished(id))
            .unwrap_or_default();
        for k in next {
            if let Some(request) = state.waiting.remove(&k) {
                self.start_locked(&mut state, k, request);
            }
        }
    }

    /// Cancels run `id`: a waiting run leaves the queue; a running one has its
    /// branches' calls aborted. Returns once the journal says `cancelled`.
    pub async fn cancel(self: &Arc<Self>, id: i64) -> Result<Status, CancelError> {
        let driven = {
            let mut state = self.state();
            if state.queue.as_mut().is_some_and(|q| q.withdraw(id)) {
                state.waiting.remove(&id);
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

    /// Takes back the runs an earlier process left unfinished: each is checked
    /// again and started or queued (never refused).
    pub async fn resume(self: &Arc<Self>) -> Result<usize, JournalError> {
        let rows = self.journal.unfinished().await?;
        let count = rows.len();
        for row in rows {
            self.resume_one(row).await?;
        }
        Ok(count)
    }

    async fn resume_one(self: &Arc<Self>, row: RunRow) -> Result<(), JournalError> {
        let id = row.id;
        let request = crate::spec::parse(row.spec.as_bytes())
            .and_then(|spec| spec.request(&self.catalog, &self.defaults))
            .and_then(|r| {
                self.fanfare
                    .validate(&r)
                    .map(|()| r)
                    .map_err(|e| FieldError {
                        field: String::new(),
                        message: e.to_string(),
                    })
            });
        let request = match request {
            Ok(r) => {
                let mut reuse = self.earlier_outputs(id).await?;
                let repaired = crate::spec::parse(row.spec.as_bytes())
                    .ok()
                    .and_then(|s| s.repair_of)
                    .and_then(|of| of.strip_prefix("run-")?.parse::<i64>().ok());
                if let Some(of) = repaired {
                    for r in self.earlier_outputs(of).await? {
                        if !reuse.iter().any(|k| k.index == r.index && k.item == r.item) {
                            reuse.push(r);
                        }
                    }
                }
                r.reuse(reuse)
            }
            Err(e) => {
                let why =
                    format!("could not resume: {e} (the server's agents or workflows changed)");
                self.journal
                    .finish(id, Status::Failed, None, Some(why))
                    .await?;
                self.bump();
                return Ok(());
            }
        };
        self.journal
            .set_status(
                id,
                Status::Queued,
                Some(format!("resumed after {}", row.status.as_str())),
            )
            .await?;
        self.bump();
        self.admit(id, request, RunQueue::resume);
        Ok(())
    }

    /// What run `id`'s branches answered before it was interrupted: each
    /// successful `branch_finished` event in the journal.
    async fn earlier_outputs(&self, id: i64) -> Result<Vec<Reuse>, JournalError> {
        #[derive(serde::Deserialize)]
        struct Finished {
            index: u32,
            item: Option<u32>,
            outcome: BranchOutcome,
        }
        let rows = self.journal.events_of_kind(id, "branch_finished").await?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_str::<Finished>(&row.data).ok())
            .filter_map(|f| {
                let output = f.outcome.output()?.clone();
                Some(Reuse {
                    index: f.index,
                    item: f.item,
                    output,
                })
            })
            .collect())
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
