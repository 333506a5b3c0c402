//! The durable journal: every accepted run, every event of every run, and each
//! run's final report, in one SQLite file.
//!
//! Invariants:
//! - A run is in the journal before its id is answered; an event is in the journal
//!   before it is streamed (the event streams read it back from here), so a client
//!   that reconnects with `Last-Event-ID` misses nothing.
//! - Each write is one transaction; the file is in WAL mode with `synchronous =
//!   FULL`, so a committed write survives a crash of the process or the machine.
//! - Events of a run are numbered from 1 without gaps (`seq`); the last one of a
//!   finished run is its `done` event.
//!
//! SQLite is synchronous: the async callers go through [`Journal::call`], which runs
//! the closure on the blocking pool.

mod migrations;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};

pub use migrations::MigrationError;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, waiting for a slot.
    Queued,
    /// Its branches are running.
    Running,
    /// It ended and met its policy.
    Succeeded,
    /// It ended without meeting its policy, or could not run.
    Failed,
    /// Cancelled by a client.
    Cancelled,
    /// The server stopped before it ended; the next start resumes it.
    Interrupted,
}

impl Status {
    /// Every status, for parsing and listing.
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Interrupted,
    ];

    /// The name used on the wire and in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True once the run will not change again.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file could not be opened or set up.
    #[error("cannot open the journal {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The schema could not be brought up to date.
    #[error("journal {path}")]
    Migrate {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: MigrationError,
    },
    /// A read or write failed.
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored status is not one this build knows.
    #[error("journal: run {run} has an unknown status `{status}`")]
    BadStatus {
        /// The run.
        run: i64,
        /// What was stored.
        status: String,
    },
    /// The blocking task running the query panicked or was cancelled.
    #[error("journal: the query's task ended abnormally")]
    Task,
    /// The group-commit writer could not start or has stopped.
    #[error("journal writer: {0}")]
    Writer(String),
}

/// One run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    /// Its number (`run-N` on the wire).
    pub id: i64,
    /// Where it is.
    pub status: Status,
    /// The submitted request, as JSON.
    pub spec: String,
    /// The client's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
    /// When it was accepted, Unix milliseconds.
    pub created_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_ms: i64,
    /// The final report (JSON), once it ended with one.
    pub report: Option<String>,
    /// Why it failed without a report, or was cancelled or interrupted.
    pub error: Option<String>,
}

/// One event of a run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// Its number within the run, from 1.
    pub seq: i64,
    /// Its kind (`status`, `branch_finished`, …, `done`).
    pub kind: String,
    /// Its payload, JSON.
    pub data: String,
    /// When it was written, Unix milliseconds.
    pub at_ms: i64,
}

/// What [`Journal::insert_run`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    /// A new run, with this id.
    New(i64),
    /// A run with the same idempotency key was already there.
    Existing(RunRow),
}

/// The journal; cheap to clone, every clone is the same file.
#[derive(Clone)]
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// The group-commit writer (see [`Journal::append_events`]).
    writer: std::sync::mpsc::Sender<Pending>,
}

/// A write the group commit applies.
#[derive(Debug)]
enum Write {
    /// A new run, queued, with its first event (or the run its idempotency key
    /// already names).
    Insert { spec: String, key: Option<String> },
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
        report: Option<String>,
        error: Option<String>,
    },
}

/// What a write did.
#[derive(Debug)]
enum Applied {
    Done,
    Inserted(Inserted),
}

impl Write {
    fn apply(&self, tx: &rusqlite::Transaction<'_>, now: i64) -> Result<Applied, JournalError> {
        match self {
            Write::Insert { spec, key } => {
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
                tx.execute(
                    "INSERT INTO runs (status, spec, idempotency_key, created_ms, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![Status::Queued.as_str(), spec, key, now],
                )?;
                let id = tx.last_insert_rowid();
                append(tx, id, "status", &status_data(Status::Queued, None), now)?;
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
                    &status_data(*status, note.as_deref()),
                    now,
                )?;
            }
            Write::Finish {
                run,
                status,
                report,
                error,
            } => {
                tx.execute(
                    "UPDATE runs SET status = ?2, updated_ms = ?3, report = ?4, error = ?5 WHERE id = ?1",
                    params![run, status.as_str(), now, report, error],
                )?;
                append(
                    tx,
                    *run,
                    "done",
                    &status_data(*status, error.as_deref()),
                    now,
                )?;
            }
        }
        Ok(Applied::Done)
    }
}

/// A write waiting for the group commit, and who waits for it.
struct Pending {
    write: Write,
    done: tokio::sync::oneshot::Sender<Result<Applied, String>>,
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
/// Ends when every `Journal` clone is gone.
fn group_commit(conn: Arc<Mutex<Connection>>, rx: std::sync::mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<&Write> = batch.iter().map(|p| &p.write).collect();
        if let Ok(applied) = commit(&mut guard, &all) {
            for (p, a) in batch.into_iter().zip(applied) {
                let _ = p.done.send(Ok(a));
            }
            continue;
        }
        for p in batch {
            let result = commit(&mut guard, &[&p.write])
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.pop().ok_or_else(|| "nothing applied".to_owned()));
            let _ = p.done.send(result);
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const RUN_COLUMNS: &str =
    "id, status, spec, idempotency_key, created_ms, updated_ms, report, error";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRow, String)> {
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

fn with_status((mut row, status): (RunRow, String)) -> Result<RunRow, JournalError> {
    row.status = Status::parse(&status).ok_or(JournalError::BadStatus {
        run: row.id,
        status,
    })?;
    Ok(row)
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let open = |source| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        migrations::migrate(&mut conn).map_err(|source| JournalError::Migrate {
            path: path.to_owned(),
            source,
        })?;
        let conn = Arc::new(Mutex::new(conn));
        let (writer, rx) = std::sync::mpsc::channel();
        let shared = conn.clone();
        std::thread::Builder::new()
            .name("journal-writer".to_owned())
            .spawn(move || group_commit(shared, rx))
            .map_err(|e| JournalError::Writer(e.to_string()))?;
        Ok(Journal {
            conn,
            path: path.to_owned(),
            writer,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on the blocking pool.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held leaves a connection that SQLite itself
            // keeps consistent (the transaction rolled back): keep using it.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| JournalError::Task)?
    }

    /// Records a new run as queued, with its first event; or, when a run already
    /// has `key`, returns that run instead.
    pub async fn insert_run(
        &self,
        spec: String,
        key: Option<String>,
    ) -> Result<Inserted, JournalError> {
        match self.write(Write::Insert { spec, key }).await? {
            Applied::Inserted(i) => Ok(i),
            Applied::Done => Err(JournalError::Writer(
                "an insert inserted nothing".to_owned(),
            )),
        }
    }

    /// How many runs have each status.
    pub async fn status_counts(&self) -> Result<Vec<(Status, i64)>, JournalError> {
        self.call(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (status, n) = row?;
                if let Some(s) = Status::parse(&status) {
                    out.push((s, n));
                }
            }
            Ok(out)
        })
        .await
    }

    /// The run that has idempotency key `key`.
    pub async fn find_key(&self, key: String) -> Result<Option<RunRow>, JournalError> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?1"),
                [key],
                run_row,
            )
            .optional()?
            .map(with_status)
            .transpose()
        })
        .await
    }

    /// Removes a run that was never acknowledged, and its events.
    pub async fn forget(&self, run: i64) -> Result<(), JournalError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM events WHERE run = ?1", [run])?;
            tx.execute("DELETE FROM runs WHERE id = ?1", [run])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Moves a run to `status` (not a final one: see [`Journal::finish`]) and records
    /// the change as an event, with an optional note.
    pub async fn set_status(
        &self,
        run: i64,
        status: Status,
        note: Option<String>,
    ) -> Result<(), JournalError> {
        self.write(Write::Status { run, status, note })
            .await
            .map(drop)
    }

    /// Appends events (kind, JSON) to a run. Writes from every run that arrive
    /// together are committed together (group commit: one sync to disk for all of
    /// them), so a burst of branch ends across many runs is durable within one
    /// commit's time rather than one per run. Returns once committed.
    pub async fn append_events(
        &self,
        run: i64,
        events: Vec<(String, String)>,
    ) -> Result<(), JournalError> {
        self.write(Write::Events { run, events }).await.map(drop)
    }

    /// Ends a run: its status, report or error, and its `done` event, at once.
    pub async fn finish(
        &self,
        run: i64,
        status: Status,
        report: Option<String>,
        error: Option<String>,
    ) -> Result<(), JournalError> {
        self.write(Write::Finish {
            run,
            status,
            report,
            error,
        })
        .await
        .map(drop)
    }

    /// Hands `write` to the group commit and waits until it is committed.
    async fn write(&self, write: Write) -> Result<Applied, JournalError> {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.writer
            .send(Pending { write, done })
            .map_err(|_| JournalError::Writer("stopped".to_owned()))?;
        committed
            .await
            .map_err(|_| JournalError::Writer("stopped".to_owned()))?
            .map_err(JournalError::Writer)
    }

    /// The run `id`.
    pub async fn get(&self, id: i64) -> Result<Option<RunRow>, JournalError> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()?
            .map(with_status)
            .transpose()
        })
        .await
    }

    /// Up to `limit` runs, newest first, older than `before` (an id) when given, of
    /// one status when given.
    pub async fn list(
        &self,
        status: Option<Status>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RunRow>, JournalError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs \
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR id < ?2) \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows =
                stmt.query_map(params![status.map(Status::as_str), before, limit], run_row)?;
            rows.map(|r| with_status(r?)).collect()
        })
        .await
    }

    /// Runs that did not end: queued, running (the process died) or interrupted,
    /// oldest first.
    pub async fn unfinished(&self) -> Result<Vec<RunRow>, JournalError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running', 'interrupted') ORDER BY id"
            ))?;
            let rows = stmt.query_map([], run_row)?;
            rows.map(|r| with_status(r?)).collect()
        })
        .await
    }

    /// Up to `limit` events of `run` after `seq`, in order.
    pub async fn events_after(
        &self,
        run: i64,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, JournalError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, kind, data, at_ms FROM events WHERE run = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![run, seq, limit], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    data: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Every event of `run` of kind `kind`, in order (for resuming a run: its
    /// finished branches).
    pub async fn events_of_kind(
        &self,
        run: i64,
        kind: &'static str,
    ) -> Result<Vec<EventRow>, JournalError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, kind, data, at_ms FROM events WHERE run = ?1 AND kind = ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![run, kind], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    data: r.get(2)?,
                    at_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// The payload of a `status` or `done` event.
fn status_data(status: Status, note: Option<&str>) -> String {
    serde_json::json!({ "status": status, "note": note }).to_string()
}

/// Appends one event to `run`, numbered after its last.
fn append(
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

#[cfg(test)]
mod tests;
