//! When to try a failed cloud request again: exponential backoff with full jitter, and the
//! server's own `Retry-After`. One implementation for every backend and source.

/// Seconds from a `Retry-After` header (delta-seconds form; an HTTP date is ignored).
pub fn retry_after(header: Option<&str>) -> Option<f64> {
    let v: f64 = header?.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Backoff before attempt `attempt` (1-based): exponential from 0.5 s, capped at 8 s, with full
/// jitter (`unit` in [0, 1)) so many agents do not retry in step. A `Retry-After` wins, up to 60 s.
pub fn backoff_seconds(attempt: u32, retry_after: Option<f64>, unit: f64) -> f64 {
    if let Some(s) = retry_after {
        return s.min(60.0);
    }
    let ceiling = (0.5 * 2f64.powi(attempt.saturating_sub(1) as i32)).min(8.0);
    ceiling * (0.5 + unit / 2.0)
}

/// A random number in [0, 1), for the jitter.
#[cfg(feature = "http")]
pub fn unit_random() -> f64 {
    (wasip2::random::random::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        assert_eq!(backoff_seconds(1, None, 0.0), 0.25);
        assert_eq!(backoff_seconds(3, None, 1.0), 2.0);
        assert_eq!(backoff_seconds(10, None, 1.0), 8.0);
        assert_eq!(backoff_seconds(1, retry_after(Some("2")), 0.5), 2.0);
        assert_eq!(backoff_seconds(1, retry_after(Some("3600")), 0.5), 60.0);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
