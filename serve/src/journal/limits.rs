//! What the admission gate learned about each endpoint (base URL and the key's
//! fingerprint, never the key), per model: read at start, kept as it changes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fanfare::provider::{Learned, LEARNED_KEEPS_FOR};
use rusqlite::params;

use super::{Journal, JournalError};

fn unix_s(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

impl Journal {
    /// What was learned about `endpoint` within [`LEARNED_KEEPS_FOR`] of `now`, by
    /// model.
    pub async fn learned_limits(
        &self,
        endpoint: String,
        now: SystemTime,
    ) -> Result<Vec<(String, Learned)>, JournalError> {
        let since = unix_s(now.checked_sub(LEARNED_KEEPS_FOR).unwrap_or(UNIX_EPOCH));
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT model, cap, refused_at FROM learned_limits \
                 WHERE endpoint = ?1 AND learned_at_unix_s > ?2 ORDER BY model",
            )?;
            let rows = stmt.query_map(params![endpoint, since], |r| {
                let count = |i| r.get::<_, i64>(i).map(|v| usize::try_from(v).unwrap_or(0));
                Ok((
                    r.get::<_, String>(0)?,
                    Learned {
                        cap: count(1)?,
                        refused_at: count(2)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Keeps what was learned about `endpoint` (by model) at `at`, and forgets
    /// entries older than [`LEARNED_KEEPS_FOR`].
    pub async fn keep_limits(
        &self,
        endpoint: String,
        learned: Vec<(String, Learned)>,
        at: SystemTime,
    ) -> Result<(), JournalError> {
        let now = unix_s(at);
        let stale = now.saturating_sub(LEARNED_KEEPS_FOR.as_secs() as i64);
        self.call(move |conn| {
            let tx = conn.transaction()?;
            for (model, l) in &learned {
                tx.execute(
                    "INSERT INTO learned_limits (endpoint, model, cap, refused_at, learned_at_unix_s) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (endpoint, model) DO UPDATE SET \
                     cap = ?3, refused_at = ?4, learned_at_unix_s = ?5",
                    params![endpoint, model, l.cap as i64, l.refused_at as i64, now],
                )?;
            }
            tx.execute(
                "DELETE FROM learned_limits WHERE learned_at_unix_s <= ?1",
                [stale],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// How often a running server keeps what its gate learned (and once more at
/// shutdown).
pub const KEEP_EVERY: Duration = Duration::from_secs(10);
