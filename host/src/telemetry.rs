//! The agent's own counters: what it costs and what went wrong. `/metrics` exposes them under
//! `agent_*`. Plugin and store figures live with the registry and the store writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Telemetry {
    pub sampler_ticks: AtomicU64,
    pub sampler_tick_ns_total: AtomicU64,
    pub sampler_tick_ns_last: AtomicU64,
    /// Samples source plugins returned that were stored.
    pub source_samples: AtomicU64,
    /// Collections that failed (plugin error or fault).
    pub source_errors: AtomicU64,
    /// NaN or infinite values a source returned, dropped.
    pub source_nonfinite: AtomicU64,
    /// The API's connections open now, and those it closed or turned away to stay within
    /// `[api]`'s limits (see `api/server.rs`).
    pub api_connections_open: AtomicU64,
    pub api_connections_evicted: AtomicU64,
    pub api_connections_refused: AtomicU64,
    pub api_header_timeouts: AtomicU64,
    /// Reads `/api/series` and `/api/decisions` refused with a 503 (the read pool was full).
    pub api_reads_refused: AtomicU64,
}

impl Telemetry {
    pub fn record_tick(&self, took: Duration) {
        let ns = took.as_nanos() as u64;
        self.sampler_ticks.fetch_add(1, Ordering::Relaxed);
        self.sampler_tick_ns_total.fetch_add(ns, Ordering::Relaxed);
        self.sampler_tick_ns_last.store(ns, Ordering::Relaxed);
    }
}
