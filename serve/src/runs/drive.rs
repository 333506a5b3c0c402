//! Driving one run: the runtime's handle held, its events journaled in batches (then
//! fed to the metrics), its end journaled, a client's cancel or the server's stop
//! obeyed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fanfare::{RunEvent, RunHandle, RunRequest};
use tokio::sync::oneshot;

use super::{Runs, Stop};
use crate::journal::Status;

impl Runs {
    /// Drives one run to its end, journaling as it goes.
    pub(super) async fn drive(
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
}
