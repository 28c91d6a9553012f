//! A backend that provisions nothing. It remembers each group's target in its persistent state
//! and reports it back as ready capacity. Use it to try policies and guardrails on a live agent
//! without touching anything, or as the smallest example of a backend.

use elastic_sdk::backend::{Group, Guest, Outcome};
use elastic_sdk::{key, Capacity, Metadata, PluginError, Target};
use elastic_sdk_volumes::{Resized, Volume, VolumeGroup};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Entry {
    replicas: u32,
    tier: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Capacity reported before the first scale call.
    #[serde(default)]
    initial: Option<u32>,
    /// Names of the size tiers, smallest first.
    #[serde(default)]
    tiers: Vec<String>,
}

fn params(group: &Group) -> Result<Params, PluginError> {
    if group.params.trim().is_empty() {
        return Ok(Params::default());
    }
    elastic_sdk::parse_json(&group.params, "backend params")
}

fn load(group: &Group, params: &Params) -> Entry {
    elastic_sdk::state::get(&format!("group:{}", group.name))
        .unwrap_or(Entry { replicas: params.initial.unwrap_or(1), tier: 0 })
}

fn capacity(e: &Entry, params: &Params) -> Capacity {
    Capacity {
        replicas: e.replicas,
        ready: e.replicas,
        tier: e.tier,
        tier_name: params.tiers.get(e.tier as usize).cloned().unwrap_or_default(),
    }
}

struct Ledger;

impl Guest for Ledger {
    fn metadata() -> Metadata {
        Metadata {
            name: "ledger".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Provisions nothing: records each group's target as its capacity.".into(),
            config_keys: vec![
                key(
                    "initial",
                    "(group backend params) replicas (a storage group: GiB) reported before the first scale; default 1",
                    false,
                ),
                key("tiers", "(group backend params) names of the size tiers, smallest first", false),
            ],
        }
    }

    fn describe(group: Group) -> Result<Capacity, PluginError> {
        let params = params(&group)?;
        Ok(capacity(&load(&group, &params), &params))
    }

    fn scale(group: Group, target: Target) -> Result<Outcome, PluginError> {
        let params = params(&group)?;
        let before = load(&group, &params);
        let after = Entry { replicas: target.replicas, tier: target.tier };
        elastic_sdk::state::set(&format!("group:{}", group.name), &after)?;
        Ok(Outcome { capacity: capacity(&after, &params), detail: detail(&before, &after) })
    }
}

/// `recorded 1 → 3 replicas`, and the tier only when it moved: a horizontal group has one.
fn detail(before: &Entry, after: &Entry) -> String {
    let tier = if before.tier == after.tier {
        String::new()
    } else {
        format!(", tier {} → {}", before.tier, after.tier)
    };
    format!("recorded {} → {} replicas{tier}", before.replicas, after.replicas)
}

/// A storage group's volume: a size in the ledger's state, grown when asked.
impl elastic_sdk_volumes::Guest for Ledger {
    fn describe(group: VolumeGroup) -> Result<Volume, PluginError> {
        let initial = params(&Group { name: group.name.clone(), params: group.params.clone() })?.initial;
        let size =
            elastic_sdk::state::get(&format!("volume:{}", group.name)).unwrap_or(initial.unwrap_or(1) as u64);
        Ok(volume(&group, size))
    }

    fn resize(group: VolumeGroup, size_gib: u64) -> Result<Resized, PluginError> {
        let before = <Ledger as elastic_sdk_volumes::Guest>::describe(group.clone())?.size_gib;
        if size_gib <= before {
            return Err(PluginError::InvalidInput(format!(
                "{size_gib} GiB: a volume never shrinks (it has {before})"
            )));
        }
        elastic_sdk::state::set(&format!("volume:{}", group.name), &size_gib)?;
        let decision = elastic_sdk::decision::id().unwrap_or_default();
        let detail = format!("recorded volume {} {before} → {size_gib} GiB ({decision})", group.name);
        Ok(Resized { volume: volume(&group, size_gib), detail })
    }
}

fn volume(group: &VolumeGroup, size_gib: u64) -> Volume {
    Volume {
        id: format!("ledger-{}", group.name),
        size_gib,
        status: "available".into(),
        pending: None,
        attachment: String::new(),
    }
}

elastic_sdk_volumes::export_volume_backend!(Ledger);

#[cfg(test)]
mod tests {
    use super::{detail, Entry};

    #[test]
    fn the_tier_is_said_only_when_it_moves() {
        let e = |replicas, tier| Entry { replicas, tier };
        assert_eq!(detail(&e(1, 0), &e(3, 0)), "recorded 1 → 3 replicas");
        assert_eq!(detail(&e(2, 0), &e(5, 1)), "recorded 2 → 5 replicas, tier 0 → 1");
    }
}
