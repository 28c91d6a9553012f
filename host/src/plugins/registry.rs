//! The live set of plugins: what the plugins folder holds, reconciled whenever it changes.
//!
//! A new file is loaded, a changed one is prepared beside the running version and swapped in
//! between calls, a removed one is unloaded. A file that fails to load is reported and, if it
//! replaced a running version, that version keeps running.
//!
//! Who a plugin is comes from the operator, never from the plugin: a name the configuration
//! refers to is *bound* to one file (`NAME.wasm`, or `[plugins.NAME] file`), checked against its
//! pin and signer before it is compiled ([`super::signature::admit`]), and only that file runs
//! under the name — with its grants, state and groups. A file that declares a bound name it is
//! not bound to, or a bound file that declares another name, is refused. Two files declaring
//! one name nobody refers to: the first to load keeps it.

use super::loader::{self, Prepared};
use super::references::{self, Problems};
use super::sandbox::Grants;
use super::signature;
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
    /// Replaced by a reload ([`Registry::reconfigure`]).
    config: std::sync::RwLock<Arc<Config>>,
    store: Option<crate::store::Store>,
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Snapshot for readers that must not wait on a reconcile in progress.
    view: std::sync::RwLock<View>,
    /// The supervisor's replica control, for backends granted processes.
    replicas: std::sync::OnceLock<Arc<dyn super::sandbox::ReplicaControl>>,
    /// The scale-in ranking, for backends.
    ranking: std::sync::OnceLock<Arc<dyn super::sandbox::Ranking>>,
    /// The clouds' bounds on groups, as backends report them (`cloud-limits`).
    cloud_limits: Arc<super::sandbox::CloudLimits>,
    /// Whether the files present at start-up have all been tried.
    started: std::sync::atomic::AtomicBool,
    /// What the configuration asks of plugins that the loaded ones do not offer.
    problems: std::sync::Mutex<Problems>,
    /// Bumped whenever the running plugins or the configuration change, so that loops that
    /// depend on them sleep until then instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    files: BTreeMap<PathBuf, FileEntry>,
    plugins: BTreeMap<String, Loaded>,
    /// Files being loaded: the stamp being loaded and the load's generation (a later load of
    /// the same file supersedes it).
    loading: BTreeMap<PathBuf, (Stamp, u64)>,
    generation: u64,
}

struct FileEntry {
    /// Length and mtime: a cheap check before re-reading the file.
    stamp: Stamp,
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
    loading: Vec<String>,
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
            config: std::sync::RwLock::new(config),
            store,
            dir: dir.to_path_buf(),
            inner: Mutex::default(),
            view: Default::default(),
            replicas: Default::default(),
            ranking: Default::default(),
            cloud_limits: Default::default(),
            started: Default::default(),
            problems: Default::default(),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Makes the supervisor's replica control available to backends granted processes. Call
    /// before the first reconcile.
    pub fn set_replica_control(&self, control: Arc<dyn super::sandbox::ReplicaControl>) {
        let _ = self.replicas.set(control);
    }

    /// Makes the scale-in ranking (`scale-in.rank`) available to every backend, for the groups
    /// it scales. Call before the first reconcile.
    pub fn set_ranking(&self, ranking: Arc<dyn super::sandbox::Ranking>) {
        let _ = self.ranking.set(ranking);
    }

    /// `group`'s bounds as the cloud holds them, when `backend` (the group's backend now)
    /// reported them through `cloud-limits.report`.
    pub fn cloud_limits(&self, group: &str, backend: &str) -> Option<(u32, u32)> {
        self.cloud_limits.get(group, backend)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes when the running plugins or the configuration do.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a reloaded configuration in force. Plugins whose `[plugins.NAME]` changed run under
    /// the new grants, limits and configuration from their next call, without recompiling;
    /// a plugin now disabled is unloaded, one no longer disabled is loaded. Returns the names of
    /// the plugins whose settings changed.
    pub async fn reconfigure(self: &Arc<Self>, config: Arc<Config>) -> Vec<String> {
        let old =
            std::mem::replace(&mut *self.config.write().unwrap_or_else(|p| p.into_inner()), config.clone());
        let mut changed = Vec::new();
        let mut regrants = Vec::new();
        let mut enabled = false;
        {
            let mut inner = self.inner.lock().await;
            // First who may run at all under the new bindings and [trust]: an unloaded plugin
            // gets no new grants below.
            let rebound = self.rebind(&mut inner, &old, &config);
            let mut names: Vec<String> = old.plugins.keys().chain(config.plugins.keys()).cloned().collect();
            names.sort();
            names.dedup();
            for name in names {
                let (was, now) = (old.plugin(&name), config.plugin(&name));
                if was == now {
                    continue;
                }
                changed.push(name.clone());
                enabled |= was.disabled && !now.disabled;
                let Some(loaded) = inner.plugins.get(&name) else { continue };
                if now.disabled {
                    tracing::info!("plugin `{name}` is now disabled in the configuration; unloaded");
                    inner.plugins.remove(&name);
                    for entry in
                        inner.files.values_mut().filter(|e| e.outcome.as_deref() == Ok(name.as_str()))
                    {
                        entry.outcome = Err(disabled(&name));
                    }
                    continue;
                }
                let state = self.store.as_ref().map(|s| {
                    s.plugin_state_with(&name, now.budgets.state_bytes, now.budgets.state_write_bytes_per_min)
                });
                regrants.push((loaded.handle.clone(), Arc::new(loaded.handle.grants().renewed(now, state))));
            }
            changed.extend(rebound.into_iter().filter(|n| !changed.contains(n)).collect::<Vec<_>>());
            let trust_changed = old.bindings != config.bindings || old.trust != config.trust;
            if enabled || trust_changed {
                // Files refused while their plugin was disabled, or under the old bindings or
                // keys, are tried again (not those of a plugin still disabled); loads under way
                // were checked against the old ones and are started again — still listed as
                // loading meanwhile, so that no check of the configuration misses them.
                inner
                    .files
                    .retain(|_, e| e.outcome.as_ref().map_or_else(|r| is_disabled(&config, r), |_| true));
                if trust_changed {
                    for load in inner.loading.values_mut() {
                        *load = (RESTART, 0);
                    }
                }
                enabled = true;
            }
            self.publish(&inner);
        }
        for (handle, grants) in regrants {
            handle.regrant(grants).await;
        }
        if enabled {
            let (_, loads) = self.start_reconcile().await;
            drop(loads);
        }
        changed
    }

    /// Unloads the plugins a new configuration no longer admits under their name, or whose pin
    /// or signer it changes — every plugin when `[trust]` changed — and forgets their files so
    /// they are loaded, and checked, again. Returns their names.
    fn rebind(&self, inner: &mut Inner, old: &Config, new: &Config) -> Vec<String> {
        let checks = |c: &Config, name: &str| c.binding(name).map(|b| (b.sha256.clone(), b.signer.clone()));
        let keys_changed = old.trust != new.trust;
        let recheck = |name: &str| {
            keys_changed || checks(old, name).unwrap_or_default() != checks(new, name).unwrap_or_default()
        };
        let out: Vec<(String, PathBuf)> = inner
            .plugins
            .iter()
            .filter(|(name, l)| recheck(name) || identity(new, &l.path, name).is_err())
            .map(|(name, l)| (name.clone(), l.path.clone()))
            .collect();
        for (name, loaded) in &inner.plugins {
            loaded.handle.set_bound(new.binding(name).is_some());
        }
        for (name, path) in &out {
            tracing::info!(
                "{}: plugin `{name}` unloaded: its binding changed; checking it again",
                path.display()
            );
            inner.plugins.remove(name);
            inner.files.remove(path);
        }
        out.into_iter().map(|(name, _)| name).collect()
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

    /// Starts loading the folder in the background; [`Registry::started`] turns true once every
    /// file present now has been tried.
    pub async fn start(self: &Arc<Self>) {
        let (_, loads) = self.reconcile_deferring(true).await;
        let this = self.clone();
        tokio::spawn(async move {
            for load in loads {
                let _ = load.await;
            }
            this.mark_started();
        });
    }

    fn mark_started(&self) {
        self.started.store(true, std::sync::atomic::Ordering::Relaxed);
        self.recheck();
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether the files present at start-up have all been tried.
    pub fn started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Files being loaded now.
    pub fn loading(&self) -> Vec<String> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).loading.clone()
    }

    /// Status of every running plugin, and the files that failed.
    pub fn status(&self) -> (Vec<Status>, Vec<FailedFile>) {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        (view.plugins.values().map(PluginHandle::status).collect(), view.failed)
    }

    /// Brings the running set in line with the folder and waits for every load it started.
    /// Safe to call at any time.
    pub async fn reconcile(self: &Arc<Self>) -> Vec<Change> {
        let (mut changes, loads) = self.start_reconcile().await;
        for load in loads {
            if let Ok(mut more) = load.await {
                changes.append(&mut more);
            }
        }
        self.mark_started();
        changes
    }

    /// For a tool that needs one plugin: loads the folder, the files the configuration names
    /// first, and returns plugin `name` as soon as it runs (the other loads are abandoned), or
    /// `None` once every file has been tried without it.
    pub async fn load_until(self: &Arc<Self>, name: &str) -> Option<PluginHandle> {
        let (_, loads) = self.reconcile_deferring(true).await;
        let mut loads = loads.into_iter();
        for load in loads.by_ref() {
            let _ = load.await;
            if self.get(name).is_some() {
                break;
            }
        }
        loads.for_each(|l| l.abort());
        self.get(name)
    }

    /// Unloads what left the folder and starts one task per new or changed file, without waiting
    /// for them: each file loads on its own, so a slow one never delays another.
    pub async fn start_reconcile(self: &Arc<Self>) -> (Vec<Change>, Vec<Load>) {
        self.reconcile_deferring(false).await
    }

    /// As [`Registry::start_reconcile`]; with `defer_unused` (the daemon's first load), files
    /// the configuration does not name wait for those it does.
    async fn reconcile_deferring(self: &Arc<Self>, defer_unused: bool) -> (Vec<Change>, Vec<Load>) {
        let mut inner = self.inner.lock().await;
        let mut changes = Vec::new();
        let on_disk = match wasm_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("{}: cannot list the plugins folder: {e}", self.dir.display());
                return (changes, Vec::new());
            }
        };
        inner.loading.retain(|p, _| on_disk.contains_key(p));
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
        let mut loads = Vec::new();
        let (first_done, all_first_done) = tokio::sync::mpsc::channel::<()>(1);
        let mut later = Vec::new();
        let config = self.config();
        for (path, stamp) in on_disk {
            let known = inner.files.get(&path).is_some_and(|e| e.stamp == stamp);
            if known || inner.loading.get(&path).is_some_and(|l| l.0 == stamp) {
                continue;
            }
            inner.generation += 1;
            let generation = inner.generation;
            inner.loading.insert(path.clone(), (stamp, generation));
            if defer_unused && config.binding_of_file(&file_name(&path)).is_none() {
                later.push((path, stamp, generation));
                continue;
            }
            let (this, guard) = (self.clone(), first_done.clone());
            loads.push(tokio::spawn(async move {
                let _guard = guard;
                this.load(path, stamp, generation).await
            }));
        }
        drop(first_done);
        if !later.is_empty() {
            loads.push(self.load_after(later, all_first_done));
        }
        self.publish(&inner);
        (changes, loads)
    }

    /// Loads `later` one at a time once every sender of `first` is gone (the loads of the files
    /// the configuration names): what the groups use is ready first, and compiling spare
    /// plugins never competes with it.
    fn load_after(
        self: &Arc<Self>,
        later: Vec<(PathBuf, Stamp, u64)>,
        mut first: tokio::sync::mpsc::Receiver<()>,
    ) -> Load {
        let this = self.clone();
        tokio::spawn(async move {
            while first.recv().await.is_some() {}
            let mut changes = Vec::new();
            for (path, stamp, generation) in later {
                changes.extend(this.clone().load(path, stamp, generation).await);
            }
            changes
        })
    }

    /// Loads one file and installs it, unless the folder moved on meanwhile.
    async fn load(self: Arc<Self>, path: PathBuf, stamp: Stamp, generation: u64) -> Vec<Change> {
        let current = |inner: &Inner| inner.loading.get(&path).is_some_and(|l| l.1 == generation);
        let read = loader::read_file(&path).await;
        let hash = read.as_ref().ok().map(|b| super::cache::content_hash(b));
        {
            let mut inner = self.inner.lock().await;
            if !current(&inner) {
                return Vec::new();
            }
            if let Some(entry) = inner.files.get_mut(&path).filter(|e| hash.is_some() && e.hash == hash) {
                entry.stamp = stamp; // touched, not changed
                inner.loading.remove(&path);
                self.publish(&inner);
                return Vec::new();
            }
        }
        let result = match read {
            Ok(bytes) => self.prepare(&path, bytes, hash.as_deref().unwrap_or_default()).await,
            Err(e) => Err(e),
        };
        let mut inner = self.inner.lock().await;
        if !current(&inner) {
            return Vec::new();
        }
        inner.loading.remove(&path);
        let mut changes = Vec::new();
        let previous = inner.files.get(&path).and_then(|e| e.outcome.clone().ok());
        let still_running = previous.filter(|n| inner.plugins.get(n).is_some_and(|l| l.path == path));
        let installed =
            result.and_then(|prepared| self.install(&mut inner, prepared, still_running.as_deref()));
        let (entry, swap) = match installed {
            Ok((name, change, swap)) => {
                changes.push(change);
                if let Some(old) = still_running.filter(|old| *old != name) {
                    // A file that now names another plugin releases the one it used to provide.
                    inner.plugins.remove(&old);
                    changes.push(Change::Unloaded(old));
                }
                (FileEntry { stamp, hash, outcome: Ok(name), error: None }, swap)
            }
            Err(reason) => {
                changes.push(Change::Failed(path.display().to_string()));
                let off = is_disabled(&self.config(), &reason);
                (failed_entry(&path, stamp, hash, reason, still_running, off), None)
            }
        };
        inner.files.insert(path, entry);
        self.publish(&inner);
        drop(inner);
        // Outside the lock: a swap waits for the call in progress, which may be long.
        if let Some((handle, prepared)) = swap {
            let parked = self.parks(&handle.name(), handle.kind());
            handle.swap(prepared, parked).await;
            self.recheck(); // the new version may read other keys
        }
        changes
    }

    /// The file checked against its binding and `[trust]` (before anything compiles it), then
    /// prepared.
    async fn prepare(&self, path: &Path, bytes: Vec<u8>, hash: &str) -> Result<Prepared, String> {
        let config = self.config();
        let binding = config.binding_of_file(&file_name(path));
        let signer = signature::admit(&bytes, hash, binding, &config.trust)?;
        let mut prepared = loader::prepare_bytes(&self.rt, path, bytes).await?;
        prepared.signer = signer;
        prepared.bound = config.binding(&prepared.metadata.name).is_some();
        Ok(prepared)
    }

    /// Starts `prepared`, or prepares the swap of the running version, or says why not.
    fn install(
        &self,
        inner: &mut Inner,
        prepared: Prepared,
        still_running: Option<&str>,
    ) -> Result<Installed, String> {
        let name = prepared.metadata.name.clone();
        let config = self.config();
        identity(&config, &prepared.path, &name)?;
        let settings = config.plugin(&name);
        if settings.disabled {
            return Err(disabled(&name));
        }
        if let Some(loaded) = inner.plugins.get(&name) {
            if loaded.path != prepared.path {
                return Err(claimed(&name, &loaded.path));
            }
            let (was, now) = (loaded.handle.kind(), prepared.kind());
            if was != now {
                return Err(format!(
                    "is now a {now}, but `{name}` runs as a {was}; a plugin keeps its kind: remove the file, then add the {now}"
                ));
            }
            let what = format!("{now} {} → {}", loaded.handle.status().version, prepared.metadata.version);
            tracing::info!("{}: swapped plugin `{name}` ({what})", prepared.path.display());
            return Ok((name.clone(), Change::Swapped(name), Some((loaded.handle.clone(), prepared))));
        }
        if let Some(old) = still_running.filter(|old| *old != name) {
            tracing::info!("{}: now provides `{name}` instead of `{old}`", prepared.path.display());
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
        let state = self.store.as_ref().map(|s| {
            s.plugin_state_with(
                &name,
                settings.budgets.state_bytes,
                settings.budgets.state_write_bytes_per_min,
            )
        });
        if let Some(store) = &self.store {
            let _ = store.mark_plugins_seen(std::slice::from_ref(&name), crate::timefmt::now_ms());
        }
        let mut grants = Grants::new(&name, settings, state, self.replicas.get().cloned());
        grants.ranking = self.ranking.get().cloned();
        grants.cloud_limits = Some(self.cloud_limits.clone());
        let grants = Arc::new(grants);
        let path = prepared.path.clone();
        let parked = self.parks(&name, prepared.kind());
        let handle = PluginHandle::new(self.rt.clone(), prepared, grants, parked);
        inner.plugins.insert(name.clone(), Loaded { handle, path });
        Ok((name.clone(), Change::Loaded(name), None))
    }

    /// Whether plugin `name` is parked until its first call: a policy or backend that no group
    /// of the configuration uses, where a compile cache can give it back quickly.
    fn parks(&self, name: &str, kind: Kind) -> bool {
        let config = self.config();
        self.rt.cache().is_some()
            && kind != Kind::Source
            && !config.groups.iter().any(|g| g.policy == name || g.backend == name)
    }

    fn publish(&self, inner: &Inner) {
        let config = self.config();
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
                let off = kept_running.is_none() && is_disabled(&config, &error);
                let state = if off { "disabled" } else { "failed" };
                Some(FailedFile { file: path.display().to_string(), state, error, kept_running })
            })
            .collect();
        let loading = inner.loading.keys().map(|p| p.display().to_string()).collect();
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = View { plugins, failed, loading };
        self.recheck();
        self.changes.send_modify(|n| *n += 1);
    }

    /// What the configuration asks of plugins that the loaded ones do not offer (nothing until
    /// the folder's first load is done).
    pub fn problems(&self) -> Problems {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks the configuration against the loaded plugins again; each new problem is a WARN,
    /// each one gone an INFO.
    fn recheck(&self) {
        // A file still loading may provide a missing name (names come from metadata): wait
        // for it; the publish that ends its load checks again.
        if !self.started() || !self.loading().is_empty() {
            return;
        }
        let (loaded, _) = self.status();
        let now = references::check(&self.config(), &loaded);
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        if *problems == now {
            return;
        }
        let (before, after) = (problems.lines(), now.lines());
        for line in after.iter().filter(|l| !before.contains(l)) {
            tracing::warn!("{line}");
        }
        for line in before.iter().filter(|l| !after.contains(l)) {
            tracing::info!("resolved: {line}");
        }
        *problems = now;
    }

    /// Records which plugins are loaded (their state is kept) and collects the compile cache's
    /// garbage: entries of other engines, and entries unused for 30 days or over 1 GiB in all,
    /// except those of loaded plugins.
    pub fn upkeep(&self) {
        let running = self.view.read().unwrap_or_else(|p| p.into_inner()).plugins.clone();
        let names: Vec<String> = running.keys().cloned().collect();
        if let Some(store) = &self.store {
            if let Err(e) = store.mark_plugins_seen(&names, crate::timefmt::now_ms()) {
                tracing::warn!("recording loaded plugins: {e}");
            }
        }
        if let Some(cache) = self.rt.cache() {
            let keep: Vec<String> = running.values().map(|h| h.status().sha256).collect();
            let report = cache.collect_garbage(&keep, CACHE_UNUSED, CACHE_MAX_BYTES);
            if report.removed > 0 {
                tracing::info!("compile cache: removed {} entries ({} bytes)", report.removed, report.bytes);
            }
        }
    }

    /// Watches the folder and reconciles after each burst of changes, until the registry is
    /// dropped. Falls back to a rescan every few seconds where inotify is unavailable.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| changes_the_folder(&e.kind)) {
                let _ = tx.send(());
            }
        })?;
        let watching = watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive);
        if let Err(e) = &watching {
            tracing::warn!("{}: cannot watch for changes ({e}); rescanning every 2s", self.dir.display());
        }
        let weak = Arc::downgrade(self);
        let upkeep = weak.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                let Some(registry) = upkeep.upgrade() else { break };
                drop(tokio::task::spawn_blocking(move || registry.upkeep()).await);
            }
        });
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
                // Start the loads, do not wait for them: the next change is seen at once.
                drop(registry.start_reconcile().await);
            }
        });
        Ok(())
    }
}

/// Whether an event can change what the folder holds. Reads are not: a reconcile lists the
/// folder and reads its files, and reacting to that would rescan it forever.
fn changes_the_folder(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

const UPKEEP_EVERY: Duration = Duration::from_secs(600);
const CACHE_UNUSED: Duration = Duration::from_secs(30 * 86_400);
const CACHE_MAX_BYTES: u64 = 1 << 30;

/// Why a file cannot have the name `name`: `holder` has it.
fn claimed(name: &str, holder: &Path) -> String {
    format!(
        "claims plugin name `{name}`, which {} already has; rename one of them (metadata.name), or bind the name to one file with [plugins.{name}] file = \"…\"",
        holder.display()
    )
}

/// Whether the file at `path` may run as plugin `declared`: a file bound to a name runs only as
/// that name, and a bound name runs only from its own file.
fn identity(config: &Config, path: &Path, declared: &str) -> Result<(), String> {
    let file = file_name(path);
    if let Some(b) = config.binding_of_file(&file).filter(|b| b.name != declared) {
        return Err(format!(
            "declares itself `{declared}`, but this file is bound to plugin `{}`; a bound file runs only as its own plugin (fix the file, or bind `{}` to another file with [plugins.{}] file = \"…\")",
            b.name, b.name, b.name
        ));
    }
    if let Some(b) = config.binding(declared).filter(|b| b.file != file) {
        return Err(format!(
            "claims plugin name `{declared}`, which is bound to {}: refused, with no grants, state or group (rename it in its metadata, or bind `{declared}` to this file with [plugins.{declared}] file = \"{file}\")",
            path.with_file_name(&b.file).display()
        ));
    }
    Ok(())
}

/// Why a file whose plugin the configuration disables does not run: the operator's choice, not
/// a failure (its state is `disabled`, logged at INFO, needing no attention).
fn disabled(name: &str) -> String {
    format!("plugin `{name}` is disabled in the configuration")
}

/// The stamp of a load to be started again: no file has it, so the next reconcile starts the
/// file's load anew (and the load under way, of another generation, is discarded).
const RESTART: Stamp = (u64::MAX, None);

/// Whether `reason` is exactly why `config` keeps a plugin it disables from running: compared
/// whole, never by its wording alone, so that no plugin's own error text passes for it.
fn is_disabled(config: &Config, reason: &str) -> bool {
    config.plugins.iter().any(|(n, s)| s.disabled && reason == disabled(n))
}

/// The name of the file at `path`, as bindings name files.
fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The entry of a file that did not load: if it replaced a running version, that version stays
/// and keeps its file. `off`: the configuration disables its plugin (INFO, not ERROR).
fn failed_entry(
    path: &Path,
    stamp: Stamp,
    hash: Option<String>,
    reason: String,
    still_running: Option<String>,
    off: bool,
) -> FileEntry {
    match still_running {
        Some(name) => {
            tracing::error!(
                "{}: {reason}; plugin `{name}` keeps running its previous version",
                path.display()
            );
            FileEntry { stamp, hash, outcome: Ok(name), error: Some(reason) }
        }
        None if off => {
            tracing::info!("{}: {reason}; not loaded", path.display());
            FileEntry { stamp, hash, outcome: Err(reason.clone()), error: Some(reason) }
        }
        None => {
            tracing::error!("{}: {reason}", path.display());
            FileEntry { stamp, hash, outcome: Err(reason.clone()), error: Some(reason) }
        }
    }
}

/// What installing a file did: the plugin's name, the change, and a swap still to make.
type Installed = (String, Change, Option<(PluginHandle, Prepared)>);

/// A file's load in progress; it answers with what it changed.
pub type Load = tokio::task::JoinHandle<Vec<Change>>;

/// Length and mtime of a file.
type Stamp = (u64, Option<SystemTime>);

/// `*.wasm` entries directly in `dir`, with their (length, mtime), not following symbolic
/// links: a link, a FIFO or a device named `*.wasm` is listed too, and refused when loaded
/// without being read.
fn wasm_files(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() {
                files.insert(path, (meta.len(), meta.modified().ok()));
            }
        }
    }
    Ok(files)
}
