//! `agent.toml`: parsed once into raw serde types, then validated into a [`Config`] that the rest
//! of the agent trusts. Every error names the file, the line and column, and the field.
//!
//! Owns: the file format and its defaults. Does not know about wasmtime, SQLite or HTTP.

mod api;
mod cluster;
mod group;
mod origin;
mod process;
mod run_as;
mod scale_in;
mod schedule;
mod storage;
mod trust;
mod unclosed;
pub mod values;

pub use api::ApiLimits;
pub use cluster::ClusterSpec;
pub use group::{Fallback, GroupSpec, MetricWindow};
pub use origin::{Origin, Scheme};
pub use process::{
    parse_signal, parse_size, Backoff, HealthCheck, LogFiles, Probe, ProcessSpec, Restart, StartLimit,
};
pub use run_as::{Launch, RunAs};
pub use scale_in::{BusyProbe, Drain, Hook, ScaleInRule};
pub use storage::StorageSpec;
pub use trust::{Binding, TrustSpec, TrustedKey};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Shortest `[agent] api_token` accepted: 128 bits as hex.
pub const MIN_TOKEN_LEN: usize = 32;

/// Where the HTTP API listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9820";
/// The data folder (database, compile cache, API token) unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "data";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any (for messages).
    pub file: Option<PathBuf>,
    /// SHA-256 of that file's text.
    pub sha256: Option<String>,
    /// `[agent] data_dir`: database, compile cache and API token. Default `data`.
    pub data_dir: PathBuf,
    /// `[agent] listen`: address of the HTTP API. Default `127.0.0.1:9820`.
    pub listen: SocketAddr,
    /// `[agent] api_token`: where the token for the API's actions comes from. Without it the
    /// agent makes a random one at each start; a `listen` that is not loopback requires it.
    pub api_token: Option<SecretSource>,
    /// `[agent] plugins`: the folder of `.wasm` plugins. No default: without it no plugin loads.
    pub plugins_dir: Option<PathBuf>,
    /// `[agent] sample_interval`: how often the system is sampled. Default 1s, at least 100ms.
    pub sample_interval: Duration,
    /// `[store]`: how long data is kept.
    pub retention: crate::config::values::Retention,
    /// `[store] max_series`: series the store keeps live in memory, all sources together. New
    /// series beyond it are dropped and counted. Default 50000.
    pub max_series: usize,
    /// `[agent] compile_timeout`, `compile_memory_mib`: limits of the child process that
    /// compiles a plugin. Defaults 60s and 2048 MiB.
    pub compile: crate::config::values::CompileLimits,
    /// `[plugins.NAME]`: grants, limits and configuration per plugin, by plugin name.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// `[agent] insecure_folders`: accept a data or plugins folder its group or everyone may
    /// write. Default false: refused at start.
    pub insecure_folders: bool,
    /// `[agent] process_tree`: how supervised process trees are owned. Default `auto`.
    pub process_tree: crate::config::values::TreeMode,
    /// `[[process]]`: what the supervisor runs, in file order.
    pub processes: Vec<ProcessSpec>,
    /// `[[group]]`: scaling groups, in file order.
    pub groups: Vec<GroupSpec>,
    /// `[cluster]`: the etcd the agents of a fleet coordinate through, if any.
    pub cluster: Option<ClusterSpec>,
    /// `[api]`: what the HTTP API lets its clients hold.
    pub api: ApiLimits,
    /// `[trust]`: keys plugin signatures are checked against.
    pub trust: TrustSpec,
    /// Every plugin name the configuration refers to (a group's policy or backend, a
    /// `[plugins.NAME]` table) and the one file that may run under it.
    pub bindings: BTreeMap<String, Binding>,
}

/// What one plugin is granted and held to. Every field has a safe default: a plugin with no
/// `[plugins.NAME]` table runs with no network, no secrets and the default limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// `allow_http`: origins the plugin may call through `wasi:http`. Default none.
    pub allow_http: Vec<Origin>,
    /// `secrets`: name → where the agent reads it. Default none.
    pub secrets: BTreeMap<String, SecretSource>,
    /// `memory_mib`: cap on each linear memory, in MiB. Default 64.
    pub memory_limit_bytes: u64,
    /// `cpu_limit`: CPU time per call, the plugin's code and every host function it calls. Default by kind: 100ms for policies and
    /// sources, 2s for backends (cloud calls wait on the network, which does not count).
    pub cpu_limit: Option<Duration>,
    /// `timeout`: wall-clock limit per call, including time waiting on HTTP. Default by kind:
    /// 1s for policies, 10s for sources, 10m for backends.
    pub timeout: Option<Duration>,
    /// `max_return_kib`: cap on the size of what one call returns, in KiB. Default 1024.
    pub max_return_bytes: u64,
    /// `interval`: how often a source is collected. Default 10s.
    pub interval: Option<Duration>,
    /// `config`: the plugin's own table, handed to it as JSON by `host.config`.
    pub config_json: String,
    /// `disabled`: leave the plugin's file alone. Default false.
    pub disabled: bool,
    /// `processes`: supervised processes whose replica count this (backend) plugin may change.
    pub processes: Vec<String>,
    /// What the plugin may make the agent spend on its behalf (series, log, state, HTTP).
    pub budgets: Budgets,
    /// `file`: the file in the plugins folder that is this plugin. Default `NAME.wasm`.
    pub file: Option<String>,
    /// `sha256`: the digest that file must have.
    pub sha256: Option<String>,
    /// `signer`: the id of the `[trust]` key that must have signed that file.
    pub signer: Option<String>,
    /// `source`: where `agent plugins install` took the file from (`oci://HOST/REPO:TAG`), for
    /// `plugins outdated` and `plugins upgrade`. The agent itself never fetches it.
    pub source: Option<String>,
    /// `ca_file`: a PEM bundle of CA certificates the plugin's outbound TLS trusts on top of the
    /// built-in roots (a private CA's Keystone), read when the configuration is.
    pub ca_file: Option<crate::pki::CaBundle>,
}

impl PluginSettings {
    /// What is allowed but unwise in plugin `name`'s table, one line each: a plain-HTTP origin
    /// beyond this machine and its link-local network, where what the plugin sends — a password,
    /// a token — can be read on the way.
    pub fn warnings(&self, name: &str) -> Vec<String> {
        let clear =
            self.allow_http.iter().filter(|o| o.scheme == Scheme::Http && !o.is_loopback_or_link_local());
        clear
            .map(|origin| {
                format!(
                    "plugins.{name}.allow_http: {origin} is plain HTTP beyond this machine: the credentials and tokens the plugin sends there go in clear; use https:// (with ca_file = \"/path/ca.pem\" for a private CA)"
                )
            })
            .collect()
    }
}

/// A plugin's budgets: what it may make the *agent* do. Defaults are what a careful operator
/// running plugins from strangers would choose; `[plugins.NAME]` overrides each.
#[derive(Debug, Clone, PartialEq)]
pub struct Budgets {
    /// `max_series`: live series a source may have (series not written for longer than the raw
    /// retention stop counting). New series beyond it are dropped and counted. Default 1000.
    pub max_series: usize,
    /// `log_lines_per_sec` / `log_kib_per_sec`: the plugin's log rate, with bursts of 5 s of
    /// it. Default 10 lines and 2 KiB per second (at most ~170 MiB of log a day).
    pub log: crate::config::values::LogLimits,
    /// `state_kib`: total size of the plugin's persistent state. Default 1024 KiB.
    pub state_bytes: u64,
    /// `state_write_kib_per_min`: bytes of state written per minute (a token bucket holding one
    /// minute). Default 1024 KiB, so state costs the disk at most ~1.4 GiB a day.
    pub state_write_bytes_per_min: u64,
    /// `http_requests_per_call`: outbound requests one call may start. Default by kind: 32 for
    /// sources, 4096 for backends (which poll long operations inside one call).
    pub http_requests_per_call: Option<u32>,
    /// `http_concurrency`: requests in flight at once. Default 4 for sources, 8 for backends.
    pub http_concurrency: Option<u32>,
    /// `http_rate`: requests per second to each origin, with bursts of 5 s of it. Default 10
    /// for sources, 20 for backends.
    pub http_rate: Option<f64>,
    /// `http_kib_per_call`: response bytes one call may receive. Default 16 MiB for sources,
    /// 256 MiB for backends.
    pub http_bytes_per_call: Option<u64>,
    /// `http_response_timeout`: total time of one response, from sending to the last byte of
    /// the body. Default 30s (and never beyond the call's own timeout).
    pub http_response_timeout: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_series: 1000,
            log: crate::config::values::LogLimits::default(),
            state_bytes: 1 << 20,
            state_write_bytes_per_min: 1 << 20,
            http_requests_per_call: None,
            http_concurrency: None,
            http_rate: None,
            http_bytes_per_call: None,
            http_response_timeout: Duration::from_secs(30),
        }
    }
}

/// A plugin's outbound-HTTP budget, its defaults resolved for its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpBudget {
    pub requests_per_call: u32,
    pub concurrency: u32,
    /// Requests per second to each origin, and the bucket's size (5 s of it).
    pub rate: f64,
    pub burst: f64,
    pub bytes_per_call: u64,
    pub response_timeout: Duration,
}

impl Budgets {
    /// The HTTP budget of a plugin of `kind`.
    pub fn http(&self, kind: crate::config::values::Kind) -> HttpBudget {
        let backend = kind == crate::config::values::Kind::Backend;
        let rate = self.http_rate.unwrap_or(if backend { 20.0 } else { 10.0 });
        HttpBudget {
            requests_per_call: self.http_requests_per_call.unwrap_or(if backend { 4096 } else { 32 }),
            concurrency: self.http_concurrency.unwrap_or(if backend { 8 } else { 4 }),
            rate,
            burst: rate * 5.0,
            bytes_per_call: self.http_bytes_per_call.unwrap_or(if backend { 256 << 20 } else { 16 << 20 }),
            response_timeout: self.http_response_timeout,
        }
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            allow_http: Vec::new(),
            secrets: BTreeMap::new(),
            memory_limit_bytes: 64 << 20,
            cpu_limit: None,
            timeout: None,
            max_return_bytes: 1 << 20,
            interval: None,
            config_json: "{}".into(),
            disabled: false,
            processes: Vec::new(),
            budgets: Budgets::default(),
            file: None,
            sha256: None,
            signer: None,
            source: None,
            ca_file: None,
        }
    }
}

/// Where a secret comes from. The value itself is read by the agent when a plugin asks for it.
#[derive(Clone, PartialEq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// The secret's value (a file's without its trailing newline), or `None` when it cannot be read.
    pub fn read(&self) -> Option<String> {
        match self {
            SecretSource::Env(var) => std::env::var(var).ok(),
            SecretSource::File(path) => {
                std::fs::read_to_string(path).ok().map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "env:{v}"),
            SecretSource::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A configuration error, already formatted as `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    plugins: BTreeMap<String, Spanned<RawPlugin>>,
    #[serde(default)]
    process: Vec<process::RawProcess>,
    #[serde(default)]
    group: Vec<group::RawGroup>,
    cluster: Option<Spanned<cluster::RawCluster>>,
    trust: Option<trust::RawTrust>,
    #[serde(default)]
    api: api::RawApi,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    retention: Option<Spanned<String>>,
    raw_retention: Option<Spanned<String>>,
    journal_retention: Option<Spanned<String>>,
    journal_max_rows: Option<Spanned<u64>>,
    state_grace: Option<Spanned<String>>,
    max_series: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    data_dir: Option<PathBuf>,
    listen: Option<Spanned<String>>,
    api_token: Option<Spanned<toml::Value>>,
    plugins: Option<PathBuf>,
    sample_interval: Option<Spanned<String>>,
    compile_timeout: Option<Spanned<String>>,
    compile_memory_mib: Option<Spanned<u64>>,
    process_tree: Option<Spanned<String>>,
    #[serde(default)]
    insecure_folders: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    #[serde(default)]
    allow_http: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<toml::Value>>,
    memory_mib: Option<Spanned<u64>>,
    cpu_limit: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_return_kib: Option<Spanned<u64>>,
    interval: Option<Spanned<String>>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    processes: Vec<String>,
    max_series: Option<Spanned<u64>>,
    log_lines_per_sec: Option<Spanned<u64>>,
    log_kib_per_sec: Option<Spanned<u64>>,
    state_kib: Option<Spanned<u64>>,
    state_write_kib_per_min: Option<Spanned<u64>>,
    http_requests_per_call: Option<Spanned<u64>>,
    http_concurrency: Option<Spanned<u64>>,
    http_rate: Option<Spanned<u64>>,
    http_kib_per_call: Option<Spanned<u64>>,
    http_response_timeout: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    signer: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    ca_file: Option<Spanned<PathBuf>>,
}

impl Config {
    /// The configuration used when no file is given.
    pub fn defaults() -> Config {
        Config::from_raw(RawConfig::default(), &Located::none(), Path::new("")).expect("defaults are valid")
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read the configuration: {e}", path.display())))?;
        let mut config = Config::parse(&text, path)?;
        config.file = Some(path.to_path_buf());
        config.sha256 = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())));
        Ok(config)
    }

    /// Validates configuration text; `path` is only used in messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let at = Located { file: Some(path), text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| at.toml_error(&e))?;
        // Relative paths in the file are relative to the file, as in Cargo.toml.
        let base = path.parent().unwrap_or(Path::new(""));
        let mut config = Config::from_raw(raw, &at, base)?;
        for dir in [Some(&mut config.data_dir), config.plugins_dir.as_mut()].into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }

    fn from_raw(raw: RawConfig, at: &Located, base: &Path) -> Result<Config, ConfigError> {
        let listen = match raw.agent.listen {
            None => DEFAULT_LISTEN.parse().expect("valid default"),
            Some(l) => l.get_ref().parse().map_err(|_| {
                at.error(
                    Some(l.span()),
                    &format!("agent.listen: `{}` is not an address like 127.0.0.1:9820", l.get_ref()),
                )
            })?,
        };
        let sample_interval = at
            .duration(&raw.agent.sample_interval, "agent.sample_interval", Duration::from_millis(100))?
            .unwrap_or(Duration::from_secs(1));
        if sample_interval > Duration::from_secs(3600) {
            let span = raw.agent.sample_interval.as_ref().map(|s| s.span());
            return Err(at.error(span, "agent.sample_interval: must be at most 1h"));
        }
        let mut retention = crate::config::values::Retention::default();
        if let Some(r) = at.duration(&raw.store.retention, "store.retention", Duration::from_secs(60))? {
            retention.rollups = r;
        }
        if let Some(r) =
            at.duration(&raw.store.raw_retention, "store.raw_retention", Duration::from_secs(60))?
        {
            retention.raw = r;
        }
        if retention.raw > retention.rollups {
            retention.rollups = retention.raw;
        }
        let day = Duration::from_secs(86_400);
        if let Some(r) = at.duration(&raw.store.journal_retention, "store.journal_retention", day)? {
            retention.journal = r;
        }
        if let Some(r) = at.duration(&raw.store.state_grace, "store.state_grace", Duration::from_secs(60))? {
            retention.state_grace = r;
        }
        if let Some(rows) = at.at_least(&raw.store.journal_max_rows, "store.journal_max_rows", 1000)? {
            retention.journal_rows = rows;
        }
        let max_series =
            at.at_least(&raw.store.max_series, "store.max_series", 1000)?.unwrap_or(50_000) as usize;
        let mut compile = crate::config::values::CompileLimits::default();
        if let Some(t) =
            at.duration(&raw.agent.compile_timeout, "agent.compile_timeout", Duration::from_secs(1))?
        {
            compile.timeout = t;
        }
        if let Some(mib) =
            at.within(&raw.agent.compile_memory_mib, "agent.compile_memory_mib", 256..=1 << 20)?
        {
            compile.memory_bytes = mib << 20;
        }
        let process_tree = match &raw.agent.process_tree {
            None => crate::config::values::TreeMode::Auto,
            Some(t) => crate::config::values::TreeMode::parse(t.get_ref()).ok_or_else(|| {
                at.error(
                    Some(t.span()),
                    &format!(
                        "agent.process_tree: `{}` is not auto, cgroup-v2, cgroup-v1 or subreaper",
                        t.get_ref()
                    ),
                )
            })?,
        };
        let mut plugins = BTreeMap::new();
        for (name, raw_plugin) in raw.plugins {
            let span = raw_plugin.span();
            let settings = plugin_settings(&name, raw_plugin.into_inner(), at, base)?;
            if !valid_plugin_name(&name) {
                return Err(at.error(
                    Some(span),
                    &format!("plugins.{name}: a plugin name is lower-case letters, digits and `-`"),
                ));
            }
            plugins.insert(name, settings);
        }
        let groups = group::validate(raw.group, raw.cluster.is_some(), at)?;
        let trust = trust::validate(raw.trust, base, at)?;
        // A group names its policy and backend, and a source when a metric asks for its label.
        let sources = groups.iter().flat_map(|g| &g.metrics).flat_map(|m| &m.labels);
        let sources = sources.filter(|(k, v)| k == "source" && valid_plugin_name(v)).map(|(_, v)| v.clone());
        let named = groups.iter().flat_map(|g| [g.policy.clone(), g.backend.clone()]).chain(sources);
        let named: std::collections::BTreeSet<String> = named.chain(plugins.keys().cloned()).collect();
        let bindings = trust::bindings(named.into_iter(), &plugins, &trust, at)?;
        Ok(Config {
            file: None,
            sha256: None,
            data_dir: raw.agent.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            listen,
            api_token: raw.agent.api_token.map(|t| secret_source(t, "agent.api_token", at)).transpose()?,
            plugins_dir: raw.agent.plugins,
            sample_interval,
            retention,
            max_series,
            compile,
            insecure_folders: raw.agent.insecure_folders,
            process_tree,
            plugins,
            processes: process::validate(raw.process, at)?,
            groups,
            cluster: cluster::validate(raw.cluster, at)?,
            api: api::validate(raw.api, at)?,
            trust,
            bindings,
        })
    }

    /// What is allowed but unwise in the configuration, one line each (see
    /// [`PluginSettings::warnings`]); disabled plugins send nothing and are not warned of.
    pub fn warnings(&self) -> Vec<String> {
        let enabled = self.plugins.iter().filter(|(_, s)| !s.disabled);
        enabled.flat_map(|(name, s)| s.warnings(name)).collect()
    }

    /// The settings of plugin `name`, or the defaults when it has no table.
    pub fn plugin(&self, name: &str) -> PluginSettings {
        self.plugins.get(name).cloned().unwrap_or_default()
    }

    /// The rules of the API's token, checked once the command line has had its say (it may
    /// change `listen`): an address reachable from other machines needs `[agent] api_token`,
    /// and a configured token must be readable and 32+ printable characters. Returns the
    /// configured token, if any. `check-config`, `run` and a reload all pass here.
    pub fn api_token(&self) -> Result<Option<String>, ConfigError> {
        let file = self.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "<defaults>".into());
        let Some(source) = &self.api_token else {
            if !self.listen.ip().is_loopback() {
                return Err(ConfigError(format!(
                    "{file}: agent.listen: {} is reachable from other machines and no [agent] api_token is set; \
                     set api_token = {{ env = \"VAR\" }} or {{ file = \"/path\" }} ({MIN_TOKEN_LEN}+ characters), or listen on 127.0.0.1",
                    self.listen
                )));
            }
            return Ok(None);
        };
        let token = source
            .read()
            .ok_or_else(|| ConfigError(format!("{file}: agent.api_token: {source:?} cannot be read")))?;
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(ConfigError(format!(
                "{file}: agent.api_token: the token in {source:?} must be {MIN_TOKEN_LEN}+ printable characters without spaces (e.g. `openssl rand -hex 24`)"
            )));
        }
        Ok(Some(token.to_string()))
    }

    /// The binding of plugin `name`, if the configuration refers to it.
    pub fn binding(&self, name: &str) -> Option<&Binding> {
        self.bindings.get(name)
    }

    /// The binding whose file is `file_name` (a file in the plugins folder), if any.
    pub fn binding_of_file(&self, file_name: &str) -> Option<&Binding> {
        self.bindings.values().find(|b| b.file == file_name)
    }
}

/// Plugin names: what `metadata.name` must look like, and the keys of `[plugins.*]`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Where a secret comes from: `{ env = "VAR" }` or `{ file = "/path" }`. Read as a plain TOML
/// value so that a secret written into the file itself is refused without being echoed.
fn secret_source(raw: Spanned<toml::Value>, field: &str, at: &Located) -> Result<SecretSource, ConfigError> {
    let span = raw.span();
    let table = match raw.into_inner() {
        toml::Value::Table(t) => t,
        toml::Value::String(_) => {
            return Err(at.error(
                Some(span),
                &format!("{field}: a secret's value does not belong in the configuration file (it would be in every copy, log and backup of it); put it in a file or a variable and write {{ file = \"/path\" }} or {{ env = \"VAR\" }}"),
            ))
        }
        _ => toml::Table::new(),
    };
    let text = |k: &str| table.get(k).and_then(|v| v.as_str()).map(String::from);
    match (text("env"), text("file"), table.len()) {
        (Some(var), None, 1) => Ok(SecretSource::Env(var)),
        (None, Some(path), 1) => Ok(SecretSource::File(PathBuf::from(path))),
        _ => Err(at.error(
            Some(span),
            &format!("{field}: give exactly one of `env = \"VAR\"` or `file = \"/path\"`"),
        )),
    }
}

fn plugin_settings(
    name: &str,
    raw: RawPlugin,
    at: &Located,
    base: &Path,
) -> Result<PluginSettings, ConfigError> {
    let field = |f: &str| format!("plugins.{name}.{f}");
    let mut s = PluginSettings { budgets: budgets(&raw, at, &field)?, ..Default::default() };
    for grant in raw.allow_http {
        let origin = Origin::parse_grant(grant.get_ref())
            .map_err(|e| at.error(Some(grant.span()), &format!("{}: {e}", field("allow_http"))))?;
        s.allow_http.push(origin);
    }
    for (secret, source) in raw.secrets {
        let source = secret_source(source, &field(&format!("secrets.{secret}")), at)?;
        s.secrets.insert(secret, source);
    }
    if let Some(mib) = at.within(&raw.memory_mib, &field("memory_mib"), 1..=4096)? {
        s.memory_limit_bytes = mib << 20;
    }
    if let Some(kib) = at.within(&raw.max_return_kib, &field("max_return_kib"), 1..=1 << 20)? {
        s.max_return_bytes = kib << 10;
    }
    let positive = Duration::from_millis(1);
    s.cpu_limit = at.duration(&raw.cpu_limit, &field("cpu_limit"), positive)?;
    s.timeout = at.duration(&raw.timeout, &field("timeout"), positive)?;
    s.interval = at.duration(&raw.interval, &field("interval"), positive)?;
    s.config_json = serde_json::to_string(&raw.config).expect("a TOML table is valid JSON");
    s.disabled = raw.disabled;
    s.processes = raw.processes;
    s.file = raw.file.as_ref().map(|f| trust::file_name(f, &field("file"), at)).transpose()?;
    s.sha256 = raw.sha256.as_ref().map(|d| trust::digest(d, &field("sha256"), at)).transpose()?;
    s.signer = raw.signer.map(|s| s.into_inner().trim().to_ascii_lowercase());
    s.source = match raw.source {
        Some(src) if !src.get_ref().starts_with("oci://") => {
            let why =
                format!("{}: an OCI reference: oci://HOST[:PORT]/REPO:TAG or …@sha256:…", field("source"));
            return Err(at.error(Some(src.span()), &why));
        }
        src => src.map(Spanned::into_inner),
    };
    s.ca_file = raw.ca_file.map(|f| ca_file(f, &field("ca_file"), at, base)).transpose()?;
    Ok(s)
}

/// `ca_file`, relative to the configuration file: read and parsed now, so that a missing or bad
/// file fails the start, `check-config` or the reload rather than the plugin's first request.
fn ca_file(
    raw: Spanned<PathBuf>,
    field: &str,
    at: &Located,
    base: &Path,
) -> Result<crate::pki::CaBundle, ConfigError> {
    let path = base.join(raw.get_ref());
    crate::pki::CaBundle::read(&path)
        .map_err(|why| at.error(Some(raw.span()), &format!("{field}: `{}`: {why}", path.display())))
}

fn budgets(raw: &RawPlugin, at: &Located, field: &dyn Fn(&str) -> String) -> Result<Budgets, ConfigError> {
    let mut b = Budgets::default();
    // Each count is at least 1 and at most a bound past which it is no budget at all.
    let count = |v: &Option<Spanned<u64>>, name: &str, max: u64| at.within(v, &field(name), 1..=max);
    if let Some(n) = count(&raw.max_series, "max_series", 1_000_000)? {
        b.max_series = n as usize;
    }
    if let Some(n) = count(&raw.log_lines_per_sec, "log_lines_per_sec", 100_000)? {
        b.log.lines_per_sec = n as f64;
    }
    if let Some(n) = count(&raw.log_kib_per_sec, "log_kib_per_sec", 1 << 20)? {
        b.log.bytes_per_sec = (n << 10) as f64;
    }
    if let Some(n) = count(&raw.state_kib, "state_kib", 1 << 20)? {
        b.state_bytes = n << 10;
    }
    if let Some(n) = count(&raw.state_write_kib_per_min, "state_write_kib_per_min", 1 << 22)? {
        b.state_write_bytes_per_min = n << 10;
    }
    b.http_requests_per_call =
        count(&raw.http_requests_per_call, "http_requests_per_call", 1_000_000)?.map(|n| n as u32);
    b.http_concurrency = count(&raw.http_concurrency, "http_concurrency", 1000)?.map(|n| n as u32);
    b.http_rate = count(&raw.http_rate, "http_rate", 100_000)?.map(|n| n as f64);
    b.http_bytes_per_call = count(&raw.http_kib_per_call, "http_kib_per_call", 1 << 22)?.map(|n| n << 10);
    let timeout =
        at.duration(&raw.http_response_timeout, &field("http_response_timeout"), Duration::from_millis(1))?;
    if let Some(t) = timeout {
        b.http_response_timeout = t;
    }
    Ok(b)
}

/// The longest duration any key accepts: past it, adding it to a clock overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Turns byte spans into `file:line:column:` prefixes.
struct Located<'a> {
    file: Option<&'a Path>,
    text: &'a str,
}

impl<'a> Located<'a> {
    fn none() -> Located<'static> {
        Located { file: None, text: "" }
    }

    /// An optional duration field: parsed, at least `min`, errors naming `field`.
    fn duration(
        &self,
        d: &Option<Spanned<String>>,
        field: &str,
        min: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(d) = d else { return Ok(None) };
        let value = crate::duration::parse(d.get_ref())
            .map_err(|e| self.error(Some(d.span()), &format!("{field}: {e}")))?;
        if value < min {
            let min = crate::duration::format(min);
            return Err(self.error(Some(d.span()), &format!("{field}: must be at least {min}")));
        }
        if value > MAX_DURATION {
            let max = crate::duration::format(MAX_DURATION);
            return Err(self.error(Some(d.span()), &format!("{field}: must be at most {max}")));
        }
        Ok(Some(value))
    }

    /// An optional count field of at least `min`.
    fn at_least(&self, v: &Option<Spanned<u64>>, field: &str, min: u64) -> Result<Option<u64>, ConfigError> {
        self.within(v, field, min..=u64::MAX)
    }

    /// An optional count field within `range`.
    fn within(
        &self,
        v: &Option<Spanned<u64>>,
        field: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let n = *v.get_ref();
        if !range.contains(&n) {
            let why = match *range.end() {
                u64::MAX => format!("must be at least {}", range.start()),
                end => format!("{n} is outside {}..={end}", range.start()),
            };
            return Err(self.error(Some(v.span()), &format!("{field}: {why}")));
        }
        Ok(Some(n))
    }

    /// A TOML error, at the bracket that opened the problem when one was left open before the
    /// point where the parser gave up.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim_end();
        let stopped = e.span().map_or(self.text.len(), |s| s.start);
        match unclosed::opener(self.text).filter(|(at, _)| *at < stopped) {
            Some((at, bracket)) => {
                let line = self.text[..stopped.min(self.text.len())].matches('\n').count() + 1;
                let why = match bracket {
                    '{' => "this `{` is not closed on its line (an inline table is one line: `{ key = value, ... }`)",
                    _ => "this `[` is never closed with `]`",
                };
                self.error(Some(at..at + 1), &format!("{why}; the parser stopped at line {line}: {message}"))
            }
            None => self.error(e.span(), message),
        }
    }

    fn error(&self, span: Option<std::ops::Range<usize>>, message: &str) -> ConfigError {
        let file = self.file.map(|f| f.display().to_string()).unwrap_or_else(|| "<defaults>".into());
        match span {
            Some(span) => {
                let before = &self.text[..span.start.min(self.text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                ConfigError(format!("{file}:{line}:{column}: {message}"))
            }
            None => ConfigError(format!("{file}: {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("agent.toml")).map_err(|e| e.0)
    }

    #[test]
    fn a_toml_error_points_at_the_bracket_left_open() {
        let e = parse("[agent]\nx = { a = 1\ny = 2\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:5: this `{` is not closed on its line"), "{e}");
        assert!(e.contains("stopped at line 3"), "{e}");
        // Without a bracket left open, the parser's own position stands.
        let e = parse("[agent]\nx = \"a\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:"), "{e}");
    }

    #[test]
    fn empty_file_gives_safe_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.listen.ip().is_loopback());
        let p = c.plugin("anything");
        assert!(p.allow_http.is_empty() && p.secrets.is_empty());
        assert_eq!(p.memory_limit_bytes, 64 << 20);
    }

    #[test]
    fn plugin_table_is_validated_and_config_becomes_json() {
        let c = parse(
            r#"
[plugins.http-json]
allow_http = ["http://127.0.0.1:8080"]
secrets = { token = { env = "APP_TOKEN" } }
memory_mib = 16
cpu_limit = "50ms"
interval = "2s"
[plugins.http-json.config]
url = "http://127.0.0.1:8080/stats"
points = { "/requests" = "app.requests" }
"#,
        )
        .unwrap();
        let p = c.plugin("http-json");
        assert_eq!(p.allow_http[0].to_string(), "http://127.0.0.1:8080");
        assert_eq!(p.secrets["token"], SecretSource::Env("APP_TOKEN".into()));
        assert_eq!(p.memory_limit_bytes, 16 << 20);
        assert_eq!(p.cpu_limit, Some(Duration::from_millis(50)));
        let json: serde_json::Value = serde_json::from_str(&p.config_json).unwrap();
        assert_eq!(json["points"]["/requests"], "app.requests");
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let e = parse("[plugins.x]\nallow_http = [\"http://h/path\"]\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:15: plugins.x.allow_http:"), "{e}");
        let e = parse("[plugins.x]\ncpu_limit = \"fast\"\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:13: plugins.x.cpu_limit:"), "{e}");
        let e = parse("[agent]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:10: agent.listen"), "{e}");
        let e = parse("[agent]\napi_token = { env = \"A\", file = \"/b\" }\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:13: agent.api_token: give exactly one"), "{e}");
        let c = parse("[agent]\napi_token = { file = \"/run/secrets/agent\" }\n").unwrap();
        assert_eq!(c.api_token, Some(SecretSource::File("/run/secrets/agent".into())));
        let e = parse("[plugins.x]\nmemory_mb = 3\n").unwrap_err();
        assert!(e.starts_with("agent.toml:2:1:") && e.contains("memory_mb"), "{e}");
        let e = parse("[plugins.x.secrets]\ns = { env = \"A\", file = \"/b\" }\n").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = parse("[plugins.Bad_Name]\n").unwrap_err();
        assert!(e.contains("lower-case"), "{e}");
    }

    #[test]
    fn sampling_and_retention_have_defaults_and_floors() {
        let c = parse("").unwrap();
        assert_eq!(c.sample_interval, Duration::from_secs(1));
        assert_eq!(c.retention.rollups, Duration::from_secs(7 * 86400));
        assert_eq!(c.retention.raw, Duration::from_secs(86400));
        let c = parse(
            "[agent]\nsample_interval = \"250ms\"\n[store]\nretention = \"30d\"\nraw_retention = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(
            (c.sample_interval, c.retention.raw),
            (Duration::from_millis(250), Duration::from_secs(7200))
        );
        let e = parse("[agent]\nsample_interval = \"10ms\"\n").unwrap_err();
        assert!(e.contains("agent.toml:2:19: agent.sample_interval: must be at least 100ms"), "{e}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c =
            Config::parse("[agent]\ndata_dir = \"d\"\nplugins = \"p\"\n", Path::new("/etc/agent/agent.toml"))
                .unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/agent/d"));
        assert_eq!(c.plugins_dir.unwrap(), Path::new("/etc/agent/p"));
    }
}

/// Any value in any key: the configuration is refused with a message or accepted with values
/// the agent can use (no zero interval, nothing that overflows a clock), never a panic.
#[cfg(test)]
mod property {
    use super::*;
    use std::time::Instant;

    const KEYS: &[&str] = &[
        "[agent]\nsample_interval",
        "[agent]\ncompile_timeout",
        "[agent]\ncompile_memory_mib",
        "[agent]\nlisten",
        "[agent]\napi_token",
        "[store]\nretention",
        "[store]\nraw_retention",
        "[store]\njournal_max_rows",
        "[store]\nmax_series",
        "[plugins.p]\nmemory_mib",
        "[plugins.p]\nmax_return_kib",
        "[plugins.p]\ncpu_limit",
        "[plugins.p]\ntimeout",
        "[plugins.p]\ninterval",
        "[plugins.p]\nstate_kib",
        "[plugins.p]\nhttp_kib_per_call",
        "[plugins.p]\nsha256",
        "[plugins.p]\nfile",
        "[plugins.p]\nsecrets.s",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\nstop_grace",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\nreplicas",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\nmemory_max",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\numask",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\nuser",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\n[process.health]\ncommand = [\"true\"]\ninterval",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\n[process.health]\ncommand = [\"true\"]\ntimeout",
        "[[process]]\nname = \"w\"\ncommand = \"true\"\n[process.log]\ndir = \"/tmp\"\nmax_kib",
        "[[group]]\nname = \"g\"\npolicy = \"p\"\nbackend = \"b\"\nmin = 1\nmax = 2\nmetrics = [{ name = \"m\" }]\ninterval",
    ];
    const VALUES: &[&str] = &[
        "\"0s\"",
        "\"0ms\"",
        "\"1ms\"",
        "\"5s\"",
        "\"-1s\"",
        "\"1e308s\"",
        "\"200000000000000d\"",
        "\"3650d\"",
        "\"3651d\"",
        "\"NaNs\"",
        "\"inf s\"",
        "\"\"",
        "0",
        "1",
        "-1",
        "255",
        "4096",
        "9223372036854775807",
        "18446744073709551615",
        "1.5",
        "true",
        "[]",
        "{}",
        "\"077\"",
        "\"nobody\"",
        "65534",
        "\"0.0.0.0:1\"",
        "\"512MiB\"",
        "\"99999999999999999999GiB\"",
        "{ env = \"HOME\" }",
        "\"literal-secret\"",
        "\"x.wasm\"",
        "\"../x.wasm\"",
    ];

    /// xorshift64: deterministic, no dependency.
    fn next(state: &mut u64) -> usize {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state as usize
    }

    #[test]
    fn no_value_in_any_key_panics_or_yields_an_unusable_duration() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..4000 {
            let key = KEYS[next(&mut state) % KEYS.len()];
            let value = VALUES[next(&mut state) % VALUES.len()];
            let text = format!("{key} = {value}\n");
            let Ok(config) = Config::parse(&text, Path::new("agent.toml")) else { continue };
            let now = Instant::now();
            let mut durations = vec![config.sample_interval, config.retention.raw, config.retention.rollups];
            for p in &config.processes {
                durations.push(p.stop_grace);
                if let Some(h) = &p.health {
                    assert!(!h.interval.is_zero() && !h.timeout.is_zero(), "{text}");
                    durations.extend([h.interval, h.timeout]);
                }
            }
            for g in &config.groups {
                assert!(!g.interval.is_zero(), "{text}");
                durations.push(g.interval);
            }
            for p in config.plugins.values() {
                durations.extend(p.cpu_limit.iter().chain(&p.timeout).chain(&p.interval));
                assert!(p.memory_limit_bytes > 0 && p.max_return_bytes > 0, "{text}");
            }
            assert!(!config.sample_interval.is_zero(), "{text}");
            for d in durations {
                assert!(now.checked_add(d).is_some(), "{text} overflows a clock");
            }
        }
    }

    #[test]
    fn a_ca_file_is_read_relative_to_the_file_and_a_bad_one_is_one_line_naming_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(dir.path().join("ca.pem"), crate::plugins::tls::test_pki::CA).unwrap();
        std::fs::write(dir.path().join("key.pem"), crate::plugins::tls::test_pki::SERVER_KEY).unwrap();
        std::fs::write(dir.path().join("cut.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let parse = |file: &str| {
            let text = format!("[plugins.openstack]\nca_file = \"{file}\"\n");
            Config::parse(&text, &config).map_err(|e| e.0)
        };
        let c = parse("ca.pem").unwrap();
        assert_eq!(c.plugins["openstack"].ca_file.as_ref().unwrap().path(), dir.path().join("ca.pem"));
        let at = format!("{}:2:11: plugins.openstack.ca_file: `{}", config.display(), dir.path().display());
        for (file, why) in [
            ("missing.pem", "/missing.pem`: cannot be read: No such file"),
            ("key.pem", "/key.pem`: holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA"),
            ("cut.pem", "/cut.pem`: not a valid PEM file: "),
        ] {
            let e = parse(file).unwrap_err();
            assert!(e.starts_with(&format!("{at}{why}")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn plain_http_beyond_this_machine_is_warned_of_naming_the_origin() {
        let parse = |text: &str| Config::parse(text, Path::new("agent.toml")).map_err(|e| e.0);
        let c = parse(
            "[plugins.openstack]\nallow_http = [\"http://127.0.0.1:15000\", \"http://169.254.169.254\", \
             \"http://[::1]:8080\", \"http://localhost:9090\", \"https://keystone.example:5000\", \
             \"http://nova.example:8774\"]\n\
             [plugins.off]\nallow_http = [\"http://10.0.0.5\"]\ndisabled = true\n",
        )
        .unwrap();
        assert_eq!(
            c.warnings(),
            ["plugins.openstack.allow_http: http://nova.example:8774 is plain HTTP beyond this machine: \
              the credentials and tokens the plugin sends there go in clear; use https:// \
              (with ca_file = \"/path/ca.pem\" for a private CA)"]
        );
        assert!(parse("[plugins.p]\nallow_http = [\"https://a.example\"]\n").unwrap().warnings().is_empty());
    }

    #[test]
    fn a_literal_secret_is_refused_without_being_echoed() {
        for text in [
            "[agent]\napi_token = \"s3cr3t-literal-token-value-0123456789\"\n",
            "[plugins.p]\nsecrets = { password = \"s3cr3t-literal-token-value-0123456789\" }\n",
        ] {
            let e = Config::parse(text, Path::new("agent.toml")).unwrap_err().0;
            assert!(e.contains("does not belong in the configuration file"), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
