//! Predictive scaling on the group's total demand (e.g. requests per minute; `capacity_per_unit`
//! is how much of it one unit serves), three methods:
//!
//! - `auto` (the default, [`auto`]): picks, per group and step, between the demand now and a
//!   Holt-Winters forecast by their recent error `horizon` ahead, and adds the `coverage`
//!   quantile of that error — head-room learned from the group's own demand.
//! - `holt-winters` ([`holt_winters`]): level, trend and a daily season, forecast `horizon`
//!   ahead — the time new capacity takes to be ready — provisioned for
//!   `max(forecast, demand now) × (1 + margin)`.
//! - `quantile`: the `quantile` (default 0.95) of the demand over the group's metric window plus
//!   its rise over the last `trend_over` (default 15m) against the `trend_over` before. Stateless.
//!
//! No method recommends less than the demand now needs. With `forecast_only = true` it journals
//! the forecast and recommends the current capacity. Models live in the plugin's persistent
//! state, per group.
//!
//! ```toml
//! policy = "predictive"
//! policy_config = { capacity_per_unit = 50, horizon = "3m", period = "1m" }
//! ```

pub mod auto;
pub mod holt_winters;

use elastic_sdk::policy::{Context, Guest, Recommendation};
use elastic_sdk::{key, mean_of, parse_json, Metadata, PluginError};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

use auto::Auto;
use holt_winters::Model;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub capacity_per_unit: f64,
    #[serde(default = "horizon")]
    pub horizon: String,
    /// Head-room over the forecast, a fraction: 0.1 for holt-winters and quantile, 0 for auto.
    #[serde(default)]
    pub margin: Option<f64>,
    #[serde(default = "season")]
    pub season: String,
    /// The time one model step stands for: the group's evaluation interval.
    #[serde(default = "period")]
    pub period: String,
    #[serde(default = "alpha")]
    pub alpha: f64,
    #[serde(default = "beta")]
    pub beta: f64,
    #[serde(default = "gamma")]
    pub gamma: f64,
    #[serde(default)]
    pub forecast_only: bool,
    #[serde(default)]
    pub metric: Option<String>,
    /// `auto` (default), `holt-winters` or `quantile`.
    #[serde(default = "method")]
    pub method: String,
    /// Method auto: the share of recent horizons its head-room would have covered.
    #[serde(default = "coverage")]
    pub coverage: f64,
    /// Method auto: how far back its forecasters' errors are remembered.
    #[serde(default = "learn_over")]
    pub learn_over: String,

    #[serde(default = "quantile")]
    pub quantile: f64,
    #[serde(default = "trend_over")]
    pub trend_over: String,
}

impl Params {
    fn margin(&self) -> f64 {
        self.margin.unwrap_or(if self.method == "auto" { 0.0 } else { 0.1 })
    }
}

fn method() -> String {
    "auto".into()
}
fn coverage() -> f64 {
    0.9
}
fn learn_over() -> String {
    "1d".into()
}
fn quantile() -> f64 {
    0.95
}
fn trend_over() -> String {
    "15m".into()
}

/// The `q` quantile of `values` (nearest rank) plus the rise of the mean over the last
/// `recent` values against the `recent` before them (0 when falling). `values` oldest first.
pub fn risk(values: &[f64], q: f64, recent: usize) -> (f64, f64) {
    let level = auto::quantile(values.iter().copied(), q);
    let mean = |s: &[f64]| if s.is_empty() { 0.0 } else { s.iter().sum::<f64>() / s.len() as f64 };
    let n = values.len();
    let (last, before) = (
        &values[n.saturating_sub(recent)..],
        &values[n.saturating_sub(2 * recent)..n.saturating_sub(recent)],
    );
    let rise = if before.is_empty() { 0.0 } else { (mean(last) - mean(before)).max(0.0) };
    (level, rise)
}

fn horizon() -> String {
    "5m".into()
}
fn season() -> String {
    "1d".into()
}
fn period() -> String {
    "1m".into()
}
fn alpha() -> f64 {
    0.3
}
fn beta() -> f64 {
    0.01
}
fn gamma() -> f64 {
    0.3
}

/// `250ms`, `5m`, `1d` → milliseconds.
fn millis(text: &str, key: &str) -> Result<i64, PluginError> {
    elastic_sdk::duration::parse(text)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .map_err(|e| PluginError::BadConfig(format!("{key}: {e}")))
}

/// Models by group, with the evaluations since each was persisted and when it last was.
type Cache<T> = RefCell<HashMap<String, (T, u32, i64)>>;

thread_local! {
    /// Each group's model, with evaluations since it was last persisted.
    static MODELS: Cache<Model> = RefCell::new(HashMap::new());
    static AUTOS: Cache<Auto> = RefCell::new(HashMap::new());
}

/// Persist every this many evaluations, and at most once a minute of the group's clock (an
/// `auto` model is about 70 KB).
const PERSIST_EVERY: u32 = 10;
const PERSIST_GAP_MS: i64 = 60_000;

/// Runs `f` on `group`'s state in `cache`: loaded from the plugin's state under `key` the first
/// time (`fits` says whether what was stored still fits the configuration, `fresh` makes a new
/// one), written back every [`PERSIST_EVERY`] evaluations. A write the state budget refuses is
/// logged and the model goes on in memory: losing a restart's worth of learning is better than
/// failing every evaluation.
fn with_state<T, R>(
    cache: &'static std::thread::LocalKey<Cache<T>>,
    ctx: &Context,
    key: &str,
    fits: impl Fn(&T) -> bool,
    fresh: impl FnOnce() -> T,
    f: impl FnOnce(&mut T) -> R,
) -> R
where
    T: Serialize + serde::de::DeserializeOwned + 'static,
{
    cache.with_borrow_mut(|states| {
        let entry = states.entry(ctx.group.clone()).or_insert_with(|| {
            let stored: Option<T> = elastic_sdk::state::get(key);
            (stored.filter(&fits).unwrap_or_else(fresh), 0, ctx.now_ms)
        });
        let out = f(&mut entry.0);
        entry.1 += 1;
        if entry.1 >= PERSIST_EVERY && ctx.now_ms - entry.2 >= PERSIST_GAP_MS {
            if let Err(e) = elastic_sdk::state::set(key, &entry.0) {
                elastic_sdk::warn!("{key}: not saved ({e}); the model goes on in memory — raise the plugin's state budget to keep it across restarts");
            }
            (entry.1, entry.2) = (0, ctx.now_ms);
        }
        out
    })
}

/// The steps of the model: the period, the season and the horizon in periods.
struct Steps {
    period: i64,
    season: usize,
    horizon: i64,
}

fn steps(p: &Params) -> Result<Steps, PluginError> {
    let period = millis(&p.period, "period")?.max(1);
    Ok(Steps {
        period,
        season: (millis(&p.season, "season")? / period).clamp(1, 100_000) as usize,
        horizon: (millis(&p.horizon, "horizon")? / period).clamp(1, 10_000),
    })
}

pub fn recommend(p: &Params, model: &Model, horizon_steps: i64, now: f64) -> (f64, f64) {
    let forecast = model.forecast(horizon_steps);
    let need = forecast.max(now) * (1.0 + p.margin());
    (forecast, (need / p.capacity_per_unit).ceil())
}

struct Predictive;

impl Guest for Predictive {
    fn metadata() -> Metadata {
        Metadata {
            name: "predictive".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Provisions ahead of the demand: of the demand now, a Holt-Winters forecast and last season, the one that scored best lately, plus head-room learned from its errors.".into(),
            config_keys: vec![
                key("capacity_per_unit", "demand one unit serves (in the metric's unit)", true),
                key("horizon", "how far ahead to provision (the time new capacity takes); default 5m", false),
                key("margin", "head-room over the forecast, a fraction; default 0.1 (auto: 0)", false),
                key("season", "the seasonal cycle; default 1d", false),
                key("period", "the time one evaluation stands for (the group's interval); default 1m", false),
                key("alpha", "level smoothing, 0-1; default 0.3", false),
                key("beta", "trend smoothing, 0-1; default 0.01", false),
                key("gamma", "season smoothing, 0-1; default 0.3", false),
                key("forecast_only", "journal the forecast but keep the current capacity; default false", false),
                key("metric", "which of the group's metrics (total demand); default the first", false),
                key("method", "auto (default), holt-winters or quantile", false),
                key("coverage", "method auto: the share of recent horizons its head-room would have covered, 0-1; default 0.9", false),
                key("learn_over", "method auto: how far back its forecasters' errors count; default 1d", false),
                key("quantile", "method quantile: the quantile of the window's demand to provision for; default 0.95", false),
                key("trend_over", "method quantile: the span whose rise is added; default 15m", false),
            ],
        }
    }

    fn evaluate(ctx: Context) -> Result<Recommendation, PluginError> {
        let p: Params = parse_json(&ctx.params, "policy_config")?;
        if !p.capacity_per_unit.is_finite() || p.capacity_per_unit <= 0.0 {
            return Err(PluginError::BadConfig("capacity_per_unit must be positive".into()));
        }
        match p.method.as_str() {
            "auto" => return by_auto(&ctx, &p),
            "quantile" => return by_quantile(&ctx, &p),
            "holt-winters" => {}
            other => {
                return Err(PluginError::BadConfig(format!(
                    "method: `{other}` is not auto, holt-winters or quantile"
                )))
            }
        }
        let (metric, now) = mean_of(&ctx.windows, p.metric.as_deref())
            .ok_or_else(|| PluginError::InvalidInput("no data in the metric window".into()))?;
        let s = steps(&p)?;
        let step = ctx.now_ms.div_euclid(s.period);
        let (forecast, replicas) = with_state(
            &MODELS,
            &ctx,
            &format!("model:{}", ctx.group),
            |m: &Model| m.season.len() == s.season,
            || Model::new(s.season),
            |m| {
                m.observe(step, now, &p);
                recommend(&p, m, s.horizon, now)
            },
        );
        let reason = format!(
            "{metric} now {now:.1}, forecast {forecast:.1} in {} (+{:.0}% margin) → {replicas} units of {}",
            p.horizon,
            p.margin() * 100.0,
            p.capacity_per_unit
        );
        Ok(answer(&ctx, &p, replicas, reason))
    }
}

/// `method = "auto"`: the candidate that scored best lately, plus its errors' `coverage` quantile.
fn by_auto(ctx: &Context, p: &Params) -> Result<Recommendation, PluginError> {
    if !(0.0..=1.0).contains(&p.coverage) {
        return Err(PluginError::BadConfig(format!("coverage: `{}` is not within 0-1", p.coverage)));
    }
    let (metric, now) = mean_of(&ctx.windows, p.metric.as_deref())
        .ok_or_else(|| PluginError::InvalidInput("no data in the metric window".into()))?;
    let s = steps(p)?;
    // At least enough errors to trust (a 1d span at a 1h period would never get there).
    let learn =
        (millis(&p.learn_over, "learn_over")? / s.period).clamp(auto::MIN_ERRORS as i64, 100_000) as usize;
    let step = ctx.now_ms.div_euclid(s.period);
    let model_key = format!("model:{}", ctx.group);
    let a = with_state(
        &AUTOS,
        ctx,
        &format!("auto:{}", ctx.group),
        |a: &Auto| a.hw.season.len() == s.season,
        // A group that ran Holt-Winters before keeps what its model learned.
        || {
            let mut fresh = Auto::new(s.season);
            if let Some(m) =
                elastic_sdk::state::get::<Model>(&model_key).filter(|m| m.season.len() == s.season)
            {
                fresh.hw = m;
                elastic_sdk::state::delete(&model_key);
            }
            fresh
        },
        |a| {
            a.observe(step, now, s.horizon as usize, learn, p);
            a.answer(now, p.coverage, p)
        },
    );
    let replicas = (a.need * (1.0 + p.margin()) / p.capacity_per_unit).ceil().max(0.0);
    let reason = format!(
        "{metric} now {now:.1}; {} expects {:.1} within {}, +{:.1} for p{:.0} of its recent error → {replicas} units of {}",
        auto::FORECASTERS[a.forecaster],
        a.forecast,
        p.horizon,
        a.need - a.forecast.min(a.need),
        p.coverage * 100.0,
        p.capacity_per_unit
    );
    Ok(answer(ctx, p, replicas, reason))
}

/// `method = "quantile"`: provisions for a high quantile of the window's demand plus its rise.
fn by_quantile(ctx: &Context, p: &Params) -> Result<Recommendation, PluginError> {
    if !(0.0..=1.0).contains(&p.quantile) {
        return Err(PluginError::BadConfig("quantile must be within 0-1".into()));
    }
    let window = match &p.metric {
        Some(m) => ctx.windows.iter().find(|w| &w.metric == m),
        None => ctx.windows.first(),
    }
    .filter(|w| !w.values.is_empty())
    .ok_or_else(|| PluginError::InvalidInput("no data in the metric window".into()))?;
    let period = millis(&p.period, "period")?.max(1);
    let recent = (millis(&p.trend_over, "trend_over")? / period).max(1) as usize;
    let (level, rise) = risk(&window.values, p.quantile, recent);
    let replicas = ((level + rise) * (1.0 + p.margin()) / p.capacity_per_unit).ceil().max(0.0);
    let reason = format!(
        "{} p{:.0} over the window {level:.1}, rising {rise:.1} over {} (+{:.0}% margin) → {replicas} units of {}",
        window.metric,
        p.quantile * 100.0,
        p.trend_over,
        p.margin() * 100.0,
        p.capacity_per_unit
    );
    Ok(answer(ctx, p, replicas, reason))
}

/// The recommendation, or with `forecast_only` the current capacity and the forecast as reason.
fn answer(ctx: &Context, p: &Params, replicas: f64, reason: String) -> Recommendation {
    match p.forecast_only {
        true => Recommendation {
            replicas: ctx.current.replicas as f64,
            tier: None,
            reason: format!("forecast only: {reason}"),
        },
        false => Recommendation { replicas, tier: None, reason },
    }
}

elastic_sdk::export_policy!(Predictive);

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        parse_json(r#"{"capacity_per_unit": 10, "method": "holt-winters"}"#, "test").unwrap()
    }

    /// A daily-like cycle of 60 steps: 50 ± 40.
    fn demand(step: i64) -> f64 {
        50.0 + 40.0 * (2.0 * std::f64::consts::PI * (step % 60) as f64 / 60.0).sin()
    }

    #[test]
    fn after_a_few_cycles_the_forecast_follows_the_season_better_than_the_last_value() {
        let p = params();
        let mut m = Model::new(60);
        for step in 0..240 {
            m.observe(step, demand(step), &p);
        }
        let (mut model_err, mut naive_err) = (0.0, 0.0);
        for step in 240..300 {
            let h = 5;
            model_err += (m.forecast(h) - demand(step - 1 + h)).abs();
            naive_err += (demand(step - 1) - demand(step - 1 + h)).abs();
            m.observe(step, demand(step), &p);
        }
        assert!(model_err < naive_err / 3.0, "model {model_err:.1} vs naive {naive_err:.1}");
    }

    #[test]
    fn never_below_what_current_load_needs_and_margin_applies() {
        let p = params();
        let mut m = Model::new(60);
        m.observe(0, 10.0, &p);
        // Forecast 10, but 95 now → ceil(95 × 1.1 / 10) = 11.
        assert_eq!(recommend(&p, &m, 5, 95.0).1, 11.0);
        assert_eq!(recommend(&p, &m, 5, 0.0).1, 2.0, "ceil(10 × 1.1 / 10)");
    }

    #[test]
    fn the_quantile_method_provisions_for_the_bursts_and_the_rise() {
        // 90 calm minutes at 40 with one burst in 20 at 60: p95 is a burst.
        let calm: Vec<f64> = (0..100).map(|i| if i % 20 == 0 { 60.0 } else { 40.0 }).collect();
        assert_eq!(risk(&calm, 0.95, 10), (60.0, 0.0));
        assert_eq!(risk(&calm, 0.5, 10).0, 40.0);
        // A ramp: the last 10 average 10 more than the 10 before.
        let ramp: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let (level, rise) = risk(&ramp, 0.95, 10);
        assert_eq!((level, rise), (38.0, 10.0));
        assert_eq!(risk(&[], 0.95, 10), (0.0, 0.0));
    }

    #[test]
    fn the_model_round_trips_through_state_and_durations_parse() {
        let p = params();
        let mut m = Model::new(4);
        m.observe(7, 3.0, &p);
        let back: Model = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(millis("1d", "season").unwrap(), 86_400_000);
        assert!(millis("soon", "horizon").is_err());
    }
}
