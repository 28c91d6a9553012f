//! A cgroup per instance, so that every descendant of an instance — whatever session or process
//! group it moved to — is found and killed with it, and optional memory and CPU limits.
//!
//! Membership lives in cgroup v2 where it is mounted and writable (`cgroup.kill` kills the whole
//! subtree in one write), else in a v1 hierarchy (killed by listing `cgroup.procs` until empty).
//! Limits use the v2 `memory`/`cpu` controllers when they can be enabled under the agent's
//! cgroup, else the v1 `memory`/`cpu` hierarchies (hybrid machines), else they are reported as
//! not applied. Where no cgroup can be created the supervisor relies on the subreaper and the
//! marker scan (`tree.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config::values::TreeMode;

/// A cgroup folder of the agent in one hierarchy: `…/elastic-agent.MARKER`.
#[derive(Debug, Clone)]
struct Dir {
    path: PathBuf,
    v2: bool,
}

/// The agent's cgroups: where instances' membership and limits live.
#[derive(Debug)]
pub struct Cgroups {
    members: Dir,
    memory: Result<Dir, String>,
    cpu: Result<Dir, String>,
}

/// What `/status` says of the mechanism in force.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TreeStatus {
    /// `cgroup-v2`, `cgroup-v1` or `subreaper`.
    pub process_tree: &'static str,
    /// The agent's cgroup folder for its instances, if any.
    pub cgroup: Option<String>,
    /// Why cgroups are not used (when they are not).
    pub cgroup_error: Option<String>,
    /// Always true on Linux: orphaned descendants come back to the agent, which reaps them.
    pub subreaper: bool,
    /// `memory_max` and `cpu_max`: how they are applied, or why they cannot be.
    pub memory_limits: String,
    pub cpu_limits: String,
}

/// One line of `/proc/self/mountinfo` that matters here.
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: String,
}

fn mounts() -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: l.get(3)?.to_string(),
                point: PathBuf::from(l.get(4)?),
                fstype: r.first()?.to_string(),
                options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The agent's own cgroup path in the hierarchy with `controller` (`""` for v2).
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

/// The folder of the agent's own cgroup in `mount`.
fn own_dir(mount: &Mount, path: &str) -> PathBuf {
    let relative = path.strip_prefix(mount.root.trim_end_matches('/')).unwrap_or(path);
    mount.point.join(relative.trim_start_matches('/'))
}

fn v2_own() -> Result<PathBuf, String> {
    let mount =
        mounts().into_iter().find(|m| m.fstype == "cgroup2").ok_or("no cgroup v2 hierarchy is mounted")?;
    let path = own_path("").ok_or("/proc/self/cgroup has no v2 entry")?;
    Ok(own_dir(&mount, &path))
}

fn v1_own(controller: &str) -> Result<PathBuf, String> {
    let mount = mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))
        .ok_or_else(|| format!("no cgroup v1 `{controller}` hierarchy is mounted"))?;
    let path =
        own_path(controller).ok_or_else(|| format!("/proc/self/cgroup has no `{controller}` entry"))?;
    Ok(own_dir(&mount, &path))
}

/// Creates (or reuses) `parent/elastic-agent.MARKER`.
fn make_dir(parent: &Path, marker: &str, v2: bool) -> Result<Dir, String> {
    let path = parent.join(format!("elastic-agent.{marker}"));
    match std::fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    }
    Ok(Dir { path, v2 })
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("writing `{text}` to {}: {e}", path.display()))
}

/// Removes a cgroup folder and the folders below it (cgroup folders hold only control files,
/// which go with their folder).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for sub in entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
            let _ = remove_tree(&sub);
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Enables `controller` for the children of the v2 folder `own`, then of `ours` (a child of it).
/// When `own` holds the agent alone (a systemd unit with `Delegate=yes`), the agent first moves
/// itself into a leaf beside `ours`, as cgroup v2 allows controllers only above leaves.
fn enable_v2(own: &Path, ours: &Dir, controller: &str) -> Result<Dir, String> {
    let available = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == controller) {
        return Err(format!("the v2 `{controller}` controller is not available in {}", own.display()));
    }
    let enable = |dir: &Path| write(&dir.join("cgroup.subtree_control"), &format!("+{controller}"));
    if enable(own).is_err() {
        let me = std::process::id();
        if read_pids(own) != [me] {
            return Err(format!(
                "{} holds other processes, so its children cannot have the `{controller}` controller (run the agent in a cgroup of its own, e.g. a systemd unit with Delegate=yes)",
                own.display()
            ));
        }
        let name = ours.path.file_name().and_then(|n| n.to_str()).unwrap_or("elastic-agent");
        let leaf = own.join(format!("{name}.self"));
        let _ = std::fs::create_dir(&leaf);
        write(&leaf.join("cgroup.procs"), "0")?;
        enable(own)?;
    }
    enable(&ours.path)?;
    Ok(ours.clone())
}

impl Cgroups {
    /// The agent's cgroups for `mode`, or why there are none.
    pub fn open(mode: TreeMode, marker: &str) -> Result<Cgroups, String> {
        let members = match mode {
            TreeMode::Subreaper => return Err("process_tree = \"subreaper\"".into()),
            TreeMode::CgroupV2 => make_dir(&v2_own()?, marker, true)?,
            TreeMode::CgroupV1 => Self::v1_members(marker)?,
            TreeMode::Auto => match v2_own().and_then(|own| make_dir(&own, marker, true)) {
                Ok(dir) => dir,
                Err(v2) => Self::v1_members(marker).map_err(|v1| format!("{v2}; {v1}"))?,
            },
        };
        let v2_limits = |controller: &str| {
            let own = v2_own()?;
            let ours = if members.v2 { members.clone() } else { make_dir(&own, marker, true)? };
            enable_v2(&own, &ours, controller)
        };
        let v1_limits = |controller: &str| make_dir(&v1_own(controller)?, marker, false);
        let limits = |controller: &str| match v2_limits(controller) {
            Ok(dir) => Ok(dir),
            Err(v2) => v1_limits(controller).map_err(|v1| format!("{v2}; {v1}")),
        };
        let cgroups = Cgroups { memory: limits("memory"), cpu: limits("cpu"), members };
        Ok(cgroups)
    }

    fn v1_members(marker: &str) -> Result<Dir, String> {
        // `pids` and `freezer` exist on every v1 machine and cost nothing without limits.
        let own = v1_own("pids").or_else(|_| v1_own("freezer"))?;
        make_dir(&own, marker, false)
    }

    pub fn status(&self) -> TreeStatus {
        let describe = |r: &Result<Dir, String>| match r {
            Ok(d) => format!("cgroup-{} ({})", if d.v2 { "v2" } else { "v1" }, d.path.display()),
            Err(e) => format!("not available: {e}"),
        };
        TreeStatus {
            process_tree: if self.members.v2 { "cgroup-v2" } else { "cgroup-v1" },
            cgroup: Some(self.members.path.display().to_string()),
            cgroup_error: None,
            subreaper: true,
            memory_limits: describe(&self.memory),
            cpu_limits: describe(&self.cpu),
        }
    }

    /// Kills everything left in the agent's cgroups (by an earlier agent on this data folder
    /// that was killed) and removes their instance folders. Returns how many processes.
    pub fn kill_leftovers(&self) -> usize {
        let mut killed = 0;
        for cell in self.existing_cells() {
            killed += cell.procs().len();
            cell.kill();
            cell.remove(Duration::from_secs(2));
        }
        killed
    }

    fn existing_cells(&self) -> Vec<Cell> {
        let names: Vec<String> = std::fs::read_dir(&self.members.path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.iter().map(|n| self.cell_named(n, &Limits::default()).0).collect()
    }

    /// The cgroup of one instance (created if needed), with its limits applied; the second
    /// value lists the limits that could not be applied, and why.
    pub fn cell(&self, name: &str, replica: u32, limits: &Limits) -> (Cell, Vec<String>) {
        self.cell_named(&format!("{name}.{replica}"), limits)
    }

    fn cell_named(&self, leaf: &str, limits: &Limits) -> (Cell, Vec<String>) {
        let mut problems = Vec::new();
        let mut dirs = vec![Dir { path: self.members.path.join(leaf), v2: self.members.v2 }];
        let mut join = |dir: &Result<Dir, String>, what: &str| -> Option<Dir> {
            match dir {
                Ok(d) => {
                    let cell = Dir { path: d.path.join(leaf), v2: d.v2 };
                    if !dirs.iter().any(|x| x.path == cell.path) {
                        dirs.push(cell.clone());
                    }
                    Some(cell)
                }
                Err(e) => {
                    problems.push(format!("{what} cannot be applied: {e}"));
                    None
                }
            }
        };
        let memory = limits.memory_max.and_then(|_| join(&self.memory, "memory_max"));
        let cpu = limits.cpu_max.and_then(|_| join(&self.cpu, "cpu_max"));
        for d in &dirs {
            if let Err(e) = std::fs::create_dir(&d.path) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    problems.push(format!("cannot create {}: {e}", d.path.display()));
                }
            }
        }
        if let (Some(dir), Some(bytes)) = (memory, limits.memory_max) {
            let r = if dir.v2 {
                write(&dir.path.join("memory.max"), &bytes.to_string())
            } else {
                write(&dir.path.join("memory.limit_in_bytes"), &bytes.to_string())
            };
            problems.extend(r.err());
        }
        if let (Some(dir), Some(cores)) = (cpu, limits.cpu_max) {
            const PERIOD: u64 = 100_000;
            let quota = ((cores * PERIOD as f64) as u64).max(1000);
            let r = if dir.v2 {
                write(&dir.path.join("cpu.max"), &format!("{quota} {PERIOD}"))
            } else {
                write(&dir.path.join("cpu.cfs_period_us"), &PERIOD.to_string())
                    .and_then(|_| write(&dir.path.join("cpu.cfs_quota_us"), &quota.to_string()))
            };
            problems.extend(r.err());
        }
        (Cell { dirs }, problems)
    }

    /// Removes the agent's cgroup folders, deepest first, once their processes are gone (up to
    /// 2 s); at shutdown, after every instance was stopped.
    pub fn remove(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        for dir in [Ok(&self.members), self.memory.as_ref(), self.cpu.as_ref()].into_iter().flatten() {
            while remove_tree(&dir.path).is_err() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

pub use crate::config::values::Limits;

/// The cgroups of one instance: the membership folder first, then limit folders in other
/// hierarchies (v1). On v2 each start of the instance gets a fresh `run-N` folder below the
/// membership folder (limits set on the instance folder cover them all): a child can then be
/// created directly inside it (`CLONE_INTO_CGROUP`), which this kernel refuses for a cgroup
/// that `cgroup.kill` has been written to.
#[derive(Debug, Clone)]
pub struct Cell {
    dirs: Vec<Dir>,
}

/// Run folders are numbered from one counter for the whole agent, seeded with the clock, so a
/// number is never used twice — not by an instance that replaces another in the same slot
/// while the old one's folders are being pruned, nor by a restarted agent.
pub fn next_run_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let _ = NEXT.compare_exchange(
        0,
        crate::timefmt::now_ms() as u64 * 1000,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where a new leader goes: a v2 folder to be created in, and `cgroup.procs` files to write
/// itself into (v1, or v2 when `clone3` is not available).
pub struct Placement {
    pub into: Option<std::fs::File>,
    pub into_procs: Option<std::fs::File>,
    pub join: Vec<std::fs::File>,
}

impl Cell {
    /// Prepares the cgroups of a new start: opened before the fork, so the child only has to
    /// `write` (async-signal-safe). Close-on-exec.
    pub fn place(&self) -> std::io::Result<Placement> {
        let open_procs = |dir: &Path| std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"));
        let (first, rest) = self.dirs.split_first().expect("a cell has its membership folder");
        let join = rest.iter().map(|d| open_procs(&d.path)).collect::<std::io::Result<_>>()?;
        if !first.v2 {
            let mut join: Vec<std::fs::File> = join;
            join.insert(0, open_procs(&first.path)?);
            return Ok(Placement { into: None, into_procs: None, join });
        }
        let run = first.path.join(format!("run-{}", next_run_number()));
        std::fs::create_dir(&run)?;
        Ok(Placement { into: Some(std::fs::File::open(&run)?), into_procs: Some(open_procs(&run)?), join })
    }

    /// The folders processes of this instance live in: on v2 the instance folder and its runs.
    fn member_dirs(&self) -> Vec<PathBuf> {
        let first = &self.dirs[0];
        let mut dirs = vec![first.path.clone()];
        if first.v2 {
            if let Ok(entries) = std::fs::read_dir(&first.path) {
                dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        dirs
    }

    /// Every process in the instance's cgroups.
    pub fn procs(&self) -> Vec<u32> {
        self.member_dirs().iter().flat_map(|d| read_pids(d)).collect()
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal(&self, signal: i32) {
        for pid in self.procs() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Kills every process in the cgroup: one write on v2 (`cgroup.kill`, the whole subtree),
    /// else SIGKILL to each listed process until none is left (new forks are listed on the
    /// next round).
    pub fn kill(&self) {
        let dir = &self.dirs[0];
        if dir.v2 && write(&dir.path.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..100 {
            if self.procs().is_empty() {
                return;
            }
            self.signal(libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the run folders that are empty, except those of starts from `keep_from` on
    /// (one may be about to receive its child).
    pub fn prune(&self, keep_from: u64) {
        if !self.dirs[0].v2 {
            return;
        }
        for dir in self.member_dirs().into_iter().skip(1) {
            let n = dir.file_name().and_then(|n| n.to_str()?.strip_prefix("run-")?.parse::<u64>().ok());
            if n.is_some_and(|n| n < keep_from) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    /// Waits up to `wait` for the cgroup to empty, then removes its folders.
    pub fn remove(&self, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        while !self.procs().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for d in &self.dirs {
            let _ = remove_tree(&d.path);
        }
    }

    pub fn path(&self) -> &Path {
        &self.dirs[0].path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_dir_strips_the_mount_root() {
        let m = Mount {
            root: "/docker/abc".into(),
            point: "/sys/fs/cgroup".into(),
            fstype: "cgroup2".into(),
            options: String::new(),
        };
        assert_eq!(own_dir(&m, "/docker/abc/x"), PathBuf::from("/sys/fs/cgroup/x"));
        let m = Mount { root: "/".into(), ..m };
        assert_eq!(own_dir(&m, "/user.slice/a.scope"), PathBuf::from("/sys/fs/cgroup/user.slice/a.scope"));
        assert_eq!(own_dir(&m, "/"), PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn modes_parse_and_unknown_ones_do_not() {
        assert_eq!(TreeMode::parse("cgroup-v1"), Some(TreeMode::CgroupV1));
        assert_eq!(TreeMode::parse("subreaper"), Some(TreeMode::Subreaper));
        assert_eq!(TreeMode::parse("cgroups"), None);
    }
}
