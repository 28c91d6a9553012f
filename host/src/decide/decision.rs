//! The decision: one pure step from what a group observed and what its policy advised to the
//! capacity and tier it should have, with every guardrail's before → after. The live loop
//! (`group.rs`) and the replay (`simulate.rs`, `agent simulate`) both call [`decide`], so the
//! replay scores the algorithm that runs — fallback, schedules and tiers included.
//!
//! No clock, no I/O, no runtime: time comes in as `now_ms`, the past as [`Memory`].

use super::guardrails::{decide_tier, Behavior, History, Step, TierRules};
use super::schedule::{Effective, Window};

/// After `after` evaluations in a row without a usable recommendation, scale to `capacity`
/// instead of holding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fallback {
    pub after: u32,
    pub capacity: u32,
}

/// What a group decides by: its configuration's rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The group's own bounds and guardrails (a schedule narrows the bounds in force).
    pub behavior: &'a Behavior,
    pub tiers: &'a TierRules,
    pub fallback: Option<Fallback>,
    pub schedules: &'a [Window],
    pub interval_ms: i64,
    /// The cloud's own bounds on the group, as its backend last reported them
    /// (`cloud-limits.report`, contract 0.1.4): the target is kept inside them too. Live only.
    pub cloud: Option<(u32, u32)>,
}

impl Rules<'_> {
    /// The bounds in force at `now_ms` (the group's, or an open schedule window's): what the
    /// policy is told and what the guardrails hold the target to.
    pub fn bounds(&self, now_ms: i64) -> Effective {
        super::schedule::effective(self.behavior.min, self.behavior.max, self.schedules, now_ms)
    }
}

/// What a group remembers between evaluations: the guardrails' history, the failures in a row,
/// the scheduled capacities already applied (each window opening once).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub history: History,
    pub failures: u32,
    pub applied: Vec<(String, i64)>,
}

/// A policy's answer in host terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub replicas: f64,
    /// The size tier it wants, if it scales vertically.
    pub tier: Option<u32>,
    pub reason: String,
}

/// What the group is now, as the backend described it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub now_ms: i64,
    pub current: u32,
    pub tier: u32,
}

/// What the group should become, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The policy's recommendation, when it gave a usable one.
    pub recommendation: Option<f64>,
    pub reason: String,
    /// Each guardrail, schedule and tier rule that moved the target, in order.
    pub steps: Vec<Step>,
    pub target: u32,
    pub target_tier: u32,
    /// This evaluation had no usable recommendation (no data, a failed or faulty policy).
    pub failed: bool,
}

impl Decision {
    /// Whether acting is called for.
    pub fn changes(&self, seen: &Observed) -> bool {
        self.target != seen.current || self.target_tier != seen.tier
    }
}

/// The decision step: the policy's `advice` (or why there is none) through the guardrails, the
/// fallback, the schedule and the tier rules, within the bounds in force.
pub fn decide(
    rules: &Rules,
    bounds: &Effective,
    seen: Observed,
    advice: Result<Advice, String>,
    mem: &mut Memory,
) -> Decision {
    let now = seen.now_ms;
    // The bounds in force (the group's, or a schedule's) are what the guardrails hold to.
    let behavior = Behavior { min: bounds.min, max: bounds.max, ..rules.behavior.clone() };
    let mut d = Decision {
        recommendation: None,
        reason: String::new(),
        steps: Vec::new(),
        target: seen.current,
        target_tier: seen.tier,
        failed: false,
    };
    let mut wanted_tier = None;
    match advice {
        Ok(a) => {
            wanted_tier = a.tier;
            let g = super::guardrails::decide(a.replicas, seen.current, now, &behavior, &mut mem.history);
            d.recommendation = Some(a.replicas);
            d.steps = g.steps;
            d.target = g.target;
            d.reason = match g.plugin_fault {
                Some(fault) => {
                    d.failed = true;
                    format!("plugin fault: {fault}")
                }
                None => a.reason,
            };
        }
        Err(why) => {
            d.failed = true;
            d.reason = why;
        }
    }
    mem.failures = if d.failed { mem.failures + 1 } else { 0 };
    if let Some(f) = rules.fallback.filter(|f| mem.failures >= f.after) {
        d.reason = format!("{} ({} failures in a row: fallback to {})", d.reason, mem.failures, f.capacity);
        d.target = f.capacity;
    }
    if !rules.schedules.is_empty() {
        let fresh_ms = 2 * rules.interval_ms;
        let (target, steps) = super::schedule::apply(d.target, bounds, now, fresh_ms, &mut mem.applied);
        d.target = target;
        d.steps.extend(steps);
    }
    if let Some((lo, hi)) = rules.cloud {
        let held = d.target.clamp(lo, hi.max(lo));
        if held != d.target {
            d.steps.push(Step {
                guardrail: "cloud-bounds",
                before: d.target as f64,
                after: held as f64,
                why: format!("the cloud holds the group to [{lo}, {hi}]"),
            });
            d.target = held;
        }
    }
    let (tier, tier_steps) = decide_tier(wanted_tier, seen.tier, now, rules.tiers, &mem.history);
    d.target_tier = tier;
    d.steps.extend(tier_steps);
    d
}

impl Memory {
    /// Closes an evaluation: what acting reached (`reached` replicas, tier `to_tier`; the
    /// current ones when nothing was done) is remembered for cooldowns and rate limits, and
    /// what no guardrail looks back to any more is forgotten.
    pub fn settle(&mut self, rules: &Rules, seen: &Observed, reached: u32, to_tier: u32) {
        if reached != seen.current {
            self.history.actions.push_back((seen.now_ms, seen.current, reached));
        }
        if to_tier != seen.tier {
            self.history.last_tier_change_ms = Some(seen.now_ms);
        }
        self.history.prune(seen.now_ms, rules.behavior);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behavior() -> Behavior {
        let mut b = Behavior::hpa(1, 10);
        b.tolerance = 0.0;
        b.down.stabilization_ms = 0;
        b.up.rules.clear();
        b.down.rules.clear();
        b
    }

    fn rules<'a>(b: &'a Behavior, t: &'a TierRules, fallback: Option<Fallback>) -> Rules<'a> {
        Rules { behavior: b, tiers: t, fallback, schedules: &[], interval_ms: 1000, cloud: None }
    }

    fn advice(replicas: f64) -> Result<Advice, String> {
        Ok(Advice { replicas, tier: None, reason: format!("wants {replicas}") })
    }

    fn seen(now_ms: i64, current: u32) -> Observed {
        Observed { now_ms, current, tier: 0 }
    }

    #[test]
    fn a_recommendation_goes_through_the_guardrails_to_the_bounds_in_force() {
        let (b, t) = (behavior(), TierRules::default());
        let r = rules(&b, &t, None);
        let mut mem = Memory::default();
        let d = decide(&r, &r.bounds(0), seen(0, 2), advice(14.0), &mut mem);
        assert_eq!((d.target, d.recommendation, d.failed), (10, Some(14.0), false));
        assert_eq!(d.reason, "wants 14");
        assert!(d.steps.iter().any(|s| s.before == 14.0 && s.after == 10.0), "{:?}", d.steps);
        assert!(d.changes(&seen(0, 2)) && !d.changes(&seen(0, 10)));
    }

    #[test]
    fn the_clouds_own_bounds_hold_the_target_and_the_step_names_them() {
        let (b, t) = (behavior(), TierRules::default());
        let r = Rules { cloud: Some((2, 5)), ..rules(&b, &t, None) };
        let mut mem = Memory::default();
        let d = decide(&r, &r.bounds(0), seen(0, 3), advice(8.0), &mut mem);
        assert_eq!(d.target, 5, "{:?}", d.steps);
        let step = d.steps.last().unwrap();
        assert_eq!((step.guardrail, step.before, step.after), ("cloud-bounds", 8.0, 5.0));
        assert_eq!(step.why, "the cloud holds the group to [2, 5]");
        let low = decide(&r, &r.bounds(1000), seen(1000, 3), advice(1.0), &mut mem);
        assert_eq!(low.target, 2, "the cloud's minimum too: {:?}", low.steps);
        let inside = decide(&r, &r.bounds(2000), seen(2000, 3), advice(4.0), &mut mem);
        assert!(inside.steps.iter().all(|s| s.guardrail != "cloud-bounds"), "{:?}", inside.steps);
    }

    #[test]
    fn failures_in_a_row_fall_back_and_a_good_answer_resets_them() {
        let (b, t) = (behavior(), TierRules::default());
        let r = rules(&b, &t, Some(Fallback { after: 2, capacity: 6 }));
        let mut mem = Memory::default();
        let first = decide(&r, &r.bounds(0), seen(0, 3), Err("no data".into()), &mut mem);
        assert_eq!((first.target, first.failed, mem.failures), (3, true, 1), "holds first");
        let second = decide(&r, &r.bounds(1000), seen(1000, 3), advice(f64::NAN), &mut mem);
        assert_eq!((second.target, mem.failures), (6, 2), "a faulty answer counts: {second:?}");
        assert!(second.reason.starts_with("plugin fault:") && second.reason.ends_with("fallback to 6)"));
        let third = decide(&r, &r.bounds(2000), seen(2000, 6), advice(4.0), &mut mem);
        assert_eq!((third.target, mem.failures), (4, 0));
    }

    #[test]
    fn the_tier_follows_the_advice_within_its_rules_and_settles_into_the_history() {
        let b = behavior();
        let t = TierRules { min: 0, max: 2, cooldown_ms: 60_000 };
        let r = rules(&b, &t, None);
        let mut mem = Memory::default();
        let up = Ok(Advice { replicas: 2.0, tier: Some(5), reason: "bigger".into() });
        let d = decide(&r, &r.bounds(0), seen(0, 2), up.clone(), &mut mem);
        assert_eq!((d.target, d.target_tier), (2, 2), "held to max_tier");
        mem.settle(&r, &seen(0, 2), d.target, d.target_tier);
        assert_eq!(mem.history.last_tier_change_ms, Some(0));
        let down = Ok(Advice { replicas: 2.0, tier: Some(0), reason: "smaller".into() });
        let later = Observed { now_ms: 30_000, current: 2, tier: 2 };
        let d = decide(&r, &r.bounds(30_000), later, down, &mut mem);
        assert_eq!(d.target_tier, 2, "within the tier cooldown: {:?}", d.steps);
    }
}
