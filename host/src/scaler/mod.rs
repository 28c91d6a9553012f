//! Scaling groups: each `[[group]]` runs its own control loop (`group.rs`): gather (the backend's
//! capacity, the metric windows from the store), advise (the policy plugin), decide (the pure
//! step of `crate::decide`, shared with `agent simulate`), act (the backend plugin, fenced for a
//! cluster group), record (the decision journal). `victims.rs` ranks units for scale-in.

pub mod group;
pub mod victims;

#[cfg(test)]
mod equivalence;

use crate::config::GroupSpec;
use crate::plugins::registry::Registry;
use crate::store::Store;
use group::GroupStatus;
use std::sync::{Arc, Mutex};

/// The running groups.
pub struct Scaler {
    groups: Mutex<Vec<Running>>,
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
        let scaler = Scaler { groups: Mutex::default(), registry, store: store.clone(), cluster };
        let started: Vec<Running> = specs.iter().map(|s| scaler.launch(s)).collect();
        *scaler.groups.lock().unwrap_or_else(|p| p.into_inner()) = started;
        scaler
    }

    fn launch(&self, spec: &GroupSpec) -> Running {
        let status = Arc::new(Mutex::new(GroupStatus {
            name: spec.name.clone(),
            dry_run: spec.dry_run,
            ..Default::default()
        }));
        let spec = Arc::new(spec.clone());
        let (specs, rx) = tokio::sync::watch::channel(spec.clone());
        let cluster = self.cluster.clone();
        let task =
            tokio::spawn(group::run(rx, self.registry.clone(), self.store.clone(), status.clone(), cluster));
        Running { spec, specs, status, task }
    }

    /// Puts a reloaded group list in force: new groups start, removed ones stop before their
    /// next evaluation, changed ones take the new spec at their next evaluation.
    pub fn apply(&self, specs: &[GroupSpec]) -> GroupChanges {
        let mut changes = GroupChanges::default();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = Vec::new();
        for running in groups.drain(..) {
            match specs.iter().find(|s| s.name == running.spec.name) {
                None => changes.removed.push(running.spec.name.clone()),
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
            kept.push(self.launch(s));
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
        let running = std::mem::take(&mut *self.groups.lock().unwrap_or_else(|p| p.into_inner()));
        // Dropping each sender ends its loop.
        let tasks: Vec<_> = running.into_iter().map(|r| r.task).collect();
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
