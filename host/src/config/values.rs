//! Value types the configuration produces for the layers above it (the supervisor, the store,
//! the plugin runtime): defined here so `config` imports nothing above itself; each consumer
//! re-exports the ones it uses under its own path.

use std::time::Duration;

/// `[agent] process_tree`: how the supervisor owns an instance's whole process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreeMode {
    /// cgroup v2 if possible, else v1, else the subreaper and marker scan.
    #[default]
    Auto,
    CgroupV2,
    CgroupV1,
    /// No cgroups: the agent as child subreaper, process groups and the marker scan.
    Subreaper,
}

impl TreeMode {
    pub fn parse(text: &str) -> Option<TreeMode> {
        Some(match text {
            "auto" => TreeMode::Auto,
            "cgroup-v2" => TreeMode::CgroupV2,
            "cgroup-v1" => TreeMode::CgroupV1,
            "subreaper" => TreeMode::Subreaper,
            _ => return None,
        })
    }
}

/// `memory_max` and `cpu_max` of a process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub memory_max: Option<u64>,
    /// In cores: 0.5 is half of one core.
    pub cpu_max: Option<f64>,
}

/// Most sockets one program may be handed (`[[process]] sockets`).
pub const MAX_SOCKETS: usize = 16;

/// How long data is kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retention {
    /// Raw samples. Default 1 day.
    pub raw: Duration,
    /// 1-minute rollups. Default 7 days.
    pub rollups: Duration,
    /// Decision journal rows. Default 30 days.
    pub journal: Duration,
    /// At most this many journal rows, the oldest dropped first. Default 1 000 000.
    pub journal_rows: u64,
    /// State of a plugin no longer loaded is kept this long, then removed. Default 7 days.
    pub state_grace: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: Duration::from_secs(86_400),
            rollups: Duration::from_secs(7 * 86_400),
            journal: Duration::from_secs(30 * 86_400),
            journal_rows: 1_000_000,
            state_grace: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The three kinds of plugin, one per world of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Source,
    Policy,
    Backend,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Policy => "policy",
            Kind::Backend => "backend",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits of one compilation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompileLimits {
    /// Wall-clock time; the child is killed past it. CPU time is capped at twice this (the
    /// compiler uses every core).
    pub timeout: Duration,
    /// Address space of the child.
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits { timeout: Duration::from_secs(60), memory_bytes: 2048 << 20 }
    }
}

/// The log rate limit of one plugin: lines and bytes per second, each a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLimits {
    pub lines_per_sec: f64,
    pub bytes_per_sec: f64,
    /// Bucket size, in seconds of rate: how large a burst is let through.
    pub burst_secs: f64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { lines_per_sec: 10.0, bytes_per_sec: 2048.0, burst_secs: 5.0 }
    }
}
