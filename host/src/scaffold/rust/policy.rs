//! {{name}}: a scaling policy. The agent calls `evaluate` every interval of each group that uses
//! it, with the group's metric windows and capacity; the answer goes through the agent's
//! guardrails (bounds, tolerance, stabilization, cooldowns, rate limits) before anything scales.

use elastic_sdk::policy::{Context, Guest, Recommendation};
use elastic_sdk::{key, mean_of, parse_json, Metadata, PluginError};
use serde::Deserialize;

/// The group's `policy_config`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The metric value one replica should carry.
    pub target: f64,
}

/// The rule, free of the bindings so `cargo test` checks it natively: enough replicas that
/// each carries at most `target`, given the metric's group-wide mean per replica.
pub fn desired(p: &Params, replicas: u32, mean: f64) -> Result<f64, PluginError> {
    if !(p.target > 0.0) {
        return Err(PluginError::BadConfig(format!("target must be positive, not {}", p.target)));
    }
    Ok((replicas.max(1) as f64 * mean / p.target).ceil())
}

struct Plugin;

impl Guest for Plugin {
    fn metadata() -> Metadata {
        Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps the per-replica mean of the group's first metric at `target`.".into(),
            config_keys: vec![key("target", "the value one replica should carry", true)],
        }
    }

    fn evaluate(ctx: Context) -> Result<Recommendation, PluginError> {
        let p: Params = parse_json(&ctx.params, "policy_config")?;
        let (metric, mean) = mean_of(&ctx.windows, None)
            .ok_or_else(|| PluginError::InvalidInput("no data in the metric window".into()))?;
        // Units still starting carry no load yet: count the ready ones (as the HPA does).
        let serving = if ctx.current.ready > 0 { ctx.current.ready } else { ctx.current.replicas };
        let replicas = desired(&p, serving, mean)?;
        elastic_sdk::debug!("{metric} mean {mean:.3} → {replicas} replicas");
        Ok(Recommendation { replicas, tier: None, reason: format!("{metric} mean {mean:.3} vs target {}", p.target) })
    }
}

elastic_sdk::export_policy!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_replicas_for_the_load() {
        let p = Params { target: 0.5 };
        assert_eq!(desired(&p, 4, 0.75).unwrap(), 6.0);
        assert_eq!(desired(&p, 4, 0.25).unwrap(), 2.0);
        assert!(matches!(desired(&Params { target: 0.0 }, 1, 1.0), Err(PluginError::BadConfig(_))));
    }
}
