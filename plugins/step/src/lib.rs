//! Step scaling, as AWS and OpenStack Heat do it: the further the metric is past its alarm
//! bound, the bigger the adjustment. Each direction has an alarm and steps by breach size; an
//! adjustment is a change in replicas, an exact count, or a percentage (with a minimum step).
//!
//! ```toml
//! policy = "step"
//! [group.policy_config]
//! adjustment = "change"                      # change | exact | percent
//! min_step = 1                               # for percent: at least this many replicas
//! scale_out = { alarm = 0.7, steps = [{ from = 0.0, to = 0.1, adjust = 1 }, { from = 0.1, adjust = 3 }] }
//! scale_in = { alarm = 0.3, steps = [{ from = 0.0, adjust = -1 }] }
//! ```
//! A breach is how far past the alarm the metric is (above it for `scale_out`, below it for
//! `scale_in`); the step whose `[from, to)` contains it applies.

use elastic_sdk::policy::{Context, Guest, Recommendation};
use elastic_sdk::{key, mean_of, parse_json, Metadata, PluginError};
use serde::Deserialize;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "change")]
    pub adjustment: String,
    #[serde(default)]
    pub min_step: u32,
    pub scale_out: Option<Alarm>,
    pub scale_in: Option<Alarm>,
    #[serde(default)]
    pub metric: Option<String>,
}

fn change() -> String {
    "change".into()
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    pub alarm: f64,
    pub steps: Vec<Step>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub from: f64,
    #[serde(default)]
    pub to: Option<f64>,
    pub adjust: f64,
}

/// The recommended replicas for `value` at `current`, and why.
pub fn recommend(p: &Params, current: u32, value: f64, metric: &str) -> Result<(f64, String), PluginError> {
    let breach = |a: &Alarm, out: bool| if out { value - a.alarm } else { a.alarm - value };
    let (alarm, direction) = match (&p.scale_out, &p.scale_in) {
        (Some(a), _) if breach(a, true) > 0.0 => (a, "out"),
        (_, Some(a)) if breach(a, false) > 0.0 => (a, "in"),
        _ => return Ok((current as f64, format!("{metric} {value:.3} within the alarms"))),
    };
    let by = breach(alarm, direction == "out");
    let Some(step) = alarm.steps.iter().find(|s| by >= s.from && s.to.is_none_or(|to| by < to)) else {
        return Ok((
            current as f64,
            format!("{metric} {value:.3}: no scale-{direction} step covers a breach of {by:.3}"),
        ));
    };
    let current_f = current as f64;
    let target = match p.adjustment.as_str() {
        "change" => current_f + step.adjust,
        "exact" => step.adjust,
        "percent" => {
            let delta = current_f * step.adjust / 100.0;
            let min = p.min_step as f64;
            let delta = if delta.abs() < min { min.copysign(step.adjust) } else { delta.trunc() };
            current_f + delta
        }
        other => {
            return Err(PluginError::BadConfig(format!(
                "adjustment must be change, exact or percent, not `{other}`"
            )))
        }
    };
    let reason = format!(
        "{metric} {value:.3} is {by:.3} past the scale-{direction} alarm {}: {} {} → {}",
        alarm.alarm,
        p.adjustment,
        step.adjust,
        target.max(0.0)
    );
    Ok((target.max(0.0), reason))
}

struct StepPolicy;

impl Guest for StepPolicy {
    fn metadata() -> Metadata {
        Metadata {
            name: "step".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Step adjustments by how far the metric is past its alarm (AWS/Heat style).".into(),
            config_keys: vec![
                key(
                    "scale_out",
                    "{ alarm, steps = [{ from, to?, adjust }] } for values above the alarm",
                    false,
                ),
                key(
                    "scale_in",
                    "{ alarm, steps = [{ from, to?, adjust }] } for values below the alarm",
                    false,
                ),
                key("adjustment", "change (default) | exact | percent", false),
                key("min_step", "for percent: the least number of replicas a step moves", false),
                key("metric", "which of the group's metrics; default the first", false),
            ],
        }
    }

    fn evaluate(ctx: Context) -> Result<Recommendation, PluginError> {
        let p: Params = parse_json(&ctx.params, "policy_config")?;
        let (metric, value) = mean_of(&ctx.windows, p.metric.as_deref())
            .ok_or_else(|| PluginError::InvalidInput("no data in the metric window".into()))?;
        let (replicas, reason) = recommend(&p, ctx.current.replicas, value, &metric)?;
        Ok(Recommendation { replicas, tier: None, reason })
    }
}

elastic_sdk::export_policy!(StepPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    fn params(adjustment: &str) -> Params {
        parse_json(
            &format!(
                r#"{{"adjustment": "{adjustment}", "min_step": 2,
                    "scale_out": {{"alarm": 0.7, "steps": [{{"from": 0.0, "to": 0.1, "adjust": 1}}, {{"from": 0.1, "adjust": 50}}]}},
                    "scale_in": {{"alarm": 0.3, "steps": [{{"from": 0.0, "adjust": -1}}]}}}}"#
            ),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn the_step_follows_the_size_of_the_breach() {
        let p = params("change");
        assert_eq!(recommend(&p, 4, 0.75, "cpu").unwrap().0, 5.0, "0.05 past: +1");
        let (r, why) = recommend(&p, 4, 0.95, "cpu").unwrap();
        assert_eq!(r, 54.0, "0.25 past: +50 (the guardrails clamp)");
        assert!(why.contains("0.250 past the scale-out alarm 0.7"), "{why}");
        assert_eq!(recommend(&p, 4, 0.5, "cpu").unwrap().0, 4.0, "between the alarms");
        assert_eq!(recommend(&p, 4, 0.1, "cpu").unwrap().0, 3.0, "below the scale-in alarm: -1");
    }

    #[test]
    fn exact_and_percent_adjustments_with_a_minimum_step() {
        assert_eq!(recommend(&params("exact"), 4, 0.95, "cpu").unwrap().0, 50.0);
        // +50 % of 4 = 2; +1 % of 4 = 0.04, raised to the minimum step of 2.
        assert_eq!(recommend(&params("percent"), 4, 0.95, "cpu").unwrap().0, 6.0);
        assert_eq!(recommend(&params("percent"), 4, 0.75, "cpu").unwrap().0, 6.0);
        assert_eq!(recommend(&params("percent"), 4, 0.1, "cpu").unwrap().0, 2.0, "−1 % raised to −2");
        assert!(recommend(&params("sometimes"), 4, 0.95, "cpu").is_err());
    }
}
