//! Driving one run: the runtime's handle held, its events journaled in batches (then
//! fed to the metrics), its end journaled, a client's cancel or the server's stop
//! obeyed.
//!
//! A write the journal refuses (a full disk) is tried again until it is committed:
//! an answer the journal did not keep would be paid for again after a restart, so
//! the run waits (its events wait in memory; its calls in flight go on) and
//! `/readyz` says why. At shutdown the wait is given up after a few tries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fanfare::{RunEvent, RunHandle, RunRequest};
use tokio::sync::oneshot;

use super::{Runs, Stop};
use crate::journal::{Figures, JournalError, Status, StoredReport};

/// A report as the journal keeps it, named as the API names its run (the runtime's
/// own run number means nothing to a client), with the figures the run list shows.
fn report_json(id: i64, mut report: fanfare::RunReport) -> Option<StoredReport> {
    report.run_id = fanfare::agent::RunId(id.unsigned_abs());
    let t = &report.totals;
    // Counted as the page draws rows: a map step's items each count, not the step.
    let (mut branches, mut ok) = (0i64, 0i64);
    for b in &report.branches {
        if b.items.is_empty() {
            branches += 1;
            ok += i64::from(b.outcome.is_ok());
        }
        for item in &b.items {
            branches += 1;
            ok += i64::from(item.outcome.is_ok());
        }
    }
    let figures = Figures {
        branches,
        branches_ok: ok,
        tokens: (t.usage.input_tokens + t.usage.output_tokens) as i64,
        cost_usd: t.cost_usd,
        wall_ms: report.wall.as_millis() as i64,
    };
    let json = serde_json::to_string(&report).ok()?;
    Some(StoredReport { json, figures })
}

/// How long a cancelled run has to stop and hand over its report (it stops at once:
/// its calls in flight are dropped, not awaited).
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Tries of a failing write once the server is shutting down.
const TRIES_AT_SHUTDOWN: u32 = 3;

impl Runs {
    /// Drives one run to its end, journaling as it goes.
    pub(super) async fn drive(
        self: Arc<Self>,
        id: i64,
        request: RunRequest,
        mut stop: oneshot::Receiver<Stop>,
    ) {
        self.until_written(id, "its start", || {
            self.journal.set_status(id, Status::Running, None)
        })
        .await;
        self.bump();
        // Its tool loops' turns are kept as they happen, and its calls that need
        // approval wait for a client's.
        let kept = super::kept::Kept {
            journal: self.journal.clone(),
            run: id,
        };
        let request = request
            .tool_journal(fanfare::agent::tools::ToolKeeper::new(kept))
            .approver(self.desk.approver(id));
        let mut handle: RunHandle = self.fanfare.start_run(request);
        let mut starts: HashMap<(u32, Option<u32>), Duration> = HashMap::new();
        let stopped = loop {
            tokio::select! {
                event = handle.events.recv() => match event {
                    Some(first) => self.absorb(id, first, &mut handle, &mut starts).await,
                    None => break None,
                },
                Ok(why) = &mut stop => break Some(why),
            }
        };
        let (status, report, error) = match stopped {
            Some(Stop::Cancel) => {
                // The run stops at once, keeping what had ended; its last events
                // (the branches it cancelled) and its report are kept too.
                handle.stop();
                let rest = tokio::time::timeout(CANCEL_GRACE, async {
                    while let Some(first) = handle.events.recv().await {
                        self.absorb(id, first, &mut handle, &mut starts).await;
                    }
                    handle.report().await
                })
                .await;
                let report = match rest {
                    Ok(Ok(report)) => report_json(id, report),
                    Ok(Err(e)) => {
                        tracing::warn!(run = id, error = %e, "a cancelled run left no report");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(run = id, "a cancelled run did not stop within {CANCEL_GRACE:?}; dropped without a report");
                        None
                    }
                };
                (
                    Status::Cancelled,
                    report,
                    Some("cancelled by a client".to_owned()),
                )
            }
            Some(Stop::Interrupt) => {
                // Dropping the handle cancels the run: its branches' calls are
                // aborted, and it resumes from the journal at the next start.
                drop(handle);
                (
                    Status::Interrupted,
                    None,
                    Some(
                        "the server stopped before the run ended; it resumes at the next start"
                            .to_owned(),
                    ),
                )
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
                    (status, report_json(id, report), error)
                }
                Err(e) => (Status::Failed, None, Some(e.to_string())),
            },
        };
        let journal = &self.journal;
        self.until_written(id, "its end", || {
            let (report, error) = (report.clone(), error.clone());
            async move {
                if status == Status::Interrupted {
                    journal.set_status(id, status, error).await
                } else {
                    journal.finish(id, status, report, error).await
                }
            }
        })
        .await;
        // Out of the driven runs first, then the word: a shutdown waiting for the
        // last run woke before it was out, and then waited the whole drain.
        self.desk.forget(id);
        self.ended(id);
        self.bump();
    }

    /// Journals `first` and whatever other events are already waiting, as one batch,
    /// then feeds them to the metrics.
    async fn absorb(
        &self,
        id: i64,
        first: RunEvent,
        handle: &mut RunHandle,
        starts: &mut HashMap<(u32, Option<u32>), Duration>,
    ) {
        let mut batch = vec![first];
        while let Ok(more) = handle.events.try_recv() {
            batch.push(more);
        }
        // Journal first: a branch the metrics count is one a crash cannot lose.
        self.record(id, &batch).await;
        self.observe(&batch, starts);
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
                RunEvent::ToolFinished {
                    tool, took, error, ..
                } => self.metrics.tool(tool, error.is_none(), took.as_secs_f64()),
                _ => {}
            }
        }
    }

    /// Journals a batch of a run's events in one transaction.
    async fn record(&self, id: i64, batch: &[RunEvent]) {
        let rows: Vec<(String, String)> = batch
            .iter()
            .filter_map(|e| {
                let mut value = serde_json::to_value(e).ok()?;
                let kind = value.get("event")?.as_str()?.to_owned();
                // The runtime's own run number means nothing to a client: name the
                // run as the API does.
                value["run"] = serde_json::Value::String(format!("run-{id}"));
                // Why a branch did not succeed, in one line, as its report will say:
                // what a client shows without knowing every kind of failure.
                if let RunEvent::BranchFinished { outcome, .. } = e {
                    value["error"] = outcome.problem().into();
                }
                Some((kind, value.to_string()))
            })
            .collect();
        self.until_written(id, "its events", || {
            self.journal.append_events(id, rows.clone())
        })
        .await;
        self.bump();
    }

    /// Makes `write` until the journal commits it; see the module docs. Returns
    /// whether it was committed (`false`: given up at shutdown).
    async fn until_written<F, Fut>(&self, id: i64, what: &str, write: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), JournalError>>,
    {
        let mut wait = Duration::from_millis(50);
        let mut failed = 0u32;
        let mut at_shutdown = 0u32;
        loop {
            let error = match write().await {
                Ok(()) => {
                    if failed > 0 {
                        tracing::warn!(run = id, failed, "journal: written again; the run goes on");
                    }
                    return true;
                }
                Err(e) => e,
            };
            if failed == 0 {
                tracing::error!(run = id, error = %error, "journal: cannot record {what}; the run waits until it can");
            }
            failed += 1;
            if *self.closing().borrow() {
                at_shutdown += 1;
                if at_shutdown >= TRIES_AT_SHUTDOWN {
                    tracing::error!(run = id, error = %error, "journal: shutting down with {what} not recorded");
                    return false;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}
