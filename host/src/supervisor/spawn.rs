//! Building and signalling one instance's process: placeholders, environment, its own process
//! group, death with the agent, and the stop procedure (signal the group, wait, SIGKILL).

use super::tree::Members;
use crate::config::ProcessSpec;
use std::time::Duration;
use tokio::process::Command;

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

/// A running leader: started with `clone3` into its cgroup, or by tokio where `clone3` is not
/// available.
pub enum Child {
    Own(super::clone::Leader),
    Tokio(tokio::process::Child),
}

impl Child {
    /// The pid, until the child has been waited for.
    pub fn id(&self) -> Option<u32> {
        match self {
            Child::Own(l) => l.id(),
            Child::Tokio(c) => c.id(),
        }
    }

    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Child::Own(l) => l.wait().await,
            Child::Tokio(c) => c.wait().await,
        }
    }
}

/// A started leader and its output.
pub struct Started {
    pub child: Child,
    pub stdout: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
}

/// Where an instance belongs: the agent's marker, and the root of the credentials folders.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub marker: &'a str,
    pub credentials: &'a std::path::Path,
}

/// Whether `clone3` was refused once (then the fallback is used from then on).
static NO_CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts replica `slot` of `spec`: no shell unless asked, its own process group, its cgroups
/// (when the agent uses them), stdin closed, stdout and stderr piped to the agent, death with
/// the agent.
pub fn start(
    spec: &ProcessSpec,
    slot: &Slot,
    at: Place,
    members: &Members,
    sockets: &[std::os::fd::RawFd],
) -> std::io::Result<Started> {
    let (program, args) = argv(spec, slot);
    let credentials = super::launch::write_credentials(spec, slot, at.credentials)?;
    let mut env = environment(spec, slot, at.marker, members, credentials.as_deref())?;
    let identity = super::launch::Identity::of(spec);
    for (k, v) in super::sockets::Sockets::environment(&spec.name, sockets.len()) {
        env.push((k.into(), v.into()));
    }
    let place = members.place()?;
    super::tree::spawn_leader(|| {
        if !NO_CLONE3.load(std::sync::atomic::Ordering::Relaxed) {
            let mut plan = super::clone::Plan::new(
                program.as_ref(),
                &args.iter().map(|a| a.as_ref()).collect::<Vec<&std::ffi::OsStr>>(),
                &env,
                spec.working_dir.as_deref(),
            )?;
            plan.cgroup = place.into.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
            plan.identity = identity.clone();
            plan.join = place.join.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
            plan.pass_sockets(sockets.to_vec());
            match super::clone::spawn(&plan) {
                Ok(s) => {
                    let pid = s.leader.id();
                    let started = Started {
                        child: Child::Own(s.leader),
                        stdout: Box::new(s.stdout),
                        stderr: Box::new(s.stderr),
                    };
                    return Ok((started, pid));
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG)
                    ) =>
                {
                    tracing::info!("clone3 is not available ({e}): starting processes with fork, which costs a cgroup migration per start");
                    NO_CLONE3.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let mut join = place.join.iter().collect::<Vec<_>>();
        join.extend(place.into_procs.as_ref());
        let mut cmd = command(&program, &args, &env, spec, &join, sockets, identity);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        Ok((Started { child: Child::Tokio(child), stdout: Box::new(stdout), stderr: Box::new(stderr) }, pid))
    })
}

/// The program and its arguments: `sh -c COMMAND NAME ARGS…` with `shell = true` (the args are
/// $1… in the script), else the command itself.
fn argv(spec: &ProcessSpec, slot: &Slot) -> (String, Vec<String>) {
    let args: Vec<String> = spec.args.iter().map(|a| slot.expand(spec, a)).collect();
    if spec.shell {
        let mut all = vec!["-c".to_string(), slot.expand(spec, &spec.command), spec.name.clone()];
        all.extend(args);
        ("/bin/sh".into(), all)
    } else {
        (slot.expand(spec, &spec.command), args)
    }
}

/// The program's environment ([`super::launch::environment`]: never the agent's own), and the
/// markers by which the agent finds its processes again.
fn environment(
    spec: &ProcessSpec,
    slot: &Slot,
    marker: &str,
    members: &Members,
    credentials: Option<&std::path::Path>,
) -> std::io::Result<Vec<(std::ffi::OsString, std::ffi::OsString)>> {
    let mut env = super::launch::environment(spec, slot, credentials)?;
    env.insert(MARKER_VAR.into(), marker.into());
    env.insert(super::tree::INSTANCE_VAR.into(), members.tag.clone().into());
    Ok(env.into_iter().collect())
}

/// The fallback: tokio's `Command`, joining the cgroups in `pre_exec`.
fn command(
    program: &str,
    args: &[String],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    spec: &ProcessSpec,
    join: &[&std::fs::File],
    sockets: &[std::os::fd::RawFd],
    identity: super::launch::Identity,
) -> Command {
    // With sockets, `LISTEN_PID` must be the program's own pid, known only after the fork: a
    // shell sets it and execs the program (same pid).
    let mut cmd = if sockets.is_empty() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"").arg(program).args(args);
        c
    };
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let agent = std::process::id() as libc::pid_t;
    let join: Vec<std::os::fd::RawFd> = join.iter().map(|f| std::os::fd::AsRawFd::as_raw_fd(*f)).collect();
    let sockets = sockets.to_vec();
    // SAFETY: only async-signal-safe calls (write, setgroups/setgid/setuid/umask, prctl,
    // getppid, _exit) between fork and exec; the descriptors stay open in the parent until
    // `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            // Into the instance's cgroups before exec, so nothing it starts escapes them.
            // ("0" is the writing process.)
            for fd in &join {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Its user and umask; before the parent-death signal, which a change of user clears.
            identity.apply()?;
            // Die with the agent, even if it is SIGKILLed. (Tied to the thread that forked: the
            // supervisor forks from runtime worker threads, which live as long as the agent.)
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent may have died between fork and prctl.
            if libc::getppid() != agent {
                libc::_exit(1);
            }
            // Sockets to 3, 4, ….
            let mut moved = [0; super::sockets::MAX];
            if !super::sockets::lift(&sockets, &mut moved) || !super::sockets::place(&moved[..sockets.len()])
            {
                return Err(std::io::Error::last_os_error());
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

/// Stops a running instance: `signal` to its process group and every other member, up to
/// `grace` for the leader to exit, then SIGKILL to all of them. Waits (up to 2 s more) until no
/// member is alive. Returns the leader's exit status.
pub async fn stop(
    child: &mut Child,
    members: &Members,
    signal: i32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let pgid = child.id()?;
    members.signal(Some(pgid), signal);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(
                pid = pgid,
                "did not stop within {}ms of signal {signal}; sending SIGKILL",
                grace.as_millis()
            );
            members.kill(Some(pgid));
            child.wait().await.ok()
        }
    };
    super::tree::leader_reaped(pgid);
    finish(members, Some(pgid)).await;
    status
}

/// After the leader is gone: kills whatever is left of the instance and waits until it is
/// dead (bounded), so that a stop or restart never leaves a member running.
pub async fn finish(members: &Members, pgid: Option<u32>) {
    members.kill(pgid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while members.any_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        members.kill(pgid);
    }
    members.prune();
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
                .filter(|pid| super::tree::carries(*pid, &needle))
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
    let alive = |pid: &u32| !super::tree::is_zombie(*pid);
    while survivors.iter().any(alive) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(libc::SIGKILL);
    survivors.len()
}

/// The marker for a data folder: the same folder gives the same marker across restarts.
pub fn marker_for(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    hex::encode(&sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..8])
}
