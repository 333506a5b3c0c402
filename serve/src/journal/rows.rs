//! Reading and writing rows: the columns of a run, the payload of a status event,
//! and appending an event numbered after the run's last.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::params;

use super::types::{EventRow, Figures, JournalError, RunRow, RunSummary, Status};

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) const RUN_COLUMNS: &str =
    "id, status, spec, idempotency_key, created_ms, updated_ms, report, error";

pub(super) fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRow, String)> {
    let status: String = r.get(1)?;
    Ok((
        RunRow {
            id: r.get(0)?,
            status: Status::Queued,
            spec: r.get(2)?,
            idempotency_key: r.get(3)?,
            created_ms: r.get(4)?,
            updated_ms: r.get(5)?,
            report: r.get(6)?,
            error: r.get(7)?,
        },
        status,
    ))
}

/// The columns [`summary_row`] reads: never the request or the report.
pub(super) const SUMMARY_COLUMNS: &str =
    "id, status, created_ms, updated_ms, substr(error, 1, 300), \
     input_head, workflow, branches, branches_ok, tokens, cost_usd, wall_ms";

pub(super) fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunSummary, String)> {
    let status: String = r.get(1)?;
    let branches: Option<i64> = r.get(7)?;
    let figures = match branches {
        None => None,
        Some(branches) => Some(Figures {
            branches,
            branches_ok: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
            tokens: r.get::<_, Option<i64>>(9)?.unwrap_or(0),
            cost_usd: r.get(10)?,
            wall_ms: r.get::<_, Option<i64>>(11)?.unwrap_or(0),
        }),
    };
    Ok((
        RunSummary {
            id: r.get(0)?,
            status: Status::Queued,
            created_ms: r.get(2)?,
            updated_ms: r.get(3)?,
            error: r.get(4)?,
            input_head: r.get(5)?,
            workflow: r.get(6)?,
            figures,
        },
        status,
    ))
}

/// A row read with its status as stored, which [`with_status`] parses.
pub(super) trait WithStatus {
    fn id(&self) -> i64;
    fn set_status(&mut self, status: Status);
}

impl WithStatus for RunRow {
    fn id(&self) -> i64 {
        self.id
    }
    fn set_status(&mut self, status: Status) {
        self.status = status;
    }
}

impl WithStatus for RunSummary {
    fn id(&self) -> i64 {
        self.id
    }
    fn set_status(&mut self, status: Status) {
        self.status = status;
    }
}

/// `row` with its stored `status` parsed: an unknown one is an error naming the run.
pub(super) fn with_status<R: WithStatus>(
    (mut row, status): (R, String),
) -> Result<R, JournalError> {
    let parsed = Status::parse(&status).ok_or(JournalError::BadStatus {
        run: row.id(),
        status,
    })?;
    row.set_status(parsed);
    Ok(row)
}

/// The payload of a `status` or `done` event, with the fields every event has
/// (`event`, `run`: the probe found these two without them).
pub(super) fn status_data(kind: &str, run: i64, status: Status, note: Option<&str>) -> String {
    serde_json::json!({
        "event": kind,
        "run": format!("run-{run}"),
        "status": status,
        "note": note,
    })
    .to_string()
}

/// Appends one event to `run`, numbered after its last.
pub(super) fn append(
    tx: &rusqlite::Transaction<'_>,
    run: i64,
    kind: &str,
    data: &str,
    at: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (run, seq, kind, data, at_ms) \
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run = ?1), ?2, ?3, ?4)",
        params![run, kind, data, at],
    )?;
    Ok(())
}

/// An event as the events queries select it (`seq, kind, data, at_ms`).
pub(super) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: r.get(0)?,
        kind: r.get(1)?,
        data: r.get(2)?,
        at_ms: r.get(3)?,
    })
}
