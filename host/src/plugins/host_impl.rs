//! The `elastic:plugin/host` interface as the agent implements it for every plugin.

use super::bindings::backend::elastic::plugin::{cloud_limits, decision, replica_units, replicas, scale_in};
use super::bindings::host_api::{self, Level};
use super::bindings::source::elastic::plugin::{about, types};
use super::bindings::PluginError;
use super::sandbox::HostState;
use wasmtime::component::{HasSelf, Linker};

/// Longest log line a plugin may write; longer ones are cut (a plugin must not flood the log).
pub const MAX_LOG_LINE: usize = 1024;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host_api::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    about::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// The `replicas`, `scale-in` and `replica-units` interfaces, for backends only.
pub fn add_replicas_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    replicas::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    scale_in::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    decision::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    cloud_limits::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    replica_units::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl about::Host for HostState {
    fn agent_version(&mut self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn hostname(&mut self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    }
}

fn capacity((replicas, ready): (u32, u32)) -> super::bindings::Capacity {
    super::bindings::Capacity { replicas, ready, tier: 0, tier_name: String::new() }
}

impl replicas::Host for HostState {
    async fn get(&mut self, process: String) -> Result<super::bindings::Capacity, PluginError> {
        let control = self.grants.replicas_for(&process).map_err(PluginError::BadConfig)?;
        control
            .get(&process)
            .map(capacity)
            .ok_or_else(|| PluginError::BadConfig(format!("no [[process]] named `{process}`")))
    }

    async fn set(&mut self, process: String, count: u32) -> Result<super::bindings::Capacity, PluginError> {
        let control = self.grants.replicas_for(&process).map_err(PluginError::BadConfig)?;
        control.set(process, count).await.map(capacity).map_err(PluginError::InvalidInput)
    }
}

impl HostState {
    /// Counts a call that makes the agent work for the plugin (probe, drain); refused past
    /// [`super::sandbox::SCALE_IN_CALLS`] in one call of the plugin.
    fn admit_scale_in(&mut self, what: &str) -> Result<(), PluginError> {
        self.scale_in_calls += 1;
        if self.scale_in_calls <= super::sandbox::SCALE_IN_CALLS {
            return Ok(());
        }
        let max = super::sandbox::SCALE_IN_CALLS;
        let why = format!("more than {max} scale-in.rank / replica-units.remove calls in one call");
        self.grants.meter.exceeded(super::meter::Budget::Denied, 1, || format!("{what}: {why}; refused"));
        Err(PluginError::QuotaExceeded(why))
    }
}

impl cloud_limits::Host for HostState {
    fn report(&mut self, group: String, min_replicas: u32, max_replicas: u32) -> Result<(), PluginError> {
        self.grants.report_limits(&group, min_replicas, max_replicas).map_err(PluginError::from)
    }
}

impl scale_in::Host for HostState {
    async fn rank(
        &mut self,
        group: String,
        units: Vec<String>,
    ) -> Result<Vec<scale_in::Candidate>, PluginError> {
        self.admit_scale_in("scale-in.rank")?;
        let grants = self.grants.clone();
        let ranking = grants.ranking_for(&group, units.len()).map_err(PluginError::from)?;
        let ranked =
            ranking.rank(grants.plugin.to_string(), group, grants.settings.processes.clone(), units).await;
        Ok(ranked
            .map_err(PluginError::from)?
            .into_iter()
            .map(|c| scale_in::Candidate {
                unit: c.unit,
                removable: c.removable,
                busy: c.busy,
                activity: c.activity,
                reason: c.reason,
            })
            .collect())
    }
}

/// `PROCESS#N` units of `process` → their indices; anything else is the plugin's mistake.
fn indices(meter: &super::meter::Meter, process: &str, units: &[String]) -> Result<Vec<u32>, PluginError> {
    units
        .iter()
        .map(|u| match super::types::parse_unit(u) {
            Some((p, n)) if p == process => Ok(n),
            _ => Err(PluginError::InvalidInput(format!(
                "`{}` is not a replica of `{process}` (units are `{process}#N`, from replica-units.units)",
                meter.clean(u, 64)
            ))),
        })
        .collect()
}

impl replica_units::Host for HostState {
    async fn units(&mut self, process: String) -> Result<Vec<String>, PluginError> {
        let control = self.grants.replicas_for(&process).map_err(PluginError::BadConfig)?;
        let indices = control
            .list(&process)
            .ok_or_else(|| PluginError::BadConfig(format!("no [[process]] named `{process}`")))?;
        Ok(indices.into_iter().map(|i| format!("{process}#{i}")).collect())
    }

    async fn remove(
        &mut self,
        process: String,
        units: Vec<String>,
    ) -> Result<replica_units::Removal, PluginError> {
        let control = self.grants.replicas_for(&process).map_err(PluginError::BadConfig)?;
        self.admit_scale_in("replica-units.remove")?;
        let mut replicas = indices(&self.grants.meter, &process, &units)?;
        replicas.sort_unstable();
        replicas.dedup();
        let removal = control.remove(process.clone(), replicas).await.map_err(PluginError::InvalidInput)?;
        let capacity = control
            .get(&process)
            .map(capacity)
            .ok_or_else(|| PluginError::BadConfig(format!("no [[process]] named `{process}`")))?;
        Ok(replica_units::Removal {
            removed: removal.removed.iter().map(|r| format!("{process}#{r}")).collect(),
            kept: removal.kept.iter().map(|(r, why)| format!("{process}#{r} ({why})")).collect(),
            capacity,
        })
    }
}

impl decision::Host for HostState {
    fn id(&mut self) -> Option<String> {
        self.decision.clone()
    }
}

impl types::Host for HostState {}

impl host_api::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        // Rate-limited per plugin, cut, and escaped so no plugin can forge a line of the log.
        if !self.grants.meter.admit_log(message.len().min(MAX_LOG_LINE)) {
            return;
        }
        let message = self.grants.meter.clean(&message, MAX_LOG_LINE);
        let plugin = &*self.grants.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ms(&mut self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn config(&mut self) -> String {
        self.grants.settings.config_json.clone()
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.grants.secret(&name)
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.grants.state.as_ref()?.get(&key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), PluginError> {
        use crate::store::StateError;
        match &self.grants.state {
            Some(state) => state.set(&key, &value).map_err(|e| match e {
                StateError::Budget(why) => {
                    self.grants.meter.exceeded(super::meter::Budget::State, 1, || why.clone());
                    PluginError::QuotaExceeded(why)
                }
                StateError::Invalid(why) => PluginError::InvalidInput(why),
            }),
            None => Err(PluginError::Unavailable(
                "no persistent state while the plugin is being inspected".into(),
            )),
        }
    }

    fn state_delete(&mut self, key: String) {
        if let Some(state) = &self.grants.state {
            state.delete(&key);
        }
    }
}
