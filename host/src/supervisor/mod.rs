//! The process supervisor: keeps the `[[process]]` programs running.
//!
//! Owns: child processes, from spawn to reaping. One task per instance awaits its exit (no
//! polling) and restarts it per its policy with exponential backoff and a start limit; health
//! checks mark instances ready or unhealthy; stopping signals the whole process group and
//! escalates to SIGKILL after a grace period. Children die with the agent (parent-death
//! signal), and a starting agent stops any left over from a previous one before starting its
//! own. Nothing outside this module signals a child.

mod health;
mod instance;
mod output;
pub mod spawn;

pub use instance::{InstanceStatus, ProcState};

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
}

struct Program {
    spec: Arc<ProcessSpec>,
    instances: Vec<Handle>,
}

struct Handle {
    ctl: mpsc::Sender<Control>,
    status: Arc<Mutex<InstanceStatus>>,
}

pub struct Supervisor {
    programs: tokio::sync::Mutex<BTreeMap<String, Program>>,
    /// Snapshot of every instance's status for readers that must not wait (sampler, API).
    statuses: Mutex<Vec<Arc<Mutex<InstanceStatus>>>>,
    marker: Arc<str>,
    http: reqwest::Client,
    /// Itself, for the futures of `ReplicaControl::set`, which must own what they use.
    self_ref: std::sync::OnceLock<std::sync::Weak<Supervisor>>,
}

impl Supervisor {
    /// Stops survivors of an earlier agent on this data folder, then starts every program.
    /// Must be called from within the tokio runtime.
    pub async fn start(specs: Vec<ProcessSpec>, data_dir: &std::path::Path) -> Arc<Supervisor> {
        let marker: Arc<str> = spawn::marker_for(data_dir).into();
        let m = marker.clone();
        let killed = tokio::task::spawn_blocking(move || spawn::kill_survivors(&m)).await.unwrap_or(0);
        if killed > 0 {
            tracing::warn!("stopped {killed} processes left running by a previous agent on this data folder");
        }
        let supervisor = Arc::new(Supervisor {
            programs: Default::default(),
            statuses: Default::default(),
            marker,
            http: health::client(),
            self_ref: Default::default(),
        });
        let _ = supervisor.self_ref.set(Arc::downgrade(&supervisor));
        {
            let mut programs = supervisor.programs.lock().await;
            for spec in specs {
                let spec = Arc::new(spec);
                let mut program = Program { spec: spec.clone(), instances: Vec::new() };
                for replica in 0..spec.replicas {
                    program.instances.push(supervisor.launch(&spec, replica));
                }
                programs.insert(spec.name.clone(), program);
            }
        }
        supervisor.refresh_statuses().await;
        supervisor
    }

    fn launch(&self, spec: &Arc<ProcessSpec>, replica: u32) -> Handle {
        let slot = Slot::new(spec, replica);
        let status = Arc::new(Mutex::new(InstanceStatus::new(spec, &slot)));
        let (ctl, rx) = mpsc::channel(8);
        let instance = Instance {
            spec: spec.clone(),
            slot,
            status: status.clone(),
            marker: self.marker.clone(),
            http: self.http.clone(),
        };
        tokio::spawn(instance.run(rx));
        Handle { ctl, status }
    }

    async fn refresh_statuses(&self) {
        let programs = self.programs.lock().await;
        let all = programs.values().flat_map(|p| p.instances.iter().map(|i| i.status.clone())).collect();
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
        for i in &program.instances {
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
            for i in &program.instances {
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

    /// Sets the number of replicas of `name`: new ones get the next indices; removed ones are
    /// the highest indices, stopped gracefully (this waits for them).
    pub async fn set_replicas(&self, name: &str, count: u32) -> Result<(), SupervisorError> {
        if count > 1000 {
            return Err(SupervisorError::TooMany(count));
        }
        let removed = {
            let mut programs = self.programs.lock().await;
            let program = programs.get_mut(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
            let current = program.instances.len() as u32;
            for replica in current..count {
                let handle = self.launch(&program.spec, replica);
                program.instances.push(handle);
            }
            if count != current {
                tracing::info!(process = %name, "replicas {current} → {count}");
            }
            // Scaling down removes the highest indices; scaling up removes nothing.
            let keep = (count as usize).min(program.instances.len());
            program.instances.split_off(keep)
        };
        self.refresh_statuses().await;
        shutdown_all(removed).await;
        Ok(())
    }

    /// Stops every instance of every program, gracefully, all at once; waits for them.
    pub async fn shutdown(&self) {
        let all: Vec<Handle> = {
            let mut programs = self.programs.lock().await;
            programs.values_mut().flat_map(|p| p.instances.drain(..)).collect()
        };
        shutdown_all(all).await;
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
}

async fn shutdown_all(handles: Vec<Handle>) {
    let mut waits = Vec::new();
    for h in handles {
        let (ack, wait) = oneshot::channel();
        if h.ctl.send(Control::Shutdown(ack)).await.is_ok() {
            waits.push(wait);
        }
    }
    for w in waits {
        let _ = w.await;
    }
}
