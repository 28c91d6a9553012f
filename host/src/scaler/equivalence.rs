//! The replay decides as the live loop does: random groups (bounds, guardrails, fallback,
//! schedules, tiers) and random policy answers (good, failing, faulty) go through the live
//! evaluation — `group::evaluate`, with a backend of ours that records each scale — and through
//! `simulate::run_observed`; every evaluation must come out the same.

use super::group::{evaluate, step_json, GroupPlugins, Memory};
use crate::config::{Fallback, GroupSpec};
use crate::decide::decision::Advice;
use crate::decide::guardrails::{Behavior, RateRule, TierRules};
use crate::decide::schedule::{When, Window};
use crate::decide::simulate::{self, Asked, MetricKind, Model, Point};
use crate::plugins::types::{Capacity, Group, Outcome, PolicyContext, Resized, Target, Volume, VolumeGroup};
use std::sync::Mutex;

const T0: i64 = 1_800_000_000_000;
const INTERVAL_MS: i64 = 1_000;
const EVALUATIONS: usize = 120;

/// A small deterministic generator (xorshift64*): the cases are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_spec(rng: &mut Rng) -> GroupSpec {
    let min = rng.below(3) as u32;
    let max = min + 1 + rng.below(10) as u32;
    let mut behavior = Behavior::hpa(min, max);
    behavior.tolerance = [0.0, 0.1, 0.3][rng.below(3) as usize];
    behavior.up.stabilization_ms = [0, 3_000, 10_000][rng.below(3) as usize];
    behavior.down.stabilization_ms = [0, 5_000, 30_000][rng.below(3) as usize];
    behavior.up.cooldown_ms = [0, 4_000][rng.below(2) as usize];
    behavior.down.cooldown_ms = [0, 7_000][rng.below(2) as usize];
    if rng.chance(50) {
        behavior.up.rules = vec![RateRule::Pods { value: 1 + rng.below(3) as u32, period_ms: 5_000 }];
    }
    let tiers =
        TierRules { min: 0, max: rng.below(4) as u32, cooldown_ms: [0, 6_000][rng.below(2) as usize] };
    let fallback = rng.chance(50).then(|| Fallback {
        after: 1 + rng.below(3) as u32,
        capacity: min + rng.below((max - min + 1) as u64) as u32,
    });
    let schedules = (0..rng.below(3))
        .map(|i| {
            let start = T0 + rng.below(EVALUATIONS as u64) as i64 * INTERVAL_MS - 300;
            let lo = rng.below(4) as u32;
            Window {
                name: format!("w{i}"),
                when: When::Fixed {
                    start_ms: start,
                    end_ms: start + (5 + rng.below(40) as i64) * INTERVAL_MS,
                },
                tz: chrono_tz::UTC,
                min: rng.chance(60).then_some(lo),
                max: rng.chance(60).then(|| lo + rng.below(6) as u32),
                desired: rng.chance(40).then(|| lo + rng.below(4) as u32),
                priority: rng.below(2) as i32,
            }
        })
        .collect();
    GroupSpec {
        name: "web".into(),
        interval: std::time::Duration::from_millis(INTERVAL_MS as u64),
        metrics: Vec::new(),
        policy: "scripted".into(),
        policy_params: "{}".into(),
        backend: "model".into(),
        backend_params: "{}".into(),
        behavior,
        tiers,
        dry_run: false,
        fallback,
        schedules,
        scale_in: Default::default(),
        coordinated: false,
        storage: None,
    }
}

/// The policy's answer at each evaluation: mostly a number (a tier now and then), sometimes an
/// error, sometimes a value the contract forbids.
fn random_script(rng: &mut Rng) -> Vec<Result<Advice, String>> {
    (0..EVALUATIONS)
        .map(|i| match rng.below(20) {
            0..=2 => Err(format!("policy `scripted`: failed at {i}")),
            3 => Ok(Advice { replicas: f64::NAN, tier: None, reason: "nan".into() }),
            _ => Ok(Advice {
                replicas: rng.below(150) as f64 / 10.0,
                tier: rng.chance(30).then(|| rng.below(5) as u32),
                reason: format!("answer {i}"),
            }),
        })
        .collect()
}

fn at(now: i64) -> usize {
    ((now - T0) / INTERVAL_MS) as usize
}

/// A backend whose capacity is what it was last asked, at once; and the scripted policy.
struct Recording<'a> {
    script: &'a [Result<Advice, String>],
    state: Mutex<(u32, u32)>,
    asked_bounds: Mutex<Vec<(u32, u32)>>,
}

impl GroupPlugins for Recording<'_> {
    async fn describe(&self, _: &Group, _: u32) -> Result<Capacity, String> {
        let (replicas, tier) = *self.state.lock().unwrap();
        Ok(Capacity { replicas, ready: replicas, tier, tier_name: String::new() })
    }

    async fn advise(&self, ctx: PolicyContext) -> Result<Advice, String> {
        self.asked_bounds.lock().unwrap().push((ctx.bounds.min_replicas, ctx.bounds.max_replicas));
        self.script[at(ctx.now_ms)].clone()
    }

    async fn scale(&self, _: &Group, target: Target, _: u32, _: String) -> Result<Outcome, String> {
        *self.state.lock().unwrap() = (target.replicas, target.tier);
        let capacity = Capacity {
            replicas: target.replicas,
            ready: target.replicas,
            tier: target.tier,
            tier_name: String::new(),
        };
        Ok(Outcome { capacity, detail: String::new() })
    }

    /// A volume is the same number: its size in GiB.
    async fn describe_volume(&self, _: &VolumeGroup) -> Result<Volume, String> {
        let (size, _) = *self.state.lock().unwrap();
        Ok(Volume { id: "vol".into(), size_gib: size as u64, status: "in-use".into(), ..Default::default() })
    }

    async fn resize_volume(&self, _: &VolumeGroup, size_gib: u64, _: String) -> Result<Resized, String> {
        self.state.lock().unwrap().0 = size_gib as u32;
        let volume = self.describe_volume(&VolumeGroup::default()).await?;
        Ok(Resized { volume, detail: format!("grew to {size_gib} GiB") })
    }
}

/// What both paths say of one evaluation: current, target, tier, target tier, the
/// recommendation (NaN included), the reason, the steps.
type Said = (u32, u32, u32, u32, String, String, serde_json::Value);

fn live(spec: &GroupSpec, script: &[Result<Advice, String>], initial: u32) -> (Vec<Said>, Vec<(u32, u32)>) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let backend =
        Recording { script, state: Mutex::new((initial, spec.tiers.min)), asked_bounds: Mutex::default() };
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut mem = Memory::default();
    let said = (0..EVALUATIONS)
        .map(|i| {
            let now = T0 + i as i64 * INTERVAL_MS;
            let (e, _, _) = tokio.block_on(evaluate(spec, &backend, &store, &mut mem, now, None));
            let rec = format!("{:?}", e.recommendation);
            (e.current, e.target, e.tier, e.target_tier, rec, e.reason, e.steps)
        })
        .collect();
    (said, backend.asked_bounds.into_inner().unwrap())
}

fn replay(spec: &GroupSpec, script: &[Result<Advice, String>], initial: u32) -> (Vec<Said>, Vec<(u32, u32)>) {
    let trace: Vec<Point> =
        (0..EVALUATIONS).map(|i| Point { t_ms: T0 + i as i64 * INTERVAL_MS, demand: 0.0 }).collect();
    let model = Model {
        capacity_per_unit: 1.0,
        provision_delay_ms: 0,
        initial_units: initial,
        initial_tier: spec.tiers.min,
        interval_ms: INTERVAL_MS,
        window_ms: INTERVAL_MS,
        metric: MetricKind::Demand,
    };
    let mut bounds = Vec::new();
    let mut policy = Scripted(|a: &Asked| {
        bounds.push((a.bounds.min, a.bounds.max));
        script[at(a.now_ms)].clone()
    });
    let mut said = Vec::new();
    let mut observe = |e: &simulate::Evaluated| {
        let d = e.decision;
        let rec = format!("{:?}", d.recommendation);
        let steps = serde_json::Value::Array(d.steps.iter().map(step_json).collect());
        said.push((e.seen.current, d.target, e.seen.tier, d.target_tier, rec, d.reason.clone(), steps));
    };
    let rules = spec.rules();
    simulate::run_observed(&trace, &model, &rules, &mut policy, &mut observe);
    (said, bounds)
}

/// A closure over what the replay asks.
struct Scripted<F>(F);

impl<F: FnMut(&Asked) -> Result<Advice, String>> simulate::Policy for Scripted<F> {
    fn evaluate(&mut self, asked: &Asked) -> Result<Advice, String> {
        (self.0)(asked)
    }
}

#[test]
fn the_replay_decides_every_evaluation_as_the_live_loop_does() {
    let (mut acted, mut fallbacks, mut scheduled, mut tiers) = (0, 0, 0, 0);
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let spec = random_spec(&mut rng);
        let script = random_script(&mut rng);
        let initial = spec.behavior.min + rng.below(3) as u32;
        let (live, live_bounds) = live(&spec, &script, initial);
        let (replayed, replay_bounds) = replay(&spec, &script, initial);
        assert_eq!(live.len(), EVALUATIONS, "seed {seed}");
        for (i, (l, r)) in live.iter().zip(&replayed).enumerate() {
            assert_eq!(l, r, "seed {seed}, evaluation {i}: live vs replay\nspec: {spec:#?}");
        }
        assert_eq!(live_bounds, replay_bounds, "seed {seed}: the policy is told the same bounds in force");
        acted += live.iter().filter(|s| s.0 != s.1).count();
        tiers += live.iter().filter(|s| s.2 != s.3).count();
        fallbacks += live.iter().filter(|s| s.5.contains("fallback to")).count();
        let step = |s: &Said, name: &str| s.6.as_array().unwrap().iter().any(|j| j["guardrail"] == name);
        scheduled += live.iter().filter(|s| step(s, "schedule")).count();
    }
    // The cases do exercise every part of the decision.
    assert!(
        acted > 1000 && tiers > 100 && fallbacks > 100 && scheduled > 100,
        "too few cases acted ({acted}), moved the tier ({tiers}), fell back ({fallbacks}) or met a schedule ({scheduled})"
    );
}
