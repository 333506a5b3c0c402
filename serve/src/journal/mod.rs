//! The durable journal: every accepted run, every event of every run, and each
//! run's final report, in one SQLite file.
//!
//! Invariants:
//! - A run is in the journal before its id is answered; an event is in the journal
//!   before it is streamed (the event streams read it back from here), so a client
//!   that reconnects with `Last-Event-ID` misses nothing.
//! - Writes go through one group-commit thread (`writer`), each waiting write in the
//!   next transaction; the file is in WAL mode with `synchronous =
//!   FULL`, so a committed write survives a crash of the process or the machine.
//! - Events of a run are numbered from 1 without gaps (`seq`); the last one of a
//!   finished run is its `done` event.
//! - `limits`: what the admission gate learned about each endpoint's limits, kept
//!   apart from runs; entries older than a day are not used and are dropped.
//!
//! SQLite is synchronous: the async callers go through [`Journal::call`], which runs
//! the closure on the blocking pool.

mod limits;
mod migrations;
mod rows;
mod types;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension as _};

pub use limits::KEEP_EVERY;
pub use migrations::MigrationError;
pub use types::{
    EventRow, Figures, Inserted, JournalError, RunRow, RunSummary, Status, StoredReport, INPUT_HEAD,
};

use rows::{event_row, run_row, summary_row, with_status, RUN_COLUMNS, SUMMARY_COLUMNS};
use writer::{group_commit, Applied, Pending, Write};

/// The journal; cheap to clone, every clone is the same file.
#[derive(Clone)]
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// The group-commit writer (see [`Journal::append_events`]).
    writer: std::sync::mpsc::Sender<Pending>,
    /// Why the last write failed (a full disk, say); `None` once one succeeds.
    failing: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        // SQLite on `/dev/null` or `/dev/full` "opened", and left `-journal` files
        // beside the device.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(JournalError::NotAFile {
                path: path.to_owned(),
            });
        }
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
        let failing = Arc::new(Mutex::new(None));
        let health = failing.clone();
        std::thread::Builder::new()
            .name("journal-writer".to_owned())
            .spawn(move || group_commit(shared, rx, health))
            .map_err(|e| JournalError::Writer(e.to_string()))?;
        Ok(Journal {
            conn,
            path: path.to_owned(),
            writer,
            failing,
        })
    }

    /// Why the journal's last write failed, while it does (`None` once a write
    /// succeeds again): runs cannot keep their promise not to pay twice for an
    /// answer the journal did not keep, so they wait, and `/readyz` says so.
    pub fn write_failure(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes free for this process on the journal's file system.
    pub fn free_space(&self) -> std::io::Result<u64> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let stat = rustix::fs::statvfs(dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
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
        self.insert_run_with(spec, key, Vec::new()).await
    }

    /// [`Journal::insert_run`], with `events` (kind, data) written after its first
    /// one in the same transaction: what a repair carries over from the run it
    /// mends is there from the run's first moment, or the run is not.
    pub async fn insert_run_with(
        &self,
        spec: String,
        key: Option<String>,
        events: Vec<(String, String)>,
    ) -> Result<Inserted, JournalError> {
        match self.write(Write::Insert { spec, key, events }).await? {
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
        report: Option<StoredReport>,
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

    /// How many bytes a run's request and report take, without reading them
    /// (`octet_length` reads the record's header only): what its full view will
    /// cost before it is read.
    pub async fn stored_size(&self, id: i64) -> Result<Option<usize>, JournalError> {
        self.call(move |conn| {
            let size: Option<i64> = conn
                .query_row(
                    "SELECT octet_length(spec) + coalesce(octet_length(report), 0) FROM runs WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(size.map(|n| usize::try_from(n).unwrap_or(0)))
        })
        .await
    }

    /// Up to `limit` runs, newest first, older than `before` (an id) when given, of
    /// one status when given. A row this build cannot read (a status it does not
    /// know, a damaged column) is left out with a warning: one such row made the
    /// whole list fail. Only what [`RunSummary`] holds is read.
    pub async fn list(
        &self,
        status: Option<Status>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RunSummary>, JournalError> {
        self.call(move |conn| {
            let before = before.unwrap_or(i64::MAX);
            // One statement per shape, so that each uses its index: `(status, id)`
            // with a status (an `?1 IS NULL OR` in one statement scanned the table).
            let rows: Vec<rusqlite::Result<(RunSummary, String)>> = match status {
                Some(status) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {SUMMARY_COLUMNS} FROM runs WHERE status = ?1 AND id < ?2 \
                         ORDER BY id DESC LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(params![status.as_str(), before, limit], summary_row)?;
                    rows.collect()
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {SUMMARY_COLUMNS} FROM runs WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                    ))?;
                    let rows = stmt.query_map(params![before, limit], summary_row)?;
                    rows.collect()
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                match row.map_err(JournalError::from).and_then(with_status) {
                    Ok(row) => out.push(row),
                    Err(e) => tracing::warn!(error = %e, "journal: a run row that cannot be read is left out of the list"),
                }
            }
            Ok(out)
        })
        .await
    }

    /// The latest repair of run `of` that is still going or succeeded (queued,
    /// running, interrupted or succeeded), and its status: a repair asked for again
    /// is that one.
    pub async fn live_repair(&self, of: i64) -> Result<Option<(i64, Status)>, JournalError> {
        self.call(move |conn| {
            let found: Option<(i64, String)> = conn
                .query_row(
                    "SELECT id, status FROM runs WHERE repair_of = ?1 \
                     AND status IN ('queued', 'running', 'interrupted', 'succeeded') \
                     ORDER BY id DESC LIMIT 1",
                    [of],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            found
                .map(|(id, status)| {
                    Status::parse(&status)
                        .map(|s| (id, s))
                        .ok_or(JournalError::BadStatus { run: id, status })
                })
                .transpose()
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

    /// Up to `limit` events of `run` after `seq`, in order, and no more than
    /// `max_bytes` of their data (but always the first one): what one reader may
    /// hold at once. Not the `kept_` events (tool turns kept for a resume): those
    /// are the server's, not a client's.
    pub async fn events_after(
        &self,
        run: i64,
        seq: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<EventRow>, JournalError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, kind, data, at_ms FROM events WHERE run = ?1 AND seq > ?2 \
                 AND substr(kind, 1, 5) != 'kept_' ORDER BY seq LIMIT ?3",
            )?;
            let mut out = Vec::new();
            let mut bytes = 0;
            for row in stmt.query_map(params![run, seq, limit], event_row)? {
                let row = row?;
                bytes += row.data.len() + row.kind.len();
                if bytes > max_bytes && !out.is_empty() {
                    break;
                }
                out.push(row);
            }
            Ok(out)
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
        self.events_of_kinds(run, &[kind]).await
    }

    /// Run `run`'s events of any of `kinds`, in the order they were written.
    pub async fn events_of_kinds(
        &self,
        run: i64,
        kinds: &[&str],
    ) -> Result<Vec<EventRow>, JournalError> {
        let kinds = serde_json::json!(kinds).to_string();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, kind, data, at_ms FROM events WHERE run = ?1 \
                 AND kind IN (SELECT value FROM json_each(?2)) ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![run, kinds], event_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
