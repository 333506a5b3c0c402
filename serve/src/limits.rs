//! What the provider's admission gate learned about the server's limits, across
//! restarts: recalled from the journal at start (so a restarted server does not pay
//! a limited provider's first wave of 429s again), kept every
//! [`KEEP_EVERY`](crate::journal::KEEP_EVERY) while it changes, and once more at
//! shutdown.

use std::sync::Arc;
use std::time::SystemTime;

use fanfare::provider::{Gate, Learned};

use crate::journal::{Journal, JournalError, KEEP_EVERY};

/// The gate, the endpoint it learns about, and the journal that keeps it.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) journal: Journal,
    pub(crate) gate: Arc<Gate>,
    pub(crate) endpoint: String,
}

impl Limits {
    /// Starts the gate from what the journal kept; returns what it started from.
    pub(crate) async fn recall(&self) -> Result<Vec<(String, Learned)>, JournalError> {
        let learned = self
            .journal
            .learned_limits(self.endpoint.clone(), SystemTime::now())
            .await?;
        for (model, l) in &learned {
            self.gate.remember(Some(model), *l);
        }
        Ok(learned)
    }

    /// Keeps what the gate has learned, if it changed since `last`.
    async fn keep_if_changed(&self, last: &mut Vec<(String, Learned)>) {
        let now = self.gate.learned();
        if now.is_empty() || now == *last {
            return;
        }
        match self
            .journal
            .keep_limits(self.endpoint.clone(), now.clone(), SystemTime::now())
            .await
        {
            Ok(()) => *last = now,
            Err(e) => tracing::warn!(error = %e, "the learned limits were not journaled"),
        }
    }

    /// Keeps the learned limits every `KEEP_EVERY` until aborted.
    pub(crate) fn keep_while_running(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = Vec::new();
            let mut every = tokio::time::interval(KEEP_EVERY);
            loop {
                every.tick().await;
                self.keep_if_changed(&mut last).await;
            }
        })
    }

    /// Keeps them once more (at shutdown).
    pub(crate) async fn keep_now(&self) {
        self.keep_if_changed(&mut Vec::new()).await;
    }
}
