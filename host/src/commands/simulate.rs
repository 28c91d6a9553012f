//! `agent simulate`: replays a trace through a group's real policy component and the live
//! guardrails, offline — one group scored in detail, or (`--frontier`) every group of the
//! configuration as points of cost against time under-provisioned.

use super::{runtime, tool_runtime, Exit};
use crate::config::{Config, GroupSpec};
use crate::decide::decision::Advice;
use crate::decide::simulate::{self, MetricKind, Model, Point, Run, Score};
use crate::plugins::registry::Registry;
use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `agent simulate` arguments.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// CSV with a `timestamp` column (Unix seconds) and a demand column.
    #[arg(long)]
    pub trace: PathBuf,
    /// The [[group]] to simulate (default: the first in --config).
    #[arg(long)]
    pub group: Option<String>,
    /// The demand column (default: the first that is not `timestamp`).
    #[arg(long)]
    pub column: Option<String>,
    /// Demand one unit serves per trace step.
    #[arg(long, default_value_t = 50.0)]
    pub capacity_per_unit: f64,
    /// Time from scale-out to a new unit being ready.
    #[arg(long, value_parser = crate::duration::parse, default_value = "2m")]
    pub provision_delay: std::time::Duration,
    /// Units at the start (default: the group's min).
    #[arg(long)]
    pub initial: Option<u32>,
    /// What the policy sees as the group's first metric. With --frontier, a group whose first
    /// metric is named `demand` sees the demand whatever this says.
    #[arg(long, value_enum, default_value = "utilization")]
    pub metric: SimMetric,
    #[arg(long)]
    pub json: bool,
    /// Write a chart of demand and supply to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Replay every group of --config and draw average units against the time
    /// under-provisioned to this SVG file, a line per policy family (`NAME-SETTING` groups).
    #[arg(long)]
    pub frontier: Option<PathBuf>,
    /// Walk-forward validation: score only the last FRACTION of the trace (0-1). The policy still
    /// lives through all of it; with --frontier, the first part's scores are printed beside.
    #[arg(long)]
    pub holdout: Option<f64>,
}

/// What a replay needs besides the group and the trace: the capacity model's knobs, and what
/// says the replay should stop (its evaluations then fail fast, held, as live).
pub(super) struct Knobs<'a> {
    pub capacity_per_unit: f64,
    pub provision_delay: std::time::Duration,
    pub initial: Option<u32>,
    pub stop: &'a dyn Fn() -> bool,
}

impl SimulateArgs {
    fn knobs(&self) -> Knobs<'static> {
        Knobs {
            capacity_per_unit: self.capacity_per_unit,
            provision_delay: self.provision_delay,
            initial: self.initial,
            stop: &|| false,
        }
    }

    /// Where the held-out part begins (the whole trace without --holdout).
    fn split_ms(&self, trace: &[Point]) -> i64 {
        self.holdout.map_or(i64::MIN, |h| simulate::split_ms(trace, h))
    }
}

/// What the simulated policy sees as its first metric.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SimMetric {
    /// demand / (ready units × capacity per unit)
    Utilization,
    /// the trace's demand as it is
    Demand,
}

/// Replays a trace through a group's policy component and the live guardrails, offline.
pub fn simulate(options: super::RunOptions, args: SimulateArgs) -> anyhow::Result<Exit> {
    let config = Arc::new(options.resolve()?);
    anyhow::ensure!(args.capacity_per_unit > 0.0, "--capacity-per-unit must be positive");
    anyhow::ensure!(
        args.holdout.is_none_or(|h| h > 0.0 && h < 1.0),
        "--holdout is the fraction of the trace to score, between 0 and 1 (e.g. 0.5)"
    );
    let text =
        std::fs::read_to_string(&args.trace).with_context(|| format!("reading {}", args.trace.display()))?;
    let trace = simulate::read_csv(&text, args.column.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    if let Some(path) = &args.frontier {
        return frontier(&config, &args, &trace, path);
    }
    let group = match &args.group {
        Some(name) => config
            .groups
            .iter()
            .find(|g| &g.name == name)
            .with_context(|| format!("no [[group]] named `{name}` in the configuration"))?,
        None => {
            config.groups.first().context("the configuration has no [[group]]; give --config with one")?
        }
    };
    let kind = match args.metric {
        SimMetric::Utilization => MetricKind::Utilization,
        SimMetric::Demand => MetricKind::Demand,
    };
    let (run, whole, took) = replay(&config, group, &args.knobs(), &trace, kind)?;
    let score = simulate::score_span(&run, whole.failed_evaluations, args.split_ms(&trace), i64::MAX);
    if let Some(path) = &args.plot {
        let title = format!(
            "{} on {} — {} per unit, {} to provision",
            group.name,
            args.trace.display(),
            args.capacity_per_unit,
            crate::duration::format(args.provision_delay)
        );
        std::fs::write(path, crate::decide::plot::svg(&run, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        let body = json!({"group": group.name, "policy": group.policy, "score": score, "trace_points": trace.len(), "holdout": args.holdout, "seconds": took.as_secs_f64()});
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        report(group, &score, trace.len(), took);
        if let Some(h) = args.holdout {
            println!(
                "scored on the held-out last {:.0} % of the trace (the policy lived through all of it)",
                h * 100.0
            );
        }
    }
    Ok(Exit::Success)
}

fn report(group: &GroupSpec, score: &Score, points: usize, took: std::time::Duration) {
    println!("group {} (policy {}), {} points, {:.1} h", group.name, group.policy, points, score.hours);
    println!("accuracy_U   {:.3} units under-provisioned on average", score.accuracy_u);
    println!("accuracy_O   {:.3} units over-provisioned on average", score.accuracy_o);
    println!("timeshare_U  {:.1} % of the time under-provisioned", score.timeshare_u * 100.0);
    println!("timeshare_O  {:.1} % of the time over-provisioned", score.timeshare_o * 100.0);
    println!("jitter       {:.3} adaptations per hour (supply minus demand)", score.jitter);
    println!("instability  {:.1} % of the time moving against demand", score.instability * 100.0);
    println!("actions      {}", score.actions);
    println!("avg units    {:.2}", score.average_units);
    if score.failed_evaluations > 0 {
        println!(
            "failed       {} evaluations without a usable recommendation (held)",
            score.failed_evaluations
        );
    }
    println!(
        "replayed in {:.2} s ({:.0} trace points per second)",
        took.as_secs_f64(),
        points as f64 / took.as_secs_f64().max(1e-9)
    );
}

/// `--frontier`: every group, one point each.
fn frontier(config: &Arc<Config>, args: &SimulateArgs, trace: &[Point], path: &Path) -> anyhow::Result<Exit> {
    anyhow::ensure!(!config.groups.is_empty(), "the configuration has no [[group]]; give --config with some");
    let mut points = Vec::new();
    let split = args.split_ms(trace);
    match args.holdout {
        Some(_) => println!(
            "{:<24} {:>10} {:>14} {:>8}   {:>10} {:>14} {:>8}",
            "group", "units", "under (time)", "actions", "held out:", "under (time)", "actions"
        ),
        None => println!("{:<24} {:>10} {:>14} {:>10}", "group", "avg units", "under (time)", "actions"),
    }
    for group in &config.groups {
        let kind = match (group.metrics.first().map(|m| m.name.as_str()), args.metric) {
            (Some("demand"), _) | (_, SimMetric::Demand) => MetricKind::Demand,
            _ => MetricKind::Utilization,
        };
        let (run, score, _) = replay(config, group, &args.knobs(), trace, kind)?;
        let held = simulate::score_span(&run, score.failed_evaluations, split, i64::MAX);
        match args.holdout {
            Some(_) => {
                let tuned = simulate::score_span(&run, score.failed_evaluations, i64::MIN, split);
                println!(
                    "{:<24} {:>10.3} {:>12.2} % {:>8}   {:>10.3} {:>12.2} % {:>8}",
                    group.name,
                    tuned.average_units,
                    tuned.timeshare_u * 100.0,
                    tuned.actions,
                    held.average_units,
                    held.timeshare_u * 100.0,
                    held.actions
                )
            }
            None => println!(
                "{:<24} {:>10.3} {:>12.2} % {:>10}",
                group.name,
                score.average_units,
                score.timeshare_u * 100.0,
                score.actions
            ),
        }
        points.push((group.name.clone(), held.average_units, held.timeshare_u));
    }
    let title = format!(
        "{} — {} per unit, {} to provision",
        args.trace.display(),
        args.capacity_per_unit,
        crate::duration::format(args.provision_delay)
    );
    std::fs::write(path, crate::decide::plot::frontier(&points, &title))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Exit::Success)
}

/// Loads `group`'s policy and replays `trace` through it.
pub(super) fn replay(
    config: &Arc<Config>,
    group: &GroupSpec,
    args: &Knobs,
    trace: &[Point],
    kind: MetricKind,
) -> anyhow::Result<(Run, Score, std::time::Duration)> {
    let dir = config
        .plugins_dir
        .clone()
        .context("give the plugins folder with --plugins DIR (or [agent] plugins)")?;
    let metric =
        group.metrics.first().with_context(|| format!("group `{}` has no metrics", group.name))?.clone();
    // The replay's plugin state is thrown away and its clock is the trace's: a write budget per
    // minute of wall time would refuse a model saved every few trace minutes, replayed at tens of
    // thousands of trace minutes a second.
    let mut unmetered = (**config).clone();
    let mut settings = unmetered.plugin(&group.policy);
    settings.budgets.state_write_bytes_per_min = 1 << 40;
    unmetered.plugins.insert(group.policy.clone(), settings);
    let config = &Arc::new(unmetered);
    let tokio = runtime()?;
    let state = TempDir::new()?;
    let handle = tokio.block_on(async {
        let rt = tool_runtime(config)?;
        let store = crate::store::Store::open(state.path())?;
        let registry = Registry::new(rt, config.clone(), Some(store), &dir);
        let handle = registry
            .load_until(&group.policy)
            .await
            .with_context(|| format!("policy plugin `{}` is not in {}", group.policy, dir.display()))?;
        anyhow::Ok((registry, handle))
    })?;
    let b = &group.behavior;
    let model = Model {
        capacity_per_unit: args.capacity_per_unit,
        provision_delay_ms: args.provision_delay.as_millis() as i64,
        initial_units: args.initial.unwrap_or(b.min).clamp(b.min, b.max),
        initial_tier: group.tiers.min,
        interval_ms: group.interval.as_millis() as i64,
        window_ms: metric.window.as_millis() as i64,
        metric: kind,
    };
    let mut policy = Component { tokio: &tokio, handle: &handle.1, group, metric: &metric, stop: args.stop };
    let started = std::time::Instant::now();
    let (run, score) = simulate::run(trace, &model, &group.rules(), &mut policy);
    Ok((run, score, started.elapsed()))
}

/// The group's policy component, asked what the live loop asks it: the bounds in force (a
/// schedule's, when one is open), the tier, the window of its first metric.
struct Component<'a> {
    tokio: &'a tokio::runtime::Runtime,
    handle: &'a crate::plugins::worker::PluginHandle,
    group: &'a GroupSpec,
    metric: &'a crate::config::MetricWindow,
    stop: &'a dyn Fn() -> bool,
}

impl simulate::Policy for Component<'_> {
    fn evaluate(&mut self, a: &simulate::Asked) -> Result<Advice, String> {
        use crate::plugins::types::{Bounds, Capacity, PolicyContext, Window};
        if (self.stop)() {
            return Err("stopped".into());
        }
        let ctx = PolicyContext {
            group: self.group.name.clone(),
            now_ms: a.now_ms,
            current: Capacity { replicas: a.current, ready: a.ready, tier: a.tier, tier_name: String::new() },
            bounds: Bounds {
                min_replicas: a.bounds.min,
                max_replicas: a.bounds.max,
                max_tier: self.group.tiers.max,
            },
            windows: vec![Window {
                metric: self.metric.name.clone(),
                labels: vec![],
                length_ms: self.metric.window.as_millis() as u64,
                timestamps_ms: a.times.to_vec(),
                values: a.values.to_vec(),
            }],
            params: self.group.policy_params.clone(),
        };
        let r = self.tokio.block_on(self.handle.evaluate(ctx)).map_err(|e| e.to_string())?;
        Ok(Advice { replicas: r.replicas, tier: r.tier, reason: r.reason })
    }
}

/// A folder removed when dropped (the simulation's throw-away plugin state).
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("agent-simulate-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
