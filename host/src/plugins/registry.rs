//! The live set of plugins: what the plugins folder holds, reconciled whenever it changes.
//!
//! A new file is loaded, a changed one is prepared beside the running version and swapped in
//! between calls, a removed one is unloaded. A file that fails to load is reported and, if it
//! replaced a running version, that version keeps running. Two files may not claim one name:
//! the one loaded first keeps it.

use super::loader::{self, Prepared};
use super::sandbox::Grants;
use super::worker::{PluginHandle, Status};
use super::{Kind, Runtime};
use crate::config::Config;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

pub struct Registry {
    rt: Arc<Runtime>,
    config: Arc<Config>,
    store: Option<crate::store::Store>,
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Snapshot for readers that must not wait on a reconcile in progress.
    view: std::sync::RwLock<View>,
    /// The supervisor's replica control, for backends granted processes.
    replicas: std::sync::OnceLock<Arc<dyn super::sandbox::ReplicaControl>>,
}

#[derive(Default)]
struct Inner {
    files: BTreeMap<PathBuf, FileEntry>,
    plugins: BTreeMap<String, Loaded>,
}

struct FileEntry {
    /// Length and mtime: a cheap check before re-reading the file.
    stamp: (u64, Option<SystemTime>),
    hash: Option<String>,
    /// The plugin this file provides, or why it provides none.
    outcome: Result<String, String>,
    /// Why the file's current contents did not load, even if an earlier version still runs.
    error: Option<String>,
}

struct Loaded {
    handle: PluginHandle,
    path: PathBuf,
}

#[derive(Default, Clone)]
struct View {
    plugins: BTreeMap<String, PluginHandle>,
    failed: Vec<FailedFile>,
}

/// A file in the folder that is not running as a plugin, and why.
#[derive(Debug, Clone, Serialize)]
pub struct FailedFile {
    pub file: String,
    pub state: &'static str,
    pub error: String,
    /// The plugin whose previous version keeps running despite this file, if any.
    pub kept_running: Option<String>,
}

/// What one reconcile did, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Loaded(String),
    Swapped(String),
    Unloaded(String),
    Failed(String),
}

impl Registry {
    pub fn new(
        rt: Arc<Runtime>,
        config: Arc<Config>,
        store: Option<crate::store::Store>,
        dir: &Path,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            rt,
            config,
            store,
            dir: dir.to_path_buf(),
            inner: Mutex::default(),
            view: Default::default(),
            replicas: Default::default(),
        })
    }

    /// Makes the supervisor's replica control available to backends granted processes. Call
    /// before the first reconcile.
    pub fn set_replica_control(&self, control: Arc<dyn super::sandbox::ReplicaControl>) {
        let _ = self.replicas.set(control);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The running plugin `name`.
    pub fn get(&self, name: &str) -> Option<PluginHandle> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).plugins.get(name).cloned()
    }

    /// Running plugins of `kind`.
    pub fn of_kind(&self, kind: Kind) -> Vec<PluginHandle> {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.plugins.values().filter(|h| h.kind() == kind).cloned().collect()
    }

    /// Status of every running plugin, and the files that failed.
    pub fn status(&self) -> (Vec<Status>, Vec<FailedFile>) {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        (view.plugins.values().map(PluginHandle::status).collect(), view.failed)
    }

    /// Brings the running set in line with the folder. Safe to call at any time; calls are
    /// serialised.
    pub async fn reconcile(&self) -> Vec<Change> {
        let mut inner = self.inner.lock().await;
        let mut changes = Vec::new();
        let on_disk = match wasm_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("{}: cannot list the plugins folder: {e}", self.dir.display());
                return changes;
            }
        };

        let gone: Vec<PathBuf> = inner.files.keys().filter(|p| !on_disk.contains_key(*p)).cloned().collect();
        for path in gone {
            let entry = inner.files.remove(&path).expect("listed above");
            if let Ok(name) = entry.outcome {
                if inner.plugins.get(&name).is_some_and(|l| l.path == path) {
                    inner.plugins.remove(&name);
                    tracing::info!("{}: removed; plugin `{name}` unloaded", path.display());
                    changes.push(Change::Unloaded(name));
                }
            }
        }

        for (path, stamp) in on_disk {
            if inner.files.get(&path).is_some_and(|e| e.stamp == stamp) {
                continue;
            }
            let bytes_hash = std::fs::read(&path).ok().map(|b| super::cache::content_hash(&b));
            if let Some(entry) = inner.files.get_mut(&path) {
                if bytes_hash.is_some() && entry.hash == bytes_hash {
                    entry.stamp = stamp; // touched, not changed
                    continue;
                }
            }
            let previous = inner.files.get(&path).and_then(|e| e.outcome.clone().ok());
            let still_running =
                previous.clone().filter(|n| inner.plugins.get(n).is_some_and(|l| l.path == path));
            let entry = match loader::prepare(&self.rt, &path).await {
                Err(e) => {
                    changes.push(Change::Failed(path.display().to_string()));
                    match still_running {
                        // A bad replacement: the running version stays, and keeps its file.
                        Some(name) => {
                            tracing::error!("{e}; plugin `{name}` keeps running its previous version");
                            FileEntry { stamp, hash: bytes_hash, outcome: Ok(name), error: Some(e.reason) }
                        }
                        None => {
                            tracing::error!("{e}");
                            FileEntry {
                                stamp,
                                hash: bytes_hash,
                                outcome: Err(e.reason.clone()),
                                error: Some(e.reason),
                            }
                        }
                    }
                }
                Ok(prepared) => {
                    let outcome = self.install(&mut inner, prepared, &mut changes).await;
                    // A file that now names another plugin releases the one it used to provide.
                    if let (Some(old), Ok(new)) = (&still_running, &outcome) {
                        if old != new {
                            inner.plugins.remove(old);
                            changes.push(Change::Unloaded(old.clone()));
                        }
                    }
                    let error = outcome.as_ref().err().cloned();
                    FileEntry { stamp, hash: bytes_hash, outcome, error }
                }
            };
            inner.files.insert(path, entry);
        }
        self.publish(&inner);
        changes
    }

    async fn install(
        &self,
        inner: &mut Inner,
        prepared: Prepared,
        changes: &mut Vec<Change>,
    ) -> Result<String, String> {
        let name = prepared.metadata.name.clone();
        let settings = self.config.plugin(&name);
        if settings.disabled {
            return Err(format!("plugin `{name}` is disabled in the configuration"));
        }
        if let Some(loaded) = inner.plugins.get(&name) {
            if loaded.path != prepared.path {
                let reason = format!(
                    "claims plugin name `{name}`, which {} already has; rename one of them (metadata.name)",
                    loaded.path.display()
                );
                tracing::error!("{}: {reason}", prepared.path.display());
                changes.push(Change::Failed(prepared.path.display().to_string()));
                return Err(reason);
            }
            let what = format!(
                "{} {} → {}",
                prepared.kind(),
                loaded.handle.status().version,
                prepared.metadata.version
            );
            let path = prepared.path.display().to_string();
            loaded.handle.swap(prepared).await;
            tracing::info!("{path}: swapped plugin `{name}` ({what})");
            changes.push(Change::Swapped(name.clone()));
            return Ok(name);
        }
        tracing::info!(
            "{}: loaded {} `{name}` {} (contract {}, {} in {:.1}ms)",
            prepared.path.display(),
            prepared.kind(),
            prepared.metadata.version,
            prepared.header.contract,
            match prepared.origin {
                super::cache::Origin::Cached => "from cache",
                super::cache::Origin::Compiled => "compiled",
            },
            prepared.compile_time.as_secs_f64() * 1000.0
        );
        let grants = Arc::new(Grants {
            plugin: name.as_str().into(),
            settings,
            state: self.store.as_ref().map(|s| s.plugin_state(&name)),
            replicas: self.replicas.get().cloned(),
        });
        let path = prepared.path.clone();
        let handle = PluginHandle::spawn(self.rt.clone(), prepared, grants);
        inner.plugins.insert(name.clone(), Loaded { handle, path });
        changes.push(Change::Loaded(name.clone()));
        Ok(name)
    }

    fn publish(&self, inner: &Inner) {
        let plugins = inner.plugins.iter().map(|(n, l)| (n.clone(), l.handle.clone())).collect();
        let failed = inner
            .files
            .iter()
            .filter_map(|(path, entry)| {
                let running = entry
                    .outcome
                    .as_ref()
                    .ok()
                    .and_then(|n| inner.plugins.get(n))
                    .is_some_and(|l| &l.path == path);
                let (error, kept_running) = match (&entry.error, &entry.outcome) {
                    (Some(e), Ok(name)) if running => {
                        (format!("{e}; the previous version of `{name}` keeps running"), Some(name.clone()))
                    }
                    (Some(e), _) => (e.clone(), None),
                    (None, Ok(_)) if running => return None,
                    (None, Ok(name)) => (format!("provides `{name}`, which is not running"), None),
                    (None, Err(e)) => (e.clone(), None),
                };
                Some(FailedFile { file: path.display().to_string(), state: "failed", error, kept_running })
            })
            .collect();
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = View { plugins, failed };
    }

    /// Watches the folder and reconciles after each burst of changes, until the registry is
    /// dropped. Falls back to a rescan every few seconds where inotify is unavailable.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |_event| {
            let _ = tx.send(());
        })?;
        let watching = watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive);
        if let Err(e) = &watching {
            tracing::warn!("{}: cannot watch for changes ({e}); rescanning every 2s", self.dir.display());
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let _watcher = watcher; // lives as long as this task
            let rescan = if watching.is_ok() { Duration::from_secs(30) } else { Duration::from_secs(2) };
            loop {
                let _ = tokio::time::timeout(rescan, rx.recv()).await;
                // Let a copy in progress finish: wait for a quiet spell of 100 ms.
                while tokio::time::timeout(Duration::from_millis(100), rx.recv()).await.is_ok() {}
                let Some(registry) = weak.upgrade() else {
                    break;
                };
                registry.reconcile().await;
            }
        });
        Ok(())
    }
}

/// `*.wasm` regular files directly in `dir`, with their (length, mtime).
fn wasm_files(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, (u64, Option<SystemTime>)>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() {
                files.insert(path, (meta.len(), meta.modified().ok()));
            }
        }
    }
    Ok(files)
}
