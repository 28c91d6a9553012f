//! `agent run`, the wiring: opens (and locks) the data folder, starts the store writer and its
//! maintenance, the supervisor, the sampler, the plugin registry and its collector, the
//! cluster (with `[cluster]`), the scaler and the API, and hands the lower layers what they
//! reach upwards through traits (the supervisor's replica control and the scaler's scale-in
//! ranking to the registry). Then it waits for SIGINT or SIGTERM (SIGHUP reloads) and stops
//! the children first, then the producers, and lets the writer commit what it holds.

use crate::api::{self, ApiState};
use crate::collector::Collector;
use crate::config::Config;
use crate::plugins::registry::Registry;
use crate::plugins::Runtime;
use crate::store::Store;
use crate::supervisor::Supervisor;
use crate::telemetry::Telemetry;
use anyhow::{bail, Context};
use std::sync::Arc;
use std::time::Instant;

/// How long a stop waits for the groups' evaluations in flight (a backend's scale call).
const GROUPS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the agent until a stop signal. `reload` reads the configuration again (SIGHUP,
/// `POST /reload`).
pub async fn run(config: Config, reload: crate::reload::Load) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let data = &config.data_dir;
    private_files();
    std::fs::create_dir_all(data).with_context(|| format!("creating the data folder {}", data.display()))?;
    guard_folder(data, "the data folder", config.insecure_folders)?;
    // The database, the compile cache and the token are the agent's alone.
    std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("making the data folder {} private", data.display()))?;
    if let Some(dir) = config.plugins_dir.as_deref().filter(|d| d.is_dir()) {
        guard_folder(dir, "the plugins folder", config.insecure_folders)?;
    }
    let _lock = lock_data_dir(data)?;
    let store = Store::open(data)?;
    let limits = crate::store::WriterLimits { max_series: config.max_series, idle: config.retention.raw };
    let (writer, writer_thread) = store.start_writer_with(limits)?;
    store.start_maintenance(config.retention, std::time::Duration::from_secs(60));
    let telemetry = Arc::new(Telemetry::default());
    let token = write_token(data, api_token(&config)?)?;
    let supervisor = Supervisor::start(config.processes.clone(), data, config.process_tree)
        .await
        .map_err(|e| anyhow::anyhow!("agent.{e}"))?;
    let watched = supervisor.clone();
    let sampler = crate::sampler::schedule::spawn(
        config.sample_interval,
        writer.clone(),
        telemetry.clone(),
        Box::new(move || watched.process_refs()),
    );

    let compiler =
        crate::plugins::Compiler::child_of_self(config.compile).context("locating the agent binary")?;
    let runtime = Runtime::with_compiler(Some(&data.join("cache")), compiler)?;
    let registry = match &config.plugins_dir {
        None => {
            tracing::warn!(
                "no plugins folder given (--plugins DIR or [agent] plugins): running without plugins"
            );
            None
        }
        Some(dir) => {
            if !dir.is_dir() {
                bail!(
                    "{}: the plugins folder does not exist; create it or pass another --plugins",
                    dir.display()
                );
            }
            let registry = Registry::new(runtime.clone(), config.clone(), Some(store.clone()), dir);
            registry.set_replica_control(supervisor.clone());
            // The scale-in ranking reads the configuration in force (a reload changes groups).
            let weak = Arc::downgrade(&registry);
            let config_now = move || weak.upgrade().map(|r| r.config());
            let ranking =
                crate::scaler::victims::Victims::new(store.clone(), Some(supervisor.clone()), config_now);
            registry.set_ranking(Arc::new(ranking));
            Some(registry)
        }
    };
    let collector =
        registry.as_ref().map(|_| Arc::new(Collector::new(Some(writer.clone()), telemetry.clone())));
    let cluster = config.cluster.clone().map(crate::cluster::Cluster::start);
    // The scaler's window reads have a connection no client's read can hold.
    let scaler_store = store.with_own_reader()?;
    let scaler = registry
        .as_ref()
        .map(|r| Arc::new(crate::scaler::Scaler::start(&config.groups, r, &scaler_store, cluster.clone())));
    let reloader = Arc::new(crate::reload::Reloader::new(
        config.clone(),
        reload,
        supervisor.clone(),
        registry.clone(),
        scaler.clone(),
    ));
    crate::reload::on_sighup(Arc::downgrade(&reloader));

    // The API answers from the first moment; plugins show as `loading` until they are ready.
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!("listening on {} (agent.listen / --listen): is another agent running?", config.listen)
    })?;
    tracing::info!(
        "API and page on http://{} (GET / in a browser; /healthz, /status, /metrics); sampling every {}",
        listener.local_addr()?,
        crate::duration::format(config.sample_interval)
    );
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let state = Arc::new(ApiState {
        supervisor: Some(supervisor.clone()),
        scaler: scaler.clone(),
        reloader: Some(reloader),
        token,
        registry: registry.clone(),
        collector: collector.clone(),
        started: Instant::now(),
        reads: Some(Arc::new(
            crate::store::ReadPool::start(&store, config.api.read_threads, config.api.read_queue)
                .context("starting the API's database readers")?,
        )),
        writer: Some(writer.stats.clone()),
        telemetry,
        stopping: stopping_rx,
        loopback: config.listen.ip().is_loopback(),
        sample_interval_ms: config.sample_interval.as_millis() as u64,
    });
    // Streams that never end on their own (`logs -f`) end when the agent stops, so the API's
    // graceful shutdown does not wait on them.
    let stop = async move {
        stop_signal().await;
        let _ = stopping_tx.send(true);
    };
    let api = tokio::spawn(api::serve(listener, state, config.api.clone(), stop));
    if let (Some(registry), Some(collector)) = (&registry, collector) {
        registry.watch()?;
        registry.start().await;
        tokio::spawn(collector.run(Arc::downgrade(registry)));
    }
    tokio::spawn(trim_when_settled(registry.as_ref().map(Arc::downgrade)));
    api.await.context("the API task failed")??;

    // Decide no more: the evaluations in flight end, cluster groups are handed over; then stop
    // the children (gracefully), then producing, then let the writer commit.
    let groups_ended = match &scaler {
        Some(s) => s.stop(GROUPS_PATIENCE).await,
        None => true,
    };
    if let (Some(c), true) = (&cluster, groups_ended) {
        // Not while a backend call may still run under a leadership: the lease then ends it.
        c.stop().await;
    }
    // Runs of holds folded in memory since their rows were last written.
    if let Err(e) = store.flush_journal() {
        tracing::error!("writing the journal's last folded holds: {e}");
    }
    supervisor.shutdown().await;
    drop(sampler);
    drop(registry);
    drop(writer);
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Gives back what start-up used once it is over, and again after each later burst of plugin
/// loads (see [`crate::footprint`]).
async fn trim_when_settled(registry: Option<std::sync::Weak<Registry>>) {
    let trim = || tokio::task::spawn_blocking(crate::footprint::trim);
    let Some(mut changes) = registry.as_ref().and_then(|r| r.upgrade()).map(|r| r.changes()) else {
        let _ = trim().await;
        return;
    };
    let mut settled = false;
    loop {
        let now = match registry.as_ref().and_then(|r| r.upgrade()) {
            Some(r) => r.started() && r.loading().is_empty(),
            None => break,
        };
        if now && !settled {
            let _ = trim().await;
        }
        settled = now;
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// The token for the API's actions: `[agent] api_token` (its rules are the configuration's,
/// [`Config::api_token`]), or a fresh random one.
fn api_token(config: &Config) -> anyhow::Result<String> {
    if let Some(token) = config.api_token()? {
        return Ok(token);
    }
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

/// Files the agent creates (its database, logs, cache) are readable by it alone: programs get
/// their own umask before exec (see `supervisor::launch`).
fn private_files() {
    // SAFETY: umask has no preconditions.
    unsafe {
        libc::umask(0o077);
    }
}

/// Refuses a folder that others may write (as ssh's StrictModes does): whoever can write the
/// plugins folder chooses what the agent runs, and the data folder holds its compile cache.
/// Writable by everyone is refused; writable by its group only when that group is not the
/// agent's own (a folder of the agent's user and primary group, as a user-private-group system's
/// umask 002 makes them, is its own). A link to a folder is followed, as an operator's `ln -s`
/// would mean: its target is checked.
fn guard_folder(dir: &std::path::Path, what: &str, insecure_allowed: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).with_context(|| format!("{}: cannot read {what}", dir.display()))?;
    // SAFETY: geteuid and getegid have no preconditions.
    let own_group = meta.uid() == unsafe { libc::geteuid() } && meta.gid() == unsafe { libc::getegid() };
    let others = if own_group { 0o002 } else { 0o022 };
    check_mode(dir, what, meta.mode(), others, insecure_allowed)
}

fn check_mode(
    dir: &std::path::Path,
    what: &str,
    mode: u32,
    others: u32,
    insecure_allowed: bool,
) -> anyhow::Result<()> {
    if mode & others != 0 && !insecure_allowed {
        return Err(crate::config::ConfigError(format!(
            "{}: {what} is writable by its group or by everyone (mode {:o}): whoever can write it chooses what the agent runs; `chmod go-w {}`, or set [agent] insecure_folders = true",
            dir.display(),
            mode & 0o7777,
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// Writes `token` to `DATA_DIR/api.token` (0600), where the CLI reads it: through a new file
/// (never one that was there, never through a link) renamed into place.
fn write_token(dir: &std::path::Path, token: String) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(crate::api::TOKEN_FILE);
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp); // a stale one, or a link planted there: removed, not followed
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
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
        Ok(()) => {
            // The holder's pid, as a PID file: what a package's removal without systemd stops,
            // and what the refusal below names.
            use std::io::Write;
            let mut f = &file;
            f.set_len(0)
                .and_then(|()| writeln!(f, "{}", std::process::id()))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).ok().and_then(|p| p.trim().parse::<u32>().ok());
            let holder = holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
            bail!(
                "{}: another agent{holder} is using this data folder; stop it or pass another --data-dir",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_is_written_through_a_new_file_never_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let planted = dir.path().join(crate::api::TOKEN_FILE).with_extension("tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        super::write_token(dir.path(), "t".repeat(40)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let token = dir.path().join(crate::api::TOKEN_FILE);
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "t".repeat(40));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_folder_others_may_write_is_refused_unless_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = super::guard_folder(dir.path(), "the data folder", false).unwrap_err().to_string();
        assert!(e.contains("the data folder is writable by its group or by everyone (mode 777)"), "{e}");
        assert!(super::guard_folder(dir.path(), "the data folder", true).is_ok());
        // Writable by its group, which is the agent's own (umask 002 on a user-private-group system).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(super::guard_folder(dir.path(), "the data folder", false).is_ok());
        // Writable by another group.
        let e = super::check_mode(dir.path(), "the data folder", 0o40775, 0o022, false).unwrap_err();
        assert!(e.to_string().contains("(mode 775)"), "{e}");
    }
}
