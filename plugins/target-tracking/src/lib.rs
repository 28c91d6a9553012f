//! Target tracking, as the Kubernetes HPA does it: `desired = ceil(current × value / target)`,
//! with `value` the mean of the metric over the window — averaged across series when the metric
//! has one series per replica (e.g. `process.cpu.utilization{process="web"}`), as the HPA
//! averages over pods. For a metric that is a total across the group (e.g. requests per second)
//! set `per = "total"`: then `value` is the sum of the series' means and `desired =
//! ceil(value / target)`. Tolerance, stabilisation and bounds are the agent's
//! guardrails, not this policy's.

use elastic_sdk::policy::{Context, Guest, Recommendation};
use elastic_sdk::{key, parse_json, window, Metadata, PluginError, Window};
use serde::Deserialize;

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The value to hold the metric at.
    pub target: f64,
    /// Which of the group's metrics to track; default the first.
    #[serde(default)]
    pub metric: Option<String>,
    /// `replica` (the metric is a per-replica average) or `total`.
    #[serde(default = "per_replica")]
    pub per: String,
}

fn per_replica() -> String {
    "replica".into()
}

/// The proportional rule, separated from the bindings so it is tested natively.
pub fn desired(params: &Params, replicas: u32, windows: &[Window]) -> Result<(f64, String), PluginError> {
    if !(params.target.is_finite() && params.target > 0.0) {
        return Err(PluginError::BadConfig(format!(
            "target must be a positive number, not {}",
            params.target
        )));
    }
    let name = match &params.metric {
        Some(name) => name.as_str(),
        None => windows.first().map(|w| w.metric.as_str()).unwrap_or_default(),
    };
    let series: Vec<&Window> = windows.iter().filter(|w| w.metric == name).collect();
    if series.is_empty() {
        return Err(PluginError::InvalidInput("the group gives this policy no metric window".into()));
    }
    let means: Vec<f64> = series.iter().filter_map(|w| window::mean(w)).collect();
    if means.is_empty() {
        return Err(PluginError::InvalidInput(format!("no data for {name} in the window")));
    }
    let value = match params.per.as_str() {
        "total" => means.iter().sum::<f64>(),
        _ => means.iter().sum::<f64>() / means.len() as f64,
    };
    let window = series[0];
    let (desired, how) = match params.per.as_str() {
        "replica" => (
            replicas.max(1) as f64 * value / params.target,
            format!("{} × {value:.3} / {}", replicas.max(1), params.target),
        ),
        "total" => (value / params.target, format!("{value:.3} / {}", params.target)),
        other => {
            return Err(PluginError::BadConfig(format!("per must be `replica` or `total`, not `{other}`")))
        }
    };
    let over = if means.len() > 1 { format!(" over {} series", means.len()) } else { String::new() };
    let reason = format!(
        "{} mean {value:.3}{over} vs target {}: ceil({how}) = {}",
        window.metric,
        params.target,
        desired.ceil()
    );
    Ok((desired.ceil(), reason))
}

struct TargetTracking;

thread_local! {
    /// The last params text and what it parsed to: groups rarely change theirs, so each
    /// evaluation need not parse JSON again.
    static PARSED: std::cell::RefCell<Option<(String, std::rc::Rc<Params>)>> = const { std::cell::RefCell::new(None) };
}

/// The group's params, or the plugin config when the group gives none.
fn params(text: &str) -> Result<std::rc::Rc<Params>, PluginError> {
    if let Some(hit) = PARSED.with_borrow(|p| p.as_ref().filter(|(t, _)| t == text).map(|(_, v)| v.clone())) {
        return Ok(hit);
    }
    let parsed: Params = if text.trim().is_empty() || text.trim() == "{}" {
        elastic_sdk::config()?
    } else {
        parse_json(text, "policy params")?
    };
    let parsed = std::rc::Rc::new(parsed);
    PARSED.with_borrow_mut(|p| *p = Some((text.to_string(), parsed.clone())));
    Ok(parsed)
}

impl Guest for TargetTracking {
    fn metadata() -> Metadata {
        Metadata {
            name: "target-tracking".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps a metric at a target with the HPA's proportional rule.".into(),
            config_keys: vec![
                key("target", "the value to hold the metric at (per replica unless per = \"total\")", true),
                key("metric", "which of the group's metrics to track; default the first", false),
                key(
                    "per",
                    "`replica` (default): the metric is a per-replica average; `total`: a group total",
                    false,
                ),
            ],
        }
    }

    fn evaluate(ctx: Context) -> Result<Recommendation, PluginError> {
        let params = params(&ctx.params)?;
        let replicas = if ctx.current.ready > 0 { ctx.current.ready } else { ctx.current.replicas };
        let (replicas, reason) = desired(&params, replicas, &ctx.windows)?;
        Ok(Recommendation { replicas, tier: None, reason })
    }
}

elastic_sdk::export_policy!(TargetTracking);

#[cfg(test)]
mod tests {
    use super::*;

    fn window(values: &[f64]) -> Window {
        Window {
            metric: "cpu".into(),
            labels: vec![],
            length_ms: 60_000,
            timestamps_ms: (0..values.len() as i64).collect(),
            values: values.to_vec(),
        }
    }

    fn params(target: f64, per: &str) -> Params {
        Params { target, metric: None, per: per.into() }
    }

    #[test]
    fn proportional_rule_matches_the_hpa() {
        // 4 replicas at 90% against a 60% target → ceil(4 × 0.9 / 0.6) = 6.
        let (d, reason) = desired(&params(0.6, "replica"), 4, &[window(&[0.8, 1.0])]).unwrap();
        assert_eq!(d, 6.0);
        assert!(reason.contains("ceil(4 × 0.900 / 0.6)"), "{reason}");
        // 120 req/s total, 50 per replica → 3.
        assert_eq!(desired(&params(50.0, "total"), 7, &[window(&[120.0])]).unwrap().0, 3.0);
    }

    #[test]
    fn several_series_are_averaged_per_replica_or_summed_for_a_total() {
        let (a, b) = (window(&[0.9, 0.9]), window(&[0.3]));
        // Two replicas at 0.9 and 0.3 average 0.6; against 0.3 → ceil(2 × 0.6 / 0.3) = 4.
        let (d, reason) = desired(&params(0.3, "replica"), 2, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(d, 4.0);
        assert!(reason.contains("over 2 series"), "{reason}");
        // As totals they sum to 1.2; 0.3 each → 4.
        assert_eq!(desired(&params(0.3, "total"), 2, &[a, b]).unwrap().0, 4.0);
    }

    #[test]
    fn missing_data_is_an_error_never_zero() {
        assert!(matches!(
            desired(&params(0.5, "replica"), 3, &[window(&[])]),
            Err(PluginError::InvalidInput(_))
        ));
        assert!(matches!(desired(&params(0.5, "replica"), 3, &[]), Err(PluginError::InvalidInput(_))));
    }

    #[test]
    fn bad_params_name_the_key() {
        assert!(
            matches!(desired(&params(0.0, "replica"), 3, &[window(&[1.0])]), Err(PluginError::BadConfig(m)) if m.contains("target"))
        );
        assert!(
            matches!(desired(&params(1.0, "pod"), 3, &[window(&[1.0])]), Err(PluginError::BadConfig(m)) if m.contains("per"))
        );
    }
}
