//! Human durations as the agent's configuration and its plugins write them: `250ms`, `5s`, `2m`,
//! `1h`, `7d`.

use std::time::Duration;

/// Parses `<number><unit>` with unit one of `ms`, `s`, `m`, `h`, `d`. The number may be fractional.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. `500ms`, `5s`, `2m`, `1h` or `7d`"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` does not start with a number"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("`{text}` has unknown unit `{unit}`: use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// Formats a duration the way [`parse`] reads it, choosing the largest exact unit.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86400));
    }

    #[test]
    fn rejects_missing_or_unknown_units_with_a_hint() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("number"));
    }

    #[test]
    fn format_round_trips() {
        for text in ["250ms", "5s", "2m", "1h", "7d", "1500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
