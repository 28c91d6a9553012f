//! What idle-aware scale-in needs from `agent.toml`: a process's `[process.busy]` probe and
//! `[process.drain]` hook, and a group's `[group.scale_in]` metrics for units that are not
//! supervised replicas (servers).

use super::{ConfigError, Located};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// Something the agent asks of one replica: an HTTP request to a URL or a command (argv, no
/// shell). `{name}`, `{replica}` and `{port}` are filled in per replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    Http { url: String },
    Command { argv: Vec<String> },
}

/// `[process.busy]`: asks a replica how much work it has in flight. The answer (the body, or
/// the command's standard output) is a number, 0 meaning idle; `true`/`false` also do.
#[derive(Debug, Clone, PartialEq)]
pub struct BusyProbe {
    /// HTTP: `GET`.
    pub hook: Hook,
    /// Longest wait for an answer; no answer means "unknown". Default 2s.
    pub timeout: Duration,
}

/// `[process.drain]`: tells a replica chosen for removal to stop taking new work.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    /// HTTP: `POST`.
    pub hook: Hook,
    /// How long the hook may run and, after it, how long the agent waits for the busy probe to
    /// answer 0. A replica still busy then is kept. Default 30s.
    pub deadline: Duration,
    /// Undoes the drain of a replica that was kept after all (`undo_http`, POST, or
    /// `undo_command`). Default none.
    pub undo: Option<Hook>,
}

/// `[group.scale_in]`: where the agent finds how busy each unit of a group is when the units
/// are not supervised replicas (e.g. servers), from series some source writes with a label that
/// names the unit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScaleInRule {
    /// `unit_label`: the label whose value is the unit's name. Default `unit`.
    pub unit_label: String,
    /// `busy`: a metric per unit; its latest value above 0 means busy (never removed).
    pub busy: Option<String>,
    /// `activity`: a metric per unit; the lowest mean over the last minute is removed first.
    pub activity: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBusy {
    http: Option<String>,
    command: Option<Vec<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrain {
    http: Option<String>,
    command: Option<Vec<String>>,
    deadline: Option<Spanned<String>>,
    undo_http: Option<String>,
    undo_command: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScaleIn {
    unit_label: Option<String>,
    busy: Option<String>,
    activity: Option<String>,
}

/// One of `http` and `command`, or neither (`Ok(None)`); both, or an empty command, is an error.
fn one_hook(http: Option<String>, command: Option<Vec<String>>) -> Result<Option<Hook>, &'static str> {
    match (http, command) {
        (None, None) => Ok(None),
        (Some(url), None) if url.starts_with("http://") || url.starts_with("https://") => {
            Ok(Some(Hook::Http { url }))
        }
        (Some(_), None) => Err("must be an http:// or https:// URL"),
        (None, Some(argv)) if !argv.is_empty() && !argv[0].is_empty() => Ok(Some(Hook::Command { argv })),
        (None, Some(_)) => Err("the command must name a program"),
        (Some(_), Some(_)) => Err("give http or command, not both"),
    }
}

/// The table's required hook (`http` or `command`), or an error naming `table`.
fn required_hook(
    http: Option<String>,
    command: Option<Vec<String>>,
    table: &str,
    span: std::ops::Range<usize>,
    field: &dyn Fn(&str) -> String,
    at: &Located,
) -> Result<Hook, ConfigError> {
    match one_hook(http, command) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(at.error(
            Some(span),
            &field(&format!("{table}: give http = \"URL\" or command = [\"prog\", \"arg\"]")),
        )),
        Err(why) => Err(at.error(Some(span), &field(&format!("{table}: {why}")))),
    }
}

pub(super) fn busy(
    raw: Option<Spanned<RawBusy>>,
    field: &dyn Fn(&str) -> String,
    at: &Located,
) -> Result<Option<BusyProbe>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    let hook = required_hook(raw.http, raw.command, "busy", span, field, at)?;
    let timeout = at.duration(&raw.timeout, &field("busy.timeout"), Duration::from_millis(10))?;
    Ok(Some(BusyProbe { hook, timeout: timeout.unwrap_or(Duration::from_secs(2)) }))
}

pub(super) fn drain(
    raw: Option<Spanned<RawDrain>>,
    field: &dyn Fn(&str) -> String,
    at: &Located,
) -> Result<Option<Drain>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    let hook = required_hook(raw.http, raw.command, "drain", span.clone(), field, at)?;
    let undo = one_hook(raw.undo_http, raw.undo_command)
        .map_err(|why| at.error(Some(span), &field(&format!("drain.undo_*: {why}"))))?;
    let deadline = at.duration(&raw.deadline, &field("drain.deadline"), Duration::from_millis(100))?;
    Ok(Some(Drain { hook, deadline: deadline.unwrap_or(Duration::from_secs(30)), undo }))
}

pub(super) fn scale_in(raw: Option<RawScaleIn>) -> ScaleInRule {
    let raw = raw.unwrap_or(RawScaleIn { unit_label: None, busy: None, activity: None });
    ScaleInRule {
        unit_label: raw.unit_label.filter(|l| !l.is_empty()).unwrap_or_else(|| "unit".into()),
        busy: raw.busy.filter(|m| !m.is_empty()),
        activity: raw.activity.filter(|m| !m.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!("[[process]]\nname = \"web\"\ncommand = \"sleep\"\nport = 8000\n{extra}");
        Config::parse(&text, "agent.toml".as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn busy_and_drain_parse_with_their_defaults() {
        let c = parse("[process.busy]\nhttp = \"http://127.0.0.1:{port}/busy\"\n[process.drain]\ncommand = [\"sh\", \"-c\", \"true\"]\nundo_http = \"http://127.0.0.1:{port}/undrain\"\n").unwrap();
        let p = &c.processes[0];
        let busy = p.busy.as_ref().unwrap();
        assert_eq!(busy.timeout, std::time::Duration::from_secs(2));
        let drain = p.drain.as_ref().unwrap();
        assert_eq!(drain.deadline, std::time::Duration::from_secs(30));
        assert!(matches!(&drain.undo, Some(super::Hook::Http { url }) if url.ends_with("/undrain")));
    }

    #[test]
    fn a_wrong_busy_or_drain_names_the_field() {
        let e = parse("[process.busy]\ntimeout = \"1s\"\n").unwrap_err();
        assert!(e.contains("process[web].busy: give http"), "{e}");
        let e = parse("[process.busy]\nhttp = \"localhost/busy\"\n").unwrap_err();
        assert!(e.contains("process[web].busy: must be an http://"), "{e}");
        let e = parse("[process.drain]\nhttp = \"http://a/\"\ncommand = [\"x\"]\n").unwrap_err();
        assert!(e.contains("process[web].drain: give http or command, not both"), "{e}");
        let e = parse("[process.drain]\ncommand = []\n").unwrap_err();
        assert!(e.contains("must name a program"), "{e}");
        let e = parse("[process.drain]\ncommand = [\"x\"]\ndeadline = \"soon\"\n").unwrap_err();
        assert!(e.contains("process[web].drain.deadline"), "{e}");
        let e = parse("[process.busy]\ncommand = [\"x\"]\nretries = 3\n").unwrap_err();
        assert!(e.contains("retries"), "{e}");
    }
}
