//! What a plugin makes the host spend on its behalf, counted per plugin.
//!
//! The sandbox confines a plugin's own code; this module is the other half: the budgets on what
//! the *agent* does for it (series, samples, log lines, state, outbound HTTP). Each budget is
//! enforced where the work happens, but counted and reported here: one counter per budget in
//! `/status` and `/metrics`, and one log line per episode (the first excess after a quiet
//! minute), never one per event. [`Meter::clean`] is the one way plugin text enters the log,
//! the journal, `/status` and `/metrics`: the values of the plugin's granted secrets masked, then
//! escaped and cut.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::text::{clean, clean_in_place};

/// The budgets a plugin can run into. Their names appear in `/status`, `/metrics` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Budget {
    /// A new series beyond the source's `max_series` (or the store's).
    Series,
    /// A sample whose name or labels are over the size limits.
    SampleShape,
    /// A sample stamped too far in the past or the future.
    SampleTime,
    /// Log lines over the rate limit.
    LogLines,
    /// State writes refused: total size or write rate.
    State,
    /// Outbound requests over the per-call count.
    HttpRequests,
    /// Outbound requests over the concurrency limit.
    HttpConcurrency,
    /// Outbound requests over the per-origin rate.
    HttpRate,
    /// Responses cut at the bytes-per-call budget.
    HttpBytes,
    /// Responses cut at the total time per response.
    HttpTime,
    /// Requests still open when the call ended, cancelled.
    HttpAbandoned,
    /// Asks for what it was not granted (an origin, a process, an unreadable secret).
    Denied,
}

const ALL: [Budget; 12] = [
    Budget::Series,
    Budget::SampleShape,
    Budget::SampleTime,
    Budget::LogLines,
    Budget::State,
    Budget::HttpRequests,
    Budget::HttpConcurrency,
    Budget::HttpRate,
    Budget::HttpBytes,
    Budget::HttpTime,
    Budget::HttpAbandoned,
    Budget::Denied,
];

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Series => "series",
            Budget::SampleShape => "sample-shape",
            Budget::SampleTime => "sample-time",
            Budget::LogLines => "log-lines",
            Budget::State => "state",
            Budget::HttpRequests => "http-requests",
            Budget::HttpConcurrency => "http-concurrency",
            Budget::HttpRate => "http-rate",
            Budget::HttpBytes => "http-bytes",
            Budget::HttpTime => "http-time",
            Budget::HttpAbandoned => "http-abandoned",
            Budget::Denied => "denied",
        }
    }
}

/// A quiet spell this long ends an episode: the next excess is logged again.
pub const EPISODE_GAP: Duration = Duration::from_secs(60);

/// One plugin's counters. Shared by its worker, its instances and the collector.
pub struct Meter {
    plugin: Arc<str>,
    counts: [AtomicU64; ALL.len()],
    /// Per budget: when the current episode's last event happened, and its count so far.
    episodes: Mutex<[Option<(Instant, u64)>; ALL.len()]>,
    log: Mutex<LogBucket>,
    /// The values of the secrets granted to the plugin, masked in all it writes: in the order
    /// they were remembered, and longest first.
    secrets: std::sync::RwLock<(Vec<String>, Vec<String>)>,
}

/// What a secret's value is replaced with in a plugin's text.
pub const MASK: &str = "***";
/// Values shorter than this are not masked: masking `1` would garble every number.
pub const MIN_MASKED: usize = 4;
/// Most secret values remembered per plugin (values of rotated secrets stay masked).
const MAX_SECRETS: usize = 64;

impl Meter {
    /// The name of the plugin this meter counts for.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn new(plugin: Arc<str>, log: LogLimits) -> Arc<Meter> {
        Arc::new(Meter {
            plugin,
            counts: Default::default(),
            episodes: Mutex::new([None; ALL.len()]),
            log: Mutex::new(LogBucket::new(log)),
            secrets: Default::default(),
        })
    }

    /// Masks `value` from now on in everything the plugin writes. The values remembered
    /// longest ago are forgotten first (a value read again — a granted secret, at every load —
    /// counts as new).
    pub fn remember_secret(&self, value: &str) {
        if value.len() < MIN_MASKED {
            return;
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        let (order, by_length) = &mut *secrets;
        order.retain(|s| s != value);
        order.push(value.to_string());
        if order.len() > MAX_SECRETS {
            order.remove(0);
        }
        // Masked longest first: a secret that contains another is masked whole.
        *by_length = order.clone();
        by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Plugin text made safe for the agent's outputs: the plugin's secrets masked, then
    /// [`crate::text::clean`]ed to at most `max` bytes.
    pub fn clean(&self, text: &str, max: usize) -> String {
        crate::text::clean(&self.mask(text), max)
    }

    /// [`Meter::clean`] in place; allocates nothing when the text needs no change.
    pub fn clean_in_place(&self, text: &mut String, max: usize) {
        self.mask_in_place(text);
        crate::text::clean_in_place(text, max);
    }

    /// Only masks the plugin's secrets in `text` (for sample names and labels, which the
    /// collector shapes).
    pub fn mask_in_place(&self, text: &mut String) {
        if let std::borrow::Cow::Owned(masked) = self.mask(text) {
            *text = masked;
        }
    }

    fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let mut out = std::borrow::Cow::Borrowed(text);
        for secret in secrets.1.iter() {
            if out.contains(secret.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        out
    }

    /// New log limits (a reloaded configuration); the counters carry on.
    pub fn set_log_limits(&self, log: LogLimits) {
        *self.log.lock().unwrap_or_else(|p| p.into_inner()) = LogBucket::new(log);
    }

    /// Counts `n` events over budget `b`. Logs `what` (plugin text in it must be cleaned;
    /// the plugin's secrets are masked here) only when this starts an episode.
    pub fn exceeded(&self, b: Budget, n: u64, what: impl FnOnce() -> String) {
        self.counts[b as usize].fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        let mut episodes = lock(&self.episodes);
        let slot = &mut episodes[b as usize];
        let (starts, before) = match *slot {
            Some((last, count)) if now.duration_since(last) < EPISODE_GAP => (false, count),
            Some((_, count)) => (true, count),
            None => (true, 0),
        };
        *slot = Some((now, if starts { n } else { before + n }));
        drop(episodes);
        if starts {
            let previous = if before > 0 { format!(" (previous episode: {before})") } else { String::new() };
            tracing::warn!(
                plugin = %self.plugin,
                "over its {} budget: {}; further excess is counted in /status and logged again after a quiet minute{previous}",
                b.as_str(),
                self.mask(&what())
            );
        }
    }

    pub fn count(&self, b: Budget) -> u64 {
        self.counts[b as usize].load(Ordering::Relaxed)
    }

    /// The budgets exceeded so far, with their counts.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        ALL.iter().map(|&b| (b.as_str(), self.count(b))).filter(|(_, n)| *n > 0).collect()
    }

    /// Whether a log line of `bytes` may be written now. A line that may be written after some
    /// were suppressed is preceded by one summary line.
    pub fn admit_log(&self, bytes: usize) -> bool {
        let mut bucket = lock(&self.log);
        let admitted = bucket.take(bytes, Instant::now());
        if !admitted {
            drop(bucket);
            self.counts[Budget::LogLines as usize].fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some((lines, bytes, since)) = bucket.suppressed.take() {
            drop(bucket);
            tracing::warn!(
                plugin = %self.plugin,
                "suppressed {lines} log lines ({bytes} bytes) over {:.1}s: over its log-lines budget",
                since.elapsed().as_secs_f64()
            );
        }
        true
    }
}

pub use crate::config::values::LogLimits;

struct LogBucket {
    lines: TokenBucket,
    bytes: TokenBucket,
    /// Lines and bytes suppressed since the first suppression of this run.
    suppressed: Option<(u64, u64, Instant)>,
}

impl LogBucket {
    fn new(l: LogLimits) -> LogBucket {
        LogBucket {
            lines: TokenBucket::new(l.lines_per_sec, l.lines_per_sec * l.burst_secs),
            bytes: TokenBucket::new(l.bytes_per_sec, l.bytes_per_sec * l.burst_secs),
            suppressed: None,
        }
    }

    /// A line of `bytes` takes a line and its bytes, both or neither.
    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        self.lines.refill(now);
        self.bytes.refill(now);
        if self.lines.tokens >= 1.0 && self.bytes.tokens >= bytes as f64 {
            self.lines.tokens -= 1.0;
            self.bytes.tokens -= bytes as f64;
            return true;
        }
        let s = self.suppressed.get_or_insert((0, 0, now));
        s.0 += 1;
        s.1 += bytes as u64;
        false
    }
}

pub use crate::rate::TokenBucket;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_longest_first_and_the_oldest_forgotten_first() {
        let m = Meter::new("p".into(), LogLimits::default());
        m.remember_secret("abc"); // too short to mask
        m.remember_secret("hunter2");
        m.remember_secret("hunter2-long-form");
        assert_eq!(m.clean("a hunter2-long-form and hunter2, abc\n", 100), "a *** and ***, abc\\n");
        // 64 rotations of a short token: the long secret, read again at each load, stays.
        for i in 0..100 {
            m.remember_secret(&format!("tok-{i:04}"));
            if i % 10 == 0 {
                m.remember_secret("hunter2-long-form");
            }
        }
        assert_eq!(m.clean("hunter2-long-form tok-0099 tok-0000", 100), "*** *** tok-0000");
    }

    #[test]
    fn log_bucket_admits_a_burst_then_the_rate() {
        let limits = LogLimits { lines_per_sec: 10.0, bytes_per_sec: 1000.0, burst_secs: 2.0 };
        let mut b = LogBucket::new(limits);
        let t0 = b.lines.at;
        let admitted = (0..100).filter(|_| b.take(10, t0)).count();
        assert_eq!(admitted, 20, "the burst is 2 s of 10 lines/s");
        assert_eq!(b.suppressed.map(|s| s.0), Some(80));
        // One second later ten more lines, but large lines run out of bytes first: 1800 bytes
        // were left in the 2000-byte bucket.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..4).filter(|_| b.take(600, t1)).count(), 3);
    }

    #[test]
    fn exceeded_counts_every_event_and_reports_nonzero_budgets() {
        let m = Meter::new("p".into(), LogLimits::default());
        m.exceeded(Budget::Series, 3, || "x".into());
        m.exceeded(Budget::Series, 2, || panic!("not logged twice in an episode"));
        assert_eq!(m.count(Budget::Series), 5);
        assert_eq!(m.counts().into_iter().collect::<Vec<_>>(), [("series", 5)]);
    }
}
