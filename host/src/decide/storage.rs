//! The guardrails of a storage group, whose capacity is a volume's size in GiB. Volumes grow and
//! never shrink (neither Cinder nor EBS can shrink one), and clouds ration modifications (EBS:
//! one at a time, at most 4 in 24 hours), so the list differs from the replicas' list:
//!
//! 1. **sanity** — NaN, infinite or negative is a plugin fault: hold.
//! 2. **round** up to whole GiB.
//! 3. **never shrink** — a recommendation at or below the current size holds, and says why.
//! 4. **in progress** — no new resize until the previous one completed; and **backoff**: after
//!    a failed resize, none for a minute, doubling with each failure in a row up to an hour (a
//!    refusal that lasts, a quota or a permission, is not asked again every interval).
//! 5. **per day** — at most `per_day` resizes in any 24 hours (default 4), counted from the
//!    journal, so a restart does not reset it.
//! 6. **cooldown** — none within `cooldown_ms` of the last resize.
//! 7. **minimum step** — a resize grows by at least `step_min` (GiB and % of the current size,
//!    the larger), so a slowly filling disk is not grown by 1 GiB four times a day.
//! 8. **maximum step** — by at most `step_max` (the smaller of GiB and %, at least 1 GiB).
//! 9. **bounds** — within `[min_gib, max_gib]`; a volume below `min_gib` grows to it.
//!
//! Pure, as the replicas' guardrails: time and history are passed in. Applied by
//! `scaler::storage` to each evaluation of a storage group.

use super::guardrails::Step;

/// A step size: whole GiB, or a percentage of the current size.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepSize {
    pub gib: u64,
    pub percent: u32,
}

/// A storage group's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRules {
    pub min_gib: u64,
    pub max_gib: u64,
    pub step_min: StepSize,
    /// `None`: no limit beyond `max_gib`.
    pub step_max: Option<StepSize>,
    pub per_day: u32,
    pub cooldown_ms: i64,
}

impl Default for StorageRules {
    /// Trident's and the Kubernetes volume autoscalers' habits: grow by at least 10 % or 1 GiB,
    /// AWS's limit of 4 modifications a day, no cooldown beyond it.
    fn default() -> Self {
        StorageRules {
            min_gib: 1,
            max_gib: 16 * 1024,
            step_min: StepSize { gib: 1, percent: 10 },
            step_max: None,
            per_day: 4,
            cooldown_ms: 0,
        }
    }
}

/// One resize, as journaled: when, from and to what size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resize {
    pub t_ms: i64,
    pub from_gib: u64,
    pub to_gib: u64,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The resizes up to `now_ms`, from journal rows `(t_ms, action, from, to)` in any order: a
/// `scale` row that grew the volume is a resize. How the daily limit and the cooldown survive a
/// restart: the journal is the memory.
pub fn resizes_from_journal<'a>(
    rows: impl IntoIterator<Item = (i64, &'a str, u64, u64)>,
    now_ms: i64,
) -> Vec<Resize> {
    let mut out: Vec<Resize> = rows
        .into_iter()
        .filter(|(t, action, from, to)| *action == "scale" && to > from && *t <= now_ms)
        .map(|(t_ms, _, from_gib, to_gib)| Resize { t_ms, from_gib, to_gib })
        .collect();
    out.sort_by_key(|r| r.t_ms);
    out
}

/// The failed resizes since the last one that succeeded (their times), from journal rows as
/// for [`resizes_from_journal`]: what the backoff counts.
pub fn failures_from_journal<'a>(
    rows: impl IntoIterator<Item = (i64, &'a str, u64, u64)>,
    now_ms: i64,
) -> Vec<i64> {
    let mut rows: Vec<(i64, &str)> =
        rows.into_iter().filter(|r| r.0 <= now_ms).map(|(t, action, ..)| (t, action)).collect();
    rows.sort_by_key(|r| r.0);
    let after_last_resize = rows.iter().rposition(|(_, a)| *a == "scale").map_or(0, |i| i + 1);
    rows[after_last_resize..].iter().filter(|(_, a)| *a == "scale-failed").map(|(t, _)| *t).collect()
}

/// How long the backoff holds after `failures` failed resizes in a row: a minute, doubling, at
/// most an hour.
fn backoff_ms(failures: usize) -> i64 {
    let doublings = failures.saturating_sub(1).min(6) as u32;
    (60_000i64 << doublings).min(3_600_000)
}

/// The outcome: the size to ask for (the current one to hold), each guardrail that changed the
/// recommendation or held it, and whether the plugin misbehaved.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeDecision {
    pub target_gib: u64,
    pub steps: Vec<Step>,
    pub plugin_fault: Option<String>,
}

/// What stands between a recommended size and the backend's resize. `in_progress`: the
/// backend's account of the last resize (`Some(why)` while it has not completed); `failures`:
/// the times of the failed resizes since the last that succeeded.
pub fn decide_size(
    rules: &StorageRules,
    current_gib: u64,
    recommended_gib: f64,
    now_ms: i64,
    resizes: &[Resize],
    in_progress: Option<&str>,
    failures: &[i64],
) -> SizeDecision {
    let hold = |guardrail, why| SizeDecision::hold(current_gib, recommended_gib, guardrail, why);
    if !recommended_gib.is_finite() || recommended_gib < 0.0 {
        let fault = format!("recommended a size of {recommended_gib} GiB");
        let mut d = hold("sanity", fault.clone());
        d.plugin_fault = Some(fault);
        return d;
    }
    let wanted = (recommended_gib.ceil() as u64).max(rules.min_gib.min(rules.max_gib));
    if wanted <= current_gib {
        let why = match wanted < current_gib {
            true => format!("{wanted} GiB is below the current {current_gib} GiB: a volume never shrinks"),
            false => format!("{current_gib} GiB is what is recommended"),
        };
        return hold("never-shrink", why);
    }
    if let Some(why) = in_progress {
        return hold("in-progress", format!("the previous resize has not completed: {why}"));
    }
    if let Some(last) = failures.iter().max().filter(|t| now_ms - *t < backoff_ms(failures.len())) {
        let left = (backoff_ms(failures.len()) - (now_ms - last) + 999) / 1000;
        let why = format!(
            "{} failed resize(s) in a row (see the journal); the next try in {left} s",
            failures.len()
        );
        return hold("backoff", why);
    }
    let mut recent: Vec<i64> = resizes.iter().map(|r| r.t_ms).filter(|t| now_ms - t < DAY_MS).collect();
    recent.sort_unstable();
    if rules.per_day > 0 && recent.len() >= rules.per_day as usize {
        // The next is allowed once all but per_day − 1 of them are a day old.
        let next = recent[recent.len() - rules.per_day as usize] + DAY_MS;
        let why = format!(
            "{} resizes in the last 24 h (at most {}); the next is allowed in {} min",
            recent.len(),
            rules.per_day,
            (next - now_ms + 59_999) / 60_000
        );
        return hold("per-day", why);
    }
    // The cooldown counts from the last resize, however old (a cooldown may be longer than a day).
    let last = resizes.iter().map(|r| r.t_ms).max();
    if let Some(last) = last.filter(|t| now_ms - t < rules.cooldown_ms) {
        let left = (rules.cooldown_ms - (now_ms - last)) / 1000;
        return hold(
            "cooldown",
            format!("resized {} s ago; {left} s of cooldown left", (now_ms - last) / 1000),
        );
    }
    steps_and_bounds(rules, current_gib, wanted)
}

/// Guardrails 7–9 on a growth that passed the others.
fn steps_and_bounds(rules: &StorageRules, current: u64, wanted: u64) -> SizeDecision {
    let mut d = SizeDecision { target_gib: wanted, steps: Vec::new(), plugin_fault: None };
    let least = rules.step_min.gib.max(percent_of(current, rules.step_min.percent, true));
    if d.target_gib - current < least {
        d.moved("step-min", current + least, format!("grow by at least {least} GiB"));
    }
    if let Some(max) = rules.step_max {
        let most = match (max.gib, max.percent) {
            (0, p) => percent_of(current, p, false),
            (g, 0) => g,
            (g, p) => g.min(percent_of(current, p, false)),
        }
        .max(1);
        if d.target_gib - current > most {
            d.moved("step-max", current + most, format!("grow by at most {most} GiB"));
        }
    }
    if d.target_gib > rules.max_gib {
        d.moved("bounds", rules.max_gib.max(current), format!("at most {} GiB", rules.max_gib));
    }
    d
}

impl SizeDecision {
    /// Holds at `current_gib`: `guardrail` kept the recommendation from moving it, for `why`.
    pub fn hold(
        current_gib: u64,
        recommended_gib: f64,
        guardrail: &'static str,
        why: String,
    ) -> SizeDecision {
        let steps = vec![Step { guardrail, before: recommended_gib, after: current_gib as f64, why }];
        SizeDecision { target_gib: current_gib, steps, plugin_fault: None }
    }

    fn moved(&mut self, guardrail: &'static str, to: u64, why: String) {
        self.steps.push(Step { guardrail, before: self.target_gib as f64, after: to as f64, why });
        self.target_gib = to;
    }
}

/// `percent` % of `gib`, rounded up (`up`) or down.
fn percent_of(gib: u64, percent: u32, up: bool) -> u64 {
    let scaled = gib.saturating_mul(percent as u64);
    if up {
        scaled.div_ceil(100)
    } else {
        scaled / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * 1000;

    fn rules() -> StorageRules {
        StorageRules { max_gib: 100, ..StorageRules::default() }
    }

    fn held_by(d: &SizeDecision) -> Option<&'static str> {
        d.steps.last().map(|s| s.guardrail)
    }

    #[test]
    fn a_volume_never_shrinks_and_says_why() {
        let d = decide_size(&rules(), 20, 12.3, 0, &[], None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (20, Some("never-shrink")));
        assert!(d.steps[0].why.contains("13 GiB is below the current 20 GiB: a volume never shrinks"));
        let same = decide_size(&rules(), 20, 19.2, 0, &[], None, &[]);
        assert_eq!((same.target_gib, held_by(&same)), (20, Some("never-shrink")));
        let bad = decide_size(&rules(), 20, f64::NAN, 0, &[], None, &[]);
        assert_eq!((bad.target_gib, bad.plugin_fault.is_some()), (20, true));
    }

    #[test]
    fn steps_have_a_floor_in_gib_and_percent_and_a_ceiling() {
        // 20 GiB wants 21: at least max(1 GiB, 10 % = 2 GiB) → 22.
        let d = decide_size(&rules(), 20, 20.5, 0, &[], None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (22, Some("step-min")));
        // A ceiling of 50 %, at most 8 GiB: 20 → 60 asked, 28 given.
        let capped = StorageRules { step_max: Some(StepSize { gib: 8, percent: 50 }), ..rules() };
        let d = decide_size(&capped, 20, 60.0, 0, &[], None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (28, Some("step-max")));
        // Bounds last: 95 → 100, not 105.
        let d = decide_size(&rules(), 95, 96.0, 0, &[], None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (100, Some("bounds")));
        // Below the minimum size: to it at once.
        let floor = StorageRules { min_gib: 10, ..rules() };
        assert_eq!(decide_size(&floor, 4, 1.0, 0, &[], None, &[]).target_gib, 10);
        // No guardrail acted: no steps.
        assert!(decide_size(&rules(), 20, 30.0, 0, &[], None, &[]).steps.is_empty());
    }

    #[test]
    fn one_resize_at_a_time_and_at_most_four_a_day_across_a_restart() {
        let d = decide_size(&rules(), 20, 30.0, 0, &[], Some("volume extending"), &[]);
        assert_eq!((d.target_gib, held_by(&d)), (20, Some("in-progress")));
        // Four resizes journaled in the last day; the agent restarts and reads the journal.
        let rows = [
            (0, "scale", 10, 12),
            (2 * H, "hold", 12, 12),
            (3 * H, "scale", 12, 14),
            (5 * H, "scale", 14, 16),
            (6 * H, "scale", 16, 18),
            (7 * H, "scale", 18, 18), // a scale that did not grow is no resize
        ];
        let now = 10 * H;
        let resizes = resizes_from_journal(rows.iter().map(|&(t, a, f, to)| (t, a, f, to)), now);
        assert_eq!(resizes.len(), 4);
        let d = decide_size(&rules(), 18, 30.0, now, &resizes, None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (18, Some("per-day")));
        assert!(
            d.steps[0].why.contains("4 resizes in the last 24 h (at most 4); the next is allowed in 840 min"),
            "{:?}",
            d.steps
        );
        // The limit lowered to 2 with 4 in the day: the next once the third-newest is a day old.
        let two = StorageRules { per_day: 2, ..rules() };
        let d = decide_size(&two, 18, 30.0, now, &resizes, None, &[]);
        assert!(d.steps[0].why.contains("the next is allowed in 1140 min"), "{:?}", d.steps);
        // A day after the first, one has aged out: allowed again.
        let later = 24 * H + 1;
        let resizes = resizes_from_journal(rows.iter().map(|&(t, a, f, to)| (t, a, f, to)), later);
        assert_eq!(decide_size(&rules(), 18, 30.0, later, &resizes, None, &[]).target_gib, 30);
    }

    #[test]
    fn failed_resizes_back_off_doubling_up_to_an_hour_and_a_success_resets_them() {
        const M: i64 = 60_000;
        let rows = [
            (0, "scale", 10, 12),
            (M, "scale-failed", 12, 14),
            (2 * M, "hold", 12, 12),
            (3 * M, "scale-failed", 12, 14),
        ];
        let failures = failures_from_journal(rows.iter().copied(), 10 * M);
        assert_eq!(failures, [M, 3 * M]);
        // Two in a row: two minutes from the last.
        let d = decide_size(&rules(), 12, 20.0, 4 * M, &[], None, &failures);
        assert_eq!((d.target_gib, held_by(&d)), (12, Some("backoff")));
        assert_eq!(d.steps[0].why, "2 failed resize(s) in a row (see the journal); the next try in 60 s");
        assert_eq!(decide_size(&rules(), 12, 20.0, 5 * M, &[], None, &failures).target_gib, 20);
        // Many: at most an hour.
        let many: Vec<i64> = (0..20).collect();
        let d = decide_size(&rules(), 12, 20.0, 59 * M, &[], None, &many);
        assert_eq!(held_by(&d), Some("backoff"));
        assert_eq!(decide_size(&rules(), 12, 20.0, 61 * M, &[], None, &many).target_gib, 20);
        // A resize that succeeded after them clears them.
        let rows = [(M, "scale-failed", 12, 14), (2 * M, "scale", 12, 14)];
        assert!(failures_from_journal(rows.iter().copied(), 10 * M).is_empty());
    }

    #[test]
    fn a_cooldown_holds_after_a_resize() {
        let cool = StorageRules { cooldown_ms: 6 * H, ..rules() };
        let resizes = [Resize { t_ms: 0, from_gib: 10, to_gib: 12 }];
        let d = decide_size(&cool, 12, 20.0, H, &resizes, None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (12, Some("cooldown")));
        assert_eq!(decide_size(&cool, 12, 20.0, 6 * H, &resizes, None, &[]).target_gib, 20);
        // A cooldown longer than a day counts from a resize older than a day.
        let long = StorageRules { cooldown_ms: 48 * H, ..rules() };
        let d = decide_size(&long, 12, 20.0, 30 * H, &resizes, None, &[]);
        assert_eq!((d.target_gib, held_by(&d)), (12, Some("cooldown")));
    }
}
