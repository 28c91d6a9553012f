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
                "elastic:plugin/types@0.1.0": crate::source::bindings::elastic::plugin::types,
                "elastic:plugin/host@0.1.0": crate::source::bindings::elastic::plugin::host,
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
                "elastic:plugin/types@0.1.0": crate::source::bindings::elastic::plugin::types,
                "elastic:plugin/host@0.1.0": crate::source::bindings::elastic::plugin::host,
            },
        });
    }
    pub use bindings::exports::elastic::plugin::backend::{Group, Guest, Outcome};
}

pub use source::bindings::elastic::plugin::host;
pub use source::bindings::elastic::plugin::types::{
    Bounds, Capacity, ConfigKey, Label, PluginError, PluginMetadata as Metadata, Sample, Target, Window,
};

#[cfg(feature = "http")]
pub mod http;

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
