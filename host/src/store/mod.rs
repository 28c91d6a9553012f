//! The agent's SQLite database in the data folder. Only this module speaks SQL.
//!
//! Owns: the schema and its migrations, and plugin state. Later: samples, series, the decision
//! journal. Does not know about plugins beyond their names.

mod migrations;
mod plugin_state;

pub use plugin_state::PluginState;

use rusqlite::Connection;
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
    FutureSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path}: not an agent database or corrupt ({detail}); move it aside to start afresh, nothing was changed")]
    Corrupt { path: PathBuf, detail: String },
}

/// The open database. Cheap to clone; writes are serialised by the connection's mutex.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) `DIR/agent.db`, checks it and applies migrations.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("agent.db");
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sqlite)?;
        // A file that is not SQLite fails the first read; report it as such, never overwrite it.
        let check: Result<String, _> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
        match check {
            Ok(ok) if ok == "ok" => {}
            Ok(detail) => return Err(StoreError::Corrupt { path, detail }),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path,
                    detail: e.to_string(),
                })
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        migrations::apply(&conn, &path)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (each statement is
        // atomic), so a poisoned lock is safe to keep using.
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| StoreError::Sqlite {
            path: self.inner.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_database_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let garbage =
            b"this is not sqlite at all, but it is long enough to be read as a header......"
                .repeat(10);
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
