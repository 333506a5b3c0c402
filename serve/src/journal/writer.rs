//! The group commit: one thread applies every journal write waiting in one
//! transaction (one sync to disk for all of them) and answers each caller once its
//! write is committed.

use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension as _};

use super::rows::{append, now_ms, run_row, status_data, with_status, RUN_COLUMNS};
use super::types::{Inserted, JournalError, Status, StoredReport, INPUT_HEAD};

/// A write the group commit applies.
#[derive(Debug)]
pub(super) enum Write {
    /// A new run, queued, with its first event and `events` after it (or the run
    /// its idempotency key already names).
    Insert {
        spec: String,
        key: Option<String>,
        events: Vec<(String, String)>,
    },
    /// Events appended to a run.
    Events {
        run: i64,
        events: Vec<(String, String)>,
    },
    /// A run moved to a status that is not final, with a `status` event.
    Status {
        run: i64,
        status: Status,
        note: Option<String>,
    },
    /// A run ended, with its `done` event.
    Finish {
        run: i64,
        status: Status,
        report: Option<StoredReport>,
        error: Option<String>,
    },
}

/// What a write did.
#[derive(Debug)]
pub(super) enum Applied {
    Done,
    Inserted(Inserted),
}

impl Write {
    fn apply(&self, tx: &rusqlite::Transaction<'_>, now: i64) -> Result<Applied, JournalError> {
        match self {
            Write::Insert { spec, key, events } => {
                if let Some(key) = key {
                    let existing = tx
                        .query_row(
                            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?1"),
                            [key],
                            run_row,
                        )
                        .optional()?;
                    if let Some(row) = existing {
                        return Ok(Applied::Inserted(Inserted::Existing(with_status(row)?)));
                    }
                }
                // What the run list shows of it, taken now (see `RunSummary`).
                tx.execute(
                    "INSERT INTO runs (status, spec, idempotency_key, created_ms, updated_ms, \
                     input_head, workflow, repair_of) \
                     SELECT ?1, ?2, ?3, ?4, ?4, \
                     iif(v, substr(json_extract(?2, '$.input'), 1, ?5), NULL), \
                     iif(v, json_extract(?2, '$.workflow'), NULL), \
                     iif(v, CAST(substr(json_extract(?2, '$.repair_of'), 5) AS INTEGER), NULL) \
                     FROM (SELECT json_valid(?2) AS v)",
                    params![Status::Queued.as_str(), spec, key, now, INPUT_HEAD as i64],
                )?;
                let id = tx.last_insert_rowid();
                append(
                    tx,
                    id,
                    "status",
                    &status_data("status", id, Status::Queued, None),
                    now,
                )?;
                for (kind, data) in events {
                    append(tx, id, kind, data, now)?;
                }
                return Ok(Applied::Inserted(Inserted::New(id)));
            }
            Write::Events { run, events } => {
                for (kind, data) in events {
                    append(tx, *run, kind, data, now)?;
                }
            }
            Write::Status { run, status, note } => {
                tx.execute(
                    "UPDATE runs SET status = ?2, updated_ms = ?3 WHERE id = ?1",
                    params![run, status.as_str(), now],
                )?;
                append(
                    tx,
                    *run,
                    "status",
                    &status_data("status", *run, *status, note.as_deref()),
                    now,
                )?;
            }
            Write::Finish {
                run,
                status,
                report,
                error,
            } => {
                let figures = report.as_ref().map(|r| r.figures);
                tx.execute(
                    "UPDATE runs SET status = ?2, updated_ms = ?3, report = ?4, error = ?5, \
                     branches = ?6, branches_ok = ?7, tokens = ?8, cost_usd = ?9, wall_ms = ?10 \
                     WHERE id = ?1",
                    params![
                        run,
                        status.as_str(),
                        now,
                        report.as_ref().map(|r| &r.json),
                        error,
                        figures.map(|f| f.branches),
                        figures.map(|f| f.branches_ok),
                        figures.map(|f| f.tokens),
                        figures.and_then(|f| f.cost_usd),
                        figures.map(|f| f.wall_ms),
                    ],
                )?;
                append(
                    tx,
                    *run,
                    "done",
                    &status_data("done", *run, *status, error.as_deref()),
                    now,
                )?;
            }
        }
        Ok(Applied::Done)
    }
}

/// A write waiting for the group commit, and who waits for it.
pub(super) struct Pending {
    pub write: Write,
    pub done: tokio::sync::oneshot::Sender<Result<Applied, String>>,
}

/// Applies `writes` in one transaction.
fn commit(conn: &mut Connection, writes: &[&Write]) -> Result<Vec<Applied>, JournalError> {
    let tx = conn.transaction()?;
    let now = now_ms();
    let applied = writes
        .iter()
        .map(|w| w.apply(&tx, now))
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(applied)
}

/// The group-commit writer: takes every write waiting, applies them all in one
/// transaction (one sync to disk), and answers each. If that transaction fails,
/// each write is tried alone, so that one bad write fails only its own caller.
/// Ends when every `Journal` clone is gone. `failing` holds why the last write
/// failed, and is cleared by the next that succeeds.
pub(super) fn group_commit(
    conn: Arc<Mutex<Connection>>,
    rx: std::sync::mpsc::Receiver<Pending>,
    failing: Arc<Mutex<Option<String>>>,
) {
    let health = |result: &Result<_, String>| {
        if let Ok(mut f) = failing.lock() {
            *f = result.as_ref().err().cloned();
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<&Write> = batch.iter().map(|p| &p.write).collect();
        if let Ok(applied) = commit(&mut guard, &all) {
            health(&Ok(()));
            for (p, a) in batch.into_iter().zip(applied) {
                let _ = p.done.send(Ok(a));
            }
            continue;
        }
        for p in batch {
            let result = commit(&mut guard, &[&p.write])
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.pop().ok_or_else(|| "nothing applied".to_owned()));
            health(&result.as_ref().map(|_| ()).map_err(Clone::clone));
            let _ = p.done.send(result);
        }
    }
}
