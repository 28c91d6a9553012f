//! The plugin SDK: generated bindings for the `source-plugin`, `policy-plugin` and
//! `backend-plugin` worlds of `wit/`, and helpers every plugin otherwise writes again.
//!
//! A policy, in full:
//! ```ignore
//! use elastic_sdk::policy::{export, Context, Guest, Recommendation};
//! struct Mine;
//! impl Guest for Mine {
//!     fn metadata() -> elastic_sdk::Metadata { .. }
//!     fn evaluate(ctx: Context) -> Result<Recommendation, elastic_sdk::PluginError> { .. } }
//! elastic_sdk::export_policy!(Mine);
//! ```

/// Bindings of the `source-plugin` world. Owns the shared types and host imports.
pub mod source {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "source-plugin",
            pub_export_macro: true,
            export_macro_name: "export_source",
            default_bindings_module: "elastic_sdk::source::bindings",
        });
    }
    pub use bindings::exports::elastic::plugin::source::Guest;
}

/// Bindings of the `policy-plugin` world.
pub mod policy {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "policy-plugin",
            pub_export_macro: true,
            export_macro_name: "export_policy",
            default_bindings_module: "elastic_sdk::policy::bindings",
            with: {
                "elastic:plugin/types@0.1.4": crate::source::bindings::elastic::plugin::types,
                "elastic:plugin/host@0.1.4": crate::source::bindings::elastic::plugin::host,
                "elastic:plugin/about@0.1.4": crate::source::bindings::elastic::plugin::about,
            },
        });
    }
    pub use bindings::exports::elastic::plugin::policy::{Context, Guest, Recommendation};
}

/// Bindings of the `backend-plugin` world.
pub mod backend {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "backend-plugin",
            pub_export_macro: true,
            export_macro_name: "export_backend",
            default_bindings_module: "elastic_sdk::backend::bindings",
            with: {
                "elastic:plugin/types@0.1.4": crate::source::bindings::elastic::plugin::types,
                "elastic:plugin/host@0.1.4": crate::source::bindings::elastic::plugin::host,
                "elastic:plugin/about@0.1.4": crate::source::bindings::elastic::plugin::about,
            },
        });
    }
    pub use bindings::exports::elastic::plugin::backend::{Group, Guest, Outcome};
}

pub use source::bindings::elastic::plugin::types::{
    Bounds, Capacity, ConfigKey, Label, PluginError, PluginMetadata as Metadata, Sample, Target, Window,
};
pub use source::bindings::elastic::plugin::{about, host};

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "http")]
pub mod http;
pub mod retry;
pub mod time;

/// Deserialises the plugin's `[plugins.NAME.config]` table into `T`. Errors name the key.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, PluginError> {
    parse_json(&host::config(), "[plugins.<name>.config]")
}

/// Deserialises a JSON object handed over by the agent (`params` of a group, or the config).
pub fn parse_json<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, PluginError> {
    serde_json::from_str(json).map_err(|e| PluginError::BadConfig(format!("{what}: {e}")))
}

/// A config key description, for `metadata()`.
pub fn key(name: &str, description: &str, required: bool) -> ConfigKey {
    ConfigKey { name: name.into(), description: description.into(), required }
}

/// Typed persistent state: any serde value under a key, stored as JSON by the agent. Survives
/// reloads, hot swaps and restarts of the agent.
pub mod state {
    use super::{host, PluginError};

    /// The value under `key`; `None` when absent or no longer of type `T` (e.g. after a plugin
    /// upgrade changed it: start afresh rather than fail).
    pub fn get<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        host::state_get(key).and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Stores `value` under `key`.
    pub fn set<T: serde::Serialize>(key: &str, value: &T) -> Result<(), PluginError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| PluginError::Other(format!("state `{key}`: cannot serialise: {e}")))?;
        host::state_set(key, &bytes)
    }

    pub fn delete(key: &str) {
        host::state_delete(key)
    }
}

/// `info!("scaled {} to {}", a, b)` — `format!` arguments, logged through the agent.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(&format!($($arg)*)) };
}
/// As [`info!`], at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(&format!($($arg)*)) };
}
/// As [`info!`], at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn(&format!($($arg)*)) };
}
/// As [`info!`], at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error(&format!($($arg)*)) };
}

/// Log through the agent (the line is tagged with the plugin's name).
pub mod log {
    use super::host::{log, Level};
    pub fn debug(m: &str) {
        log(Level::Debug, m)
    }
    pub fn info(m: &str) {
        log(Level::Info, m)
    }
    pub fn warn(m: &str) {
        log(Level::Warn, m)
    }
    pub fn error(m: &str) {
        log(Level::Error, m)
    }
}

/// Small statistics over a window's points.
pub mod window {
    use super::Window;

    /// Mean of the values; `None` for an empty window (unknown is not zero).
    pub fn mean(w: &Window) -> Option<f64> {
        if w.values.is_empty() {
            return None;
        }
        Some(w.values.iter().sum::<f64>() / w.values.len() as f64)
    }

    /// Most recent value.
    pub fn last(w: &Window) -> Option<f64> {
        w.values.last().copied()
    }

    /// Largest value.
    pub fn max(w: &Window) -> Option<f64> {
        w.values.iter().copied().reduce(f64::max)
    }

    /// The `p`-th percentile (0–100) by linear interpolation between closest ranks; `None` for
    /// an empty window or a `p` outside [0, 100].
    pub fn percentile(w: &Window, p: f64) -> Option<f64> {
        if w.values.is_empty() || !(0.0..=100.0).contains(&p) {
            return None;
        }
        let mut v = w.values.clone();
        v.sort_by(f64::total_cmp);
        let rank = p / 100.0 * (v.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
    }

    /// Per-second rate of a counter over the window: increase / elapsed time, counting a drop
    /// as a reset (the counter restarted from zero), as Prometheus' `rate` does. `None` with
    /// fewer than two points or no elapsed time.
    pub fn rate(w: &Window) -> Option<f64> {
        let (first, last) = (*w.timestamps_ms.first()?, *w.timestamps_ms.last()?);
        if w.values.len() < 2 || last <= first {
            return None;
        }
        let increase: f64 = w.values.windows(2).map(|p| if p[1] >= p[0] { p[1] - p[0] } else { p[1] }).sum();
        Some(increase / ((last - first) as f64 / 1000.0))
    }

    /// `(timestamp_ms, value)` pairs, oldest first.
    pub fn points(w: &Window) -> impl Iterator<Item = (i64, f64)> + '_ {
        w.timestamps_ms.iter().copied().zip(w.values.iter().copied())
    }
}

/// `export_source!(T)`, `export_policy!(T)`, `export_backend!(T)`: make `T` the component's
/// implementation of its world.
pub use backend::bindings::export_backend;
pub use policy::bindings::export_policy;
pub use source::bindings::export_source;

/// The host capability to change a supervised process's replica count (backends granted
/// `processes` only).
pub use backend::bindings::elastic::plugin::replicas;

/// Idle-aware scale-in (contract 0.1.2): the agent's ranking of a group's units
/// (`scale_in::rank`), and removal of chosen replicas of a granted process (`replica_units`).
pub use backend::bindings::elastic::plugin::{replica_units, scale_in};

/// The id of the decision a `scale` call carries out (contract 0.1.2), to tag what it creates.
pub use backend::bindings::elastic::plugin::decision;

/// The cloud's own bounds on a group (contract 0.1.4): `cloud_limits::report(group, min, max)`.
pub use backend::bindings::elastic::plugin::cloud_limits;

/// The same error variant with more context in front (`after: created web-4; then …`).
pub fn prefixed(e: PluginError, text: &str) -> PluginError {
    match e {
        PluginError::BadConfig(m) => PluginError::BadConfig(format!("{text}{m}")),
        PluginError::Unavailable(m) => PluginError::Unavailable(format!("{text}{m}")),
        PluginError::InvalidInput(m) => PluginError::InvalidInput(format!("{text}{m}")),
        PluginError::QuotaExceeded(m) => PluginError::QuotaExceeded(format!("{text}{m}")),
        PluginError::Conflict(m) => PluginError::Conflict(format!("{text}{m}")),
        PluginError::Other(m) => PluginError::Other(format!("{text}{m}")),
    }
}

/// The `count` units to remove, from the agent's ranking: the first removable ones, in order.
/// Also returns, for people, the busy units that would have been needed (`web#1 (busy: 2 in flight)`)
/// when fewer than `count` are removable: remove fewer, never a busy one.
pub fn choose_victims(ranked: &[scale_in::Candidate], count: usize) -> (Vec<String>, Vec<String>) {
    let victims: Vec<String> =
        ranked.iter().filter(|c| c.removable).take(count).map(|c| c.unit.clone()).collect();
    let short = count - victims.len();
    let kept = ranked
        .iter()
        .filter(|c| !c.removable)
        .take(short)
        .map(|c| format!("{} ({})", c.unit, c.reason))
        .collect();
    (victims, kept)
}

/// The value of metric `name` (or of the first window's metric) over its windows: the mean of
/// each series, averaged across series. `None` when no series has data (unknown is not zero).
pub fn mean_of(windows: &[Window], name: Option<&str>) -> Option<(String, f64)> {
    let name = name.map(str::to_string).or_else(|| windows.first().map(|w| w.metric.clone()))?;
    let means: Vec<f64> = windows.iter().filter(|w| w.metric == name).filter_map(window::mean).collect();
    if means.is_empty() {
        return None;
    }
    Some((name, means.iter().sum::<f64>() / means.len() as f64))
}

/// Durations in a plugin's configuration, written as in `agent.toml` (`250ms`, `5s`, `2m`, `1h`).
pub mod duration {
    pub use elastic_duration::{format, parse};
    use std::time::Duration;

    /// For `#[serde(deserialize_with = "elastic_sdk::duration::deserialize")]`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::window::*;
    use super::Window;

    fn w(values: &[f64]) -> Window {
        Window {
            metric: "m".into(),
            labels: vec![],
            length_ms: 60_000,
            timestamps_ms: (0..values.len() as i64).map(|i| i * 1000).collect(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn victims_are_the_first_removable_units_and_busy_ones_are_named_when_short() {
        use super::scale_in::Candidate;
        let c = |unit: &str, removable: bool| Candidate {
            unit: unit.into(),
            removable,
            busy: None,
            activity: None,
            reason: if removable { "idle".into() } else { "busy (1)".into() },
        };
        let ranked = [c("a", true), c("b", true), c("c", false), c("d", false)];
        assert_eq!(super::choose_victims(&ranked, 1), (vec!["a".to_string()], vec![]));
        let (victims, kept) = super::choose_victims(&ranked, 3);
        assert_eq!(victims, ["a", "b"]);
        assert_eq!(kept, ["c (busy (1))"]);
        assert_eq!(super::choose_victims(&ranked[2..], 2).0, Vec::<String>::new());
    }

    #[test]
    fn window_statistics() {
        let x = w(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((mean(&x), max(&x), last(&x)), (Some(2.5), Some(4.0), Some(2.0)));
        assert_eq!(percentile(&x, 50.0), Some(2.5));
        assert_eq!(percentile(&x, 100.0), Some(4.0));
        assert_eq!(percentile(&x, 0.0), Some(1.0));
        assert_eq!(percentile(&x, 101.0), None);
        assert_eq!(mean(&w(&[])), None, "unknown is not zero");
    }

    #[test]
    fn rate_counts_resets() {
        assert_eq!(rate(&w(&[10.0, 20.0, 30.0])), Some(10.0));
        // 10 → 20, reset, 5 → 15: increase 10 + 5 + 10 over 3 s.
        assert_eq!(rate(&w(&[10.0, 20.0, 5.0, 15.0])), Some(25.0 / 3.0));
        assert_eq!(rate(&w(&[1.0])), None);
    }
}
