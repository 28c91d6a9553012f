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
}

impl Store {
    /// The state of plugin `name`.
    pub fn plugin_state(&self, name: &str) -> PluginState {
        PluginState { store: self.clone(), plugin: name.into(), cache: Arc::default() }
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

    /// Sets `key`. Refuses keys, values or key counts over the limits with a message for the plugin.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!("state key must be 1..={MAX_KEY_BYTES} bytes"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("state value is {} bytes, more than {MAX_VALUE_BYTES}", value.len()));
        }
        let full = self.cached(|m| !m.contains_key(key) && m.len() >= MAX_KEYS).map_err(|e| e.to_string())?;
        if full {
            return Err(format!("plugin state already holds {MAX_KEYS} keys; delete some first"));
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
                "the agent could not store the value".to_string()
            })?;
        self.cached(|m| m.insert(key.to_string(), value.to_vec())).map_err(|e| e.to_string())?;
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
        assert!(a.set("big", &vec![0; MAX_VALUE_BYTES + 1]).unwrap_err().contains("more than"));
        for i in 1..MAX_KEYS {
            a.set(&format!("k{i}"), b"").unwrap();
        }
        assert!(a.set("one-too-many", b"").unwrap_err().contains("already holds"));
        a.delete("k");
        a.set("one-too-many", b"").unwrap();
        assert_eq!(store.plugin_state("a").get("k"), None);
    }
}
