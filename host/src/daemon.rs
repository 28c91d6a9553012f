//! `agent run`: opens the data folder, loads the plugins, starts the collector and the API, and
//! waits for SIGINT or SIGTERM.

use crate::api::{self, ApiState};
use crate::collector::Collector;
use crate::config::Config;
use crate::plugins::registry::Registry;
use crate::plugins::Runtime;
use crate::store::Store;
use anyhow::{bail, Context};
use std::sync::Arc;
use std::time::Instant;

/// Runs the agent until a stop signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let data = &config.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating the data folder {}", data.display()))?;
    let _lock = lock_data_dir(data)?;
    let store = Store::open(data)?;

    let runtime = Runtime::new(Some(&data.join("cache")))?;
    let (registry, collector) = match &config.plugins_dir {
        None => {
            tracing::warn!("no plugins folder given (--plugins DIR or [agent] plugins): running without plugins");
            (None, None)
        }
        Some(dir) => {
            if !dir.is_dir() {
                bail!(
                    "{}: the plugins folder does not exist; create it or pass another --plugins",
                    dir.display()
                );
            }
            let registry = Registry::new(runtime.clone(), config.clone(), Some(store.clone()), dir);
            registry.reconcile().await;
            registry.watch()?;
            let collector = Arc::new(Collector::default());
            tokio::spawn(
                collector
                    .clone()
                    .run(Arc::downgrade(&registry), config.clone()),
            );
            (Some(registry), Some(collector))
        }
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (agent.listen / --listen): is another agent running?",
                config.listen
            )
        })?;
    tracing::info!(
        "API on http://{} (GET /healthz, /status)",
        listener.local_addr()?
    );
    let state = Arc::new(ApiState {
        registry,
        collector,
        started: Instant::now(),
    });
    api::serve(listener, state, stop_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Holds an exclusive lock on `DIR/agent.lock` for the life of the agent, so two agents never
/// share one data folder.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "{}: another agent is using this data folder; stop it or pass another --data-dir",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
    }
}
