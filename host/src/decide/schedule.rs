//! Scheduled bounds: `[[group.schedule]]` windows that change a group's `min` and `max` while
//! they are open (and ask for a `desired` capacity when they open), in an IANA time zone. The
//! policy keeps deciding inside the bounds in force.
//!
//! Cron windows open at each time a 5-field cron expression names, in the window's time zone,
//! and stay open for `duration`. Daylight-saving changes follow Vixie cron: a start in the hour
//! that does not exist (spring forward) opens the window at the first instant after the change;
//! a start in the hour that happens twice (fall back) opens it once, at the first pass.
//! Overlapping windows: the higher `priority` wins; at equal priority the one opened last; then
//! the one later in the file. Each of `min` and `max` comes from the winning window that sets it.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use std::time::Duration;

/// A parsed 5-field cron expression: minute, hour, day of month, month, day of week.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Vixie cron: when both day fields are restricted, a day matching either one matches.
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The bits of one field (`*`, `a`, `a-b`, `*/n`, `a-b/n`, lists of those; names where given).
fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let weekday = what == "day of week";
    // Day of week 7 is Sunday too.
    let top = if weekday { 7 } else { hi };
    let value = |t: &str| -> Result<u32, String> {
        let lower = t.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + lo);
        }
        t.parse::<u32>().map_err(|_| format!("{what}: `{t}` is not a number"))
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>().ok().filter(|s| *s > 0).ok_or(format!("{what}: bad step in `{part}`"))?,
            ),
            None => (part, 1),
        };
        let (from, to) = match range.split_once('-') {
            _ if range == "*" => (lo, hi),
            Some((a, b)) => (value(a)?, value(b)?),
            None if step > 1 => (value(range)?, hi),
            None => (value(range)?, value(range)?),
        };
        if from < lo || to > top || from > to {
            return Err(format!("{what}: `{part}` is outside {lo}–{hi}"));
        }
        for v in (from..=to).step_by(step as usize) {
            bits |= 1 << if weekday { v % 7 } else { v };
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields; a cron expression has 5: minute hour day month weekday",
                parts.len()
            ));
        }
        Ok(Cron {
            minutes: field(parts[0], "minute", 0, 59, &[])?,
            hours: field(parts[1], "hour", 0, 23, &[])? as u32,
            days: field(parts[2], "day of month", 1, 31, &[])? as u32,
            months: field(parts[3], "month", 1, 12, &MONTHS)? as u16,
            weekdays: field(parts[4], "day of week", 0, 6, &WEEKDAYS)? as u8,
            days_any: parts[2] == "*",
            weekdays_any: parts[4] == "*",
        })
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.days_any, self.weekdays_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The instants (ms) this expression names on local day `d` in `tz`, in order, each once.
    fn starts_on(&self, d: NaiveDate, tz: Tz) -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        if !self.day_matches(d) {
            return out;
        }
        for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
            for m in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                let local = d.and_hms_opt(h, m, 0).expect("valid time");
                if let Some(t) = instant(local, tz).filter(|t| out.last() != Some(t)) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// The instant local time `local` names in `tz`: the first pass of a repeated time, and for a
/// time that does not exist, the first instant after the gap.
fn instant(local: NaiveDateTime, tz: Tz) -> Option<i64> {
    let mut t = local;
    for _ in 0..=180 {
        match tz.from_local_datetime(&t) {
            chrono::LocalResult::Single(x) => return Some(x.timestamp_millis()),
            chrono::LocalResult::Ambiguous(first, _) => return Some(first.timestamp_millis()),
            // In a gap: the first whole minute that exists after it.
            chrono::LocalResult::None => t += chrono::Duration::minutes(1),
        }
    }
    None
}

/// When a window is open.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Cron { cron: Cron, duration: Duration },
    Fixed { start_ms: i64, end_ms: i64 },
}

/// One `[[group.schedule]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub name: String,
    pub when: When,
    pub tz: Tz,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub desired: Option<u32>,
    pub priority: i32,
}

/// How far ahead the next opening is looked for.
const HORIZON_DAYS: i64 = 400;

impl Window {
    fn local_day(&self, ms: i64) -> NaiveDate {
        self.tz.timestamp_millis_opt(ms).single().map(|t| t.date_naive()).unwrap_or_default()
    }

    /// When the occurrence open at `now` opened and will close, if one is.
    pub fn open_at(&self, now: i64) -> Option<(i64, i64)> {
        match &self.when {
            When::Fixed { start_ms, end_ms } => {
                (*start_ms <= now && now < *end_ms).then_some((*start_ms, *end_ms))
            }
            When::Cron { cron, duration } => {
                let length = duration.as_millis() as i64;
                let (first, last) = (self.local_day(now - length), self.local_day(now));
                let mut open = None;
                for day in first.iter_days().take_while(|d| *d <= last) {
                    for s in cron.starts_on(day, self.tz) {
                        if s <= now && now < s + length {
                            open = Some((s, s + length));
                        }
                    }
                }
                open
            }
        }
    }

    /// The first opening after `now`, within the horizon.
    pub fn next_open(&self, now: i64) -> Option<i64> {
        match &self.when {
            When::Fixed { start_ms, .. } => (*start_ms > now).then_some(*start_ms),
            When::Cron { cron, .. } => self
                .local_day(now)
                .iter_days()
                .take(HORIZON_DAYS as usize)
                .find_map(|day| cron.starts_on(day, self.tz).into_iter().find(|s| *s > now)),
        }
    }
}

/// The bounds in force at one instant, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Effective {
    pub min: u32,
    pub max: u32,
    /// The open windows, winner first.
    pub open: Vec<String>,
    /// A window that opened at `opened_ms` asks for this capacity (applied once, when it opens).
    pub desired: Option<Desired>,
    /// The next time a window opens or closes, and which.
    pub next_change: Option<Change>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Desired {
    pub window: String,
    pub replicas: u32,
    pub opened_ms: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub at_ms: i64,
    pub what: String,
}

/// The bounds at `now` for a group whose own are `min`..`max`.
pub fn effective(min: u32, max: u32, windows: &[Window], now: i64) -> Effective {
    // (priority, opened, file order) decides; the winner sorts first.
    let mut open: Vec<(&Window, i64, i64, usize)> =
        windows.iter().enumerate().filter_map(|(i, w)| w.open_at(now).map(|(s, e)| (w, s, e, i))).collect();
    open.sort_by_key(|(w, s, _, i)| std::cmp::Reverse((w.priority, *s, *i)));
    let pick = |f: fn(&Window) -> Option<u32>| open.iter().find_map(|(w, ..)| f(w));
    let (mut lo, mut hi) = (pick(|w| w.min).unwrap_or(min), pick(|w| w.max).unwrap_or(max));
    // A window's own value wins over the group's: raising min raises max with it, and lowering
    // max lowers min.
    if lo > hi {
        if pick(|w| w.min).is_some() && pick(|w| w.max).is_none() {
            hi = lo;
        } else {
            lo = hi;
        }
    }
    let desired = open.iter().find_map(|(w, s, ..)| {
        w.desired.map(|d| Desired { window: w.name.clone(), replicas: d.clamp(lo, hi), opened_ms: *s })
    });
    let closes = open.iter().map(|(w, _, e, _)| Change { at_ms: *e, what: format!("`{}` closes", w.name) });
    let opens = windows
        .iter()
        .filter_map(|w| w.next_open(now).map(|t| Change { at_ms: t, what: format!("`{}` opens", w.name) }));
    let next_change = closes.chain(opens).min_by_key(|c| c.at_ms);
    Effective {
        min: lo,
        max: hi,
        open: open.iter().map(|(w, ..)| w.name.clone()).collect(),
        desired,
        next_change,
    }
}

/// One line for people: `group web: bounds now 6–12 (`peak` open); next: `peak` closes at …`.
pub fn describe(group: &str, e: &Effective) -> String {
    let open = match e.open.as_slice() {
        [] => "no window open".to_string(),
        names => names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ") + " open",
    };
    let next = match &e.next_change {
        Some(c) => format!("{} at {}", c.what, crate::timefmt::format(c.at_ms)),
        None => format!("no change within {HORIZON_DAYS} days"),
    };
    format!("group {group}: bounds now {}–{} ({open}); next: {next}", e.min, e.max)
}

/// Puts the schedule on `target` (what the policy and the guardrails decided): a window's
/// `desired` when it opened within the last `fresh_ms` and was not applied yet, then the bounds in
/// force — last, so that no stabilization window or rate limit holds capacity outside them.
/// `applied` remembers which openings' `desired` were applied.
pub fn apply(
    target: u32,
    e: &Effective,
    now: i64,
    fresh_ms: i64,
    applied: &mut Vec<(String, i64)>,
) -> (u32, Vec<super::guardrails::Step>) {
    let mut steps = Vec::new();
    let mut out = target;
    if let Some(d) = &e.desired {
        let key = (d.window.clone(), d.opened_ms);
        if now - d.opened_ms <= fresh_ms && !applied.contains(&key) {
            if d.replicas != out {
                steps.push(super::guardrails::Step {
                    guardrail: "schedule",
                    before: out as f64,
                    after: d.replicas as f64,
                    why: format!("window `{}` opened: desired {}", d.window, d.replicas),
                });
            }
            out = d.replicas;
            applied.push(key);
            if applied.len() > 16 {
                applied.remove(0);
            }
        }
    }
    let bounded = out.clamp(e.min, e.max);
    if bounded != out {
        let why = match e.open.first() {
            Some(w) => format!("within [{}, {}] while `{w}` is open", e.min, e.max),
            None => format!("within [{}, {}]: no window open", e.min, e.max),
        };
        steps.push(super::guardrails::Step {
            guardrail: "schedule",
            before: out as f64,
            after: bounded as f64,
            why,
        });
    }
    (bounded, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        chrono_tz::Europe::Berlin.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap().timestamp_millis()
    }

    fn utc(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    fn cron(name: &str, expr: &str, hours: u64, min: Option<u32>, max: Option<u32>) -> Window {
        Window {
            name: name.into(),
            when: When::Cron {
                cron: Cron::parse(expr).unwrap(),
                duration: Duration::from_secs(hours * 3600),
            },
            tz: chrono_tz::Europe::Berlin,
            min,
            max,
            desired: None,
            priority: 0,
        }
    }

    #[test]
    fn cron_fields_names_steps_lists_and_errors() {
        let c = Cron::parse("*/15 8-18 * jan-mar mon-fri").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, (8..=18).map(|h| 1u32 << h).sum::<u32>());
        assert_eq!(c.months, 0b1110);
        assert_eq!(c.weekdays, 0b0111110);
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().weekdays, 1, "7 is Sunday");
        for (bad, says) in [
            ("0 0 * *", "5"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * foo *", "month"),
            ("*/0 * * * *", "step"),
        ] {
            let e = Cron::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn business_hours_open_at_8_berlin_time_on_both_sides_of_a_dst_change() {
        let w = cron("office", "0 8 * * mon-fri", 10, Some(4), None);
        // Friday 27 March 2026 (CET, UTC+1) and Monday 30 March (CEST, UTC+2).
        assert_eq!(
            w.open_at(berlin(2026, 3, 27, 9, 0)),
            Some((utc("2026-03-27T07:00:00Z"), utc("2026-03-27T17:00:00Z")))
        );
        assert_eq!(
            w.open_at(berlin(2026, 3, 30, 9, 0)),
            Some((utc("2026-03-30T06:00:00Z"), utc("2026-03-30T16:00:00Z")))
        );
        assert_eq!(w.open_at(berlin(2026, 3, 28, 9, 0)), None, "Saturday");
        assert_eq!(w.next_open(berlin(2026, 3, 27, 20, 0)), Some(utc("2026-03-30T06:00:00Z")));
    }

    #[test]
    fn a_start_in_the_missing_hour_opens_after_the_gap_and_a_repeated_hour_opens_once() {
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist.
        let w = cron("night", "30 2 * * *", 1, None, Some(1));
        assert_eq!(w.next_open(berlin(2026, 3, 29, 0, 0)), Some(utc("2026-03-29T01:00:00Z")), "03:00 CEST");
        // 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let opened = w.next_open(berlin(2026, 10, 25, 0, 0)).unwrap();
        assert_eq!(opened, utc("2026-10-25T00:30:00Z"), "the first 02:30 (CEST)");
        assert_eq!(w.next_open(opened), Some(utc("2026-10-26T01:30:00Z")), "not again at the second 02:30");
    }

    #[test]
    fn overlapping_windows_priority_then_latest_opened_then_file_order() {
        let now = berlin(2026, 6, 1, 12, 0);
        let wide = cron("day", "0 6 * * *", 14, Some(2), Some(20));
        let lunch = cron("lunch", "0 11 * * *", 3, Some(6), None);
        let e = effective(1, 10, &[wide.clone(), lunch.clone()], now);
        assert_eq!((e.min, e.max), (6, 20), "min from lunch (opened last), max from day");
        assert_eq!(e.open, ["lunch", "day"]);
        assert_eq!(
            e.next_change,
            Some(Change { at_ms: berlin(2026, 6, 1, 14, 0), what: "`lunch` closes".into() })
        );
        let boss = Window { priority: 5, ..wide };
        let e = effective(1, 10, &[boss, lunch], now);
        assert_eq!((e.min, e.max), (2, 20), "priority beats recency");
        // Closed: the group's own bounds, and when the next window opens.
        let e =
            effective(1, 10, &[cron("day", "0 6 * * *", 14, Some(2), Some(20))], berlin(2026, 6, 1, 21, 0));
        assert_eq!((e.min, e.max, e.open.len()), (1, 10, 0));
        assert_eq!(e.next_change.unwrap().at_ms, berlin(2026, 6, 2, 6, 0));
    }

    #[test]
    fn a_window_s_own_value_wins_when_it_crosses_the_group_s_other_bound() {
        let now = berlin(2026, 6, 1, 12, 0);
        let e = effective(1, 4, &[cron("peak", "0 6 * * *", 14, Some(8), None)], now);
        assert_eq!((e.min, e.max), (8, 8));
        let e = effective(3, 10, &[cron("cap", "0 6 * * *", 14, None, Some(2))], now);
        assert_eq!((e.min, e.max), (2, 2));
    }

    #[test]
    fn fixed_windows_and_desired_clamped_to_the_bounds_in_force() {
        let w = Window {
            name: "sale".into(),
            when: When::Fixed { start_ms: utc("2026-11-27T00:00:00Z"), end_ms: utc("2026-11-30T00:00:00Z") },
            tz: chrono_tz::UTC,
            min: Some(5),
            max: Some(12),
            desired: Some(40),
            priority: 0,
        };
        let e = effective(1, 10, std::slice::from_ref(&w), utc("2026-11-28T00:00:00Z"));
        assert_eq!(
            e.desired,
            Some(Desired { window: "sale".into(), replicas: 12, opened_ms: utc("2026-11-27T00:00:00Z") })
        );
        assert!(
            effective(1, 10, &[w], utc("2026-11-30T00:00:00Z")).desired.is_none(),
            "the end is exclusive"
        );
    }

    #[test]
    fn a_window_that_closes_while_the_policy_wants_more_caps_at_once_and_desired_applies_once() {
        let w = Window { desired: Some(8), ..cron("peak", "0 8 * * *", 2, Some(6), Some(12)) };
        let at = |h, m| berlin(2026, 6, 1, h, m);
        let mut applied = Vec::new();
        // 08:00:10: the window has just opened; the policy wanted 3.
        let e = effective(1, 4, std::slice::from_ref(&w), at(8, 0) + 10_000);
        let (t, steps) = apply(3, &e, at(8, 0) + 10_000, 60_000, &mut applied);
        assert_eq!((t, steps.len()), (8, 1), "{steps:?}");
        assert!(steps[0].why.contains("`peak` opened: desired 8"));
        // The next evaluation: desired is not applied again; the policy decides within 6..12.
        let (t, steps) = apply(7, &e, at(8, 0) + 20_000, 60_000, &mut applied);
        assert_eq!((t, steps.len()), (7, 0));
        // 10:00: the window closes while the policy (and the stabilization window) want 10: the
        // group's own max 4 applies at once.
        let e = effective(1, 4, std::slice::from_ref(&w), at(10, 0));
        assert!(e.open.is_empty());
        let (t, steps) = apply(10, &e, at(10, 0), 60_000, &mut applied);
        assert_eq!(t, 4);
        assert_eq!(steps[0].why, "within [1, 4]: no window open");
        // An agent started 10 minutes into the window does not jump to `desired`.
        let e = effective(1, 4, std::slice::from_ref(&w), at(8, 10));
        assert_eq!(apply(6, &e, at(8, 10), 60_000, &mut Vec::new()).0, 6);
    }
}
