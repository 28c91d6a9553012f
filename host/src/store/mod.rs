//! The agent's SQLite database in the data folder (`agent.db`, WAL mode). Only this module
//! speaks SQL.
//!
//! Owns: the schema and its migrations; series and samples (one writer thread, read-only
//! readers, background rollups and retention); plugin state. Does not know where samples come
//! from, nor about plugins beyond their names.

mod journal;
mod maintenance;
mod migrations;
mod plugin_state;
mod query;
mod read_pool;
mod recent;
mod runs;
mod series;
mod writer;

pub use journal::{Action, Entry as JournalEntry};
pub use maintenance::{Report as MaintenanceReport, Retention};
pub use plugin_state::{PluginState, StateError};
pub use query::{Selector, SeriesInfo, SeriesPoints};
pub use read_pool::{ReadError, ReadPool};
pub use runs::{runs, Run};
pub use series::{Labels, Sample, SeriesKey};
pub use writer::{write_batch, Interner, Latest, Writer, WriterLimits, WriterStats};

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Errors opening or using the database. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: the database is from a newer agent (schema {found}, this agent knows up to {known}); upgrade the agent or point --data-dir elsewhere")]
    FutureSchema { path: PathBuf, found: i64, known: i64 },
    #[error("{path}: not an agent database or corrupt ({detail}); move it aside to start afresh, nothing was changed")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: no agent database here; has an agent run with this --data-dir?")]
    Missing { path: PathBuf },
    #[error("starting a thread to read the database: {0}")]
    Thread(std::io::Error),
}

/// The open database. Cheap to clone; writes are serialised by the connection's mutex. Clones
/// share one read-only connection; [`Store::with_own_reader`] gives a reader of its own to a
/// user whose reads must never wait behind another's (the scaler behind the API's).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Queries: read-only, so they never take the write lock.
    reader: Arc<Mutex<Connection>>,
}

struct Inner {
    path: PathBuf,
    /// Plugin state and other small writes (samples have their own writer connection).
    conn: Mutex<Connection>,
    /// Per group, the journal row a hold like the last one folds into (see `journal`).
    folds: Mutex<std::collections::HashMap<String, journal::Fold>>,
    /// The newest samples of the metrics groups read, kept by the writer (see `recent`).
    recent: Arc<recent::Recent>,
}

impl Store {
    /// Opens (creating if needed) `DIR/agent.db`, checks it and applies migrations.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("agent.db");
        let sqlite = |source| StoreError::Sqlite { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(sqlite)?;
        check_is_database(&conn, &path)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        configure(&conn).map_err(sqlite)?;
        migrations::apply(&conn, &path)?;
        let reader = open_reader(&path)?;
        // Samples an earlier run wrote are in SQLite only: memory is complete after them.
        let newest = conn
            .query_row(
                "SELECT coalesce(max((SELECT max(t) FROM samples WHERE series = s.id)), 0) FROM series s",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                folds: Default::default(),
                recent: Arc::new(recent::Recent::after(newest)),
            }),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The same database with a read-only connection of its own (WAL readers never block each
    /// other nor the writer, so its reads wait on nobody's).
    pub fn with_own_reader(&self) -> Result<Store, StoreError> {
        let reader = open_reader(&self.inner.path)?;
        Ok(Store { inner: self.inner.clone(), reader: Arc::new(Mutex::new(reader)) })
    }

    /// Opens an existing `DIR/agent.db` for reading only, e.g. while an agent runs on it.
    /// Plugin state cannot be written through it.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("agent.db");
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        let reader = open_reader(&path)?;
        check_is_database(&reader, &path)?;
        migrations::check(&reader, &path)?;
        let conn = open_reader(&path)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                folds: Default::default(),
                recent: Default::default(),
            }),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Keeps the newest samples of `names` in memory over `horizon_ms` from now on, for
    /// [`Store::window`]; names not given are let go.
    pub fn keep_recent(&self, names: impl IntoIterator<Item = String>, horizon_ms: i64) {
        self.inner.recent.keep(names, horizon_ms);
    }

    /// The raw points in `[from_ms, to_ms)` of the series `sel` selects that have any: from
    /// memory where it holds the whole window (see [`Store::keep_recent`]), else from SQLite.
    pub fn window(&self, sel: &Selector, from_ms: i64, to_ms: i64) -> Result<Vec<SeriesPoints>, StoreError> {
        if let Some(points) = self.inner.recent.window(&sel.name, &sel.matchers, from_ms, to_ms) {
            return Ok(points);
        }
        let mut points = self.query(sel, from_ms, to_ms, None)?;
        points.retain(|s| !s.values.is_empty());
        Ok(points)
    }

    /// Whether memory answers the window of `name` over `[from_ms, to_ms)` (else SQLite does).
    #[cfg(test)]
    pub(crate) fn window_in_memory(&self, name: &str, from_ms: i64, to_ms: i64) -> bool {
        self.inner.recent.window(name, &[], from_ms, to_ms).is_some()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A new read-write connection, for a thread that writes on its own.
    fn connect(&self) -> Result<Connection, StoreError> {
        let sqlite = |source| StoreError::Sqlite { path: self.inner.path.clone(), source };
        let conn = Connection::open(&self.inner.path).map_err(sqlite)?;
        configure(&conn).map_err(sqlite)?;
        Ok(conn)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (each statement is
        // atomic), so a poisoned lock is safe to keep using.
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| StoreError::Sqlite { path: self.inner.path.clone(), source })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| StoreError::Sqlite { path: self.inner.path.clone(), source })
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL + NORMAL: a committed batch survives the agent being killed (not a power cut, which
    // may lose the last transactions but never corrupts the file).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sqlite)?;
    Ok(conn)
}

/// A file that is not SQLite fails its first read; report that, and never write to it. (A full
/// `integrity_check` would read the whole database on every start; damage deeper in the file is
/// reported by the statement that meets it.)
fn check_is_database(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map(|_| ())
        .map_err(|e| StoreError::Corrupt { path: path.to_path_buf(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_database_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let garbage =
            b"this is not sqlite at all, but it is long enough to be read as a header......".repeat(10);
        std::fs::write(dir.path().join("agent.db"), &garbage).unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("not an agent database or corrupt"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("agent.db")).unwrap(), garbage);
    }

    #[test]
    fn a_database_from_a_future_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("agent.db")).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer agent (schema 999"), "{err}");
    }

    #[test]
    fn reopening_keeps_data_and_does_not_reapply_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.plugin_state("p").set("k", b"v").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.plugin_state("p").get("k").as_deref(), Some(&b"v"[..]));
    }
}
