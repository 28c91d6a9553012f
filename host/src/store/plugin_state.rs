//! Each plugin's persistent key-value state (`host.state-*` in the contract).
//!
//! Reads are served from memory, loaded once per plugin; writes go through to SQLite before the
//! call returns, so state survives a crash of the agent as well as a hot swap.

use super::{Store, StoreError};
use rusqlite::params;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Limits that keep one plugin from filling the disk through its state.
pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 1 << 20;
pub const MAX_KEYS: usize = 1024;

/// A plugin's keys and values, loaded on first use.
type Cache = Arc<Mutex<Option<HashMap<String, Vec<u8>>>>>;

/// One plugin's state. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct PluginState {
    store: Store,
    plugin: Arc<str>,
    cache: Cache,
    /// Total bytes (keys and values) the plugin may keep.
    max_bytes: u64,
    /// Bytes it may write per minute, as a token bucket holding one minute.
    writes: Arc<Mutex<crate::rate::TokenBucket>>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum StateError {
    /// Over the plugin's state budget (size or write rate).
    Budget(String),
    /// A bad key or value, or the database failed.
    Invalid(String),
}

impl Store {
    /// The state of plugin `name`, with the default budgets.
    pub fn plugin_state(&self, name: &str) -> PluginState {
        let b = crate::config::Budgets::default();
        self.plugin_state_with(name, b.state_bytes, b.state_write_bytes_per_min)
    }

    /// The state of plugin `name`, at most `max_bytes` in all, written at most
    /// `write_bytes_per_min`.
    pub fn plugin_state_with(&self, name: &str, max_bytes: u64, write_bytes_per_min: u64) -> PluginState {
        let per_min = write_bytes_per_min as f64;
        PluginState {
            store: self.clone(),
            plugin: name.into(),
            cache: Arc::default(),
            max_bytes,
            writes: Arc::new(Mutex::new(crate::rate::TokenBucket::new(per_min / 60.0, per_min))),
        }
    }

    /// Records that these plugins are loaded now: their state is kept.
    pub fn mark_plugins_seen(&self, names: &[String], now_ms: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO plugin_seen (plugin, t) VALUES (?1, ?2)
                 ON CONFLICT (plugin) DO UPDATE SET t = excluded.t",
            )?;
            for n in names {
                stmt.execute(params![n, now_ms])?;
            }
            Ok(())
        })
    }
}

impl PluginState {
    fn cached<T>(&self, f: impl FnOnce(&mut HashMap<String, Vec<u8>>) -> T) -> Result<T, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.is_none() {
            let loaded = self.store.with(|c| {
                let mut stmt = c.prepare("SELECT key, value FROM plugin_state WHERE plugin = ?1")?;
                let rows = stmt.query_map([&*self.plugin], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<HashMap<_, _>>>()
            })?;
            *cache = Some(loaded);
        }
        Ok(f(cache.as_mut().expect("loaded above")))
    }

    /// The value of `key`, if set. A database error reads as "not set" and is logged.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.cached(|m| m.get(key).cloned()) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(plugin = %self.plugin, "reading plugin state: {e}");
                None
            }
        }
    }

    /// Sets `key`. Refuses keys, values or key counts over the limits, and writes over the
    /// plugin's budgets, with a message for the plugin.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let invalid = |m: String| StateError::Invalid(m);
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(invalid(format!("state key must be 1..={MAX_KEY_BYTES} bytes")));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "state value is {} bytes, more than {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        let (full, total_after) = self
            .cached(|m| {
                let total: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
                let old = m.get(key).map_or(0, |v| key.len() + v.len());
                (!m.contains_key(key) && m.len() >= MAX_KEYS, (total - old + key.len() + value.len()) as u64)
            })
            .map_err(|e| invalid(e.to_string()))?;
        if full {
            return Err(invalid(format!("plugin state already holds {MAX_KEYS} keys; delete some first")));
        }
        if total_after > self.max_bytes {
            return Err(StateError::Budget(format!(
                "state would hold {total_after} bytes, more than its state_kib budget of {} KiB",
                self.max_bytes >> 10
            )));
        }
        let written = (key.len() + value.len()) as f64;
        if !self.writes.lock().unwrap_or_else(|p| p.into_inner()).take_with_debt(written) {
            return Err(StateError::Budget(
                "state writes are over the state_write_kib_per_min budget; write less often".into(),
            ));
        }
        self.store
            .with(|c| {
                c.execute(
                    "INSERT INTO plugin_state (plugin, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                    params![&*self.plugin, key, value],
                )
            })
            .map_err(|e| {
                tracing::error!(plugin = %self.plugin, "writing plugin state: {e}");
                invalid("the agent could not store the value".to_string())
            })?;
        self.cached(|m| m.insert(key.to_string(), value.to_vec())).map_err(|e| invalid(e.to_string()))?;
        Ok(())
    }

    /// Removes `key` if set.
    pub fn delete(&self, key: &str) {
        let result = self.store.with(|c| {
            c.execute("DELETE FROM plugin_state WHERE plugin = ?1 AND key = ?2", params![&*self.plugin, key])
        });
        match result {
            Ok(_) => {
                let _ = self.cached(|m| m.remove(key));
            }
            Err(e) => tracing::error!(plugin = %self.plugin, "deleting plugin state: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_per_plugin_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.plugin_state("a");
        a.set("k", b"1").unwrap();
        assert_eq!(store.plugin_state("b").get("k"), None);
        assert_eq!(store.plugin_state("a").get("k").unwrap(), b"1");
        assert!(a.set("", b"x").is_err());
        let err = |e: StateError| match e {
            StateError::Invalid(m) | StateError::Budget(m) => m,
        };
        assert!(err(a.set("big", &vec![0; MAX_VALUE_BYTES + 1]).unwrap_err()).contains("more than"));
        for i in 1..MAX_KEYS {
            a.set(&format!("k{i}"), b"").unwrap();
        }
        assert!(err(a.set("one-too-many", b"").unwrap_err()).contains("already holds"));
        a.delete("k");
        a.set("one-too-many", b"").unwrap();
        assert_eq!(store.plugin_state("a").get("k"), None);
    }

    #[test]
    fn total_size_and_write_rate_are_budgeted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let budgets = crate::config::Budgets {
            state_bytes: 100 << 10,
            state_write_bytes_per_min: 1 << 30,
            ..Default::default()
        };
        let s = store.plugin_state_with("p", budgets.state_bytes, budgets.state_write_bytes_per_min);
        s.set("a", &vec![0; 60 << 10]).unwrap();
        assert!(
            matches!(s.set("b", &vec![0; 60 << 10]), Err(StateError::Budget(m)) if m.contains("state_kib"))
        );
        s.set("a", &vec![0; 90 << 10]).unwrap(); // replacing counts the new size only
        let slow = crate::config::Budgets { state_write_bytes_per_min: 10 << 10, ..Default::default() };
        let s = store.plugin_state_with("q", slow.state_bytes, slow.state_write_bytes_per_min);
        s.set("a", &vec![0; 8 << 10]).unwrap();
        assert!(matches!(s.set("a", &vec![0; 8 << 10]), Err(StateError::Budget(m)) if m.contains("per_min")));
        assert_eq!(s.get("a").unwrap().len(), 8 << 10, "the refused write changed nothing");
    }
}
