//! `agent simulate`: replays a demand trace through a group's policy and the same guardrails
//! the live loop uses, against a simple capacity model, and scores the result with the
//! elasticity metrics of the SPEC Research Group (as BUNGEE computes them).
//!
//! The model: each ready unit serves `capacity_per_unit` of demand per trace step; a unit added
//! becomes ready `provision_delay` later; a unit removed is gone at once (units still
//! provisioning are removed first). Demand in units is `ceil(demand / capacity_per_unit)`.
//! The policy sees, as the group's first metric, the utilization of the ready units
//! (`demand / (ready × capacity_per_unit)`) or, with `MetricKind::Demand`, the raw demand.

use super::decision::{decide, Advice, Decision, Memory, Observed, Rules};
use super::schedule::Effective;
use serde::Serialize;

/// One row of a trace: time (ms) and demand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t_ms: i64,
    pub demand: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Utilization,
    Demand,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub capacity_per_unit: f64,
    pub provision_delay_ms: i64,
    pub initial_units: u32,
    /// The size tier at the start (a tier changes at once in the model).
    pub initial_tier: u32,
    pub interval_ms: i64,
    pub window_ms: i64,
    pub metric: MetricKind,
}

/// What a policy is asked in the replay, as the live loop asks it: the units (provisioned,
/// ready), the tier, the bounds in force and the metric window (times and values).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub now_ms: i64,
    pub current: u32,
    pub ready: u32,
    pub tier: u32,
    pub bounds: &'a Effective,
    pub times: &'a [i64],
    pub values: &'a [f64],
}

/// A policy in the replay: its advice, or an error (the evaluation fails, as live).
pub trait Policy {
    fn evaluate(&mut self, asked: &Asked) -> Result<Advice, String>;
}

/// A closure of (now, current, ready, times, values) → replicas: a policy without tiers.
impl<F: FnMut(i64, u32, u32, &[i64], &[f64]) -> Result<f64, String>> Policy for F {
    fn evaluate(&mut self, a: &Asked) -> Result<Advice, String> {
        let replicas = self(a.now_ms, a.current, a.ready, a.times, a.values)?;
        Ok(Advice { replicas, tier: None, reason: String::new() })
    }
}

/// One evaluation of the replay, as the live loop would journal it.
#[derive(Debug, Clone)]
pub struct Evaluated<'a> {
    pub seen: Observed,
    pub ready: u32,
    pub bounds: &'a Effective,
    pub decision: &'a Decision,
}
/// The elasticity metrics of a run. Under/over-provisioning compares ready units to demand.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Score {
    /// Average under-provisioned units over time (accuracy_U).
    pub accuracy_u: f64,
    /// Average over-provisioned units over time (accuracy_O).
    pub accuracy_o: f64,
    /// Fraction of time under-provisioned (timeshare_U).
    pub timeshare_u: f64,
    /// Fraction of time over-provisioned (timeshare_O).
    pub timeshare_o: f64,
    /// Adaptations of supply minus adaptations of demand, per hour.
    pub jitter: f64,
    /// Fraction of time supply and demand do not move in the same direction.
    pub instability: f64,
    /// Scaling actions taken.
    pub actions: u64,
    /// Average provisioned units (cost), ready or not.
    pub average_units: f64,
    /// Evaluations where the policy gave no usable recommendation.
    pub failed_evaluations: u64,
    pub hours: f64,
}

/// The replay, step by step: what the plot draws.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub t_ms: Vec<i64>,
    pub demand_units: Vec<u32>,
    pub ready_units: Vec<u32>,
    pub provisioned_units: Vec<u32>,
    /// (time, from, to) of each change of the units.
    pub actions: Vec<(i64, u32, u32)>,
    /// (time, from, to) of each change of the tier.
    pub tiers: Vec<(i64, u32, u32)>,
}

/// Replays `trace` (its timestamps read as calendar time, so `schedules` open and close as
/// they would have) through `policy`, the group's decision step and the capacity `model`.
pub fn run(trace: &[Point], model: &Model, rules: &Rules, policy: &mut dyn Policy) -> (Run, Score) {
    run_observed(trace, model, rules, policy, &mut |_| {})
}

/// [`run`], showing each evaluation to `observe`.
pub fn run_observed(
    trace: &[Point],
    model: &Model,
    rules: &Rules,
    policy: &mut dyn Policy,
    observe: &mut dyn FnMut(&Evaluated),
) -> (Run, Score) {
    let mut out = Run::default();
    let mut mem = Memory::default();
    // Units: the time each becomes ready.
    let mut units: Vec<i64> = vec![i64::MIN; model.initial_units as usize];
    let mut tier = model.initial_tier;
    let mut metric_t: Vec<i64> = Vec::new();
    let mut metric_v: Vec<f64> = Vec::new();
    let mut next_eval = trace.first().map_or(0, |p| p.t_ms);
    let mut failed = 0u64;
    for p in trace {
        let now = p.t_ms;
        let ready = units.iter().filter(|r| **r <= now).count() as u32;
        let value = match model.metric {
            MetricKind::Demand => p.demand,
            MetricKind::Utilization if ready == 0 => f64::from(u8::from(p.demand > 0.0)) * 10.0,
            MetricKind::Utilization => p.demand / (ready as f64 * model.capacity_per_unit),
        };
        metric_t.push(now);
        metric_v.push(value);
        // Points before the window are dropped in batches, not on every step.
        let mut start = metric_t.partition_point(|t| *t <= now - model.window_ms);
        if start > 4096 {
            metric_t.drain(..start);
            metric_v.drain(..start);
            start = 0;
        }
        if now >= next_eval {
            next_eval = now + model.interval_ms;
            let seen = Observed { now_ms: now, current: units.len() as u32, tier };
            let bounds = rules.bounds(now);
            let (times, values) = (&metric_t[start..], &metric_v[start..]);
            let asked =
                Asked { now_ms: now, current: seen.current, ready, tier, bounds: &bounds, times, values };
            let d = decide(rules, &bounds, seen, policy.evaluate(&asked), &mut mem);
            failed += u64::from(d.failed);
            observe(&Evaluated { seen, ready, bounds: &bounds, decision: &d });
            if d.changes(&seen) {
                provision(&mut units, d.target, now + model.provision_delay_ms);
                if d.target != seen.current {
                    out.actions.push((now, seen.current, d.target));
                }
                if d.target_tier != tier {
                    out.tiers.push((now, tier, d.target_tier));
                    tier = d.target_tier;
                }
            }
            mem.settle(rules, &seen, d.target, d.target_tier);
        }
        out.t_ms.push(now);
        out.demand_units.push((p.demand / model.capacity_per_unit).ceil().max(0.0) as u32);
        out.ready_units.push(units.iter().filter(|r| **r <= now).count() as u32);
        out.provisioned_units.push(units.len() as u32);
    }
    let score = score(&out, failed);
    (out, score)
}

/// Moves the model's units (each the time it becomes ready) to `target`: new ones are ready at
/// `ready_at`; removal takes the units still provisioning first (latest ready time first).
fn provision(units: &mut Vec<i64>, target: u32, ready_at: i64) {
    let current = units.len();
    if target as usize > current {
        units.extend(std::iter::repeat_n(ready_at, target as usize - current));
    } else {
        units.sort_unstable();
        units.truncate(target as usize);
    }
}

/// Where the held-out last `holdout` (0-1) of `trace` begins.
pub fn split_ms(trace: &[Point], holdout: f64) -> i64 {
    match (trace.first(), trace.last()) {
        (Some(a), Some(b)) => b.t_ms - ((b.t_ms - a.t_ms) as f64 * holdout) as i64,
        _ => i64::MIN,
    }
}

/// The SPEC RG elasticity metrics of a replay, time-weighted by the step lengths.
pub fn score(run: &Run, failed_evaluations: u64) -> Score {
    score_span(run, failed_evaluations, i64::MIN, i64::MAX)
}

/// [`score`] of the steps in `[from_ms, to_ms)` only — the held-out part of a walk-forward
/// validation, where the policy has lived through what came before but is scored on what
/// follows. Failed evaluations are the whole run's.
pub fn score_span(run: &Run, failed_evaluations: u64, from_ms: i64, to_ms: i64) -> Score {
    let first = run.t_ms.partition_point(|t| *t < from_ms);
    let end = run.t_ms.partition_point(|t| *t < to_ms);
    let n = end - first;
    let mut s = Score {
        accuracy_u: 0.0,
        accuracy_o: 0.0,
        timeshare_u: 0.0,
        timeshare_o: 0.0,
        jitter: 0.0,
        instability: 0.0,
        actions: run.actions.iter().filter(|a| a.0 >= from_ms && a.0 < to_ms).count() as u64,
        average_units: 0.0,
        failed_evaluations,
        hours: 0.0,
    };
    if n < 2 {
        return s;
    }
    let (t, demand, ready, provisioned) = (
        &run.t_ms[first..end],
        &run.demand_units[first..end],
        &run.ready_units[first..end],
        &run.provisioned_units[first..end],
    );
    let total = (t[n - 1] - t[0]) as f64;
    let (mut supply_changes, mut demand_changes) = (0i64, 0i64);
    for i in 0..n - 1 {
        let dt = (t[i + 1] - t[i]) as f64;
        let (d, r) = (demand[i] as f64, ready[i] as f64);
        s.accuracy_u += (d - r).max(0.0) * dt;
        s.accuracy_o += (r - d).max(0.0) * dt;
        if r < d {
            s.timeshare_u += dt;
        }
        if r > d {
            s.timeshare_o += dt;
        }
        s.average_units += provisioned[i] as f64 * dt;
        let ds = (ready[i + 1] as i64 - ready[i] as i64).signum();
        let dd = (demand[i + 1] as i64 - demand[i] as i64).signum();
        supply_changes += ds.abs();
        demand_changes += dd.abs();
        if ds != dd {
            s.instability += dt;
        }
    }
    for v in [
        &mut s.accuracy_u,
        &mut s.accuracy_o,
        &mut s.timeshare_u,
        &mut s.timeshare_o,
        &mut s.average_units,
        &mut s.instability,
    ] {
        *v /= total;
    }
    s.hours = total / 3_600_000.0;
    s.jitter = (supply_changes - demand_changes) as f64 / s.hours;
    s
}

/// Reads a trace CSV: a header, a `timestamp` column (Unix seconds) and a demand column (by
/// name, or the first other column).
pub fn read_csv(text: &str, column: Option<&str>) -> Result<Vec<Point>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().ok_or("the trace is empty")?.split(',').map(str::trim).collect();
    let t_col = header.iter().position(|h| *h == "timestamp").ok_or("the trace has no `timestamp` column")?;
    let d_col = match column {
        Some(c) => header
            .iter()
            .position(|h| *h == c)
            .ok_or_else(|| format!("the trace has no `{c}` column (it has {})", header.join(", ")))?,
        None => (0..header.len()).find(|i| *i != t_col).ok_or("the trace has no demand column")?,
    };
    let mut points = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let parse = |col: usize| f.get(col).and_then(|v| v.parse::<f64>().ok());
        match (parse(t_col), parse(d_col)) {
            (Some(t), Some(d)) if d.is_finite() => {
                points.push(Point { t_ms: (t * 1000.0) as i64, demand: d })
            }
            _ => return Err(format!("line {}: `{line}` is not a timestamp and a number", i + 2)),
        }
    }
    if points.windows(2).any(|w| w[1].t_ms <= w[0].t_ms) {
        return Err("timestamps must increase".into());
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::guardrails::{Behavior, TierRules};

    /// The replay of a group with `behavior` and `schedules`, evaluated every minute.
    fn run(
        trace: &[Point],
        model: &Model,
        behavior: &Behavior,
        schedules: &[crate::decide::schedule::Window],
        policy: &mut dyn Policy,
    ) -> (Run, Score) {
        let tiers = TierRules::default();
        let rules =
            Rules { behavior, tiers: &tiers, fallback: None, schedules, interval_ms: 60_000, cloud: None };
        super::run(trace, model, &rules, policy)
    }

    fn model(delay_ms: i64) -> Model {
        Model {
            capacity_per_unit: 10.0,
            provision_delay_ms: delay_ms,
            initial_units: 1,
            initial_tier: 0,
            interval_ms: 60_000,
            window_ms: 60_000,
            metric: MetricKind::Demand,
        }
    }

    fn trace(demands: &[f64]) -> Vec<Point> {
        demands.iter().enumerate().map(|(i, d)| Point { t_ms: i as i64 * 60_000, demand: *d }).collect()
    }

    /// An oracle policy: exactly the demand in units.
    fn oracle(_: i64, _: u32, _: u32, _: &[i64], v: &[f64]) -> Result<f64, String> {
        Ok((v.last().copied().unwrap_or(0.0) / 10.0).ceil())
    }

    fn free(max: u32) -> Behavior {
        let mut b = Behavior::hpa(1, max);
        b.tolerance = 0.0;
        b.down.stabilization_ms = 0;
        b.up.rules.clear();
        b.down.rules.clear();
        b
    }

    #[test]
    fn schedules_bound_the_replay_in_calendar_time() {
        // Demand of 8 units all along; a window from minute 10 to 20 caps at 3, then one
        // from minute 30 on raises min to 9.
        let t = trace(&[80.0; 40]);
        let window = |name: &str, from: i64, to: i64, min, max| super::super::schedule::Window {
            name: name.into(),
            when: super::super::schedule::When::Fixed { start_ms: from * 60_000, end_ms: to * 60_000 },
            tz: chrono_tz::UTC,
            min,
            max,
            desired: None,
            priority: 0,
        };
        let schedules = [window("cap", 10, 20, None, Some(3)), window("floor", 30, 99, Some(9), None)];
        let (run, _) = run(&t, &model(0), &free(10), &schedules, &mut oracle);
        let at = |minute: usize| run.provisioned_units[minute];
        assert_eq!((at(5), at(10), at(19), at(20), at(29), at(30), at(39)), (8, 3, 3, 8, 8, 9, 9));
    }

    #[test]
    fn an_instant_oracle_is_never_under_or_over_provisioned() {
        let t = trace(&[10.0, 30.0, 30.0, 50.0, 20.0, 20.0, 10.0]);
        let (run, s) = run(&t, &model(0), &free(10), &[], &mut oracle);
        assert_eq!(run.ready_units, run.demand_units);
        assert_eq!((s.accuracy_u, s.accuracy_o, s.timeshare_u, s.timeshare_o), (0.0, 0.0, 0.0, 0.0));
        assert_eq!(s.actions, 4);
        assert_eq!(s.jitter, 0.0, "supply changes exactly when demand does");
        assert_eq!(s.instability, 0.0);
    }

    #[test]
    fn provisioning_delay_shows_up_as_under_provisioning() {
        let t = trace(&[10.0, 30.0, 30.0, 30.0, 30.0]);
        let (run, s) = run(&t, &model(120_000), &free(10), &[], &mut oracle);
        // 3 units wanted from minute 1, ready from minute 3.
        assert_eq!(run.ready_units, [1, 1, 1, 3, 3]);
        assert_eq!(run.provisioned_units, [1, 3, 3, 3, 3]);
        // Under by 2 units for 2 of 4 minutes → accuracy_U = 1 unit, timeshare_U = 0.5.
        assert!((s.accuracy_u - 1.0).abs() < 1e-9 && (s.timeshare_u - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.average_units - 2.5).abs() < 1e-9, "cost counts units still provisioning");
    }

    #[test]
    fn a_static_supply_is_scored_against_demand() {
        let t = trace(&[10.0, 50.0, 10.0, 50.0, 10.0]);
        let (_, s) =
            run(&t, &model(0), &free(10), &[], &mut |_: i64, c: u32, _: u32, _: &[i64], _: &[f64]| {
                Ok(c as f64)
            });
        assert_eq!(s.actions, 0);
        assert!((s.timeshare_u - 0.5).abs() < 1e-9);
        assert!((s.accuracy_u - 2.0).abs() < 1e-9, "under by 4 units half the time");
        assert!(s.jitter < 0.0, "demand moved, supply did not");
        assert_eq!(s.instability, 1.0, "never moving together");
    }

    #[test]
    fn a_failing_policy_holds_and_is_counted() {
        let t = trace(&[10.0, 90.0, 90.0]);
        let (run, s) =
            run(&t, &model(0), &free(10), &[], &mut |_: i64, _: u32, _: u32, _: &[i64], _: &[f64]| {
                Err("no".to_string())
            });
        assert_eq!(run.provisioned_units, [1, 1, 1]);
        assert_eq!(s.failed_evaluations, 3);
    }

    #[test]
    fn csv_traces_parse_and_errors_name_the_line() {
        let t = read_csv("timestamp,requests\n804571200,42\n804571260,62\n", None).unwrap();
        assert_eq!(
            t,
            [Point { t_ms: 804_571_200_000, demand: 42.0 }, Point { t_ms: 804_571_260_000, demand: 62.0 }]
        );
        assert!(read_csv("timestamp,requests\n1,x\n", None).unwrap_err().starts_with("line 2:"));
        assert!(read_csv("time,requests\n1,2\n", None).unwrap_err().contains("no `timestamp`"));
        assert!(read_csv("timestamp,a\n1,2\n", Some("b")).unwrap_err().contains("no `b` column"));
        assert!(read_csv("timestamp,a\n2,2\n1,2\n", None).unwrap_err().contains("increase"));
    }
}
