//! The journal's schema, as numbered migrations. The database's `user_version` is
//! the number of migrations applied; opening a journal applies the rest in one
//! transaction each. A journal written by a newer fanfare (a higher version than
//! this build knows) is refused rather than guessed at.

use rusqlite::Connection;

/// Each migration, in order; never edit one that has shipped, add the next.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs and their events.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        report TEXT,
        error TEXT
    );
    CREATE INDEX runs_by_status ON runs (status, id);
    CREATE TABLE events (
        run INTEGER NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (run, seq)
    ) WITHOUT ROWID;",
    // 2: what the admission gate learned about each endpoint's limits, so that a
    // restarted server does not pay a limited provider's first wave of 429s again.
    "CREATE TABLE learned_limits (
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        cap INTEGER NOT NULL,
        refused_at INTEGER NOT NULL,
        learned_at_unix_s INTEGER NOT NULL,
        PRIMARY KEY (endpoint, model)
    ) WITHOUT ROWID;",
    // 3: what the run list shows of each run, so that a list reads neither requests
    // nor reports (a list of 500 runs read them all whole), and the run a repair
    // mends (two repairs of one run at once each started and paid); filled in for the
    // runs already there.
    "ALTER TABLE runs ADD COLUMN input_head TEXT;
    ALTER TABLE runs ADD COLUMN workflow TEXT;
    ALTER TABLE runs ADD COLUMN branches INTEGER;
    ALTER TABLE runs ADD COLUMN branches_ok INTEGER;
    ALTER TABLE runs ADD COLUMN tokens INTEGER;
    ALTER TABLE runs ADD COLUMN cost_usd REAL;
    ALTER TABLE runs ADD COLUMN wall_ms INTEGER;
    ALTER TABLE runs ADD COLUMN repair_of INTEGER;
    CREATE INDEX runs_by_repair ON runs (repair_of, id) WHERE repair_of IS NOT NULL;
    UPDATE runs SET input_head = substr(json_extract(spec, '$.input'), 1, 120),
        workflow = json_extract(spec, '$.workflow'),
        repair_of = CAST(substr(json_extract(spec, '$.repair_of'), 5) AS INTEGER)
        WHERE json_valid(spec);
    UPDATE runs SET
        branches = (SELECT count(*) FROM json_each(report, '$.branches') AS b
            LEFT JOIN json_each(b.value, '$.items') AS i),
        branches_ok = (SELECT count(*) FROM json_each(report, '$.branches') AS b
            LEFT JOIN json_each(b.value, '$.items') AS i
            WHERE coalesce(json_extract(i.value, '$.outcome.status'),
                           json_extract(b.value, '$.outcome.status')) = 'ok'),
        tokens = json_extract(report, '$.totals.usage.input_tokens')
            + json_extract(report, '$.totals.usage.output_tokens'),
        cost_usd = json_extract(report, '$.totals.cost_usd'),
        wall_ms = CAST(round(json_extract(report, '$.wall_s') * 1000) AS INTEGER)
        WHERE report IS NOT NULL AND json_valid(report);",
];

/// The schema version this build writes.
pub const CURRENT: u32 = MIGRATIONS.len() as u32;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The file was written by a newer fanfare.
    #[error("the journal's schema is version {found}, newer than this fanfare knows ({CURRENT}); use a newer fanfare or another --db")]
    Newer {
        /// The file's version.
        found: u32,
    },
    /// SQLite refused a statement.
    #[error("migrating the journal to version {version}")]
    Sql {
        /// The migration that failed.
        version: u32,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// Applies the migrations `conn` has not had yet.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let sql = |version, source| MigrationError::Sql { version, source };
    let found: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql(0, e))?;
    if found > CURRENT {
        return Err(MigrationError::Newer { found });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        let tx = conn.transaction().map_err(|e| sql(version, e))?;
        tx.execute_batch(migration).map_err(|e| sql(version, e))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(|e| sql(version, e))?;
        tx.commit().map_err(|e| sql(version, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
    }

    #[test]
    fn a_journal_from_a_newer_fanfare_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", CURRENT + 1)
            .unwrap();
        let e = migrate(&mut conn).unwrap_err();
        assert!(
            e.to_string().contains("newer than this fanfare knows"),
            "{e}"
        );
    }
}
