//! {{name}}: a backend. The agent calls `describe` every evaluation of each group that uses it,
//! and `scale` when the guardrails decided on another capacity. This one provisions nothing: it
//! keeps each group's target in the plugin's persistent state — replace `apply` with calls to
//! your infrastructure (grant its origin in `allow_http`, its credentials in `secrets`).

use elastic_sdk::backend::{Group, Guest, Outcome};
use elastic_sdk::{key, state, Capacity, Metadata, PluginError, Target};

/// What a scale call changes, free of the bindings so it is tested natively.
pub fn apply(before: u32, target: &Target) -> (u32, String) {
    (target.replicas, format!("{before} → {} replicas", target.replicas))
}

fn capacity(replicas: u32) -> Capacity {
    Capacity { replicas, ready: replicas, tier: 0, tier_name: String::new() }
}

struct Plugin;

impl Guest for Plugin {
    fn metadata() -> Metadata {
        Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Records each group's target as its capacity.".into(),
            config_keys: vec![key("initial", "(group backend_config) replicas before the first scale; default 1", false)],
        }
    }

    fn describe(group: Group) -> Result<Capacity, PluginError> {
        Ok(capacity(state::get(&group.name).unwrap_or(1)))
    }

    fn scale(group: Group, target: Target) -> Result<Outcome, PluginError> {
        let before: u32 = state::get(&group.name).unwrap_or(1);
        let (after, detail) = apply(before, &target);
        state::set(&group.name, &after)?;
        Ok(Outcome { capacity: capacity(after), detail })
    }
}

elastic_sdk::export_backend!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_records_the_target() {
        let (after, detail) = apply(2, &Target { replicas: 5, tier: 0 });
        assert_eq!((after, detail.as_str()), (5, "2 → 5 replicas"));
    }
}
