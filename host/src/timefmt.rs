//! UTC timestamps as people type and read them: RFC 3339 (`2026-11-27T10:00:00Z`) or Unix
//! seconds, to and from milliseconds since the epoch.

/// Now, in milliseconds since the Unix epoch: the host's one clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

use elastic_civil::{civil_from_days, days_from_civil};

/// `2026-11-27T10:00:00.123Z`.
pub fn format(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses Unix seconds (`1764237600`, `1764237600.5`) or RFC 3339 with `Z` or an offset.
pub fn parse(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(seconds) = t.parse::<f64>() {
        return Ok((seconds * 1000.0).round() as i64);
    }
    let bad = || format!("`{t}` is not a time: write RFC 3339 (2026-11-27T10:00:00Z) or Unix seconds");
    let (date, time) = t.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>());
    let (y, mo, d) = match (ymd.next(), ymd.next(), ymd.next(), ymd.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(d)), None) if (1..=12).contains(&m) && (1..=31).contains(&d) => {
            (y, m, d)
        }
        _ => return Err(bad()),
    };
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').ok_or_else(bad)?;
        let minutes = oh.parse::<i64>().map_err(|_| bad())? * 60 + om.parse::<i64>().map_err(|_| bad())?;
        (c, sign * minutes * 60_000)
    } else {
        return Err(format!("`{t}` has no time zone: end it with Z (UTC) or an offset like +01:00"));
    };
    let mut hms = clock.split(':');
    let (h, mi, s) = match (hms.next(), hms.next(), hms.next(), hms.next()) {
        (Some(h), Some(m), Some(s), None) => (
            h.parse::<i64>().map_err(|_| bad())?,
            m.parse::<i64>().map_err(|_| bad())?,
            s.parse::<f64>().map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    };
    let ms =
        days_from_civil(y, mo, d) * 86_400_000 + h * 3_600_000 + mi * 60_000 + (s * 1000.0).round() as i64;
    Ok(ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_agrees_with_known_instants() {
        assert_eq!(parse("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse("2000-03-01T00:00:00Z").unwrap(), 951_868_800_000);
        assert_eq!(parse("1995-07-01T04:00:00Z").unwrap(), 804_571_200_000, "first minute of the NASA trace");
        assert_eq!(parse("2026-11-27T11:00:00+01:00").unwrap(), parse("2026-11-27T10:00:00Z").unwrap());
        assert_eq!(parse("804571200").unwrap(), 804_571_200_000);
        for ms in [0, 951_868_800_123, 1_764_237_600_500, -86_400_000] {
            assert_eq!(parse(&format(ms)).unwrap(), ms);
        }
        assert_eq!(format(804_571_260_000), "1995-07-01T04:01:00.000Z");
        assert!(parse("2026-11-27T10:00:00").unwrap_err().contains("time zone"));
        assert!(parse("yesterday").is_err());
    }
}
