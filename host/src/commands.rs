//! What each subcommand does, so that `main.rs` only parses. Each returns an [`Exit`] or an
//! error whose chain `main` prints on one line.

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
    pub fn resolve(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::defaults(),
        };
        if let Some(p) = self.plugins {
            config.plugins_dir = Some(p);
        }
        if let Some(d) = self.data_dir {
            config.data_dir = d;
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        Ok(config)
    }
}

/// Logs go to stderr; `AGENT_LOG` filters them (default: `info` for `run`, `warn` for the
/// one-shot commands, whose output is on stdout).
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// An error chain on one line: `outer: inner: root`.
pub fn error_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(options: RunOptions) -> anyhow::Result<Exit> {
    let config = options.resolve()?;
    runtime()?.block_on(crate::daemon::run(config))?;
    Ok(Exit::Success)
}

pub fn inspect(file: &Path, as_json: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async {
        let rt = Runtime::new(None)?;
        let p = loader::prepare(&rt, file).await?;
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
            "contract": format!("{}@{}", crate::plugins::bindings::PACKAGE, p.header.contract),
            "config_keys": keys,
            "imports": p.header.imports,
            "exports": p.header.exports,
            "sha256": p.hash,
            "size_bytes": std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
        });
        if as_json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "{} {} {} — {}",
                p.kind(),
                p.metadata.name,
                p.metadata.version,
                p.metadata.description
            );
            println!(
                "file:      {} ({} bytes)",
                file.display(),
                report["size_bytes"]
            );
            println!(
                "contract:  {}",
                report["contract"].as_str().unwrap_or_default()
            );
            println!("config keys:");
            if p.metadata.config_keys.is_empty() {
                println!("  (none)");
            }
            for k in &p.metadata.config_keys {
                let required = if k.required { " (required)" } else { "" };
                println!("  {}{required}: {}", k.name, k.description);
            }
            println!("imports:");
            for i in &p.header.imports {
                println!("  {i}");
            }
        }
        Ok(Exit::Success)
    })
}

pub fn list(options: RunOptions, as_json: bool) -> anyhow::Result<Exit> {
    let config = Arc::new(options.resolve()?);
    let dir = config
        .plugins_dir
        .clone()
        .context("give the folder with --plugins DIR (or [agent] plugins in --config)")?;
    runtime()?.block_on(async {
        let rt = Runtime::new(None)?;
        let registry = Registry::new(rt, config, None, &dir);
        registry.reconcile().await;
        let (plugins, failed) = registry.status();
        if as_json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"plugins": plugins, "failed_files": failed}))?
            );
        } else {
            for p in &plugins {
                println!("{}\t{}\t{}\t{}\tok", p.file, p.name, p.kind, p.version);
            }
            for f in &failed {
                println!("{}\t-\t-\t-\t{}", f.file, f.error);
            }
        }
        Ok(if failed.is_empty() {
            Exit::Success
        } else {
            Exit::SomeFailed
        })
    })
}
