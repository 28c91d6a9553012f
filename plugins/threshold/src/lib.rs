//! Threshold scaling, the seed's idea done right: scale out by `step` when the metric has been
//! above `high` for `up_after` evaluations in a row, in by `step` when below `low` for
//! `down_after` in a row. The counters live in the plugin's persistent state, per group, so a
//! reload or a restart of the agent does not reset them.
//!
//! ```toml
//! policy = "threshold"
//! policy_config = { high = 0.8, low = 0.3, up_after = 2, down_after = 5, step = 1 }
//! ```
//! With `mode = "tier"` it scales vertically instead, as the seed's resize did: `step` tiers up
//! the group's size ladder (bigger flavor) above `high`, down below `low`, within `max_tier`.

use elastic_sdk::policy::{Context, Guest, Recommendation};
use elastic_sdk::{key, mean_of, parse_json, Metadata, PluginError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub high: f64,
    pub low: f64,
    #[serde(default = "one")]
    pub up_after: u32,
    #[serde(default = "one")]
    pub down_after: u32,
    #[serde(default = "one")]
    pub step: u32,
    #[serde(default)]
    pub metric: Option<String>,
    /// `replicas` (default): change the number of units; `tier`: change their size.
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Replicas,
    Tier,
}

fn one() -> u32 {
    1
}

/// Evaluations in a row above `high` and below `low`.
#[derive(Serialize, Deserialize, Default, Debug, Clone, Copy, PartialEq)]
pub struct Streak {
    pub above: u32,
    pub below: u32,
}

/// One evaluation: the new streak and the recommended replicas, with the reason.
pub fn step(p: &Params, streak: Streak, current: u32, value: f64, metric: &str) -> (Streak, f64, String) {
    let mut s = streak;
    if value > p.high {
        s = Streak { above: s.above + 1, below: 0 };
        if s.above >= p.up_after {
            let reason =
                format!("{metric} {value:.3} above {} for {} evaluations: +{}", p.high, s.above, p.step);
            return (Streak::default(), (current + p.step) as f64, reason);
        }
        let reason = format!("{metric} {value:.3} above {} ({} of {})", p.high, s.above, p.up_after);
        return (s, current as f64, reason);
    }
    if value < p.low {
        s = Streak { above: 0, below: s.below + 1 };
        if s.below >= p.down_after {
            let reason =
                format!("{metric} {value:.3} below {} for {} evaluations: -{}", p.low, s.below, p.step);
            return (Streak::default(), current.saturating_sub(p.step) as f64, reason);
        }
        let reason = format!("{metric} {value:.3} below {} ({} of {})", p.low, s.below, p.down_after);
        return (s, current as f64, reason);
    }
    (Streak::default(), current as f64, format!("{metric} {value:.3} within [{}, {}]", p.low, p.high))
}

struct Threshold;

impl Guest for Threshold {
    fn metadata() -> Metadata {
        Metadata {
            name: "threshold".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Scales by a step after N evaluations in a row past a high or low mark.".into(),
            config_keys: vec![
                key("high", "scale out above this value", true),
                key("low", "scale in below this value", true),
                key("up_after", "evaluations in a row above `high` before scaling out; default 1", false),
                key("down_after", "evaluations in a row below `low` before scaling in; default 1", false),
                key("step", "replicas added or removed at a time; default 1", false),
                key("metric", "which of the group's metrics; default the first", false),
                key(
                    "mode",
                    "replicas (default) or tier: scale the size of the units instead of their number",
                    false,
                ),
            ],
        }
    }

    fn evaluate(ctx: Context) -> Result<Recommendation, PluginError> {
        let p: Params = parse_json(&ctx.params, "policy_config")?;
        if p.low > p.high {
            return Err(PluginError::BadConfig(format!("low ({}) is above high ({})", p.low, p.high)));
        }
        let (metric, value) = mean_of(&ctx.windows, p.metric.as_deref())
            .ok_or_else(|| PluginError::InvalidInput("no data in the metric window".into()))?;
        let key = format!("streak:{}", ctx.group);
        let streak = elastic_sdk::state::get(&key).unwrap_or_default();
        let current = match p.mode {
            Mode::Replicas => ctx.current.replicas,
            Mode::Tier => ctx.current.tier,
        };
        let (streak, wanted, reason) = step(&p, streak, current, value, &metric);
        elastic_sdk::state::set(&key, &streak)?;
        Ok(match p.mode {
            Mode::Replicas => Recommendation { replicas: wanted, tier: None, reason },
            Mode::Tier => Recommendation {
                replicas: ctx.current.replicas as f64,
                tier: Some((wanted as u32).min(ctx.bounds.max_tier)),
                reason: format!("{reason} (tier)"),
            },
        })
    }
}

elastic_sdk::export_policy!(Threshold);

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            high: 0.8,
            low: 0.3,
            up_after: 2,
            down_after: 3,
            step: 2,
            metric: None,
            mode: Mode::Replicas,
        }
    }

    #[test]
    fn scales_out_only_after_n_in_a_row_and_the_count_restarts() {
        let p = params();
        let (s, r, _) = step(&p, Streak::default(), 4, 0.9, "cpu");
        assert_eq!((s.above, r), (1, 4.0), "one breach is not enough");
        let (s, r, reason) = step(&p, s, 4, 0.95, "cpu");
        assert_eq!((s, r), (Streak::default(), 6.0));
        assert!(reason.contains("above 0.8 for 2 evaluations: +2"), "{reason}");
        // A value back in band resets the streak.
        let (s, _, _) = step(&p, Streak { above: 1, below: 0 }, 4, 0.5, "cpu");
        assert_eq!(s, Streak::default());
    }

    #[test]
    fn scales_in_after_m_below_and_never_below_zero() {
        let p = params();
        let mut s = Streak::default();
        let mut r = 0.0;
        for _ in 0..3 {
            (s, r, _) = step(&p, s, 1, 0.1, "cpu");
        }
        assert_eq!(r, 0.0, "1 - 2 saturates at 0 (the guardrails apply the minimum)");
        assert_eq!(s, Streak::default());
    }
}
