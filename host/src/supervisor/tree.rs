//! Owning an instance's whole process tree, including descendants that left its process group
//! or session (`setsid`, double fork).
//!
//! The agent is a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned descendants are
//! re-parented to it rather than to init, so they stay findable, and it reaps them. Each
//! instance is tracked by the best mechanism the machine allows: its own cgroup (`cgroup.rs`),
//! else its process group plus every descendant of the agent that carries the instance's tag
//! in its environment (`AGENT_INSTANCE`) or descends from its leader.

use super::cgroup::{Cell, Cgroups, Limits, Placement, TreeMode, TreeStatus};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// Environment variable naming the instance a process belongs to (inherited by its children).
pub const INSTANCE_VAR: &str = "AGENT_INSTANCE";

/// The leaders the supervisor spawned and tokio will reap: the reaper must leave them alone.
/// Held across `spawn` so that a leader that exits at once is never reaped by the wrong side.
static LEADERS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn leaders() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    LEADERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `spawn` (which starts an instance's leader and returns its pid) with the leader
/// registered, so the orphan reaper never takes its exit status.
pub fn spawn_leader<T>(spawn: impl FnOnce() -> std::io::Result<(T, Option<u32>)>) -> std::io::Result<T> {
    let mut set = leaders();
    let (child, pid) = spawn()?;
    if let Some(pid) = pid {
        set.insert(pid);
    }
    Ok(child)
}

/// The leader `pid` has been waited for.
pub fn leader_reaped(pid: u32) {
    leaders().remove(&pid);
}

/// How the supervisor owns process trees on this machine.
pub struct Tree {
    cgroups: Option<Cgroups>,
    cgroup_error: Option<String>,
    marker: String,
}

impl Tree {
    /// Becomes a subreaper and opens the cgroups `mode` asks for. An explicit cgroup mode that
    /// the machine cannot give is an error; `auto` falls back and says why in the status.
    pub fn open(mode: TreeMode, marker: &str) -> Result<Tree, String> {
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        }
        let (cgroups, cgroup_error) = match Cgroups::open(mode, marker) {
            Ok(c) => (Some(c), None),
            Err(e) if matches!(mode, TreeMode::Auto | TreeMode::Subreaper) => (None, Some(e)),
            Err(e) => return Err(e),
        };
        Ok(Tree { cgroups, cgroup_error, marker: marker.to_string() })
    }

    pub fn status(&self) -> TreeStatus {
        match &self.cgroups {
            Some(c) => c.status(),
            None => TreeStatus {
                process_tree: "subreaper",
                cgroup: None,
                cgroup_error: self.cgroup_error.clone(),
                subreaper: true,
                memory_limits: "not available: no cgroups".into(),
                cpu_limits: "not available: no cgroups".into(),
            },
        }
    }

    /// Stops what an earlier agent on this data folder left running: its cgroups, then any
    /// process carrying its marker. Returns how many processes.
    pub fn kill_leftovers(&self) -> usize {
        let in_cgroups = self.cgroups.as_ref().map_or(0, Cgroups::kill_leftovers);
        in_cgroups + super::spawn::kill_survivors(&self.marker)
    }

    /// The members of one instance, with its limits applied where possible.
    pub fn members(&self, name: &str, replica: u32, limits: &Limits) -> (Members, Vec<String>) {
        let tag = format!("{}.{name}.{replica}", self.marker);
        let (cell, mut problems) = match &self.cgroups {
            Some(c) => {
                let (cell, problems) = c.cell(name, replica, limits);
                (Some(cell), problems)
            }
            None => (None, Vec::new()),
        };
        if cell.is_none() && (limits.memory_max.is_some() || limits.cpu_max.is_some()) {
            problems.push(format!(
                "memory_max/cpu_max cannot be applied: no cgroups ({})",
                self.cgroup_error.as_deref().unwrap_or("process_tree = \"subreaper\"")
            ));
        }
        (Members { cell, tag }, problems)
    }

    /// Removes the agent's cgroup folders (at shutdown, once every instance is down).
    pub fn remove(&self) {
        if let Some(c) = &self.cgroups {
            c.remove();
        }
    }
}

/// Everything that belongs to one instance.
#[derive(Debug, Clone)]
pub struct Members {
    cell: Option<Cell>,
    /// `AGENT_INSTANCE` of its processes.
    pub tag: String,
}

impl Members {
    /// The cgroups a new leader goes into (none without cgroups).
    pub fn place(&self) -> std::io::Result<Placement> {
        match &self.cell {
            Some(cell) => cell.place(),
            None => Ok(Placement { into: None, into_procs: None, join: Vec::new() }),
        }
    }

    /// Removes the instance's emptied run cgroups, off the restart's path (a cgroup's removal
    /// costs a few hundred microseconds).
    pub fn prune(&self) {
        if let Some(cell) = self.cell.clone() {
            let keep_from = super::cgroup::next_run_number();
            tokio::task::spawn_blocking(move || cell.prune(keep_from));
        }
    }

    /// Sends `signal` to the leader's process group and to every other member.
    pub fn signal(&self, pgid: Option<u32>, signal: i32) {
        if let Some(pgid) = pgid {
            super::spawn::signal_group(pgid, signal);
        }
        match &self.cell {
            Some(cell) => cell.signal(signal),
            None => {
                for pid in self.tagged(pgid) {
                    kill(pid, signal);
                }
            }
        }
    }

    /// Kills every member, whatever session or group it is in.
    pub fn kill(&self, pgid: Option<u32>) {
        if let Some(pgid) = pgid {
            super::spawn::signal_group(pgid, libc::SIGKILL);
        }
        match &self.cell {
            Some(cell) => cell.kill(),
            None => {
                // A member may fork while we look: a few rounds catch its children.
                for _ in 0..5 {
                    let pids = self.tagged(pgid);
                    if pids.is_empty() {
                        break;
                    }
                    for pid in pids {
                        kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }

    /// Whether any member is still alive (not a zombie).
    pub fn any_alive(&self, pgid: Option<u32>) -> bool {
        match &self.cell {
            Some(cell) => cell.procs().into_iter().any(|p| !is_zombie(p)),
            None => !self.tagged(pgid).is_empty(),
        }
    }

    /// Removes the instance's cgroup (when the instance is removed for good).
    pub fn remove(&self) {
        if let Some(cell) = &self.cell {
            cell.remove(Duration::from_secs(1));
        }
    }

    pub fn cgroup(&self) -> Option<String> {
        self.cell.as_ref().map(|c| c.path().display().to_string())
    }

    /// Live descendants of the agent that belong to this instance: the leader's subtree, and
    /// any process whose environment carries the instance's tag (and its subtree).
    fn tagged(&self, leader: Option<u32>) -> Vec<u32> {
        let needle = format!("{INSTANCE_VAR}={}", self.tag);
        let mut found = Vec::new();
        let mut stack: Vec<(u32, bool)> =
            children(std::process::id()).into_iter().map(|p| (p, Some(p) == leader)).collect();
        while let Some((pid, inherited)) = stack.pop() {
            if is_zombie(pid) {
                continue;
            }
            let member = inherited || carries(pid, &needle);
            if member {
                found.push(pid);
            }
            stack.extend(children(pid).into_iter().map(|c| (c, member)));
        }
        found
    }
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

pub(super) fn carries(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
}

/// The children of every thread of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// (state, process group) from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text[text.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some((state, pgrp))
}

pub fn is_zombie(pid: u32) -> bool {
    stat(pid).is_none_or(|(s, _)| s == 'Z' || s == 'X')
}

/// Reaps re-parented orphans on every SIGCHLD. It takes only zombies that are neither a
/// registered leader (tokio waits for those) nor in the agent's own process group (health-check
/// commands and the compiler child, which their spawners wait for).
pub fn spawn_reaper() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        tracing::warn!(
            "cannot watch SIGCHLD: orphaned descendants of supervised processes will not be reaped"
        );
        return;
    };
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            let _ = tokio::task::spawn_blocking(reap_orphans).await;
        }
    });
}

fn reap_orphans() -> usize {
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    // Leaders are skipped by pid (no /proc read), so the scan costs the orphans, not the fleet.
    let candidates: Vec<u32> = {
        let leaders = leaders();
        children(std::process::id()).into_iter().filter(|p| !leaders.contains(p)).collect()
    };
    let zombies: Vec<u32> = candidates
        .into_iter()
        .filter(|pid| stat(*pid).is_some_and(|(state, group)| state == 'Z' && group != own_group))
        .collect();
    let leaders = leaders();
    let mut reaped = 0;
    for pid in zombies.into_iter().filter(|p| !leaders.contains(p)) {
        let mut status = 0;
        // SAFETY: waitpid on our own zombie child, not a leader (checked under the lock that
        // spawning a leader holds).
        if unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) } == pid as libc::pid_t {
            reaped += 1;
        }
    }
    reaped
}
