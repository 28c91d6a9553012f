//! Scales a supervised `[[process]]` on this machine: capacity is its replica count, and ready
//! capacity the replicas whose health check passes. It reaches the supervisor only through the
//! `replicas` and `replica-units` host capabilities, for the processes granted to it. A scale-in
//! removes the replicas the agent ranks most idle (`scale-in.rank`: not ready first, then by the
//! `[process.busy]` probe and CPU), drained first, and never one that reports busy:
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
use elastic_sdk::{
    key, parse_json, replica_units, replicas, scale_in, Capacity, Metadata, PluginError, Target,
};
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
        if target.replicas >= before.replicas {
            let after = replicas::set(&process, target.replicas)?;
            let detail = format!(
                "{process}: {} → {} replicas ({} ready)",
                before.replicas, after.replicas, after.ready
            );
            return Ok(Outcome { detail, capacity: after });
        }
        shrink(&group.name, &process, before.replicas - target.replicas)
    }
}

/// Removes `count` replicas, the ones the agent ranks most idle; never one that reports busy.
fn shrink(group: &str, process: &str, count: u32) -> Result<Outcome, PluginError> {
    // Highest index first among equals: what `replicas::set` would have removed.
    let mut units = replica_units::units(process)?;
    units.reverse();
    let ranked = scale_in::rank(group, &units)?;
    let (victims, mut kept) = elastic_sdk::choose_victims(&ranked, count as usize);
    let before = units.len();
    let removal = if victims.is_empty() {
        replica_units::Removal { removed: vec![], kept: vec![], capacity: replicas::get(process)? }
    } else {
        replica_units::remove(process, &victims)?
    };
    kept.extend(removal.kept);
    let why: Vec<String> = removal
        .removed
        .iter()
        .map(|u| {
            let reason = ranked.iter().find(|c| &c.unit == u).map_or("", |c| c.reason.as_str());
            format!("{u} ({reason})")
        })
        .collect();
    let mut detail = format!("{process}: {before} → {} replicas", removal.capacity.replicas);
    if !why.is_empty() {
        detail += &format!("; removed {}", why.join(", "));
    }
    if !kept.is_empty() {
        detail += &format!("; kept {} busy: {}", kept.len(), kept.join(", "));
    }
    Ok(Outcome { detail, capacity: removal.capacity })
}

elastic_sdk::export_backend!(LocalReplicas);
