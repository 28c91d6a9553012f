//! Timestamps of cloud APIs as milliseconds since the Unix epoch, and back: the ISO 8601 shapes
//! OpenStack and AWS write (`2026-11-27T12:30:05Z`, `2026-11-27T13:30:05.000000Z`,
//! `2026-11-27T12:30:05.123456`, `+00:00` offsets), and the ones a signed AWS request carries.

use elastic_civil::{civil_from_days, days_from_civil};

/// Milliseconds since the epoch of an ISO 8601 timestamp; `None` when it is not one.
pub fn iso_to_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, rest) = t.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) =
        (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (clock, offset_s) = match rest.find(['Z', '+']).or_else(|| rest.rfind('-')) {
        Some(i) => {
            let off = &rest[i..];
            let secs = if off == "Z" || off.is_empty() {
                0
            } else {
                let sign = if off.starts_with('-') { -1 } else { 1 };
                let (h, mm) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
                sign * (h.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60)
            };
            (&rest[..i], secs)
        }
        None => (rest, 0),
    };
    let mut c = clock.split(':');
    let (hh, mi): (i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let sec: f64 = c.next().unwrap_or("0").parse().ok()?;
    let days = days_from_civil(y, m, day);
    Some((days * 86_400 + hh * 3600 + mi * 60 - offset_s) * 1000 + (sec * 1000.0).round() as i64)
}

/// `2015-08-30T12:36:00Z`: milliseconds since the epoch as UTC, to the second (AWS's query
/// parameters, e.g. a metric query's start and end).
pub fn ms_to_iso(ms: i64) -> String {
    let (y, m, d, hh, mi, ss) = civil(ms);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mi:02}:{ss:02}Z")
}

/// `20150830T123600Z`, the `X-Amz-Date` of a request signed at `ms`.
pub fn amz_date(ms: i64) -> String {
    let (y, m, d, hh, mi, ss) = civil(ms);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mi:02}{ss:02}Z")
}

/// (year, month, day, hour, minute, second) of `ms` since the epoch, UTC.
fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_go_both_ways() {
        for ms in [0, 1_795_782_605_000, 951_782_400_000, 4_107_542_399_000, -86_400_000] {
            assert_eq!(iso_to_ms(&ms_to_iso(ms)), Some(ms), "{}", ms_to_iso(ms));
        }
        assert_eq!(amz_date(1_440_938_160_000), "20150830T123600Z");
        assert_eq!(ms_to_iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn cloud_timestamp_shapes() {
        assert_eq!(iso_to_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(iso_to_ms("2026-11-27T12:30:05Z"), Some(1_795_782_605_000));
        assert_eq!(iso_to_ms("2026-11-27T12:30:05.250000Z"), Some(1_795_782_605_250));
        assert_eq!(iso_to_ms("2026-11-27T12:30:05.250000"), Some(1_795_782_605_250));
        assert_eq!(iso_to_ms("2026-11-27T13:30:05+01:00"), Some(1_795_782_605_000));
        assert_eq!(iso_to_ms("yesterday"), None);
    }
}
