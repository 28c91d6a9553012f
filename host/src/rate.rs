//! Rate limits: a token bucket (a plugin's log lines, HTTP requests, state writes).

use std::time::Instant;

/// A token bucket: `rate` per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    pub(crate) rate: f64,
    pub(crate) burst: f64,
    pub(crate) tokens: f64,
    pub(crate) at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket { rate, burst, tokens: burst, at: Instant::now() }
    }

    pub(crate) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64) -> bool {
        self.refill(Instant::now());
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// As [`TokenBucket::take`], but a full bucket lets one take larger than itself through
    /// (the debt is paid back before the next), so the rate holds on average.
    pub fn take_with_debt(&mut self, n: f64) -> bool {
        self.refill(Instant::now());
        if self.tokens >= n || self.tokens >= self.burst {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}
