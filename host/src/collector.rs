//! Collects every loaded source plugin on its own interval.
//!
//! Samples go to the store with a `source=<plugin>` label; a sample without a timestamp is
//! stamped with the time it arrived. A source that fails or times out yields nothing that tick:
//! the error is logged and counted, and no value (least of all a zero) stands in for the missing
//! data. NaN and infinite values are dropped and counted.

use crate::plugins::registry::Registry;
use crate::plugins::Kind;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a source is collected when its `interval` is not configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

pub struct Collector {
    state: Mutex<HashMap<String, SourceState>>,
    writer: Option<crate::store::Writer>,
    telemetry: Arc<crate::telemetry::Telemetry>,
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
}

struct SourceState {
    status: SourceStatus,
    next_due: Instant,
    busy: bool,
}

impl Collector {
    /// A collector that stores into `writer` (none: collect and count only).
    pub fn new(
        writer: Option<crate::store::Writer>,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Collector {
        Collector { state: Mutex::default(), writer, telemetry }
    }

    /// Turns a plugin's samples into stored ones; drops non-finite values, returns how many.
    fn convert(
        plugin: &str,
        samples: Vec<crate::plugins::bindings::Sample>,
        now: i64,
    ) -> (Vec<crate::store::Sample>, u64) {
        let mut dropped = 0;
        let stored = samples
            .into_iter()
            .filter(|s| {
                s.value.is_finite() || {
                    dropped += 1;
                    false
                }
            })
            .map(|s| {
                let mut labels: crate::store::Labels =
                    s.labels.into_iter().map(|l| (l.key, l.value)).collect();
                labels.insert("source", plugin);
                crate::store::Sample {
                    key: crate::store::SeriesKey::new(s.metric, labels),
                    t_ms: if s.timestamp_ms == 0 { now } else { s.timestamp_ms },
                    value: s.value,
                }
            })
            .collect();
        (stored, dropped)
    }

    pub fn status(&self) -> Vec<SourceStatus> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = state.values().map(|s| s.status.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Runs until the registry is dropped: every 100 ms, starts the collections that are due.
    pub async fn run(
        self: Arc<Self>,
        registry: std::sync::Weak<Registry>,
        config: Arc<crate::config::Config>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let Some(registry) = registry.upgrade() else {
                break;
            };
            let now = Instant::now();
            let sources = registry.of_kind(Kind::Source);
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.retain(|name, _| sources.iter().any(|h| &h.name() == name));
            for handle in sources {
                let name = handle.name();
                let entry = state.entry(name.clone()).or_insert_with(|| SourceState {
                    status: SourceStatus { name: name.clone(), ..Default::default() },
                    next_due: now,
                    busy: false,
                });
                if entry.busy || entry.next_due > now {
                    continue;
                }
                let interval = config.plugin(&name).interval.unwrap_or(DEFAULT_INTERVAL);
                entry.next_due = now + interval;
                entry.busy = true;
                let this = self.clone();
                tokio::spawn(async move {
                    let result = handle.collect().await;
                    let stamp = now_ms();
                    let result = result.map(|samples| {
                        let count = samples.len();
                        let (stored, dropped) = Self::convert(&name, samples, stamp);
                        let t = &this.telemetry;
                        if dropped > 0 {
                            t.source_nonfinite.fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(plugin = %name, "dropped {dropped} NaN or infinite values");
                        }
                        t.source_samples.fetch_add(stored.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if let Some(w) = &this.writer {
                            w.submit(stored);
                        }
                        count
                    });
                    if result.is_err() {
                        this.telemetry.source_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
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
                });
            }
        }
    }
}

use crate::store::now_ms;
