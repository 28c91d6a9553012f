//! The process supervisor: keeps the `[[process]]` programs running.
//!
//! Owns: child processes, from spawn to reaping. One task per instance awaits its exit (no
//! polling) and restarts it per its policy with exponential backoff and a start limit; health
//! checks mark instances ready or unhealthy; stopping signals the whole process group and
//! escalates to SIGKILL after a grace period. Each instance's whole tree — descendants that
//! left its process group or session included — is owned through a cgroup or the subreaper
//! (`tree.rs`, `cgroup.rs`) and dies with it. Children die with the agent (parent-death
//! signal), and a starting agent stops any left over from a previous one before starting its
//! own. A reloaded configuration is applied as a diff (`reload.rs`). Nothing outside this
//! module signals a child.

pub mod cgroup;
mod clone;
mod health;
mod instance;
pub mod launch;
pub mod output;
mod reload;
mod scale_in;
pub mod sockets;
pub mod spawn;
pub mod tree;

pub use cgroup::{TreeMode, TreeStatus};
pub use instance::{InstanceStatus, ProcState};
pub use reload::ProcessChanges;
pub use scale_in::{parse_busy, Removal, ReplicaFacts};

use crate::config::ProcessSpec;
use crate::sampler::ProcessRef;
use instance::{Control, Instance};
use spawn::Slot;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Errors of control requests, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no [[process]] named `{0}` (see `agent ps`)")]
    Unknown(String),
    #[error("{0} replicas is more than the 1000 a process may have")]
    TooMany(u32),
    #[error("process `{0}` has no replica {1}")]
    NoReplica(String, u32),
}

struct Program {
    spec: Arc<ProcessSpec>,
    /// By replica index. Indices may have gaps after a scale-in that chose its victims.
    instances: BTreeMap<u32, Handle>,
    /// Bumped by each reload that changes the spec: a rolling restart of an older one stops.
    generation: u64,
    /// Its listening sockets (`sockets`), held across restarts and scale changes.
    sockets: Arc<sockets::Sockets>,
}

struct Handle {
    ctl: mpsc::Sender<Control>,
    status: Arc<Mutex<InstanceStatus>>,
    output: Arc<output::Output>,
    members: tree::Members,
}

pub struct Supervisor {
    programs: tokio::sync::Mutex<BTreeMap<String, Program>>,
    /// Snapshot of every instance's status for readers that must not wait (sampler, API).
    statuses: Mutex<Vec<Arc<Mutex<InstanceStatus>>>>,
    marker: Arc<str>,
    /// Where the instances' credentials folders go ([`launch::credentials_root`]).
    credentials: Arc<std::path::Path>,
    tree: tree::Tree,
    http: reqwest::Client,
    /// Itself, for the futures of `ReplicaControl::set`, which must own what they use.
    self_ref: std::sync::OnceLock<std::sync::Weak<Supervisor>>,
    /// The runtime it started on: every instance runs there, also one a backend started from a
    /// group's loop (which runs on the scaler's own thread).
    runtime: tokio::runtime::Handle,
}

impl Supervisor {
    /// Takes ownership of process trees as `mode` says, stops survivors of an earlier agent on
    /// this data folder, then starts every program. Must be called from within the tokio
    /// runtime. Fails only when `mode` asks for cgroups the machine cannot give.
    pub async fn start(
        specs: Vec<ProcessSpec>,
        data_dir: &std::path::Path,
        mode: TreeMode,
    ) -> Result<Arc<Supervisor>, String> {
        let marker: Arc<str> = spawn::marker_for(data_dir).into();
        let credentials: Arc<std::path::Path> = launch::credentials_root(data_dir, &marker).into();
        let m = marker.clone();
        let tree = tokio::task::spawn_blocking(move || {
            let tree = tree::Tree::open(mode, &m)?;
            let killed = tree.kill_leftovers();
            Ok::<_, String>((tree, killed))
        })
        .await
        .map_err(|e| e.to_string())?;
        let (tree, killed) = tree.map_err(|e| format!("process_tree: {e}"))?;
        if killed > 0 {
            tracing::warn!("stopped {killed} processes left running by a previous agent on this data folder");
        }
        tree::spawn_reaper();
        let supervisor = Arc::new(Supervisor {
            programs: Default::default(),
            statuses: Default::default(),
            marker,
            credentials,
            tree,
            http: health::client(),
            self_ref: Default::default(),
            runtime: tokio::runtime::Handle::current(),
        });
        let _ = supervisor.self_ref.set(Arc::downgrade(&supervisor));
        {
            let mut programs = supervisor.programs.lock().await;
            for spec in specs {
                let program = supervisor.program(spec);
                programs.insert(program.spec.name.clone(), program);
            }
        }
        supervisor.refresh_statuses().await;
        Ok(supervisor)
    }

    /// A program with its replicas launched.
    fn program(&self, spec: ProcessSpec) -> Program {
        let spec = Arc::new(spec);
        let sockets = Arc::new(sockets::Sockets::bind(&spec.sockets));
        let instances = (0..spec.replicas).map(|r| (r, self.launch(&spec, r, None, &sockets))).collect();
        Program { spec, instances, generation: 0, sockets }
    }

    /// How process trees are owned here (for `/status`).
    pub fn tree_status(&self) -> TreeStatus {
        self.tree.status()
    }

    /// Starts replica `replica` of `spec`; `output` carries the ring of the instance it replaces.
    fn launch(
        &self,
        spec: &Arc<ProcessSpec>,
        replica: u32,
        output: Option<Arc<output::Output>>,
        sockets: &Arc<sockets::Sockets>,
    ) -> Handle {
        let slot = Slot::new(spec, replica);
        let (members, problems) = self.tree.members(&spec.name, replica, &spec.limits);
        let mut initial = InstanceStatus::new(spec, &slot);
        initial.cgroup = members.cgroup();
        if !problems.is_empty() {
            let problems = problems.join("; ");
            tracing::warn!(process = %spec.name, replica, "{problems}");
            initial.limits_error = Some(problems);
        }
        let status = Arc::new(Mutex::new(initial));
        let output = output.unwrap_or_else(output::Output::new);
        let (ctl, rx) = mpsc::channel(8);
        let instance = Instance {
            spec: spec.clone(),
            slot,
            status: status.clone(),
            marker: self.marker.clone(),
            credentials: self.credentials.clone(),
            http: self.http.clone(),
            members: members.clone(),
            output: output.clone(),
            sockets: sockets.clone(),
        };
        self.runtime.spawn(instance.run(rx));
        Handle { ctl, status, output, members }
    }

    async fn refresh_statuses(&self) {
        let programs = self.programs.lock().await;
        let all = programs.values().flat_map(|p| p.instances.values().map(|i| i.status.clone())).collect();
        *self.statuses.lock().unwrap_or_else(|p| p.into_inner()) = all;
    }

    /// Every instance, by process name and replica.
    pub fn status(&self) -> Vec<InstanceStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        statuses.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).snapshot()).collect()
    }

    /// The running instances, for the sampler's per-process metrics.
    pub fn process_refs(&self) -> Vec<ProcessRef> {
        self.status()
            .into_iter()
            .filter_map(|s| {
                Some(ProcessRef { pid: s.pid?, name: s.name, replica: s.replica, restarts: s.restarts })
            })
            .collect()
    }

    /// (instances, ready instances) of a program: capacity counts only the ready ones.
    pub fn capacity(&self, name: &str) -> Option<(u32, u32)> {
        let all: Vec<InstanceStatus> = self.status().into_iter().filter(|s| s.name == name).collect();
        if all.is_empty() && !self.known(name) {
            return None;
        }
        let ready = all.iter().filter(|s| s.state == ProcState::Ready).count() as u32;
        Some((all.len() as u32, ready))
    }

    fn known(&self, name: &str) -> bool {
        self.programs.try_lock().map(|p| p.contains_key(name)).unwrap_or(true)
    }

    async fn each(&self, name: &str, make: impl Fn() -> Control) -> Result<(), SupervisorError> {
        let programs = self.programs.lock().await;
        let program = programs.get(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
        for i in program.instances.values() {
            let _ = i.ctl.send(make()).await;
        }
        Ok(())
    }

    /// Restarts every instance of `name` now (no backoff), clearing a `failed` state.
    pub async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        self.each(name, || Control::Restart).await
    }

    /// Starts the stopped or failed instances of `name`.
    pub async fn start_program(&self, name: &str) -> Result<(), SupervisorError> {
        self.each(name, || Control::Start).await
    }

    /// Stops every instance of `name` gracefully and waits until they are down.
    pub async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        let waits = {
            let programs = self.programs.lock().await;
            let program = programs.get(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
            let mut waits = Vec::new();
            for i in program.instances.values() {
                let (ack, wait) = oneshot::channel();
                if i.ctl.send(Control::Stop(ack)).await.is_ok() {
                    waits.push(wait);
                }
            }
            waits
        };
        for w in waits {
            let _ = w.await;
        }
        Ok(())
    }

    /// Sets the number of replicas of `name`: new ones get the lowest free indices; removed ones
    /// are the highest indices, stopped gracefully (this waits for them).
    /// [`Supervisor::remove_replicas`] removes chosen ones instead.
    pub async fn set_replicas(&self, name: &str, count: u32) -> Result<(), SupervisorError> {
        if count > 1000 {
            return Err(SupervisorError::TooMany(count));
        }
        let removed = {
            let mut programs = self.programs.lock().await;
            let program = programs.get_mut(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
            let current = program.instances.len() as u32;
            let free: Vec<u32> = (0..)
                .filter(|r| !program.instances.contains_key(r))
                .take(count.saturating_sub(current) as usize)
                .collect();
            for replica in free {
                let handle = self.launch(&program.spec, replica, None, &program.sockets);
                program.instances.insert(replica, handle);
            }
            if count != current {
                tracing::info!(process = %name, "replicas {current} → {count}");
            }
            // Scaling down removes the highest indices; scaling up removes nothing.
            let mut removed = Vec::new();
            while program.instances.len() > count as usize {
                removed.extend(program.instances.pop_last().map(|(_, h)| h));
            }
            removed
        };
        self.refresh_statuses().await;
        shutdown_all(removed, true).await;
        Ok(())
    }

    /// The output ring of each instance of `name` (all replicas, or only `replica`).
    pub async fn output(
        &self,
        name: &str,
        replica: Option<u32>,
    ) -> Result<Vec<(u32, Arc<output::Output>)>, SupervisorError> {
        let programs = self.programs.lock().await;
        let program = programs.get(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
        let all = program.instances.iter().map(|(i, h)| (*i, h.output.clone()));
        let picked: Vec<_> = all.filter(|(i, _)| replica.is_none_or(|r| r == *i)).collect();
        match replica {
            Some(r) if picked.is_empty() => Err(SupervisorError::NoReplica(name.to_string(), r)),
            _ => Ok(picked),
        }
    }

    /// Stops every instance of every program, gracefully, all at once; waits for them, then
    /// removes the agent's cgroups.
    pub async fn shutdown(&self) {
        let all: Vec<Handle> = {
            let mut programs = self.programs.lock().await;
            programs.values_mut().flat_map(|p| std::mem::take(&mut p.instances).into_values()).collect()
        };
        shutdown_all(all, true).await;
        self.tree.remove();
    }
}

impl crate::plugins::sandbox::ReplicaControl for Supervisor {
    fn get(&self, process: &str) -> Option<(u32, u32)> {
        self.capacity(process)
    }

    fn set(
        &self,
        process: String,
        count: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u32, u32), String>> + Send>> {
        let this = self.self_ref.get().and_then(std::sync::Weak::upgrade);
        Box::pin(async move {
            let this = this.ok_or("the supervisor is shutting down")?;
            this.set_replicas(&process, count).await.map_err(|e| e.to_string())?;
            this.capacity(&process).ok_or_else(|| format!("no [[process]] named `{process}`"))
        })
    }

    fn list(&self, process: &str) -> Option<Vec<u32>> {
        self.replica_indices(process)
    }

    fn inspect(
        &self,
        process: String,
        replicas: Vec<u32>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<ReplicaFacts>, String>> + Send>> {
        let this = self.self_ref.get().and_then(std::sync::Weak::upgrade);
        Box::pin(async move {
            let this = this.ok_or("the supervisor is shutting down")?;
            this.inspect(&process, &replicas).await.map_err(|e| e.to_string())
        })
    }

    fn remove(
        &self,
        process: String,
        replicas: Vec<u32>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Removal, String>> + Send>> {
        let this = self.self_ref.get().and_then(std::sync::Weak::upgrade);
        Box::pin(async move {
            let this = this.ok_or("the supervisor is shutting down")?;
            this.remove_replicas(&process, &replicas).await.map_err(|e| e.to_string())
        })
    }
}

/// Shuts the instances down, all at once, and waits for them; `forget` removes their cgroups
/// too (they will not be started again under the same slot).
async fn shutdown_all(handles: Vec<Handle>, forget: bool) {
    let mut waits = Vec::new();
    for h in &handles {
        let (ack, wait) = oneshot::channel();
        if h.ctl.send(Control::Shutdown(ack)).await.is_ok() {
            waits.push(wait);
        }
    }
    for w in waits {
        let _ = w.await;
    }
    if forget {
        let members: Vec<tree::Members> = handles.iter().map(|h| h.members.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || members.iter().for_each(tree::Members::remove)).await;
    }
}
