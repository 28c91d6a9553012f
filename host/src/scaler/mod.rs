//! Scaling groups: each `[[group]]` runs its own control loop (`group.rs`): gather (the backend's
//! capacity, the metric windows from the store), advise (the policy plugin), decide (the pure
//! step of `crate::decide`, shared with `agent simulate`), act (the backend plugin, fenced for a
//! cluster group), record (the decision journal). `victims.rs` ranks units for scale-in.

pub mod group;
mod storage;
pub mod victims;

/// The longest window kept in memory: longer ones are read from SQLite.
const MAX_KEPT_WINDOW_MS: i64 = 3_600_000;

/// How much longer than the longest window memory keeps: memory lets go of points by the newest
/// sample's time, and a sample written between an evaluation's clock reading and its window
/// read (or a source whose clock runs ahead) is newer than the window's end.
const KEPT_SLACK_MS: i64 = 60_000;

/// Has the store keep in memory the samples the groups' windows read, so an evaluation reads
/// its windows without SQLite (an agent with many groups evaluates each every second).
fn keep_windows(store: &Store, specs: &[GroupSpec]) {
    let metrics = specs.iter().flat_map(|s| &s.metrics);
    let horizon = metrics.clone().map(|m| m.window.as_millis() as i64).max().unwrap_or(0);
    let horizon = horizon.min(MAX_KEPT_WINDOW_MS) + KEPT_SLACK_MS;
    store.keep_recent(metrics.map(|m| m.name.clone()), horizon);
}

/// The runtime the groups' loops run on: one thread of their own. An evaluation at rest is
/// microseconds of work; on one thread a thousand groups never wait for each other's plugin
/// instance on another core nor wake one (measured: a third less CPU per evaluation than on the
/// agent's two workers, docs/benchmarks.md), and a stalled store or a busy group cannot take
/// the API's, the collectors' or the supervisor's threads. A plugin call still cannot hold the
/// thread: it yields at every epoch tick and stops at its CPU budget. The price: the groups'
/// plugin calls share one core. Started with the first group; it lives as long as the process.
fn loops() -> &'static tokio::runtime::Handle {
    static LOOPS: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    LOOPS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("scaler".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                let _ = tx.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the scaler thread starts");
        rx.recv().expect("the scaler thread sends its runtime")
    })
}

#[cfg(test)]
mod equivalence;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Labels, Sample, SeriesKey};

    #[test]
    fn a_window_is_read_from_memory_though_a_sample_is_newer_than_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let text = "[[group]]\nname = \"web\"\ninterval = \"1s\"\n\
                    metrics = [{ name = \"app.load\", window = \"5s\" }]\n\
                    policy = \"target-tracking\"\nbackend = \"ledger\"\nmin = 1\nmax = 4\n";
        let config = crate::config::Config::parse(text, std::path::Path::new("agent.toml")).unwrap();
        keep_windows(&store, &config.groups);
        // The evaluation read its clock at `now`; the newest sample is 2 s newer (written since,
        // or from a clock that runs ahead).
        let now = crate::timefmt::now_ms();
        let key = SeriesKey::new("app.load", Labels::new());
        let samples =
            (0..200).map(|i| Sample { key: key.clone(), t_ms: now + 2_000 - i * 1_000, value: 1.0 });
        let (writer, thread) = store.start_writer().unwrap();
        assert!(writer.submit(samples.collect()));
        drop(writer);
        thread.join().unwrap();
        assert!(
            store.window_in_memory("app.load", now - 5_000, now + 1),
            "the 5 s window fell back to SQLite"
        );
        assert!(
            !store.window_in_memory("app.load", now - 100_000, now + 1),
            "memory keeps a minute more, not all"
        );
    }
}

use crate::config::GroupSpec;
use crate::plugins::registry::Registry;
use crate::store::Store;
use group::GroupStatus;
use std::sync::{Arc, Mutex};

/// The running groups.
pub struct Scaler {
    groups: Mutex<Vec<Running>>,
    /// Loops of removed groups that may still be ending (an evaluation in flight, the
    /// resignation): a stop waits for them, and a group added again under the same name starts
    /// only once its old loop has ended.
    retiring: Mutex<Vec<(String, tokio::task::JoinHandle<()>)>>,
    /// Set by [`Scaler::stop`] under the `groups` lock: a reload after it starts nothing.
    stopped: std::sync::atomic::AtomicBool,
    registry: std::sync::Weak<Registry>,
    store: Store,
    /// `[cluster]`: where `coordination = "cluster"` groups find their leader.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

struct Running {
    spec: Arc<GroupSpec>,
    specs: tokio::sync::watch::Sender<Arc<GroupSpec>>,
    status: Arc<Mutex<GroupStatus>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a reload did to the groups, by name.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GroupChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed: in force from the group's next evaluation, its history kept.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Scaler {
    /// Starts one loop per group. The loops end when the registry is dropped.
    /// The cluster this agent coordinates through, if any.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.as_deref()
    }

    pub fn start(
        specs: &[GroupSpec],
        registry: &Arc<Registry>,
        store: &Store,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Scaler {
        let registry = Arc::downgrade(registry);
        let scaler = Scaler {
            groups: Mutex::default(),
            retiring: Mutex::default(),
            stopped: false.into(),
            registry,
            store: store.clone(),
            cluster,
        };
        keep_windows(store, specs);
        let started: Vec<Running> = specs.iter().map(|s| scaler.launch(s, Vec::new())).collect();
        *scaler.groups.lock().unwrap_or_else(|p| p.into_inner()) = started;
        scaler
    }

    /// Starts `spec`'s loop once the `before` loops (an older loop of the same name) ended.
    fn launch(&self, spec: &GroupSpec, before: Vec<tokio::task::JoinHandle<()>>) -> Running {
        let status = Arc::new(Mutex::new(GroupStatus {
            name: spec.name.clone(),
            dry_run: spec.dry_run,
            ..Default::default()
        }));
        let spec = Arc::new(spec.clone());
        let (specs, rx) = tokio::sync::watch::channel(spec.clone());
        let cluster = self.cluster.clone();
        let run = group::run(rx, self.registry.clone(), self.store.clone(), status.clone(), cluster);
        let task = loops().spawn(async move {
            for old in before {
                let _ = old.await;
            }
            run.await
        });
        Running { spec, specs, status, task }
    }

    /// Puts a reloaded group list in force: new groups start, removed ones stop before their
    /// next evaluation, changed ones take the new spec at their next evaluation.
    pub fn apply(&self, specs: &[GroupSpec]) -> GroupChanges {
        keep_windows(&self.store, specs);
        let mut changes = GroupChanges::default();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return changes;
        }
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|(_, task)| !task.is_finished());
        let mut kept = Vec::new();
        for running in groups.drain(..) {
            match specs.iter().find(|s| s.name == running.spec.name) {
                None => {
                    // Dropping the sender ends the loop; it may still be finishing.
                    changes.removed.push(running.spec.name.clone());
                    retiring.push((running.spec.name.clone(), running.task));
                }
                Some(s) if *running.spec == *s => {
                    changes.unchanged.push(s.name.clone());
                    kept.push(running);
                }
                Some(s) => {
                    changes.changed.push(s.name.clone());
                    let spec = Arc::new(s.clone());
                    let _ = running.specs.send(spec.clone());
                    kept.push(Running { spec, ..running });
                }
            }
        }
        let new: Vec<&GroupSpec> =
            specs.iter().filter(|s| !kept.iter().any(|r| r.spec.name == s.name)).collect();
        for s in new {
            changes.added.push(s.name.clone());
            let (old, others): (Vec<_>, Vec<_>) = retiring.drain(..).partition(|(name, _)| *name == s.name);
            *retiring = others;
            kept.push(self.launch(s, old.into_iter().map(|(_, task)| task).collect()));
        }
        // File order, as at start-up.
        kept.sort_by_key(|r| specs.iter().position(|s| s.name == r.spec.name));
        *groups = kept;
        changes
    }

    /// Stops every group's loop and waits, at most `patience`, for the evaluations in flight to
    /// end (a backend call is not cut short) and the cluster groups this agent leads to be
    /// resigned. Whether all ended in time.
    pub async fn stop(&self, patience: std::time::Duration) -> bool {
        let running = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            std::mem::take(&mut *groups)
        };
        let retiring = std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        // Dropping each sender ends its loop.
        let tasks: Vec<_> =
            running.into_iter().map(|r| r.task).chain(retiring.into_iter().map(|(_, task)| task)).collect();
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        let ended = tokio::time::timeout(patience, all).await.is_ok();
        if !ended {
            tracing::warn!(
                "groups still acting after {}: stopping without them",
                crate::duration::format(patience)
            );
            // Their runtime outlives the daemon's: cancelled, as the daemon's runtime would have.
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        ended
    }

    pub fn status(&self) -> Vec<GroupStatus> {
        let problems = self.registry.upgrade().map(|r| r.problems()).unwrap_or_default();
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .map(|g| {
                let mut status =
                    g.status.lock().unwrap_or_else(|p| p.into_inner()).clone().configured(&g.spec);
                status.problems = problems.groups.get(&status.name).cloned().unwrap_or_default();
                status
            })
            .collect()
    }
}
