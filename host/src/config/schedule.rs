//! `[[group.schedule]]`: windows that change a group's bounds on a calendar (see
//! [`crate::decide::schedule`] for what they do).

use super::{ConfigError, Located};
use crate::decide::schedule::{Cron, When, Window};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    name: Option<String>,
    cron: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    min: Option<u32>,
    max: Option<Spanned<u32>>,
    desired: Option<u32>,
    #[serde(default)]
    priority: i32,
}

fn instant(t: &Spanned<String>, field: &str, at: &Located) -> Result<i64, ConfigError> {
    chrono::DateTime::parse_from_rfc3339(t.get_ref()).map(|d| d.timestamp_millis()).map_err(|e| {
        at.error(
            Some(t.span()),
            &format!(
                "{field}: `{}` is not an RFC 3339 time like 2026-12-24T18:00:00+01:00 ({e})",
                t.get_ref()
            ),
        )
    })
}

/// Validates one group's schedule entries; `group` names it in messages.
pub(super) fn validate(
    raw: Vec<Spanned<RawSchedule>>,
    group: &str,
    at: &Located,
) -> Result<Vec<Window>, ConfigError> {
    let mut out: Vec<Window> = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let span = entry.span();
        let s = entry.into_inner();
        let name = s.name.unwrap_or_else(|| format!("schedule {}", i + 1));
        let field = |f: &str| format!("group[{group}].schedule[{name}].{f}");
        let tz = match &s.timezone {
            None => chrono_tz::UTC,
            Some(t) => t.get_ref().parse::<chrono_tz::Tz>().map_err(|_| {
                at.error(
                    Some(t.span()),
                    &format!(
                        "{}: `{}` is not an IANA time zone like Europe/Berlin",
                        field("timezone"),
                        t.get_ref()
                    ),
                )
            })?,
        };
        let when = match (&s.cron, &s.start, &s.end) {
            (Some(c), None, None) => {
                let cron = Cron::parse(c.get_ref())
                    .map_err(|e| at.error(Some(c.span()), &format!("{}: {e}", field("cron"))))?;
                let duration = at
                    .duration(&s.duration, &field("duration"), Duration::from_secs(60))?
                    .ok_or_else(|| {
                        at.error(
                            Some(c.span()),
                            &format!(
                                "{}: a cron window needs `duration` (how long it stays open, e.g. \"10h\")",
                                field("cron")
                            ),
                        )
                    })?;
                if duration > Duration::from_secs(31 * 86_400) {
                    return Err(at.error(
                        s.duration.as_ref().map(|d| d.span()),
                        &format!("{}: at most 31d", field("duration")),
                    ));
                }
                When::Cron { cron, duration }
            }
            (None, Some(a), Some(b)) => {
                let (start_ms, end_ms) = (instant(a, &field("start"), at)?, instant(b, &field("end"), at)?);
                if end_ms <= start_ms {
                    return Err(at.error(Some(b.span()), &format!("{}: must be after start", field("end"))));
                }
                When::Fixed { start_ms, end_ms }
            }
            _ => {
                return Err(at.error(
                    Some(span),
                    &format!(
                        "{}: give either `cron` (with `duration`) or both `start` and `end`",
                        field("when")
                    ),
                ))
            }
        };
        if let (Some(lo), Some(hi)) = (s.min, &s.max) {
            if lo > *hi.get_ref() {
                return Err(at.error(
                    Some(hi.span()),
                    &format!("{}: {} is below min {lo}", field("max"), hi.get_ref()),
                ));
            }
        }
        if s.min.is_none() && s.max.is_none() && s.desired.is_none() {
            return Err(at.error(Some(span), &format!("{}: sets none of min, max, desired", field("when"))));
        }
        if out.iter().any(|w| w.name == name) {
            return Err(
                at.error(Some(span), &format!("{}: two schedule entries have this name", field("name")))
            );
        }
        out.push(Window {
            name,
            when,
            tz,
            min: s.min,
            max: s.max.map(|m| m.into_inner()),
            desired: s.desired,
            priority: s.priority,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(schedule: &str) -> Result<Config, String> {
        let text = format!(
            "[[group]]\nname = \"web\"\npolicy = \"p\"\nbackend = \"b\"\nmin = 1\nmax = 4\n[[group.schedule]]\n{schedule}"
        );
        Config::parse(&text, std::path::Path::new("agent.toml")).map_err(|e| e.0)
    }

    #[test]
    fn schedule_errors_name_the_group_the_entry_and_the_field() {
        for (entry, says) in [
            (
                "name = \"x\"\ncron = \"0 8 * * *\"\nmax = 2\n",
                "group[web].schedule[x].cron: a cron window needs `duration`",
            ),
            (
                "cron = \"0 8 * *\"\nduration = \"1h\"\nmax = 2\n",
                "group[web].schedule[schedule 1].cron: `0 8 * *` has 4 fields",
            ),
            (
                "cron = \"0 8 * * *\"\nduration = \"1h\"\ntimezone = \"Mars/Olympus\"\nmax = 2\n",
                "timezone: `Mars/Olympus` is not an IANA time zone",
            ),
            (
                "start = \"2026-12-24\"\nend = \"2026-12-25T00:00:00Z\"\nmax = 2\n",
                "start: `2026-12-24` is not an RFC 3339 time",
            ),
            (
                "start = \"2026-12-25T00:00:00Z\"\nend = \"2026-12-24T00:00:00Z\"\nmax = 2\n",
                "end: must be after start",
            ),
            (
                "cron = \"0 8 * * *\"\nduration = \"1h\"\nstart = \"2026-12-25T00:00:00Z\"\nmax = 2\n",
                "give either `cron`",
            ),
            ("cron = \"0 8 * * *\"\nduration = \"1h\"\nmin = 5\nmax = 2\n", "max: 2 is below min 5"),
            ("cron = \"0 8 * * *\"\nduration = \"1h\"\n", "sets none of min, max, desired"),
        ] {
            let e = parse(entry).unwrap_err();
            assert!(e.starts_with("agent.toml:") && e.contains(says), "{entry}: {e}");
        }
        let c = parse(
            "cron = \"0 8 * * mon-fri\"\nduration = \"10h\"\ntimezone = \"America/New_York\"\nmin = 3\n",
        )
        .unwrap();
        let w = &c.groups[0].schedules[0];
        assert_eq!(
            (w.name.as_str(), w.min, w.max, w.tz),
            ("schedule 1", Some(3), None, chrono_tz::America::New_York)
        );
    }
}
