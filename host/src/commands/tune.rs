//! `agent tune GROUP`: replays the group's own recorded history (its first metric's 1-minute
//! rollups and the capacity it had, from the agent's database) through the running policy and
//! candidate policies and settings, walk-forward — chosen on the first part, checked on the held
//! out rest — and recommends a `policy_config` at least as good on both cost and time
//! under-provisioned. It never changes anything; it runs at the lowest CPU priority, within a
//! time budget, and stops cleanly on Ctrl-C.

use super::simulate::{replay, Knobs};
use super::Exit;
use crate::config::GroupSpec;
use crate::decide::simulate::{score_span, MetricKind, Point, Score};
use crate::store::{Selector, Store};
use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `agent tune` arguments.
#[derive(clap::Args)]
pub struct TuneArgs {
    /// The [[group]] to tune.
    pub group: String,
    /// How much of the recorded history to replay (the 1-minute rollups are kept 7 days).
    #[arg(long, value_parser = crate::duration::parse, default_value = "7d")]
    pub over: Duration,
    /// The last FRACTION of the history is held out: settings are chosen on what comes before
    /// it and must hold up on it.
    #[arg(long, default_value_t = 1.0 / 3.0)]
    pub holdout: f64,
    /// Demand one unit serves (default: the running policy_config's `capacity_per_unit`; without
    /// one the metric is read as a utilization, its demand as utilization × ready units).
    #[arg(long)]
    pub capacity_per_unit: Option<f64>,
    /// Time from scale-out to a new unit being ready.
    #[arg(long, value_parser = crate::duration::parse, default_value = "2m")]
    pub provision_delay: Duration,
    /// Stop replaying after this long and report the settings replayed so far.
    #[arg(long, value_parser = crate::duration::parse, default_value = "5m")]
    pub budget: Duration,
    #[arg(long)]
    pub json: bool,
}

/// The demand history of a group, one point per step, and how it is to be read.
struct History {
    trace: Vec<Point>,
    capacity_per_unit: f64,
    /// Whether the running policy sees the demand (else the utilization).
    running_sees_demand: bool,
    /// Whether --capacity-per-unit was given.
    cap_given: bool,
    step: Duration,
}

/// One setting replayed.
#[derive(Serialize, Clone)]
struct Tried {
    policy: String,
    policy_config: Value,
    running: bool,
    tuned: Score,
    held_out: Score,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn tune(options: super::RunOptions, args: TuneArgs) -> anyhow::Result<Exit> {
    anyhow::ensure!(
        args.holdout > 0.0 && args.holdout < 1.0,
        "--holdout is the fraction of the history to hold out, between 0 and 1 (e.g. 0.33)"
    );
    let niced = lower_priority();
    let config = Arc::new(options.resolve()?);
    let group = config
        .groups
        .iter()
        .find(|g| g.name == args.group)
        .with_context(|| format!("no [[group]] named `{}` in the configuration", args.group))?;
    let store = Store::open_read_only(&config.data_dir)
        .with_context(|| format!("opening the agent's database in {}", config.data_dir.display()))?;
    let now = crate::timefmt::now_ms();
    let history = history(&store, group, &args, now)?;
    let started = Instant::now();
    let deadline = started + args.budget;
    let stop = || STOP.load(Ordering::Relaxed) || Instant::now() >= deadline;
    let knobs = Knobs {
        capacity_per_unit: history.capacity_per_unit,
        provision_delay: args.provision_delay,
        initial: None,
        stop: &stop,
    };
    let split = crate::decide::simulate::split_ms(&history.trace, args.holdout);
    let (mut tried, mut skipped) = (Vec::new(), Vec::new());
    let candidates = candidates(group, &history, args.provision_delay);
    for (spec, kind, running) in &candidates {
        if stop() {
            break;
        }
        let replayed = replay(&config, spec, &knobs, &history.trace, *kind);
        if stop() {
            break; // a replay cut short is not a score (and Ctrl-C also stops a compiling child)
        }
        let (run, whole, _) = match replayed {
            Ok(r) => r,
            Err(e) if *running => return Err(e.context("replaying the running setting")),
            Err(e) => {
                // A plugin's load error may carry its own text: one clean line.
                skipped
                    .push(crate::text::clean(&format!("{} {}: {e:#}", spec.policy, spec.policy_params), 400));
                continue;
            }
        };
        tried.push(Tried {
            policy: spec.policy.clone(),
            policy_config: serde_json::from_str(&spec.policy_params).unwrap_or(Value::Null),
            running: *running,
            tuned: score_span(&run, whole.failed_evaluations, i64::MIN, split),
            held_out: score_span(&run, whole.failed_evaluations, split, i64::MAX),
        });
    }
    let cut_short = (tried.len() + skipped.len() < candidates.len()).then(|| {
        if STOP.load(Ordering::Relaxed) {
            "interrupted"
        } else {
            "out of --budget"
        }
    });
    let pick = recommend(&tried);
    let took = started.elapsed();
    if args.json {
        let body = json!({
            "group": group.name,
            "points": history.trace.len(),
            "step_seconds": history.step.as_secs(),
            "capacity_per_unit": history.capacity_per_unit,
            "held_out_from_ms": split,
            "tried": tried,
            "recommended": pick.map(|i| &tried[i]),
            "cut_short": cut_short,
            "skipped": skipped,
            "seconds": took.as_secs_f64(),
            "niced": niced,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        report(group, &history, &tried, pick);
        for s in &skipped {
            println!("skipped {s}");
        }
        if let Some(why) = cut_short {
            println!("stopped early ({why}): {} of {} settings replayed", tried.len(), candidates.len());
        }
        println!("replayed in {:.1} s{}", took.as_secs_f64(), if niced { " at nice 19" } else { "" });
    }
    // Cut short, the table is not the whole answer.
    Ok(if cut_short.is_some() { Exit::SomeFailed } else { Exit::Success })
}

/// Nice 19 for the calling thread and every thread started after it (the runtime's, the
/// compiler's); the first Ctrl-C or SIGTERM stops the replays, a second one kills as usual.
/// Says whether the priority was lowered.
fn lower_priority() -> bool {
    // SAFETY: plain libc calls with valid arguments; the handler only stores to an atomic and
    // is reset to the default by SA_RESETHAND after it runs once.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_interrupt as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::setpriority(libc::PRIO_PROCESS, 0, 19) == 0
    }
}

/// The group's first metric per step (rollups, summed over its series for a demand, averaged
/// for a utilization) and, for a utilization, times the units that were ready then.
fn history(store: &Store, group: &GroupSpec, args: &TuneArgs, now: i64) -> anyhow::Result<History> {
    let metric = group.metrics.first().with_context(|| format!("group `{}` has no metrics", group.name))?;
    let config: Value = serde_json::from_str(&group.policy_params).unwrap_or(Value::Null);
    let running_cap = config.get("capacity_per_unit").and_then(Value::as_f64);
    // A target-tracking `per = "total"` reads a demand too, but says nothing of a unit's capacity.
    let running_sees_demand =
        running_cap.is_some() || config.get("per").and_then(Value::as_str) == Some("total");
    let capacity_per_unit = match (args.capacity_per_unit, running_cap) {
        (Some(c), _) => c,
        (None, Some(c)) => c,
        (None, None) if running_sees_demand => anyhow::bail!(
            "group `{}` reads a total demand without a capacity_per_unit: give --capacity-per-unit (the demand one unit serves)",
            group.name
        ),
        (None, None) => 1.0,
    };
    anyhow::ensure!(
        capacity_per_unit.is_finite() && capacity_per_unit > 0.0,
        "the capacity per unit must be positive (it is {capacity_per_unit}): fix --capacity-per-unit or the group's capacity_per_unit"
    );
    let step = Duration::from_secs(group.interval.as_secs().div_ceil(60).max(1) * 60);
    let step_ms = step.as_millis() as i64;
    let since = now - args.over.as_millis() as i64;
    let sel = Selector { name: metric.name.clone(), matchers: metric.labels.clone() };
    let mut buckets: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
    for s in &store.query(&sel, since, now, Some(step_ms))? {
        for (t, v) in s.timestamps_ms.iter().zip(&s.values).filter(|(_, v)| v.is_finite()) {
            let b = buckets.entry(*t).or_default();
            (b.0, b.1) = (b.0 + v, b.1 + 1);
        }
    }
    let min_points = 120;
    anyhow::ensure!(
        buckets.len() >= min_points,
        "group `{}`'s metric `{}` has {} points of {} in the last {}: tune needs at least {min_points} — let the agent run it longer, or give a longer --over",
        group.name,
        metric.name,
        buckets.len(),
        crate::duration::format(step),
        crate::duration::format(args.over)
    );
    let trace = match running_sees_demand {
        true => buckets.into_iter().map(|(t, (sum, _))| Point { t_ms: t, demand: sum }).collect(),
        false => utilization_to_demand(store, group, buckets, since, step_ms, capacity_per_unit)?,
    };
    Ok(History {
        trace,
        capacity_per_unit,
        running_sees_demand,
        cap_given: args.capacity_per_unit.is_some(),
        step,
    })
}

/// A utilization per step, as a demand: its mean over the series × the units ready then (the
/// journal's), × one unit's capacity.
fn utilization_to_demand(
    store: &Store,
    group: &GroupSpec,
    buckets: std::collections::BTreeMap<i64, (f64, u32)>,
    since: i64,
    step_ms: i64,
    capacity_per_unit: f64,
) -> anyhow::Result<Vec<Point>> {
    let capacity = store.capacity_steps(&group.name, since, step_ms)?;
    anyhow::ensure!(
        !capacity.t.is_empty(),
        "group `{}` has no decisions in the journal in that time: tune reads the units that were ready from it — let the agent run the group a while",
        group.name
    );
    let mut k = 0;
    let trace = buckets
        .into_iter()
        .map(|(t, (sum, n))| {
            while k + 1 < capacity.t.len() && capacity.t[k + 1] <= t {
                k += 1;
            }
            let ready = f64::from(capacity.ready[k].max(1));
            Point { t_ms: t, demand: sum / f64::from(n) * ready * capacity_per_unit }
        })
        .collect();
    Ok(trace)
}

/// The running setting first, then target tracking at several targets and (for a group that
/// reads a demand, or given `--capacity-per-unit`) the predictive policy's methods at several
/// settings — each replayed with the group's own bounds, stabilization and cooldowns; the policy,
/// its config and what its metric reads change.
fn candidates(group: &GroupSpec, h: &History, delay: Duration) -> Vec<(GroupSpec, MetricKind, bool)> {
    let running_kind = if h.running_sees_demand { MetricKind::Demand } else { MetricKind::Utilization };
    let mut out = vec![(group.clone(), running_kind, true)];
    let step = crate::duration::format(h.step);
    // Far enough ahead for a unit asked for now to be ready, and one evaluation more.
    let horizon = crate::duration::format(delay + h.step);
    let with = |policy: &str, config: Value, kind: MetricKind| {
        let mut g = group.clone();
        g.policy = policy.into();
        g.policy_params = config.to_string();
        let mut metric = group.metrics[0].clone();
        metric.window = h.step;
        g.metrics = vec![metric];
        (g, kind, false)
    };
    let cap = h.capacity_per_unit;
    for target in [0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9] {
        // On a demand, the same rule reads the total: a unit per `target × capacity` of it.
        out.push(match h.running_sees_demand {
            true => {
                with("target-tracking", json!({ "target": target * cap, "per": "total" }), MetricKind::Demand)
            }
            false => with("target-tracking", json!({ "target": target }), MetricKind::Utilization),
        });
    }
    if h.running_sees_demand || h.cap_given {
        for coverage in [0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99] {
            let c =
                json!({ "capacity_per_unit": cap, "coverage": coverage, "horizon": horizon, "period": step });
            out.push(with("predictive", c, MetricKind::Demand));
        }
        for margin in [0.1, 0.2, 0.3] {
            let c = json!({ "method": "holt-winters", "capacity_per_unit": cap, "margin": margin, "horizon": horizon, "period": step });
            out.push(with("predictive", c, MetricKind::Demand));
        }
    }
    // The running setting is not tried twice.
    let running: Value = serde_json::from_str(&group.policy_params).unwrap_or(Value::Null);
    out.retain(|(g, _, r)| {
        *r || g.policy != group.policy
            || serde_json::from_str::<Value>(&g.policy_params).ok().as_ref() != Some(&running)
    });
    out
}

/// The settings at least as good as the running one on both axes on the tuned part, ranked by
/// their smaller gain of the two (relative: units saved, time under-provisioned saved); the
/// recommendation is the best ranked that is at least as good on the held-out part too.
fn recommend(tried: &[Tried]) -> Option<usize> {
    let running = tried.iter().find(|t| t.running)?;
    let no_worse =
        |a: &Score, b: &Score| a.average_units <= b.average_units && a.timeshare_u <= b.timeshare_u;
    let gain = |a: &Score, b: &Score| {
        let saved = |x: f64, y: f64| if y > 0.0 { 1.0 - x / y } else { 0.0 };
        saved(a.average_units, b.average_units).min(saved(a.timeshare_u, b.timeshare_u))
    };
    let mut ranked: Vec<(f64, usize)> = tried
        .iter()
        .enumerate()
        .filter(|(_, t)| t.tuned.failed_evaluations == 0 && !t.running)
        .filter(|(_, t)| no_worse(&t.tuned, &running.tuned) && t.tuned != running.tuned)
        .map(|(i, t)| (gain(&t.tuned, &running.tuned), i))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.into_iter().map(|(_, i)| i).find(|i| no_worse(&tried[*i].held_out, &running.held_out))
}

fn report(group: &GroupSpec, h: &History, tried: &[Tried], pick: Option<usize>) {
    let days = h.trace.len() as f64 * h.step.as_secs_f64() / 86_400.0;
    println!(
        "group {}: {} points of {} ({days:.1} days), {} per unit; chosen on the first part, checked on the held-out rest",
        group.name,
        h.trace.len(),
        crate::duration::format(h.step),
        h.capacity_per_unit
    );
    let rows: Vec<Vec<String>> = tried
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mark = match (t.running, Some(i) == pick) {
                (true, _) => "← running",
                (_, true) => "← recommended",
                _ => "",
            };
            vec![
                t.policy.clone(),
                t.policy_config.to_string(),
                format!("{:.3}", t.tuned.average_units),
                format!("{:.2} %", t.tuned.timeshare_u * 100.0),
                t.tuned.actions.to_string(),
                format!("{:.3}", t.held_out.average_units),
                format!("{:.2} %", t.held_out.timeshare_u * 100.0),
                t.held_out.actions.to_string(),
                mark.into(),
            ]
        })
        .collect();
    let header =
        ["policy", "policy_config", "units", "under", "actions", "held: units", "under", "actions", ""];
    print!("{}", crate::text::table(&header, &rows));
    match pick {
        Some(i) => {
            let t = &tried[i];
            println!("\nrecommended (paste into the group; nothing was changed):");
            println!("policy = \"{}\"", t.policy);
            println!("policy_config = {}", toml_inline(&t.policy_config));
            if t.policy_config.get("capacity_per_unit").is_some() && !h.running_sees_demand {
                println!("# it reads the demand: point the group's first metric at a demand (e.g. requests per minute)");
            }
        }
        None if tried.len() < 2 => println!("\nnothing to compare the running setting with"),
        None => println!(
            "\nno setting was at least as good as the running one on both axes, tuned and held out: keep it"
        ),
    }
}

/// A JSON object as a TOML inline table.
fn toml_inline(v: &Value) -> String {
    toml::Value::try_from(v).map_or_else(|_| v.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(units: f64, under: f64) -> Score {
        let mut s = crate::decide::simulate::score(&Default::default(), 0);
        (s.average_units, s.timeshare_u) = (units, under);
        s
    }

    fn tried(running: bool, tuned: (f64, f64), held: (f64, f64)) -> Tried {
        Tried {
            policy: "p".into(),
            policy_config: Value::Null,
            running,
            tuned: score(tuned.0, tuned.1),
            held_out: score(held.0, held.1),
        }
    }

    #[test]
    fn the_recommendation_beats_the_running_setting_on_both_parts() {
        let running = tried(true, (2.0, 0.010), (2.0, 0.010));
        // Cheaper and under less on the tuned part, but worse held out: not recommended.
        let overfit = tried(false, (1.5, 0.002), (1.9, 0.020));
        // Better on both axes on both parts, though by less on the tuned part.
        let steady = tried(false, (1.8, 0.008), (1.8, 0.008));
        // Under less, but dearer: not at least as good.
        let dear = tried(false, (3.0, 0.001), (3.0, 0.001));
        let all = vec![running.clone(), overfit.clone(), steady, dear];
        assert_eq!(recommend(&all), Some(2));
        assert_eq!(recommend(&[running.clone(), overfit]), None);
        assert_eq!(recommend(&[running.clone(), running.clone()]), None, "the same is no better");
    }

    #[test]
    fn a_pasted_recommendation_is_toml() {
        let v = json!({"capacity_per_unit": 50.0, "horizon": "3m", "coverage": 0.9});
        let pasted: toml::Table = toml::from_str(&format!("policy_config = {}", toml_inline(&v))).unwrap();
        assert_eq!(serde_json::to_value(&pasted["policy_config"]).unwrap(), v);
    }
}
