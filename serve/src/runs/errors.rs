//! What a submission or a cancel answers when it does not simply succeed.

use crate::journal::{JournalError, Status};
use crate::spec::FieldError;

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
    /// The journal cannot take a new run now: its disk has less free than the floor,
    /// its file is gone, or a write failed.
    #[error("{0}")]
    JournalUnavailable(String),
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
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Closing,
}
