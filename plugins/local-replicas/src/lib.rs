//! Scales a supervised `[[process]]` on this machine: capacity is its replica count, and ready
//! capacity the replicas whose health check passes. It reaches the supervisor only through the
//! `replicas` host capability, for the processes granted to it:
//!
//! ```toml
//! [plugins.local-replicas]
//! processes = ["web"]
//!
//! [[group]]
//! backend = "local-replicas"
//! backend_config = { process = "web" }
//! ```

use elastic_sdk::backend::{Group, Guest, Outcome};
use elastic_sdk::{key, parse_json, replicas, Capacity, Metadata, PluginError, Target};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The `[[process]]` name this group scales.
    process: String,
}

fn process(group: &Group) -> Result<String, PluginError> {
    let params: Params = parse_json(&group.params, "backend_config")?;
    Ok(params.process)
}

struct LocalReplicas;

impl Guest for LocalReplicas {
    fn metadata() -> Metadata {
        Metadata {
            name: "local-replicas".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Scales a supervised [[process]] on this machine by its replica count.".into(),
            config_keys: vec![key(
                "process",
                "(group backend_config) the [[process]] to scale; grant it with [plugins.local-replicas] processes",
                true,
            )],
        }
    }

    fn describe(group: Group) -> Result<Capacity, PluginError> {
        replicas::get(&process(&group)?)
    }

    fn scale(group: Group, target: Target) -> Result<Outcome, PluginError> {
        let process = process(&group)?;
        let before = replicas::get(&process)?;
        let after = replicas::set(&process, target.replicas)?;
        Ok(Outcome {
            detail: format!(
                "{process}: {} → {} replicas ({} ready)",
                before.replicas, after.replicas, after.ready
            ),
            capacity: after,
        })
    }
}

elastic_sdk::export_backend!(LocalReplicas);
