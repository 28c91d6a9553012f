//! UTC timestamps as people type and read them: RFC 3339 (`2026-11-27T10:00:00Z`) or Unix
//! seconds, to and from milliseconds since the epoch.

/// Now, in milliseconds since the Unix epoch: the host's one clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), after Howard Hinnant.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

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
