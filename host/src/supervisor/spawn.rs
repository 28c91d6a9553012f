//! Building and signalling one instance's process: placeholders, environment, its own process
//! group, death with the agent, and the stop procedure (signal the group, wait, SIGKILL).

use crate::config::ProcessSpec;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Environment variable that marks every process this agent (this data folder) starts, so a
/// restarted agent can find survivors of a previous one, grandchildren included.
pub const MARKER_VAR: &str = "AGENT_SUPERVISOR_ID";

/// What varies between replicas of one program.
#[derive(Debug, Clone)]
pub struct Slot {
    pub replica: u32,
    pub port: Option<u16>,
}

impl Slot {
    pub fn new(spec: &ProcessSpec, replica: u32) -> Slot {
        Slot { replica, port: spec.port.map(|p| p + replica as u16) }
    }

    /// Replaces `{name}`, `{replica}` and `{port}` in `text`.
    pub fn expand(&self, spec: &ProcessSpec, text: &str) -> String {
        let port = self.port.map(|p| p.to_string()).unwrap_or_default();
        text.replace("{name}", &spec.name)
            .replace("{replica}", &self.replica.to_string())
            .replace("{port}", &port)
    }
}

/// The command for replica `slot` of `spec`: no shell unless asked, its own process group,
/// stdin closed, stdout and stderr piped to the agent.
pub fn command(spec: &ProcessSpec, slot: &Slot, marker: &str) -> Command {
    let args: Vec<String> = spec.args.iter().map(|a| slot.expand(spec, a)).collect();
    let mut cmd = if spec.shell {
        // `sh -c COMMAND NAME ARGS…`: the args are $1… in the script.
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(slot.expand(spec, &spec.command)).arg(&spec.name).args(&args);
        c
    } else {
        let mut c = Command::new(slot.expand(spec, &spec.command));
        c.args(&args);
        c
    };
    for (k, v) in &spec.env {
        cmd.env(k, slot.expand(spec, v));
    }
    cmd.env("REPLICA", slot.replica.to_string());
    cmd.env("PROCESS_NAME", &spec.name);
    if let Some(port) = slot.port {
        cmd.env("PORT", port.to_string());
    }
    cmd.env(MARKER_VAR, marker);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let agent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Die with the agent, even if it is SIGKILLed. (Tied to the thread that forked: the
            // supervisor forks from runtime worker threads, which live as long as the agent.)
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent may have died between fork and prctl.
            if libc::getppid() != agent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

/// Sends `signal` to the whole process group `pgid`. A group that is already gone is fine.
pub fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// Stops a running instance: `signal` to its group, up to `grace` for it to exit, then SIGKILL
/// to the group. Returns the exit status. Whatever is left of the group is killed too.
pub async fn stop(child: &mut Child, signal: i32, grace: Duration) -> Option<std::process::ExitStatus> {
    let pgid = child.id()?;
    signal_group(pgid, signal);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(
                pid = pgid,
                "did not stop within {}ms of signal {signal}; sending SIGKILL",
                grace.as_millis()
            );
            signal_group(pgid, libc::SIGKILL);
            child.wait().await.ok()
        }
    };
    signal_group(pgid, libc::SIGKILL);
    status
}

/// Finds processes carrying `marker` (left by an earlier agent on this data folder that died
/// without stopping them) and stops them: SIGTERM, up to 2 s, then SIGKILL. Returns how many.
pub fn kill_survivors(marker: &str) -> usize {
    let needle = format!("{MARKER_VAR}={marker}");
    let me = std::process::id();
    let survivors: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| *pid != me)
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                })
                .collect()
        })
        .unwrap_or_default();
    if survivors.is_empty() {
        return 0;
    }
    let send = |sig| {
        for pid in &survivors {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(*pid as libc::pid_t, sig);
            }
        }
    };
    send(libc::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let alive = |pid: &u32| std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid);
    while survivors.iter().any(alive) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(libc::SIGKILL);
    survivors.len()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The marker for a data folder: the same folder gives the same marker across restarts.
pub fn marker_for(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    hex::encode(&sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..8])
}
