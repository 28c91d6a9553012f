//! Collects every loaded source plugin on its own interval.
//!
//! A source that fails or times out yields nothing that tick: the error is logged and counted,
//! and no value (least of all a zero) stands in for the missing data. Samples are kept as the
//! latest per source for now; the metrics store takes them when it lands (issue 3).

use crate::plugins::registry::Registry;
use crate::plugins::Kind;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a source is collected when its `interval` is not configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Collector {
    state: Mutex<HashMap<String, SourceState>>,
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
                    status: SourceStatus {
                        name: name.clone(),
                        ..Default::default()
                    },
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
                    let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(entry) = state.get_mut(&name) else {
                        return;
                    };
                    entry.busy = false;
                    entry.status.collections += 1;
                    match result {
                        Ok(samples) => {
                            tracing::debug!(plugin = %name, "collected {} samples", samples.len());
                            entry.status.last_samples = samples.len();
                            entry.status.last_error = None;
                            entry.status.last_ok_ms = Some(now_ms());
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
