//! Live reload of the configuration file (`SIGHUP`, `agent reload`, `POST /reload`).
//!
//! A file that does not validate changes nothing: the running configuration stays, and the
//! error (file:line:column: field: what) goes back to the caller, into `/status` and into
//! `agent_config_last_reload_successful`. A valid file is applied as a diff — processes by the
//! supervisor, groups by the scaler, `[plugins.NAME]` by the registry — and the answer lists
//! what changed. Settings only read at start-up are reported as needing a restart.

use crate::config::Config;
use crate::plugins::registry::Registry;
use crate::scaler::{GroupChanges, Scaler};
use crate::supervisor::{ProcessChanges, Supervisor};
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// Reads the configuration again, as the agent was started (file plus command-line overrides).
pub type Load = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

pub struct Reloader {
    load: Load,
    current: Mutex<Arc<Config>>,
    status: Mutex<ConfigStatus>,
    supervisor: Arc<Supervisor>,
    registry: Option<Arc<Registry>>,
    scaler: Option<Arc<Scaler>>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

/// `/status` → `config`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    pub file: Option<String>,
    pub loaded_at_ms: i64,
    /// Of the file in force.
    pub sha256: Option<String>,
    pub last_reload: Option<LastReload>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    pub ok: bool,
    pub error: Option<String>,
    pub at_ms: i64,
}

/// What a reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub processes: ProcessChanges,
    pub groups: GroupChanges,
    /// Plugins whose `[plugins.NAME]` changed (in force from their next call).
    pub plugins: Vec<String>,
    /// Settings that changed in the file but are read only at start-up.
    pub restart_required: Vec<String>,
    /// What the configuration now in force asks that the loaded plugins do not offer (a
    /// misspelt policy, a missing key), one line each: applied, but not working as written.
    pub problems: Vec<String>,
    /// Plugin files still loading when the answer was given: the problems are checked again
    /// once they are loaded (`/status`).
    pub still_loading: Vec<String>,
}

/// How long a reload's answer waits for the plugin files it started loading (a file copied in
/// just before) so that its problems are those of the plugins it will run with.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The registry's problems once no file is loading, or after [`SETTLE`] with the files still
/// loading.
async fn settled_problems(registry: &Registry) -> (Vec<String>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut changes = registry.changes();
    while !registry.loading().is_empty() && tokio::time::Instant::now() < deadline {
        // A load's end publishes a change; the timeout bounds a wait on a change already seen.
        let tick = std::time::Duration::from_millis(100);
        if let Ok(Err(_)) = tokio::time::timeout(tick, changes.changed()).await {
            tokio::time::sleep(tick).await; // no more changes will come: poll
        }
    }
    (registry.problems().lines(), registry.loading())
}

impl Reloader {
    pub fn new(
        config: Arc<Config>,
        load: Load,
        supervisor: Arc<Supervisor>,
        registry: Option<Arc<Registry>>,
        scaler: Option<Arc<Scaler>>,
    ) -> Reloader {
        let status = ConfigStatus {
            file: config.file.as_ref().map(|f| f.display().to_string()),
            loaded_at_ms: crate::timefmt::now_ms(),
            sha256: config.sha256.clone(),
            last_reload: None,
        };
        Reloader {
            load,
            current: Mutex::new(config),
            status: Mutex::new(status),
            supervisor,
            registry,
            scaler,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    pub fn status(&self) -> ConfigStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file and applies it, or changes nothing and says why.
    pub async fn reload(&self) -> Result<Changes, String> {
        let _one = self.busy.lock().await;
        let at_ms = crate::timefmt::now_ms();
        let old = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let loaded = if old.file.is_none() {
            Err("the agent runs on the default configuration (no --config file): there is nothing to reload"
                .to_string())
        } else {
            (self.load)().map_err(|e| crate::text::error_line(&e))
        };
        let new = match loaded {
            Ok(new) => Arc::new(new),
            Err(error) => {
                tracing::error!("reload refused, the running configuration stays: {error}");
                self.status.lock().unwrap_or_else(|p| p.into_inner()).last_reload =
                    Some(LastReload { ok: false, error: Some(error.clone()), at_ms });
                return Err(error);
            }
        };
        let changes = self.apply(&old, new.clone()).await;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.loaded_at_ms = at_ms;
        status.sha256 = new.sha256.clone();
        status.last_reload = Some(LastReload { ok: true, error: None, at_ms });
        tracing::info!("configuration reloaded: {}", summary(&changes));
        if !changes.restart_required.is_empty() {
            tracing::warn!(
                "reload: {} changed but take effect only at the next start",
                changes.restart_required.join(", ")
            );
        }
        Ok(changes)
    }

    async fn apply(&self, old: &Config, new: Arc<Config>) -> Changes {
        // Plugins first, so that groups changed alongside find their plugins' new grants.
        let plugins = match &self.registry {
            Some(r) => {
                // A plugin copied in just before the reload is loading before the new groups are
                // checked against the plugins (and they wait for it rather than miss it).
                drop(r.start_reconcile().await);
                r.reconfigure(new.clone()).await
            }
            None => Vec::new(),
        };
        let groups = self.scaler.as_ref().map(|s| s.apply(&new.groups)).unwrap_or_default();
        let processes = self.supervisor.apply(new.processes.clone()).await;
        let (problems, still_loading) = match &self.registry {
            Some(r) => settled_problems(r).await,
            None => Default::default(),
        };
        Changes {
            processes,
            groups,
            plugins,
            restart_required: restart_required(old, &new),
            problems,
            still_loading,
        }
    }
}

/// The settings read only at start-up that differ between `old` and `new`.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut fields = Vec::new();
    let mut check = |changed: bool, name: &str| {
        if changed {
            fields.push(name.to_string());
        }
    };
    check(old.data_dir != new.data_dir, "agent.data_dir");
    check(old.listen != new.listen, "agent.listen");
    check(old.plugins_dir != new.plugins_dir, "agent.plugins");
    check(old.sample_interval != new.sample_interval, "agent.sample_interval");
    check(old.compile != new.compile, "agent.compile_timeout/compile_memory_mib");
    check(old.process_tree != new.process_tree, "agent.process_tree");
    check(old.insecure_folders != new.insecure_folders, "agent.insecure_folders");
    check(old.retention != new.retention, "store retention");
    check(old.max_series != new.max_series, "store.max_series");
    fields
}

/// `processes: +d ~b -c; groups: ~web; plugins: ~http-json` (or `nothing changed`).
pub fn summary(c: &Changes) -> String {
    let list = |sign: &str, names: &[String]| names.iter().map(|n| format!("{sign}{n}")).collect::<Vec<_>>();
    let p = &c.processes;
    let processes: Vec<String> =
        [list("+", &p.added), list("-", &p.removed), list("~", &p.restarted), list("±", &p.scaled)].concat();
    let g = &c.groups;
    let groups: Vec<String> = [list("+", &g.added), list("-", &g.removed), list("~", &g.changed)].concat();
    let plugins = list("~", &c.plugins);
    let parts: Vec<String> = [("processes", processes), ("groups", groups), ("plugins", plugins)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}: {}", v.join(" ")))
        .collect();
    if parts.is_empty() {
        "nothing changed".into()
    } else {
        parts.join("; ")
    }
}

/// Reloads on every SIGHUP, for as long as the agent runs (holding the reloader weakly: it
/// must not keep the registry and scaler alive past the API).
pub fn on_sighup(reloader: std::sync::Weak<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: reload with `agent reload` or POST /reload");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(reloader) = reloader.upgrade() else { return };
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = reloader.reload().await;
        }
    });
}
