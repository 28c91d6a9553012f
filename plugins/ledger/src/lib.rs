//! A backend that provisions nothing. It remembers each group's target in its persistent state
//! and reports it back as ready capacity. Use it to try policies and guardrails on a live agent
//! without touching anything, or as the smallest example of a backend.

use elastic_sdk::backend::{Group, Guest, Outcome};
use elastic_sdk::{key, Capacity, Metadata, PluginError, Target};
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
                    "(group backend params) replicas reported before the first scale; default 1",
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

elastic_sdk::export_backend!(Ledger);

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
