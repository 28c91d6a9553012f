//! The host's guardrails: what stands between a policy's recommendation and the backend. They
//! run after every policy, in one fixed order, and no plugin can skip them:
//!
//! 1. **sanity** — NaN, infinite or negative is a plugin fault: hold. Above the sanity ceiling:
//!    clamped to it, and reported as a fault.
//! 2. **round** up to a whole number of replicas.
//! 3. **bounds** — clamp to `[min, max]`.
//! 4. **tolerance** — within ±`tolerance` of the current capacity: hold.
//! 5. **stabilization** — scaling down takes the highest recommendation of the scale-down window
//!    (default 5 min); scaling up the lowest of the scale-up window (default none).
//! 6. **cooldown** — no move in a direction within its cooldown after the last action in it.
//! 7. **rate limit** — per direction, the HPA's `behavior` policies: at most `Pods` replicas or
//!    `Percent` percent per period, `select` max/min of them, or disabled.
//! 8. **bounds** again, so the group is always within `[min, max]` whatever came before.
//!
//! Vertical moves (a policy's `tier`) have their own, shorter list, in [`decide_tier`]: bounds
//! `[min_tier, max_tier]`, then a cooldown after the last tier change (a resize is disruptive).
//!
//! Pure: time and history are passed in, so the live loop and `agent simulate` share it.

use std::collections::VecDeque;

/// One rate rule, as in the HPA's `scalingPolicies`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateRule {
    /// At most `value` replicas per `period_ms`.
    Pods { value: u32, period_ms: i64 },
    /// At most `value` percent of the replicas at the start of the period.
    Percent { value: u32, period_ms: i64 },
}

/// How several rate rules combine, as the HPA's `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The rule allowing the largest change.
    Max,
    /// The rule allowing the smallest change.
    Min,
    /// No change at all in this direction.
    Disabled,
}

/// Rules for one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    pub stabilization_ms: i64,
    pub cooldown_ms: i64,
    pub rules: Vec<RateRule>,
    pub select: Select,
}

/// A group's guardrails.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub min: u32,
    pub max: u32,
    /// Fraction: 0.1 means no action within ±10 % of the current capacity.
    pub tolerance: f64,
    /// Recommendations above this are absurd: clamped and reported.
    pub sanity_ceiling: u32,
    pub up: Direction,
    pub down: Direction,
}

impl Behavior {
    /// The HPA's defaults: tolerance 10 %; up: no window, +100 % or +4 pods per 15 s (max);
    /// down: 5 min window, −100 % per 15 s. No cooldowns.
    pub fn hpa(min: u32, max: u32) -> Behavior {
        Behavior {
            min,
            max,
            tolerance: 0.1,
            sanity_ceiling: max.saturating_mul(10).max(1000),
            up: Direction {
                stabilization_ms: 0,
                cooldown_ms: 0,
                rules: vec![
                    RateRule::Percent { value: 100, period_ms: 15_000 },
                    RateRule::Pods { value: 4, period_ms: 15_000 },
                ],
                select: Select::Max,
            },
            down: Direction {
                stabilization_ms: 300_000,
                cooldown_ms: 0,
                rules: vec![RateRule::Percent { value: 100, period_ms: 15_000 }],
                select: Select::Max,
            },
        }
    }
}

/// What the guardrails remember: past recommendations (for stabilization) and past actions
/// (for cooldowns and rate limits). Rebuilt from the decision journal after a restart; shared
/// through etcd for a cluster group.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// (time, recommendation after steps 1–4), oldest first; a run of equal ones as its latest.
    pub recommendations: VecDeque<(i64, u32)>,
    /// (time, from, to) of each scaling action, oldest first.
    pub actions: VecDeque<(i64, u32, u32)>,
    /// When the tier last changed.
    pub last_tier_change_ms: Option<i64>,
}

/// A group's vertical limits: the size ladder's allowed range and the pause between moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierRules {
    pub min: u32,
    pub max: u32,
    pub cooldown_ms: i64,
}

impl Default for TierRules {
    /// No ladder: tier 0 only; 5 min between moves once there is one.
    fn default() -> TierRules {
        TierRules { min: 0, max: 0, cooldown_ms: 300_000 }
    }
}

/// The tier to move to: the policy's wish (or the current tier when it has none) within
/// `[min, max]`, held during the cooldown after the last tier change. Steps as for replicas.
pub fn decide_tier(
    wanted: Option<u32>,
    current: u32,
    now_ms: i64,
    r: &TierRules,
    history: &History,
) -> (u32, Vec<Step>) {
    let mut steps = Vec::new();
    let wish = wanted.unwrap_or(current);
    let bounded = wish.clamp(r.min, r.max);
    if bounded != wish {
        steps.push(Step {
            guardrail: "tier-bounds",
            before: wish as f64,
            after: bounded as f64,
            why: format!("tier bounds [{}, {}]", r.min, r.max),
        });
    }
    if bounded != current {
        if let Some(last) = history.last_tier_change_ms.filter(|t| now_ms - t < r.cooldown_ms) {
            steps.push(Step {
                guardrail: "tier-cooldown",
                before: bounded as f64,
                after: current as f64,
                why: format!(
                    "tier changed {} s ago; cooldown {} s",
                    (now_ms - last) / 1000,
                    r.cooldown_ms / 1000
                ),
            });
            return (current, steps);
        }
    }
    (bounded, steps)
}

impl History {
    /// Forgets what no window or period can still need.
    pub fn prune(&mut self, now_ms: i64, behavior: &Behavior) {
        let horizon = |d: &Direction| {
            let periods = d.rules.iter().map(|r| match r {
                RateRule::Pods { period_ms, .. } | RateRule::Percent { period_ms, .. } => *period_ms,
            });
            periods.chain([d.stabilization_ms, d.cooldown_ms]).max().unwrap_or(0)
        };
        let keep = horizon(&behavior.up).max(horizon(&behavior.down));
        while self.recommendations.front().is_some_and(|(t, _)| now_ms - t > keep) {
            self.recommendations.pop_front();
        }
        while self.actions.front().is_some_and(|(t, ..)| now_ms - t > keep) {
            self.actions.pop_front();
        }
    }
}

/// One guardrail that changed the number, for the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub guardrail: &'static str,
    pub before: f64,
    pub after: f64,
    pub why: String,
}

/// The outcome: the target, each step that changed it, and whether the plugin misbehaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub target: u32,
    pub steps: Vec<Step>,
    /// A recommendation the contract forbids (NaN, negative) or an absurd one (over the ceiling).
    pub plugin_fault: Option<String>,
}

/// Applies the guardrails to `recommendation` for a group at `current` replicas, and records
/// the recommendation in `history`. Does not record an action: the caller does that once the
/// backend has acted (`dry-run` never does, so it starts no cooldown).
pub fn decide(
    recommendation: f64,
    current: u32,
    now_ms: i64,
    b: &Behavior,
    history: &mut History,
) -> Decision {
    let mut steps = Vec::new();
    // The why is written only for a step that changed the number (most evaluations change none).
    let mut step = |guardrail, before: f64, after: f64, why: &dyn Fn() -> String| {
        if before != after {
            steps.push(Step { guardrail, before, after, why: why() });
        }
    };

    // 1. sanity
    if !recommendation.is_finite() || recommendation < 0.0 {
        let fault = format!("the policy recommended {recommendation} replicas; holding at {current}");
        step("sanity", recommendation, current as f64, &|| fault.clone());
        return Decision { target: current, steps, plugin_fault: Some(fault) };
    }
    let mut plugin_fault = None;
    let mut want = recommendation;
    if want > b.sanity_ceiling as f64 {
        let fault =
            format!("the policy recommended {want} replicas, above the sanity ceiling {}", b.sanity_ceiling);
        step("sanity", want, b.sanity_ceiling as f64, &|| fault.clone());
        plugin_fault = Some(fault);
        want = b.sanity_ceiling as f64;
    }
    // 2. round up
    let rounded = want.ceil();
    step("round", want, rounded, &|| "whole replicas, rounded up".into());
    let mut desired = rounded as u32;
    // 3. bounds
    let bounded = desired.clamp(b.min, b.max);
    step("bounds", desired as f64, bounded as f64, &|| format!("within [{}, {}]", b.min, b.max));
    desired = bounded;
    // 4. tolerance
    if current > 0 && desired != current {
        let change = (desired as f64 - current as f64).abs() / current as f64;
        if change <= b.tolerance {
            step("tolerance", desired as f64, current as f64, &|| {
                format!("{:.1}% change is within the {:.0}% tolerance", change * 100.0, b.tolerance * 100.0)
            });
            desired = current;
        }
    }
    // A run of equal recommendations is kept as its latest: a window holds one of them only if
    // it holds the latest, so the window's highest and lowest are unchanged, and a group at rest
    // keeps one entry instead of one per evaluation.
    match history.recommendations.back_mut() {
        Some(last) if last.1 == desired => last.0 = now_ms,
        _ => history.recommendations.push_back((now_ms, desired)),
    }
    // 5. stabilization
    let within = |window: i64| {
        history.recommendations.iter().filter(move |(t, _)| now_ms - t <= window).map(|(_, r)| *r)
    };
    if desired < current && b.down.stabilization_ms > 0 {
        let highest = within(b.down.stabilization_ms).max().unwrap_or(desired).min(current);
        step("stabilization", desired as f64, highest as f64, &|| {
            format!("highest recommendation of the last {}s", b.down.stabilization_ms / 1000)
        });
        desired = highest;
    } else if desired > current && b.up.stabilization_ms > 0 {
        let lowest = within(b.up.stabilization_ms).min().unwrap_or(desired).max(current);
        step("stabilization", desired as f64, lowest as f64, &|| {
            format!("lowest recommendation of the last {}s", b.up.stabilization_ms / 1000)
        });
        desired = lowest;
    }
    // 6. cooldown
    let (direction, up) = if desired > current { (&b.up, true) } else { (&b.down, false) };
    if desired != current && direction.cooldown_ms > 0 {
        let last = history.actions.iter().rev().find(|(_, from, to)| (to > from) == up);
        if let Some((t, ..)) = last.filter(|(t, ..)| now_ms - t < direction.cooldown_ms) {
            let left = (direction.cooldown_ms - (now_ms - t)) / 1000;
            step("cooldown", desired as f64, current as f64, &|| {
                format!(
                    "scaled {} {}s ago; {left}s of cooldown left",
                    if up { "up" } else { "down" },
                    (now_ms - t) / 1000
                )
            });
            desired = current;
        }
    }
    // 7. rate limit
    if desired != current {
        let limit = rate_limit(current, now_ms, direction, up, history);
        let limited = if up { desired.min(limit) } else { desired.max(limit) };
        let why = || match direction.select {
            Select::Disabled => format!("scaling {} is disabled", if up { "up" } else { "down" }),
            _ => format!("rate limit allows {limit} now"),
        };
        step("rate limit", desired as f64, limited as f64, &why);
        desired = limited;
    }
    // 8. bounds, finally: the group always ends within them.
    let bounded = desired.clamp(b.min, b.max);
    step("bounds", desired as f64, bounded as f64, &|| format!("within [{}, {}]", b.min, b.max));
    Decision { target: bounded, steps, plugin_fault }
}

/// The furthest the group may go in one direction now, as the HPA computes it: each rule's
/// limit from the replicas at the start of its period (current minus the changes made in it).
fn rate_limit(current: u32, now_ms: i64, d: &Direction, up: bool, history: &History) -> u32 {
    if d.select == Select::Disabled {
        return current;
    }
    if d.rules.is_empty() {
        return if up { u32::MAX } else { 0 };
    }
    let limits = d.rules.iter().map(|rule| {
        let period = match rule {
            RateRule::Pods { period_ms, .. } | RateRule::Percent { period_ms, .. } => *period_ms,
        };
        // Replicas at the period's start: undo the moves in this direction made within it.
        let moved: i64 = history
            .actions
            .iter()
            .filter(|(t, from, to)| now_ms - t < period && (to > from) == up)
            .map(|(_, from, to)| *to as i64 - *from as i64)
            .sum();
        let start = (current as i64 - moved).max(0) as f64;
        let limit = match (rule, up) {
            (RateRule::Pods { value, .. }, true) => start + *value as f64,
            (RateRule::Pods { value, .. }, false) => start - *value as f64,
            (RateRule::Percent { value, .. }, true) => (start * (1.0 + *value as f64 / 100.0)).ceil(),
            (RateRule::Percent { value, .. }, false) => (start * (1.0 - *value as f64 / 100.0)).floor(),
        };
        limit.max(0.0).min(u32::MAX as f64) as u32
    });
    // Max: the rule allowing the most movement; Min: the least.
    match (d.select, up) {
        (Select::Max, true) | (Select::Min, false) => limits.max().unwrap_or(current),
        _ => limits.min().unwrap_or(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn none(min: u32, max: u32) -> Behavior {
        let free = Direction { stabilization_ms: 0, cooldown_ms: 0, rules: vec![], select: Select::Max };
        Behavior { min, max, tolerance: 0.0, sanity_ceiling: 1000, up: free.clone(), down: free }
    }

    fn guardrails(d: &Decision) -> Vec<&str> {
        d.steps.iter().map(|s| s.guardrail).collect()
    }

    #[test]
    fn tiers_are_bounded_and_cooled_down() {
        let rules = TierRules { min: 0, max: 2, cooldown_ms: 60_000 };
        let mut h = History::default();
        assert_eq!(decide_tier(None, 1, 0, &rules, &h), (1, vec![]));
        let (t, steps) = decide_tier(Some(5), 1, 0, &rules, &h);
        assert_eq!((t, steps[0].guardrail), (2, "tier-bounds"));
        h.last_tier_change_ms = Some(10_000);
        let (t, steps) = decide_tier(Some(2), 1, 30_000, &rules, &h);
        assert_eq!((t, steps[0].guardrail), (1, "tier-cooldown"));
        assert_eq!(decide_tier(Some(0), 1, 70_000, &rules, &h).0, 0, "after the cooldown");
        // A tier outside lowered bounds is brought back in, unless cooling down.
        assert_eq!(decide_tier(None, 3, 70_000, &rules, &h).0, 2);
    }

    #[test]
    fn absurd_recommendations_hold_and_are_reported_as_plugin_faults() {
        let b = none(1, 10);
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let d = decide(bad, 4, 0, &b, &mut History::default());
            assert_eq!(d.target, 4, "{bad}");
            assert!(d.plugin_fault.is_some());
        }
        let d = decide(1e12, 4, 0, &b, &mut History::default());
        assert_eq!(d.target, 10, "clamped to the ceiling, then to max");
        assert_eq!(guardrails(&d), ["sanity", "bounds"]);
        assert!(d.plugin_fault.unwrap().contains("sanity ceiling"));
    }

    #[test]
    fn rounds_up_then_clamps_to_bounds() {
        let b = none(2, 8);
        assert_eq!(decide(3.2, 3, 0, &b, &mut History::default()).target, 4);
        assert_eq!(decide(0.0, 3, 0, &b, &mut History::default()).target, 2);
        let d = decide(50.0, 3, 0, &b, &mut History::default());
        assert_eq!((d.target, guardrails(&d)), (8, vec!["bounds"]));
    }

    #[test]
    fn tolerance_holds_small_changes() {
        let mut b = none(1, 100);
        b.tolerance = 0.1;
        assert_eq!(decide(11.0, 10, 0, &b, &mut History::default()).target, 10, "+10% is within");
        assert_eq!(decide(12.0, 10, 0, &b, &mut History::default()).target, 12);
        assert_eq!(decide(9.0, 10, 0, &b, &mut History::default()).target, 10);
    }

    #[test]
    fn scale_down_stabilization_uses_the_highest_recommendation_of_the_window() {
        let mut b = none(1, 100);
        b.down.stabilization_ms = 300 * S;
        let mut h = History::default();
        assert_eq!(decide(10.0, 10, 0, &b, &mut h).target, 10);
        assert_eq!(decide(8.0, 10, 60 * S, &b, &mut h).target, 10, "10 is still in the window");
        assert_eq!(decide(5.0, 10, 120 * S, &b, &mut h).target, 10);
        // At 301 s the recommendation of 10 (t=0) has left the window; 8 (t=60) is the highest.
        let d = decide(5.0, 10, 301 * S, &b, &mut h);
        assert_eq!((d.target, guardrails(&d)), (8, vec!["stabilization"]));
        // Scaling up is never held back by the down window.
        assert_eq!(decide(20.0, 8, 302 * S, &b, &mut h).target, 20);
    }

    #[test]
    fn scale_up_stabilization_uses_the_lowest_recommendation_of_the_window() {
        let mut b = none(1, 100);
        b.up.stabilization_ms = 60 * S;
        let mut h = History::default();
        decide(4.0, 4, 0, &b, &mut h);
        assert_eq!(decide(9.0, 4, 30 * S, &b, &mut h).target, 4);
        assert_eq!(decide(9.0, 4, 61 * S, &b, &mut h).target, 9);
    }

    #[test]
    fn cooldowns_apply_per_direction_and_only_after_an_action() {
        let mut b = none(1, 100);
        b.up.cooldown_ms = 120 * S;
        let mut h = History::default();
        assert_eq!(decide(6.0, 4, 0, &b, &mut h).target, 6);
        h.actions.push_back((0, 4, 6));
        let d = decide(9.0, 6, 60 * S, &b, &mut h);
        assert_eq!((d.target, guardrails(&d)), (6, vec!["cooldown"]));
        assert!(d.steps[0].why.contains("60s of cooldown left"));
        assert_eq!(decide(3.0, 6, 60 * S, &b, &mut h).target, 3, "down has no cooldown");
        assert_eq!(decide(9.0, 6, 121 * S, &b, &mut h).target, 9);
    }

    #[test]
    fn rate_limits_follow_the_hpa_behavior_api() {
        // Up: 100% or 4 pods per 15 s, select max (the HPA default).
        let b = Behavior::hpa(1, 1000);
        let mut h = History::default();
        assert_eq!(decide(100.0, 2, 0, &b, &mut h).target, 6, "max(2 × 2, 2 + 4)");
        assert_eq!(decide(100.0, 10, 0, &b, &mut h).target, 20, "max(10 × 2, 10 + 4)");
        // Within the same period, what was already added counts against the limit.
        let mut h = History::default();
        h.actions.push_back((0, 10, 20));
        assert_eq!(
            decide(100.0, 20, 5 * S, &b, &mut h).target,
            20,
            "max(10 × 2, 10 + 4) = 20 already reached"
        );
        assert_eq!(decide(100.0, 20, 16 * S, &b, &mut h).target, 40, "a new period");

        // Select min of 50% and 3 pods per minute, scaling down.
        let mut b = none(0, 100);
        b.down.rules = vec![
            RateRule::Percent { value: 50, period_ms: 60 * S },
            RateRule::Pods { value: 3, period_ms: 60 * S },
        ];
        b.down.select = Select::Min;
        assert_eq!(decide(0.0, 10, 0, &b, &mut History::default()).target, 7, "−3 is less than −50%");
        b.down.select = Select::Max;
        assert_eq!(decide(0.0, 10, 0, &b, &mut History::default()).target, 5, "−50% is more than −3");
        b.down.select = Select::Disabled;
        let d = decide(0.0, 10, 0, &b, &mut History::default());
        assert_eq!(d.target, 10);
        assert!(d.steps[0].why.contains("disabled"));
    }

    #[test]
    fn bounds_win_over_everything_even_when_current_is_outside() {
        let mut b = none(5, 10);
        b.up.select = Select::Disabled;
        let d = decide(3.0, 2, 0, &b, &mut History::default());
        assert_eq!(d.target, 5, "min raised above the current size: the group grows to it");
        let d = decide(12.0, 15, 0, &b, &mut History::default());
        assert_eq!(d.target, 10);
    }

    #[test]
    fn history_is_pruned_to_what_windows_and_periods_need() {
        let b = Behavior::hpa(1, 10);
        let mut h = History::default();
        for t in 0..1000 {
            decide(3.0, 3, t * S, &b, &mut h);
        }
        h.prune(999 * S, &b);
        assert!(h.recommendations.len() <= 301, "{}", h.recommendations.len());
    }
}
