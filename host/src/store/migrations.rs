//! Schema migrations, applied in order on open. `PRAGMA user_version` records how far a database
//! got. A released migration is never edited: add a new one.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: plugin key-value state.
    "CREATE TABLE plugin_state (
        plugin TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  BLOB NOT NULL,
        PRIMARY KEY (plugin, key)
    ) WITHOUT ROWID;",
    // 2: metric series (interned), raw samples, 1-minute rollups, and small bookkeeping values.
    "CREATE TABLE series (
        id     INTEGER PRIMARY KEY,
        name   TEXT NOT NULL,
        labels TEXT NOT NULL,
        UNIQUE (name, labels)
    );
    CREATE TABLE samples (
        series INTEGER NOT NULL,
        t      INTEGER NOT NULL,
        v      REAL NOT NULL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;
    CREATE TABLE rollups (
        series INTEGER NOT NULL,
        t      INTEGER NOT NULL,
        n      INTEGER NOT NULL,
        min    REAL NOT NULL,
        max    REAL NOT NULL,
        sum    REAL NOT NULL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 3: the decision journal: one row per evaluation of a scaling group (see 6).
    "CREATE TABLE decisions (
        id             INTEGER PRIMARY KEY,
        t              INTEGER NOT NULL,
        grp            TEXT NOT NULL,
        current        INTEGER NOT NULL,
        ready          INTEGER NOT NULL,
        recommendation REAL,
        reason         TEXT NOT NULL,
        target         INTEGER NOT NULL,
        steps          TEXT NOT NULL,
        action         TEXT NOT NULL,
        outcome        TEXT NOT NULL,
        backend_ms     INTEGER,
        inputs         TEXT NOT NULL
    );
    CREATE INDEX decisions_by_group ON decisions (grp, t);",
    // 4: vertical scaling: the size tier before and after each decision.
    "ALTER TABLE decisions ADD COLUMN tier INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE decisions ADD COLUMN target_tier INTEGER NOT NULL DEFAULT 0;",
    // 5: when each plugin was last loaded, so the state of a removed one can be let go.
    "CREATE TABLE plugin_seen (plugin TEXT PRIMARY KEY, t INTEGER NOT NULL);
    INSERT INTO plugin_seen (plugin, t)
        SELECT DISTINCT plugin, CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM plugin_state;",
    // 6: a run of identical holds is one row: `t` its last evaluation, `first_t` its first
    // (NULL for a row of one), `count` how many.
    "ALTER TABLE decisions ADD COLUMN first_t INTEGER;
    ALTER TABLE decisions ADD COLUMN count INTEGER NOT NULL DEFAULT 1;",
];

/// Refuses a database from a newer agent; returns the schema version found.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sqlite)?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::FutureSchema { path: path.to_path_buf(), found, known });
    }
    Ok(found)
}

pub(super) fn apply(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    let found = check(conn, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {version}; COMMIT;"))
            .map_err(sqlite)?;
    }
    Ok(())
}
