//! The journal's data: a run's [`Status`], what is stored of a run and of an event,
//! and [`JournalError`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::migrations::MigrationError;

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
    /// The path names something that is not a regular file (a device, a directory).
    #[error("the journal {path} is not a regular file (give --db a file's path)")]
    NotAFile {
        /// The path.
        path: PathBuf,
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

/// The figures of a run's report that the run list shows, kept in columns beside
/// it so that a list never reads a report (one of 10,000 branches is ~10 MB).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// Branches, whatever their outcome; a map step's items each count (the step
    /// itself does not), as the page draws them.
    pub branches: i64,
    /// Of them, those that succeeded.
    pub branches_ok: i64,
    /// Input and output tokens over the branches and the merge.
    pub tokens: i64,
    /// What the calls of known price cost, US dollars.
    pub cost_usd: Option<f64>,
    /// The run's wall time, milliseconds.
    pub wall_ms: i64,
}

/// A report as the journal keeps it: its JSON, and its [`Figures`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoredReport {
    /// The report.
    pub json: String,
    /// What the run list shows of it.
    pub figures: Figures,
}

/// The longest piece of a run's input, in characters, that a [`RunSummary`] keeps.
pub const INPUT_HEAD: usize = 120;

/// A run as the run list shows it: never its request or its report, which may be
/// large (a list of 500 runs read every one of them whole).
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Its number (`run-N` on the wire).
    pub id: i64,
    /// Where it is.
    pub status: Status,
    /// When it was accepted, Unix milliseconds.
    pub created_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_ms: i64,
    /// Why it failed without a report, or was cancelled or interrupted (its first
    /// 300 characters).
    pub error: Option<String>,
    /// The first [`INPUT_HEAD`] characters of its input.
    pub input_head: Option<String>,
    /// Its workflow, by name (`None`: a fan-out to named agents).
    pub workflow: Option<String>,
    /// Its report's figures, once it has a report.
    pub figures: Option<Figures>,
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

/// What [`Journal::insert_run`](super::Journal::insert_run) did.
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    /// A new run, with this id.
    New(i64),
    /// A run with the same idempotency key was already there.
    Existing(RunRow),
}
