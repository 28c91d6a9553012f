//! The newest samples of the metrics scaling groups read, in memory, as the writer commits
//! them: a group's window (seconds to minutes) is read without SQLite, as Prometheus serves its
//! head block from memory. Only names a group asked for are kept, over the longest window asked
//! for (never longer than raw samples are retained), and at most [`MAX_POINTS`] per series, so
//! memory follows the configuration.
//!
//! A window is served from memory only where memory is complete: after the newest timestamp
//! written before the name began to be kept (samples written before are in SQLite only; a
//! source's clock may run ahead), and never before a point memory let go of.
//! Anything else is read from SQLite, as before. `window_from_memory_equals_the_sqlite_query`
//! holds the two answers equal.

use super::series::{Labels, SeriesKey};
use super::SeriesPoints;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;

/// Points kept per series at most (an hour of one a second): beyond it the oldest go.
pub const MAX_POINTS: usize = 4096;
/// How often series that stopped reporting are let go (by the newest sample time seen).
const SWEEP_MS: i64 = 60_000;

pub struct Recent {
    state: RwLock<State>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent { state: RwLock::new(State { cap_ms: i64::MAX, ..State::default() }) }
    }
}

#[derive(Default)]
struct State {
    horizon_ms: i64,
    /// The horizon never exceeds this (the raw retention: memory holds nothing SQLite lost).
    cap_ms: i64,
    /// Per kept name: since when memory is complete, and its series.
    names: HashMap<String, Kept>,
    newest_ms: i64,
    next_sweep_ms: i64,
}

struct Kept {
    since_ms: i64,
    /// Series in SQLite's order (their labels' JSON text), and where each is.
    series: BTreeMap<String, Ring>,
    index: HashMap<Labels, String>,
    /// A series let go of (it stopped reporting) and seen again is complete only past this.
    dropped_floor_ms: i64,
}

struct Ring {
    labels: Labels,
    /// Oldest first, one point per timestamp (a later write of a timestamp replaces it, as
    /// `INSERT OR REPLACE` does).
    points: VecDeque<(i64, f64)>,
    /// Memory holds every point of this series from here on (points before it were let go).
    floor_ms: i64,
}

impl Recent {
    /// Memory for a store whose samples so far end at `newest_ms`.
    pub fn after(newest_ms: i64) -> Recent {
        let recent = Recent::default();
        recent.state.write().unwrap_or_else(|p| p.into_inner()).newest_ms = newest_ms;
        recent
    }

    /// Keeps `names` over `horizon_ms` from now on; names no longer asked for are let go.
    pub fn keep(&self, names: impl IntoIterator<Item = String>, horizon_ms: i64) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        // Every sample committed so far is at or before `newest_ms`; every later one is seen.
        let since_ms = state.newest_ms.saturating_add(1);
        let mut kept = std::mem::take(&mut state.names);
        state.names = names
            .into_iter()
            .map(|n| {
                let k = kept.remove(&n).unwrap_or_else(|| Kept {
                    since_ms,
                    series: BTreeMap::new(),
                    index: HashMap::new(),
                    dropped_floor_ms: i64::MIN,
                });
                (n, k)
            })
            .collect();
        state.horizon_ms = horizon_ms.clamp(0, state.cap_ms);
    }

    /// Never keeps more than `cap_ms` back (the raw retention).
    pub fn cap(&self, cap_ms: i64) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.cap_ms = cap_ms.max(0);
        state.horizon_ms = state.horizon_ms.min(state.cap_ms);
    }

    /// Records samples the writer committed (finite values of series it accepted), every one
    /// of them: the newest timestamp of any says where a name kept later is complete from.
    pub fn record<'a>(&self, samples: impl IntoIterator<Item = (&'a SeriesKey, i64, f64)>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let horizon = state.horizon_ms;
        let mut newest = state.newest_ms;
        for (key, t, v) in samples {
            newest = newest.max(t);
            let Some(kept) = state.names.get_mut(&key.name) else { continue };
            kept.ring(&key.labels).put(t, v, horizon);
        }
        state.newest_ms = newest;
        if newest >= state.next_sweep_ms {
            state.next_sweep_ms = newest.saturating_add(SWEEP_MS);
            let oldest_kept = newest.saturating_sub(horizon);
            for kept in state.names.values_mut() {
                kept.sweep(oldest_kept);
            }
        }
    }

    /// The points of every series of `name` whose labels match, in `[from_ms, to_ms)`, the
    /// series without any left out, in SQLite's order; `None` when memory cannot say (then
    /// read SQLite).
    pub fn window(
        &self,
        name: &str,
        matchers: &[(String, String)],
        from_ms: i64,
        to_ms: i64,
    ) -> Option<Vec<SeriesPoints>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let kept = state.names.get(name)?;
        if from_ms < kept.since_ms || from_ms < kept.dropped_floor_ms {
            return None;
        }
        let mut out = Vec::new();
        for ring in kept.series.values().filter(|r| r.labels.matches(matchers)) {
            if from_ms < ring.floor_ms {
                return None;
            }
            let start = ring.points.partition_point(|(t, _)| *t < from_ms);
            let end = ring.points.partition_point(|(t, _)| *t < to_ms);
            if start < end {
                let (timestamps_ms, values) = ring.points.range(start..end).copied().unzip();
                out.push(SeriesPoints {
                    name: name.to_string(),
                    labels: ring.labels.clone(),
                    timestamps_ms,
                    values,
                });
            }
        }
        Some(out)
    }
}

impl Kept {
    fn ring(&mut self, labels: &Labels) -> &mut Ring {
        let json = match self.index.get(labels) {
            Some(json) => json.clone(),
            None => {
                let json = labels.to_json();
                self.index.insert(labels.clone(), json.clone());
                let floor_ms = self.dropped_floor_ms;
                self.series
                    .insert(json.clone(), Ring { labels: labels.clone(), points: VecDeque::new(), floor_ms });
                json
            }
        };
        self.series.get_mut(&json).expect("indexed series exists")
    }

    /// Lets go of series with no point since `oldest_kept`: a window reaching back before
    /// their last point is read from SQLite.
    fn sweep(&mut self, oldest_kept: i64) {
        let gone: Vec<String> = self
            .series
            .iter()
            .filter(|(_, r)| r.points.back().is_none_or(|p| p.0 < oldest_kept))
            .map(|(json, _)| json.clone())
            .collect();
        for json in gone {
            if let Some(ring) = self.series.remove(&json) {
                let last = ring.points.back().map_or(ring.floor_ms, |p| p.0);
                self.dropped_floor_ms = self.dropped_floor_ms.max(last.saturating_add(1));
                self.index.remove(&ring.labels);
            }
        }
    }
}

impl Ring {
    fn put(&mut self, t: i64, v: f64, horizon_ms: i64) {
        match self.points.back() {
            Some((last, _)) if *last < t => self.points.push_back((t, v)),
            None => self.points.push_back((t, v)),
            _ => {
                let i = self.points.partition_point(|(pt, _)| *pt < t);
                match self.points.get_mut(i) {
                    Some(p) if p.0 == t => p.1 = v,
                    _ => self.points.insert(i, (t, v)),
                }
            }
        }
        let newest = self.points.back().map_or(t, |p| p.0);
        while let Some(&(oldest, _)) = self.points.front() {
            if newest - oldest <= horizon_ms && self.points.len() <= MAX_POINTS {
                break;
            }
            self.points.pop_front();
            self.floor_ms = self.floor_ms.max(oldest + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the keeping began (nothing was written before it in most tests).
    const T0: i64 = 100_000;

    fn key(name: &str, host: &str) -> SeriesKey {
        SeriesKey::new(name, Labels::new().with("host", host))
    }

    #[test]
    fn a_window_comes_from_memory_only_where_memory_is_complete() {
        let recent = Recent::default();
        let (a, b) = (key("load", "a"), key("load", "b"));
        let other = key("cpu", "a");
        // Written before the keeping began, ahead of the clock: SQLite has it, memory not.
        recent.record([(&a, T0 + 12_500, -1.0)]);
        recent.keep(["load".to_string()], 10_000);
        recent.record((0..20).flat_map(|i| {
            [(&a, T0 + i * 1_000, i as f64), (&b, T0 + i * 1_000, 1.0), (&other, T0 + i, 0.0)]
        }));
        // Up to the newest sample written before the keeping began: SQLite's to answer.
        assert!(recent.window("load", &[], T0 + 12_500, T0 + 15_000).is_none());
        assert!(recent.window("load", &[], T0 + 12_501, T0 + 15_000).is_some());
        // Points older than the horizon were let go: not complete there.
        assert!(recent.window("load", &[], T0 + 4_000, T0 + 30_000).is_none());
        let w = recent.window("load", &[("host".into(), "a".into())], T0 + 14_000, T0 + 17_000).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].timestamps_ms, [T0 + 14_000, T0 + 15_000, T0 + 16_000]);
        assert_eq!(w[0].values, [14.0, 15.0, 16.0]);
        assert_eq!(recent.window("load", &[], T0 + 14_000, T0 + 17_000).unwrap().len(), 2);
        // A name nobody asked for is not kept.
        assert!(recent.window("cpu", &[], T0 + 14_000, T0 + 17_000).is_none());
    }

    #[test]
    fn a_late_or_repeated_timestamp_lands_in_order_and_replaces() {
        let recent = Recent::default();
        recent.keep(["x".to_string()], 60_000);
        let k = key("x", "a");
        recent.record([
            (&k, T0 + 3_000, 3.0),
            (&k, T0 + 5_000, 5.0),
            (&k, T0 + 4_000, 4.0),
            (&k, T0 + 5_000, 50.0),
        ]);
        let w = recent.window("x", &[], T0, T0 + 10_000).unwrap();
        assert_eq!(w[0].timestamps_ms, [T0 + 3_000, T0 + 4_000, T0 + 5_000]);
        assert_eq!(w[0].values, [3.0, 4.0, 50.0]);
    }

    #[test]
    fn memory_is_bounded_per_series_and_says_so() {
        let recent = Recent::default();
        recent.keep(["x".to_string()], i64::MAX / 2);
        let k = key("x", "a");
        recent.record((0..MAX_POINTS as i64 + 10).map(|i| (&k, T0 + i, 1.0)));
        let w = recent.window("x", &[], T0 + 10, i64::MAX).unwrap();
        assert_eq!(w[0].values.len(), MAX_POINTS);
        assert!(recent.window("x", &[], T0 + 9, i64::MAX).is_none());
        // Let go of when no group asks for it any more.
        recent.keep([], 0);
        assert!(recent.window("x", &[], T0 + 10, i64::MAX).is_none());
    }

    #[test]
    fn series_come_in_the_order_of_their_labels_text_as_sqlite_gives_them() {
        let recent = Recent::default();
        recent.keep(["x".to_string()], 60_000);
        // Ordered as maps, {a=x} comes first; as JSON text (SQLite's `ORDER BY labels`), the
        // longer one does (',' sorts before '}').
        let short = SeriesKey::new("x", Labels::new().with("a", "x"));
        let long = SeriesKey::new("x", Labels::new().with("a", "x").with("b", "y"));
        recent.record([(&short, T0, 1.0), (&long, T0, 2.0)]);
        let w = recent.window("x", &[], T0, T0 + 1).unwrap();
        let order: Vec<String> = w.iter().map(|s| s.labels.to_json()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(w[0].values, [2.0]);
    }

    #[test]
    fn a_series_that_stopped_reporting_is_let_go_and_its_return_read_from_sqlite() {
        let recent = Recent::default();
        recent.keep(["x".to_string()], 10_000);
        let (gone, live) = (key("x", "gone"), key("x", "live"));
        recent.record([(&gone, T0, 1.0), (&live, T0, 1.0)]);
        recent.record((1..200).map(|i| (&live, T0 + i * 1_000, 1.0)));
        let w = recent.window("x", &[], T0 + 190_000, T0 + 200_000).unwrap();
        assert_eq!(w.len(), 1, "the silent series was swept");
        recent.record([(&gone, T0 + 200_000, 2.0)]);
        // It came back: memory has no record of its gap, so a window over it (or over where
        // it was let go) is SQLite's; one after its return is memory's.
        assert!(recent.window("x", &[], T0, T0 + 201_000).is_none());
        assert_eq!(recent.window("x", &[], T0 + 195_000, T0 + 201_000).unwrap().len(), 2);
    }
}
