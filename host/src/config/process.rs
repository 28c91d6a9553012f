//! `[[process]]`: what the supervisor runs. Raw TOML → validated [`ProcessSpec`]; every error
//! names the entry (`process[web]`) and the field.

use super::{ConfigError, Located};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// One supervised program and its replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// Unique name; labels its metrics and log lines.
    pub name: String,
    /// The program. Run directly (no shell) unless `shell = true`, then `sh -c COMMAND`.
    pub command: String,
    pub args: Vec<String>,
    /// The program's own variables, on top of a clean base (see `supervisor::launch`).
    pub env: BTreeMap<String, String>,
    /// Its identity, umask, `env_file`, `pass_env` and `credentials`.
    pub launch: super::run_as::Launch,
    pub working_dir: Option<PathBuf>,
    pub shell: bool,
    /// How many instances. Default 1.
    pub replicas: u32,
    /// Base port: replica `i` gets `port + i` in `PORT` and `{port}`.
    pub port: Option<u16>,
    pub restart: Restart,
    /// Exit codes that count as success for `restart = "on-failure"`. Default `[0]`.
    pub success_exit_codes: Vec<i32>,
    pub backoff: Backoff,
    pub start_limit: StartLimit,
    /// Sent to the whole process group to stop it. Default SIGTERM.
    pub stop_signal: i32,
    /// Time between the stop signal and SIGKILL. Default 10s.
    pub stop_grace: Duration,
    pub health: Option<HealthCheck>,
    pub log: Option<LogFiles>,
    /// `memory_max` (bytes) and `cpu_max` (cores), applied through the instance's cgroup.
    pub limits: crate::config::values::Limits,
    /// `sockets`: TCP addresses the supervisor listens on and hands to every replica
    /// (systemd socket activation: descriptors 3, 4, …, `LISTEN_FDS`, `LISTEN_PID`).
    pub sockets: Vec<std::net::SocketAddr>,
    /// `log_output`: also copy the program's lines into the agent's log, at this level.
    /// Default: not (they go to the instance's ring, `agent logs`, and its files).
    pub log_output: Option<tracing::Level>,
    /// `[process.busy]`: how busy each replica is, asked before a scale-in chooses victims.
    pub busy: Option<super::scale_in::BusyProbe>,
    /// `[process.drain]`: what tells a replica chosen for removal to stop taking work.
    pub drain: Option<super::scale_in::Drain>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

/// Delay before restart `n` (n ≥ 1 failures in a row): `initial × multiplier^(n-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
    /// Running (and healthy, if checked) this long resets the failure count.
    pub reset_after: Duration,
}

impl Backoff {
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = self.multiplier.powi(failures.saturating_sub(1).min(64) as i32);
        Duration::try_from_secs_f64(self.initial.as_secs_f64() * factor).unwrap_or(self.max).min(self.max)
    }
}

/// `count` starts within `interval` → the instance is `failed` and not restarted until
/// `agent restart NAME` or a configuration change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartLimit {
    pub count: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures during this time after a start do not count.
    pub start_period: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// GET, 2xx expected, and the body must contain the text if given.
    Http { url: String, body_contains: Option<String> },
    /// A TCP connect to `host:port`.
    Tcp { address: String },
    /// A command that must exit 0 (argv, no shell).
    Command { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogFiles {
    pub dir: PathBuf,
    /// Rotate when a file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (`NAME-R.log.1` … `.N`).
    pub keep: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    name: Spanned<String>,
    command: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    working_dir: Option<PathBuf>,
    #[serde(default)]
    shell: bool,
    replicas: Option<Spanned<u32>>,
    port: Option<u16>,
    restart: Option<Spanned<String>>,
    success_exit_codes: Option<Vec<i32>>,
    #[serde(default)]
    backoff: RawBackoff,
    #[serde(default)]
    start_limit: RawStartLimit,
    stop_signal: Option<Spanned<String>>,
    stop_grace: Option<Spanned<String>>,
    health: Option<Spanned<RawHealth>>,
    log: Option<RawLog>,
    memory_max: Option<Spanned<String>>,
    cpu_max: Option<Spanned<String>>,
    log_output: Option<Spanned<toml::Value>>,
    #[serde(default)]
    sockets: Vec<Spanned<String>>,
    busy: Option<Spanned<super::scale_in::RawBusy>>,
    drain: Option<Spanned<super::scale_in::RawDrain>>,
    user: Option<Spanned<toml::Value>>,
    group: Option<Spanned<toml::Value>>,
    supplementary_groups: Option<Spanned<Vec<toml::Value>>>,
    umask: Option<Spanned<String>>,
    env_file: Option<PathBuf>,
    #[serde(default)]
    pass_env: Vec<String>,
    #[serde(default)]
    credentials: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<Spanned<String>>,
    multiplier: Option<Spanned<f64>>,
    max: Option<Spanned<String>>,
    reset_after: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStartLimit {
    count: Option<Spanned<u32>>,
    interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    http: Option<String>,
    body_contains: Option<String>,
    tcp: Option<String>,
    command: Option<Vec<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    start_period: Option<Spanned<String>>,
    failure_threshold: Option<Spanned<u32>>,
    success_threshold: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    dir: PathBuf,
    max_kib: Option<u64>,
    keep: Option<u32>,
}

/// Signal names as `kill -l` prints them, with or without `SIG`.
pub fn parse_signal(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    Some(match n {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

/// `512MiB`, `2GiB`, `100KiB`, `1048576` (bytes); also `M`, `G`, `K`, `MB`, `GB` as binary units.
/// The one size syntax of the agent: agent.toml and the command line.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// `50%` → 0.5 cores; `250%` → 2.5 cores (systemd's CPUQuota).
fn parse_percent(text: &str) -> Option<f64> {
    let v: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some(v / 100.0)
}

pub(super) fn validate(raw: Vec<RawProcess>, at: &Located) -> Result<Vec<ProcessSpec>, ConfigError> {
    let mut specs: Vec<ProcessSpec> = Vec::new();
    for p in raw {
        let name = p.name.get_ref().clone();
        let field = |f: &str| format!("process[{name}].{f}");
        if !super::valid_plugin_name(&name) {
            return Err(at.error(
                Some(p.name.span()),
                &format!("process[{name}].name: lower-case letters, digits and `-` only"),
            ));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(at.error(
                Some(p.name.span()),
                &format!("process[{name}].name: another [[process]] has this name"),
            ));
        }
        if p.command.get_ref().trim().is_empty() {
            return Err(at.error(Some(p.command.span()), &field("command: must name a program")));
        }
        let duration =
            |d: &Option<Spanned<String>>, f: &str, default: Duration| -> Result<Duration, ConfigError> {
                Ok(at.duration(d, &field(f), Duration::ZERO)?.unwrap_or(default))
            };
        let replicas = match &p.replicas {
            None => 1,
            Some(r) if *r.get_ref() <= 1000 => *r.get_ref(),
            Some(r) => return Err(at.error(Some(r.span()), &field("replicas: at most 1000"))),
        };
        if let (Some(port), true) = (p.port, replicas > 1) {
            if u32::from(port) + replicas - 1 > 65535 {
                return Err(at.error(Some(p.name.span()), &field("port: port + replicas - 1 is past 65535")));
            }
        }
        let restart = match p.restart.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
            None | Some(("always", _)) => Restart::Always,
            Some(("on-failure", _)) => Restart::OnFailure,
            Some(("never", _)) => Restart::Never,
            Some((other, span)) => {
                return Err(at.error(
                    Some(span),
                    &format!("{}: `{other}` is not always, on-failure or never", field("restart")),
                ))
            }
        };
        let multiplier = match &p.backoff.multiplier {
            None => 2.0,
            Some(m) if *m.get_ref() >= 1.0 && m.get_ref().is_finite() => *m.get_ref(),
            Some(m) => return Err(at.error(Some(m.span()), &field("backoff.multiplier: must be at least 1"))),
        };
        let backoff = Backoff {
            initial: duration(&p.backoff.initial, "backoff.initial", Duration::from_secs(1))?,
            multiplier,
            max: duration(&p.backoff.max, "backoff.max", Duration::from_secs(60))?,
            reset_after: duration(&p.backoff.reset_after, "backoff.reset_after", Duration::from_secs(60))?,
        };
        let start_limit = StartLimit {
            count: match &p.start_limit.count {
                None => 10,
                Some(c) if *c.get_ref() >= 1 => *c.get_ref(),
                Some(c) => return Err(at.error(Some(c.span()), &field("start_limit.count: at least 1"))),
            },
            interval: duration(&p.start_limit.interval, "start_limit.interval", Duration::from_secs(300))?,
        };
        let stop_signal = match &p.stop_signal {
            None => libc::SIGTERM,
            Some(s) => parse_signal(s.get_ref()).ok_or_else(|| {
                at.error(
                    Some(s.span()),
                    &format!(
                        "{}: `{}` is not one of TERM, INT, HUP, QUIT, KILL, USR1, USR2, WINCH",
                        field("stop_signal"),
                        s.get_ref()
                    ),
                )
            })?,
        };
        let health = match p.health {
            None => None,
            Some(h) => {
                let span = h.span();
                let h = h.into_inner();
                let probe = match (h.http, h.tcp, h.command) {
                    (Some(url), None, None) => Probe::Http { url, body_contains: h.body_contains },
                    (None, Some(address), None) => Probe::Tcp { address },
                    (None, None, Some(argv)) if !argv.is_empty() => Probe::Command { argv },
                    _ => return Err(at.error(Some(span), &field("health: give exactly one of http = \"URL\", tcp = \"HOST:PORT\" or command = [\"prog\", \"arg\"]"))),
                };
                let count = |c: &Option<Spanned<u32>>, f: &str, default: u32| -> Result<u32, ConfigError> {
                    match c {
                        None => Ok(default),
                        Some(c) if *c.get_ref() >= 1 => Ok(*c.get_ref()),
                        Some(c) => Err(at.error(Some(c.span()), &format!("{}: at least 1", field(f)))),
                    }
                };
                let positive = |d: &Option<Spanned<String>>, f: &str, default: Duration| {
                    Ok::<_, ConfigError>(
                        at.duration(d, &field(f), Duration::from_millis(10))?.unwrap_or(default),
                    )
                };
                Some(HealthCheck {
                    probe,
                    interval: positive(&h.interval, "health.interval", Duration::from_secs(5))?,
                    timeout: positive(&h.timeout, "health.timeout", Duration::from_secs(2))?,
                    start_period: duration(&h.start_period, "health.start_period", Duration::ZERO)?,
                    failure_threshold: count(&h.failure_threshold, "health.failure_threshold", 3)?,
                    success_threshold: count(&h.success_threshold, "health.success_threshold", 1)?,
                })
            }
        };
        let stop_grace = duration(&p.stop_grace, "stop_grace", Duration::from_secs(10))?;
        let limits = crate::config::values::Limits {
            memory_max: match &p.memory_max {
                None => None,
                Some(m) => Some(parse_size(m.get_ref()).filter(|b| *b >= 1 << 20).ok_or_else(|| {
                    at.error(
                        Some(m.span()),
                        &format!(
                            "{}: `{}` is not a size of at least 1MiB like 512MiB or 2GiB",
                            field("memory_max"),
                            m.get_ref()
                        ),
                    )
                })?),
            },
            cpu_max: match &p.cpu_max {
                None => None,
                Some(c) => Some(parse_percent(c.get_ref()).filter(|v| *v >= 0.01).ok_or_else(|| {
                    at.error(
                        Some(c.span()),
                        &format!(
                            "{}: `{}` is not a share of a core of at least 1% like 50% or 200%",
                            field("cpu_max"),
                            c.get_ref()
                        ),
                    )
                })?),
            },
        };
        let log_output = match &p.log_output {
            None => None,
            Some(v) => match v.get_ref() {
                toml::Value::Boolean(true) => Some(tracing::Level::INFO),
                toml::Value::Boolean(false) => None,
                toml::Value::String(level) => Some(level.parse::<tracing::Level>().map_err(|_| {
                    at.error(
                        Some(v.span()),
                        &format!(
                            "{}: `{level}` is not error, warn, info, debug or trace",
                            field("log_output")
                        ),
                    )
                })?),
                _ => {
                    return Err(
                        at.error(Some(v.span()), &field("log_output: true, false or a level (\"debug\")"))
                    )
                }
            },
        };
        let mut sockets = Vec::new();
        for a in &p.sockets {
            let addr = a.get_ref().parse().map_err(|_| {
                at.error(
                    Some(a.span()),
                    &format!("{}: `{}` is not an address like 127.0.0.1:8081", field("sockets"), a.get_ref()),
                )
            })?;
            sockets.push(addr);
        }
        if sockets.len() > crate::config::values::MAX_SOCKETS {
            return Err(at.error(Some(p.name.span()), &field("sockets: at most 16")));
        }
        let raw_launch = super::run_as::RawLaunch {
            user: p.user,
            group: p.group,
            supplementary_groups: p.supplementary_groups,
            umask: p.umask,
            env_file: p.env_file,
            pass_env: p.pass_env,
            credentials: p.credentials,
        };
        let launch = super::run_as::validate(raw_launch, &field, at)?;
        let busy = super::scale_in::busy(p.busy, &field, at)?;
        let drain = super::scale_in::drain(p.drain, &field, at)?;
        specs.push(ProcessSpec {
            name: name.clone(),
            command: p.command.into_inner(),
            args: p.args,
            env: p.env,
            launch,
            working_dir: p.working_dir,
            shell: p.shell,
            replicas,
            port: p.port,
            restart,
            success_exit_codes: p.success_exit_codes.unwrap_or_else(|| vec![0]),
            backoff,
            start_limit,
            stop_signal,
            stop_grace,
            health,
            log: p.log.map(|l| LogFiles {
                dir: l.dir,
                max_bytes: l.max_kib.unwrap_or(10 * 1024).clamp(1, 1 << 30) * 1024,
                keep: l.keep.unwrap_or(3),
            }),
            limits,
            log_output,
            sockets,
            busy,
            drain,
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn sizes_and_cpu_shares_parse() {
        assert_eq!(super::parse_size("512MiB"), Some(512 << 20));
        assert_eq!(super::parse_size("2G"), Some(2 << 30));
        assert_eq!(super::parse_size("1048576"), Some(1 << 20));
        assert_eq!(super::parse_size("lots"), None);
        assert_eq!(super::parse_percent("50%"), Some(0.5));
        assert_eq!(super::parse_percent("250 %"), Some(2.5));
        assert_eq!(super::parse_percent("0.5"), None);
        let e = Config::parse(
            "[[process]]\nname = \"a\"\ncommand = \"x\"\ncpu_max = \"half\"\n",
            "t.toml".as_ref(),
        )
        .unwrap_err()
        .0;
        assert!(e.contains("t.toml:4:11: process[a].cpu_max: `half` is not a share"), "{e}");
        let with = |v: &str| {
            Config::parse(
                &format!("[[process]]\nname = \"a\"\ncommand = \"x\"\nlog_output = {v}\n"),
                "t.toml".as_ref(),
            )
        };
        assert_eq!(with("true").unwrap().processes[0].log_output, Some(tracing::Level::INFO));
        assert_eq!(with("\"debug\"").unwrap().processes[0].log_output, Some(tracing::Level::DEBUG));
        assert_eq!(with("false").unwrap().processes[0].log_output, None);
        let e = with("\"loud\"").unwrap_err().0;
        assert!(e.contains("process[a].log_output: `loud` is not error, warn, info, debug or trace"), "{e}");
    }
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn a_full_entry_parses_and_defaults_are_sane() {
        let c = Config::parse(
            r#"
[[process]]
name = "web"
command = "python3"
args = ["-m", "http.server", "{port}"]
replicas = 2
port = 8080
restart = "on-failure"
stop_signal = "INT"
[process.backoff]
initial = "0s"
[process.health]
http = "http://127.0.0.1:{port}/"
failure_threshold = 2

[[process]]
name = "worker"
command = "sleep 100"
shell = true
"#,
            Path::new("agent.toml"),
        )
        .unwrap();
        let web = &c.processes[0];
        assert_eq!((web.replicas, web.port, web.restart), (2, Some(8080), super::Restart::OnFailure));
        assert_eq!(web.stop_signal, libc::SIGINT);
        assert_eq!(web.backoff.initial, Duration::ZERO);
        assert_eq!(web.health.as_ref().unwrap().failure_threshold, 2);
        let worker = &c.processes[1];
        assert_eq!(
            (worker.replicas, worker.restart, worker.stop_signal),
            (1, super::Restart::Always, libc::SIGTERM)
        );
        assert_eq!(worker.stop_grace, Duration::from_secs(10));
        assert!(worker.health.is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = super::Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(60),
        };
        let delays: Vec<u128> = (0..7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let err = |text: &str| Config::parse(text, Path::new("agent.toml")).unwrap_err().0;
        let e = err("[[process]]\nname = \"web\"\ncommand = \"x\"\nrestart = \"sometimes\"\n");
        assert!(e.starts_with("agent.toml:4:11: process[web].restart: `sometimes`"), "{e}");
        let e = err("[[process]]\nname = \"web\"\ncommand = \"x\"\nstop_signal = \"STOP\"\n");
        assert!(e.contains("process[web].stop_signal"), "{e}");
        let e = err(
            "[[process]]\nname = \"web\"\ncommand = \"x\"\n[process.health]\nhttp = \"u\"\ntcp = \"a\"\n",
        );
        assert!(e.contains("process[web].health: give exactly one"), "{e}");
        let e =
            err("[[process]]\nname = \"a\"\ncommand = \"x\"\n[[process]]\nname = \"a\"\ncommand = \"y\"\n");
        assert!(e.contains("another [[process]] has this name"), "{e}");
        let e = err("[[process]]\nname = \"a\"\ncommand = \"x\"\n[process.backoff]\nmultiplier = 0.5\n");
        assert!(e.contains("process[a].backoff.multiplier"), "{e}");
        let e = err("[[process]]\nname = \"a\"\n");
        assert!(e.contains("missing field `command`"), "{e}");
    }
}
