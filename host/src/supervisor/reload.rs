//! A reloaded `[[process]]` list applied as a diff: added programs start, removed ones stop,
//! changed ones restart replica by replica (each ready before the next when it has a health
//! check), a change of `replicas` alone only scales, and unchanged ones are not touched.

use super::{shutdown_all, InstanceStatus, ProcState, Program, Supervisor};
use crate::config::ProcessSpec;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a reload did to the supervised programs, by name.
#[derive(Debug, Default, Clone, serde::Serialize, PartialEq)]
pub struct ProcessChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Changed: restarted replica by replica (in the background; `agent ps` shows progress).
    pub restarted: Vec<String>,
    /// Only `replicas` changed: scaled, nothing restarted.
    pub scaled: Vec<String>,
    pub unchanged: Vec<String>,
}

/// How two versions of a program differ.
#[derive(Debug, PartialEq)]
enum Diff {
    Same,
    Replicas,
    Changed,
}

fn diff(old: &ProcessSpec, new: &ProcessSpec) -> Diff {
    if old == new {
        return Diff::Same;
    }
    let mut same_but_count = new.clone();
    same_but_count.replicas = old.replicas;
    if *old == same_but_count {
        Diff::Replicas
    } else {
        Diff::Changed
    }
}

/// Longest wait for a restarted replica to become ready before the next is restarted.
fn ready_wait(spec: &ProcessSpec) -> Duration {
    spec.health.as_ref().map_or(Duration::ZERO, |h| {
        h.start_period + (h.interval + h.timeout) * (h.failure_threshold + h.success_threshold)
    })
}

impl Supervisor {
    /// Applies a new process list. Removed programs are stopped (and waited for) before added
    /// ones start, so a port can move from one to the other; rolling restarts continue in the
    /// background after this returns.
    pub async fn apply(self: &Arc<Self>, specs: Vec<ProcessSpec>) -> ProcessChanges {
        let mut changes = ProcessChanges::default();
        let (removed, rolling) = {
            let mut programs = self.programs.lock().await;
            let gone: Vec<String> =
                programs.keys().filter(|n| !specs.iter().any(|s| &s.name == *n)).cloned().collect();
            let mut removed = Vec::new();
            for name in gone {
                if let Some(p) = programs.remove(&name) {
                    removed.extend(p.instances.into_values());
                }
                changes.removed.push(name);
            }
            let mut rolling = Vec::new();
            for spec in &specs {
                let Some(program) = programs.get_mut(&spec.name) else { continue };
                match diff(&program.spec, spec) {
                    Diff::Same => changes.unchanged.push(spec.name.clone()),
                    Diff::Replicas => changes.scaled.push(spec.name.clone()),
                    Diff::Changed => {
                        changes.restarted.push(spec.name.clone());
                        // A count a scaling group set stays, unless the file's own count changed.
                        let count = (program.spec.replicas != spec.replicas).then_some(spec.replicas);
                        if program.spec.sockets != spec.sockets {
                            // New addresses: bound now, handed to each replica as it restarts.
                            program.sockets = Arc::new(super::sockets::Sockets::bind(&spec.sockets));
                        }
                        let previous = std::mem::replace(&mut program.spec, Arc::new(spec.clone()));
                        program.generation += 1;
                        rolling.push((spec.name.clone(), count, previous, program.generation));
                    }
                }
            }
            (removed, rolling)
        };
        shutdown_all(removed, true).await;
        for spec in &specs {
            let known = self.programs.lock().await.contains_key(&spec.name);
            if !known {
                let program: Program = self.program(spec.clone());
                self.programs.lock().await.insert(spec.name.clone(), program);
                changes.added.push(spec.name.clone());
            }
        }
        for name in &changes.scaled {
            if let Some(spec) = specs.iter().find(|s| &s.name == name) {
                if let Some(p) = self.programs.lock().await.get_mut(name) {
                    p.spec = Arc::new(spec.clone());
                }
                let _ = self.set_replicas(name, spec.replicas).await;
            }
        }
        self.refresh_statuses().await;
        for (name, count, previous, generation) in rolling {
            let this = self.clone();
            tokio::spawn(async move { this.roll(&name, count, previous, generation).await });
        }
        changes
    }

    /// Restarts each replica of `name` with its new spec, one at a time, waiting for each to be
    /// ready (when it has a health check) before the next; then sets the replica count if the
    /// file changed it (`count`). A replica that does not become ready halts the roll: the
    /// others keep running `previous`, which becomes the program's spec again, so reloading a
    /// fixed file restarts them all. A later reload that changes the program again supersedes
    /// this roll (`generation`).
    async fn roll(&self, name: &str, count: Option<u32>, previous: Arc<ProcessSpec>, generation: u64) {
        let indices: Vec<u32> = match self.programs.lock().await.get(name) {
            Some(p) if p.generation == generation => p.instances.keys().copied().collect(),
            _ => return,
        };
        for replica in indices {
            let Some((spec, status)) = self.replace(name, replica, generation).await else {
                // Removed meanwhile (a scale-in), or superseded by a newer reload.
                match self.programs.lock().await.get(name) {
                    Some(p) if p.generation == generation => continue,
                    _ => return,
                }
            };
            tracing::info!(process = %name, replica, "restarted with its new configuration");
            if spec.health.is_some() && !wait_ready(&status, ready_wait(&spec)).await {
                tracing::error!(
                    process = %name, replica,
                    "not ready within {} with the new configuration: rolling restart halted, the other replicas keep the previous one",
                    crate::duration::format(ready_wait(&spec))
                );
                if let Some(program) =
                    self.programs.lock().await.get_mut(name).filter(|p| p.generation == generation)
                {
                    program.spec = previous;
                }
                return;
            }
        }
        if let Some(count) = count {
            let _ = self.set_replicas(name, count).await;
        }
    }

    /// Stops replica `replica` of `name` and starts it again with the program's spec (its
    /// output ring carried over). `None` once there is no such replica, or a newer reload
    /// changed the program.
    async fn replace(
        &self,
        name: &str,
        replica: u32,
        generation: u64,
    ) -> Option<(Arc<ProcessSpec>, Arc<Mutex<InstanceStatus>>)> {
        let (ctl, output) = {
            let programs = self.programs.lock().await;
            let program = programs.get(name).filter(|p| p.generation == generation)?;
            let old = program.instances.get(&replica)?;
            (old.ctl.clone(), old.output.clone())
        };
        let (ack, wait) = tokio::sync::oneshot::channel();
        if ctl.send(super::Control::Shutdown(ack)).await.is_ok() {
            let _ = wait.await;
        }
        let (spec, status) = {
            let mut programs = self.programs.lock().await;
            let program = programs.get_mut(name).filter(|p| p.generation == generation)?;
            let spec = program.spec.clone();
            let handle = self.launch(&spec, replica, Some(output), &program.sockets);
            let status = handle.status.clone();
            *program.instances.get_mut(&replica)? = handle;
            (spec, status)
        };
        self.refresh_statuses().await;
        Some((spec, status))
    }
}

/// Waits up to `limit` for the instance to be ready; false if it was not.
async fn wait_ready(status: &Mutex<InstanceStatus>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match status.lock().unwrap_or_else(|p| p.into_inner()).state {
            ProcState::Ready => return true,
            ProcState::Starting | ProcState::Stopped if tokio::time::Instant::now() < deadline => {}
            _ => return false,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_replicas_alone_is_told_apart_from_a_change() {
        let text = "[[process]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"9\"]\n";
        let old = crate::config::Config::parse(text, "t.toml".as_ref()).unwrap().processes.remove(0);
        let mut new = old.clone();
        assert_eq!(diff(&old, &new), Diff::Same);
        new.replicas = 3;
        assert_eq!(diff(&old, &new), Diff::Replicas);
        new.args = vec!["10".into()];
        assert_eq!(diff(&old, &new), Diff::Changed);
    }
}
