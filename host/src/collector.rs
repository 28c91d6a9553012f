//! Collects every loaded source plugin on its own interval.
//!
//! Samples go to the store with a `source=<plugin>` label; a sample without a timestamp is
//! stamped with the time it arrived. A source that fails or times out yields nothing that tick:
//! the error is logged and counted, and no value (least of all a zero) stands in for the missing
//! data. NaN and infinite values are dropped and counted.
//!
//! A source's samples are also held to its budgets here: at most `max_series` live series (new
//! ones beyond are dropped, existing ones keep flowing), names and labels within the size limits
//! below, and timestamps within [`PAST`] before and [`FUTURE`] after now. What is dropped is
//! counted against the plugin ([`crate::plugins::meter`]).

use crate::plugins::meter::{Budget, Meter};
use crate::plugins::references::unconfigured;
use crate::plugins::registry::Registry;
use crate::plugins::Kind;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a source is collected when its `interval` is not configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Oldest and newest timestamps a sample may carry, relative to now.
pub const PAST: Duration = Duration::from_secs(3600);
pub const FUTURE: Duration = Duration::from_secs(60);
/// Size limits of one sample: metric name, number of labels, label key and value (bytes).
pub const MAX_NAME: usize = 200;
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_KEY: usize = 100;
pub const MAX_LABEL_VALUE: usize = 256;

pub struct Collector {
    state: Mutex<HashMap<String, SourceState>>,
    writer: Option<crate::store::Writer>,
    telemetry: Arc<crate::telemetry::Telemetry>,
    /// Signalled when a collection ends.
    finished: tokio::sync::Notify,
}

#[derive(Clone, Default, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub collections: u64,
    pub errors: u64,
    /// Samples returned by the last successful collection.
    pub last_samples: usize,
    pub last_error: Option<String>,
    /// Unix milliseconds of the last successful collection.
    pub last_ok_ms: Option<i64>,
    /// Why the source is not collected (a required key it lacks), if it is not.
    pub not_collected: Option<String>,
}

struct SourceState {
    status: SourceStatus,
    next_due: Instant,
    busy: bool,
    series: LiveSeries,
}

/// A source's live series (by hash of name and labels) and when each was last written.
#[derive(Default)]
struct LiveSeries {
    last_seen: HashMap<u64, i64>,
    swept_ms: i64,
}

impl LiveSeries {
    /// Whether a sample of `key` at `now` fits in `max` live series; forgets series idle for
    /// longer than `idle_ms` first (at most once a minute).
    fn admit(&mut self, key: &crate::store::SeriesKey, now: i64, max: usize, idle_ms: i64) -> bool {
        use std::hash::{Hash, Hasher};
        if now - self.swept_ms > 60_000 {
            self.last_seen.retain(|_, t| now - *t <= idle_ms);
            self.swept_ms = now;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let id = h.finish();
        if let Some(t) = self.last_seen.get_mut(&id) {
            *t = now;
            return true;
        }
        if self.last_seen.len() >= max {
            return false;
        }
        self.last_seen.insert(id, now);
        true
    }
}

/// Why a sample is refused, if it is.
fn misshapen(s: &crate::plugins::types::Sample) -> Option<String> {
    if s.metric.is_empty() || s.metric.len() > MAX_NAME {
        return Some(format!("a metric name of {} bytes (1..={MAX_NAME})", s.metric.len()));
    }
    if s.labels.len() > MAX_LABELS {
        return Some(format!("{} labels (at most {MAX_LABELS})", s.labels.len()));
    }
    s.labels.iter().find_map(|l| {
        (l.key.is_empty() || l.key.len() > MAX_LABEL_KEY || l.value.len() > MAX_LABEL_VALUE).then(|| {
            format!(
                "a label of {}+{} bytes (key 1..={MAX_LABEL_KEY}, value ..={MAX_LABEL_VALUE})",
                l.key.len(),
                l.value.len()
            )
        })
    })
}

impl Collector {
    /// A collector that stores into `writer` (none: collect and count only).
    pub fn new(
        writer: Option<crate::store::Writer>,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Collector {
        Collector { state: Mutex::default(), writer, telemetry, finished: Default::default() }
    }

    /// Turns a plugin's samples into stored ones, keeping only what its budgets allow; returns
    /// them and how many non-finite values were dropped.
    fn convert(
        plugin: &str,
        samples: Vec<crate::plugins::types::Sample>,
        now: i64,
        live: &mut LiveSeries,
        budget: &SourceBudget,
    ) -> (Vec<crate::store::Sample>, u64) {
        let (mut nonfinite, mut shape, mut time, mut series) = (0, None, 0, 0);
        let mut stored = Vec::with_capacity(samples.len());
        let (oldest, newest) = (now - PAST.as_millis() as i64, now + FUTURE.as_millis() as i64);
        for s in samples {
            if !s.value.is_finite() {
                nonfinite += 1;
                continue;
            }
            if let Some(why) = misshapen(&s) {
                shape.get_or_insert((0, why)).0 += 1;
                continue;
            }
            let t_ms = if s.timestamp_ms == 0 { now } else { s.timestamp_ms };
            if !(oldest..=newest).contains(&t_ms) {
                time += 1;
                continue;
            }
            let mut labels: crate::store::Labels = s.labels.into_iter().map(|l| (l.key, l.value)).collect();
            labels.insert("source", plugin);
            let key = crate::store::SeriesKey::new(s.metric, labels);
            if !live.admit(&key, now, budget.max_series, budget.idle_ms) {
                series += 1;
                continue;
            }
            stored.push(crate::store::Sample { key, t_ms, value: s.value });
        }
        let m = &budget.meter;
        if let Some((n, why)) = shape {
            m.exceeded(Budget::SampleShape, n, || format!("dropped {n} samples, one with {why}"));
        }
        if time > 0 {
            m.exceeded(Budget::SampleTime, time, || {
                format!("dropped {time} samples stamped more than 1h before or 1m after now")
            });
        }
        if series > 0 {
            let max = budget.max_series;
            m.exceeded(Budget::Series, series, || {
                format!("dropped {series} samples of new series beyond max_series ({max}); existing series keep flowing")
            });
        }
        (stored, nonfinite)
    }
    pub fn status(&self) -> Vec<SourceStatus> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = state.values().map(|s| s.status.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Runs until the registry is dropped. Sleeps until the next collection is due, a
    /// collection ends or the registry changes (a plugin loaded, a reload): nothing wakes it
    /// while there is nothing to collect. Settings are read from the registry's configuration
    /// when a collection starts, so a reload applies at the next one.
    pub async fn run(self: Arc<Self>, registry: std::sync::Weak<Registry>) {
        let Some(mut changes) = registry.upgrade().map(|r| r.changes()) else {
            return;
        };
        loop {
            let Some(current) = registry.upgrade() else {
                break;
            };
            let next = self.start_due(&current);
            drop(current);
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = due => {}
                _ = self.finished.notified() => {}
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
    }

    /// Starts the collections that are due; returns when the next one is.
    fn start_due(self: &Arc<Self>, registry: &Registry) -> Option<Instant> {
        let config = registry.config();
        let idle_ms = config.retention.raw.as_millis() as i64;
        let now = Instant::now();
        let sources = registry.of_kind(Kind::Source);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.retain(|name, _| sources.iter().any(|h| &h.name() == name));
        let mut next: Option<Instant> = None;
        for handle in sources {
            let name = handle.name();
            let entry = state.entry(name.clone()).or_insert_with(|| SourceState {
                status: SourceStatus { name: name.clone(), ..Default::default() },
                next_due: now,
                busy: false,
                series: LiveSeries::default(),
            });
            if entry.busy {
                continue; // its end wakes the loop
            }
            if entry.next_due <= now {
                let settings = config.plugin(&name);
                entry.next_due = now + settings.interval.unwrap_or(DEFAULT_INTERVAL);
                // Said once, as a configuration problem (the registry's check); a reload that
                // adds the key wakes this loop.
                entry.status.not_collected = unconfigured(&handle.status(), &settings.config_json);
                if entry.status.not_collected.is_some() {
                    continue;
                }
                entry.busy = true;
                let budget =
                    SourceBudget { meter: handle.meter(), max_series: settings.budgets.max_series, idle_ms };
                tokio::spawn(self.clone().collect(handle, name, budget));
            }
            next = Some(next.map_or(entry.next_due, |n| n.min(entry.next_due)));
        }
        next
    }

    /// One collection of one source: its samples to the store, its status updated.
    async fn collect(
        self: Arc<Self>,
        handle: crate::plugins::worker::PluginHandle,
        name: String,
        budget: SourceBudget,
    ) {
        let result = handle.collect().await;
        let stamp = now_ms();
        let result = result.map(|samples| {
            let count = samples.len();
            let (stored, dropped) = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut scratch = LiveSeries::default();
                let live = state.get_mut(&name).map_or(&mut scratch, |e| &mut e.series);
                Self::convert(&name, samples, stamp, live, &budget)
            };
            let t = &self.telemetry;
            if dropped > 0 {
                t.source_nonfinite.fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(plugin = %name, "dropped {dropped} NaN or infinite values");
            }
            t.source_samples.fetch_add(stored.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(w) = &self.writer {
                w.submit(stored);
            }
            count
        });
        if result.is_err() {
            self.telemetry.source_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.get_mut(&name) else {
            return;
        };
        entry.busy = false;
        entry.status.collections += 1;
        match result {
            Ok(count) => {
                tracing::debug!(plugin = %name, "collected {count} samples");
                entry.status.last_samples = count;
                entry.status.last_error = None;
                entry.status.last_ok_ms = Some(stamp);
            }
            Err(e) => {
                tracing::warn!(plugin = %name, "collect failed: {e}; no samples this tick");
                entry.status.errors += 1;
                entry.status.last_error = Some(e.to_string());
            }
        }
        self.finished.notify_one();
    }
}

use crate::timefmt::now_ms;

/// What a source's samples are held to.
struct SourceBudget {
    meter: Arc<Meter>,
    max_series: usize,
    /// A series not written for this long no longer counts as live (the raw retention).
    idle_ms: i64,
}
