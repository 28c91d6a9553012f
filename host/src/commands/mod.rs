//! What each subcommand does, so that `main.rs` only parses. Each returns an [`Exit`] or an
//! error whose chain `main` prints on one line.

mod operate;
pub mod publish;
mod sign;
mod simulate;
mod status;
mod storage;
mod tune;

pub use operate::{check_config, control, logs, reload, LogsArgs};
pub use sign::{keygen, sign};
pub use simulate::{simulate, SimMetric, SimulateArgs};
pub use status::{ps, status};
pub use storage::{parse_size, storage_grow};
pub use tune::{tune, TuneArgs};

use crate::config::Config;
use crate::plugins::registry::Registry;
use crate::plugins::{loader, Runtime};
use anyhow::Context;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub enum Exit {
    Success,
    /// The command ran but some input failed (e.g. a plugin file did not load).
    SomeFailed,
}

/// Options shared by `run` and `plugins list`; flags override the file.
#[derive(Default, Clone)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub plugins: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

impl RunOptions {
    /// The configuration: the file with the flags on top.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::defaults(),
        };
        Ok(self.overriding(config))
    }

    /// [`RunOptions::resolve`] and the rules that depend on the file and the flags together
    /// (the API token's): the one validation `check-config`, `run` and a reload share.
    pub fn validate(self) -> anyhow::Result<Config> {
        let config = self.resolve()?;
        config.api_token()?;
        Ok(config)
    }

    /// `config` with the command-line flags on top.
    fn overriding(self, mut config: Config) -> Config {
        if let Some(p) = self.plugins {
            config.plugins_dir = Some(p);
        }
        if let Some(d) = self.data_dir {
            config.data_dir = d;
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        config
    }
}

/// Logs go to stderr; `AGENT_LOG` filters them (default: `info` for `run`, `warn` for the
/// one-shot commands, whose output is on stdout), with the plugin runtime's own chatter quieted
/// unless named ([`crate::plugins::quiet_runtime_logs`]).
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let mut directives = std::env::var("AGENT_LOG").unwrap_or_else(|_| default.to_string());
    crate::plugins::quiet_runtime_logs(&mut directives);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// For commands that print and exit: `agent metrics query … | head` should end quietly when
/// `head` has had enough, as `cat` does, instead of failing on the closed pipe. (The daemon
/// keeps Rust's default of ignoring SIGPIPE.)
pub fn exit_quietly_on_closed_pipe() {
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub use crate::text::error_line;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub fn run(options: RunOptions) -> anyhow::Result<Exit> {
    let config = options.clone().validate()?;
    let reload: crate::reload::Load = Box::new(move || options.clone().validate());
    runtime()?.block_on(crate::daemon::run(config, reload))?;
    Ok(Exit::Success)
}

/// A runtime for the one-shot commands: compiling in a confined child as the daemon does (the
/// file may be a stranger's), with the compile cache of the data folder when that folder exists
/// (a command that only reads creates no data folder), so a plugin compiles once for the agent
/// and every command.
fn tool_runtime(config: &Config) -> anyhow::Result<Arc<Runtime>> {
    let compiler =
        crate::plugins::Compiler::child_of_self(config.compile).context("locating the agent binary")?;
    let cache = config.data_dir.is_dir().then(|| config.data_dir.join("cache"));
    match Runtime::for_tools(cache.as_deref(), compiler.clone()) {
        Ok(rt) => Ok(rt),
        // A data folder this user may not write (the daemon's, as another user): compile anyway.
        Err(e) if cache.is_some() => {
            tracing::debug!("not using the compile cache: {e:#}");
            Runtime::for_tools(None, compiler)
        }
        Err(e) => Err(e),
    }
}

pub fn inspect(options: RunOptions, file: &Path, as_json: bool) -> anyhow::Result<Exit> {
    let config = options.resolve()?;
    runtime()?.block_on(async {
        let rt = tool_runtime(&config)?;
        let p = loader::prepare(&rt, file).await?;
        let trust = trust_report(&config, file, &p);
        let keys: Vec<_> = p
            .metadata
            .config_keys
            .iter()
            .map(|k| json!({"name": k.name, "description": k.description, "required": k.required}))
            .collect();
        let report = json!({
            "file": file.display().to_string(),
            "name": p.metadata.name,
            "kind": p.kind(),
            "version": p.metadata.version,
            "description": p.metadata.description,
            "contract": format!("{}@{}", crate::plugins::PACKAGE, p.header.contract),
            "volumes": p.header.volumes,
            "config_keys": keys,
            "imports": p.header.imports,
            "exports": p.header.exports,
            "sha256": p.hash,
            "size_bytes": std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
            "signer": trust.signer,
            "signatures": trust.signatures,
            "binding": trust.binding,
        });
        if as_json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            // The plugin's own words: escaped, so they cannot drive the terminal.
            let said = |text: &str| crate::text::clean(text, 1024);
            println!(
                "{} {} {} — {}",
                p.kind(),
                p.metadata.name,
                p.metadata.version,
                said(&p.metadata.description)
            );
            println!("file:      {} ({} bytes)", file.display(), report["size_bytes"]);
            println!("contract:  {}", report["contract"].as_str().unwrap_or_default());
            if p.header.volumes {
                println!("volumes:   grows volumes (storage groups, contract 0.1.3)");
            }
            println!("sha256:    {}", p.hash);
            println!("signed:    {}", trust.signed_line());
            println!("binding:   {}", trust.binding_line());
            println!("config keys:");
            if p.metadata.config_keys.is_empty() {
                println!("  (none)");
            }
            for k in &p.metadata.config_keys {
                let required = if k.required { " (required)" } else { "" };
                println!("  {}{required}: {}", k.name, said(&k.description));
            }
            println!("imports:");
            for i in &p.header.imports {
                println!("  {i}");
            }
        }
        Ok(Exit::Success)
    })
}

/// What `plugins inspect` says of a file's signatures and binding, against the configuration.
struct TrustReport {
    /// The trusted key whose signature verifies, if any.
    signer: Option<String>,
    /// Every signature: its key and whether `[trust]` has that key (and it verified).
    signatures: Vec<serde_json::Value>,
    binding: serde_json::Value,
    /// Why the running agent would refuse it, if it would.
    refused: Option<String>,
}

impl TrustReport {
    fn signed_line(&self) -> String {
        let keys: Vec<String> = self
            .signatures
            .iter()
            .map(|s| {
                let trusted = if s["trusted"] == true { "trusted" } else { "not in [trust]" };
                format!("{} ({trusted})", s["key"].as_str().unwrap_or_default())
            })
            .collect();
        if keys.is_empty() {
            "no".into()
        } else {
            format!("by {}", keys.join(", "))
        }
    }

    fn binding_line(&self) -> String {
        let b = &self.binding;
        let mut line = match b["bound_to"].as_str() {
            Some(name) => format!("the file of plugin `{name}`"),
            None => "not bound: loads with no grants".to_string(),
        };
        if b["name_bound_elsewhere"] == true {
            line = "its name is bound to another file: the agent refuses it".to_string();
        }
        if let Some(why) = &self.refused {
            line.push_str(&format!("; refused: {why}"));
        }
        line
    }
}

fn trust_report(config: &Config, file: &Path, p: &loader::Prepared) -> TrustReport {
    let bytes = loader::read_file_blocking(file).unwrap_or_default();
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let binding = config.binding_of_file(&file_name);
    let declared = config.binding(&p.metadata.name);
    let signatures = crate::plugins::signature::split(&bytes).map(|(_, s)| s).unwrap_or_default();
    let verdict = crate::plugins::signature::verify(&bytes, &config.trust);
    let trusted = verdict.as_ref().map(|v| v.trusted.clone()).unwrap_or_default();
    let refused = crate::plugins::signature::admit(&bytes, &p.hash, binding, &config.trust).err();
    TrustReport {
        signer: trusted.first().cloned(),
        signatures: signatures
            .iter()
            .map(|s| json!({"key": s.key, "trusted": trusted.contains(&s.key)}))
            .collect(),
        binding: json!({
            "bound_to": binding.map(|b| b.name.clone()),
            "name_bound_elsewhere": declared.is_some_and(|b| b.file != file_name),
            "matches": binding.is_some_and(|b| b.name == p.metadata.name) && refused.is_none(),
        }),
        refused,
    }
}

pub fn list(options: RunOptions, as_json: bool) -> anyhow::Result<Exit> {
    let config = Arc::new(options.resolve()?);
    let dir = config
        .plugins_dir
        .clone()
        .context("give the folder with --plugins DIR (or [agent] plugins in --config)")?;
    runtime()?.block_on(async {
        let rt = tool_runtime(&config)?;
        let registry = Registry::new(rt, config, None, &dir);
        registry.reconcile().await;
        let (plugins, failed) = registry.status();
        let problems = registry.problems();
        if as_json {
            let report = json!({"plugins": plugins, "failed_files": failed, "problems": problems});
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let mut rows: Vec<Vec<String>> = plugins
                .iter()
                .map(|p| {
                    vec![p.file.clone(), p.name.clone(), p.kind.to_string(), p.version.clone(), "ok".into()]
                })
                .collect();
            rows.extend(failed.iter().map(|f| {
                vec![f.file.clone(), "-".into(), "-".into(), "-".into(), format!("{}: {}", f.state, f.error)]
            }));
            print!("{}", crate::text::table(&["FILE", "NAME", "KIND", "VERSION", "STATE"], &rows));
            // The configuration's side: names and keys no loaded plugin answers to.
            for line in problems.lines() {
                println!("problem: {line}");
            }
        }
        let failed = failed.iter().any(|f| f.state == "failed");
        Ok(if !failed && problems.is_empty() { Exit::Success } else { Exit::SomeFailed })
    })
}

/// Output formats of `agent metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// `agent metrics query` arguments, resolved.
pub struct MetricsQuery {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub since: Option<std::time::Duration>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<std::time::Duration>,
    pub format: Format,
}

fn open_store(options: RunOptions) -> anyhow::Result<crate::store::Store> {
    let config = options.resolve()?;
    // Read-only: works beside a running agent, and never creates a database by mistake.
    Ok(crate::store::Store::open_read_only(&config.data_dir)?)
}

pub fn metrics_list(options: RunOptions, format: Format) -> anyhow::Result<Exit> {
    let store = open_store(options)?;
    let series = store.list_series()?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&series)?),
        Format::Csv => {
            println!("name,labels,last_time,last_value");
            for s in &series {
                let last = s.last_ms.map(crate::timefmt::format).unwrap_or_default();
                let value = s.last_value.map(|v| v.to_string()).unwrap_or_default();
                println!("{},{},{last},{value}", s.name, csv_labels(&s.labels));
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = series
                .iter()
                .map(|s| match (s.last_ms, s.last_value) {
                    (Some(t), Some(v)) => {
                        vec![format!("{}{}", s.name, s.labels), crate::timefmt::format(t), v.to_string()]
                    }
                    _ => vec![format!("{}{}", s.name, s.labels), "-".into(), "no raw samples".into()],
                })
                .collect();
            print!("{}", crate::text::table(&["SERIES", "LAST SAMPLE", "VALUE"], &rows));
        }
    }
    Ok(Exit::Success)
}

fn csv_labels(labels: &crate::store::Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let joined = pairs.join(";");
    if joined.contains([',', '"']) {
        format!("\"{}\"", joined.replace('"', "\"\""))
    } else {
        joined
    }
}

pub fn metrics_query(options: RunOptions, q: MetricsQuery) -> anyhow::Result<Exit> {
    let store = open_store(options)?;
    let now = crate::timefmt::now_ms();
    let to =
        q.to.as_deref()
            .map(crate::timefmt::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--to: {e}"))?
            .unwrap_or(now);
    let from = match (&q.from, q.since) {
        (Some(f), _) => crate::timefmt::parse(f).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
        (None, Some(since)) => to - since.as_millis() as i64,
        (None, None) => to - 10 * 60_000,
    };
    anyhow::ensure!(from < to, "the range is empty: --from must be before --to");
    let selector = crate::store::Selector { name: q.name.clone(), matchers: q.labels };
    // A table is read on a screen: without --step, about a screenful of rows per series.
    let step = match (q.step, q.format) {
        (Some(s), _) => Some((s.as_millis() as i64).max(1)),
        (None, Format::Table) => screen_step(to - from),
        (None, _) => None,
    };
    let series = store.query(&selector, from, to, step)?;
    match q.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&series)?),
        Format::Csv => {
            println!("time,name,labels,value");
            for s in &series {
                for (t, v) in s.timestamps_ms.iter().zip(&s.values) {
                    println!("{},{},{},{v}", crate::timefmt::format(*t), s.name, csv_labels(&s.labels));
                }
            }
        }
        Format::Table => {
            if series.is_empty() {
                eprintln!("no series named `{}` with those labels (see `agent metrics list`)", q.name);
            }
            if let (None, Some(step)) = (q.step, step) {
                let step = crate::duration::format(std::time::Duration::from_millis(step as u64));
                println!("(mean of each {step}, about {SCREEN_ROWS} rows; --step 1s for every sample)");
            }
            for s in &series {
                println!("{}{}", s.name, s.labels);
                let rows: Vec<Vec<String>> = s
                    .timestamps_ms
                    .iter()
                    .zip(&s.values)
                    .map(|(t, v)| {
                        vec![
                            format!("  {}", crate::timefmt::format(*t)),
                            format!("{v:.6}").trim_end_matches('0').trim_end_matches('.').to_string(),
                        ]
                    })
                    .collect();
                print!("{}", crate::text::table(&["  TIME", "VALUE"], &rows));
            }
        }
    }
    Ok(Exit::Success)
}

/// One journal entry as a table row: the change names the guardrails that moved the number.
fn decision_row(run: &crate::store::Run) -> Vec<String> {
    let e = &run.entry;
    let action = e.action.as_str().to_string();
    let changed: Vec<String> = e
        .steps
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["guardrail"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let guard = if changed.is_empty() { String::new() } else { format!(" [{}]", changed.join(", ")) };
    let tier = if e.tier == e.target_tier {
        String::new()
    } else {
        format!(", tier {} → {}", e.tier, e.target_tier)
    };
    let outcome = if e.outcome.is_empty() { String::new() } else { format!(" — {}", e.outcome) };
    // A run of holds: from its first evaluation, how many, until when (its reason is the first's).
    let (action, outcome) = match run.repeats {
        0 => (action, outcome),
        n => (
            format!("{action} ×{}", n + 1),
            format!("{outcome} (until {})", crate::timefmt::format(run.last_ms)),
        ),
    };
    vec![
        crate::timefmt::format(e.first_ms),
        e.group.clone(),
        action,
        format!("{} → {}{tier}{guard}", e.current, e.target),
        format!("{}{outcome}", e.reason),
    ]
}

/// Rows a table of points aims at without `--step`.
const SCREEN_ROWS: i64 = 40;

/// The smallest round step that shows `range_ms` in at most [`SCREEN_ROWS`] rows, or `None`
/// when a step of 1 s would already do (every sample then).
fn screen_step(range_ms: i64) -> Option<i64> {
    const ROUND: [i64; 17] =
        [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
    let wanted = range_ms / SCREEN_ROWS;
    let step = ROUND.iter().map(|s| s * 1000).find(|s| *s >= wanted).unwrap_or(86_400_000);
    (step > 1000).then_some(step)
}

/// What `agent restart|stop|start|scale` asks the running agent to do.
pub enum ProcessAction {
    Restart(String),
    Stop(String),
    Start(String),
    Scale(String, u32),
}

fn agent_url(config: &Config, path: &str) -> String {
    // An agent listening on all addresses is reached on loopback.
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}{path}")
}

fn unreachable(config: &Config, e: reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the agent at {}: {e}; is it running? (--listen / [agent] listen)",
        config.listen
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("client builds")
}

/// `agent decisions`: the decision journal, read-only (works beside a running agent).
pub fn decisions(
    options: RunOptions,
    group: Option<String>,
    since: std::time::Duration,
    all: bool,
    format: Format,
) -> anyhow::Result<Exit> {
    let config = options.resolve()?;
    let store = crate::store::Store::open_read_only(&config.data_dir)?;
    let entries = store.decisions(group.as_deref(), crate::timefmt::now_ms() - since.as_millis() as i64)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Csv => {
            // `time` is a row's last evaluation; a folded run of `count` holds began at `first_time`.
            println!("time,group,current,ready,recommendation,target,tier,target_tier,action,reason,outcome,first_time,count");
            for e in &entries {
                let rec = e.recommendation.map(|r| r.to_string()).unwrap_or_default();
                let quote = |t: &str| format!("\"{}\"", t.replace('"', "\"\""));
                let action = e.action.as_str();
                println!(
                    "{},{},{},{},{rec},{},{},{},{action},{},{},{},{}",
                    crate::timefmt::format(e.t_ms),
                    e.group,
                    e.current,
                    e.ready,
                    e.target,
                    e.tier,
                    e.target_tier,
                    quote(&e.reason),
                    quote(&e.outcome),
                    crate::timefmt::format(e.first_ms),
                    e.count
                );
            }
        }
        Format::Table => {
            let mut runs: Vec<crate::store::Run> = Vec::new();
            // Runs are per group: another group's evaluations in between do not split one.
            let mut names: Vec<&str> = entries.iter().map(|e| e.group.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                let of: Vec<_> = entries.iter().filter(|e| e.group == name).cloned().collect();
                runs.extend(if all {
                    of.into_iter().map(crate::store::Run::one).collect()
                } else {
                    crate::store::runs(&of)
                });
            }
            runs.sort_by_key(|r| r.entry.first_ms);
            let rows: Vec<Vec<String>> = runs.iter().map(decision_row).collect();
            print!("{}", crate::text::table(&["TIME", "GROUP", "ACTION", "CHANGE", "REASON"], &rows));
            print!("{}", running_lines(&config, group.as_deref()));
        }
    }
    Ok(Exit::Success)
}

/// What the journal does not know: each group's schedule now and, for cluster groups, who
/// decides. From the running agent when it answers (no `--config` needed), else the schedules
/// from the configuration.
fn running_lines(config: &crate::config::Config, only: Option<&str>) -> String {
    use crate::decide::schedule::{describe, effective, Effective};
    let wanted = |name: &str| only.is_none_or(|n| n == name);
    let mut out = String::new();
    match status::fetch_from(config) {
        Ok(s) => {
            for g in s["groups"].as_array().into_iter().flatten() {
                let name = g["name"].as_str().unwrap_or_default();
                let schedule = serde_json::from_value::<Effective>(g["schedule"].clone()).ok();
                if let Some(e) = schedule.filter(|_| wanted(name)) {
                    out += &format!("{}\n", describe(name, &e));
                }
            }
            out += &status::cluster_lines(&s);
        }
        Err(e) => {
            let now = crate::timefmt::now_ms();
            for g in config.groups.iter().filter(|g| wanted(&g.name) && !g.schedules.is_empty()) {
                let b = &g.behavior;
                out += &format!("{}\n", describe(&g.name, &effective(b.min, b.max, &g.schedules, now)));
            }
            // Who decides a cluster group is the running agents' knowledge, not the journal's.
            if config.groups.iter().any(|g| g.coordinated) {
                out += &format!("cluster: roles unknown: {e:#}\n");
            }
        }
    }
    out
}

/// `agent plugins new`: writes the project and says how to build it.
pub fn new_plugin(
    name: &str,
    kind: crate::scaffold::Kind,
    lang: crate::scaffold::Lang,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Exit> {
    let root = crate::scaffold::generate(name, kind, lang, dir, sdk)?;
    let (build, test) = match lang {
        crate::scaffold::Lang::Rust => (format!("{}/build.sh", root.display()), "cargo test"),
        crate::scaffold::Lang::Python => (format!("{}/build.sh", root.display()), "python3 -m unittest"),
        crate::scaffold::Lang::Js => {
            (format!("(cd {} && npm ci && npm run build)", root.display()), "npm test")
        }
    };
    println!("created {}", root.display());
    println!("build: {build}   test: (cd {} && {test})", root.display());
    Ok(Exit::Success)
}
