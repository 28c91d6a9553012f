//! The timestamps OpenStack writes (`2026-11-27T12:30:05Z`, `2026-11-27T13:30:05.000000Z`,
//! `2026-11-27T12:30:05.123456`, `+00:00` offsets) as milliseconds since the Unix epoch.

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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openstack_timestamp_shapes() {
        assert_eq!(iso_to_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(iso_to_ms("2026-11-27T12:30:05Z"), Some(1_795_782_605_000));
        assert_eq!(iso_to_ms("2026-11-27T12:30:05.250000Z"), Some(1_795_782_605_250));
        assert_eq!(iso_to_ms("2026-11-27T12:30:05.250000"), Some(1_795_782_605_250));
        assert_eq!(iso_to_ms("2026-11-27T13:30:05+01:00"), Some(1_795_782_605_000));
        assert_eq!(iso_to_ms("yesterday"), None);
    }
}
