//! Starting an instance's leader with `clone3`, straight into its cgroup.
//!
//! Moving a running process into a cgroup (writing `cgroup.procs`) costs an RCU grace period
//! (5–15 ms here), which would make every restart that slow; `CLONE_INTO_CGROUP` (Linux 5.7)
//! creates the child inside the cgroup instead (~0.3 ms). `CLONE_PIDFD` gives a descriptor that
//! becomes readable when the child exits, so its exit is awaited without polling and without
//! tokio's process driver. Where `clone3` is refused (old kernel, seccomp), the caller falls
//! back to `tokio::process::Command`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use tokio::io::unix::AsyncFd;

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Everything the child needs, prepared before the clone: after it, the child may only make
/// async-signal-safe calls.
pub struct Plan {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: Option<CString>,
    /// The cgroup folder to create the child in (`CLONE_INTO_CGROUP`).
    pub cgroup: Option<RawFd>,
    /// `cgroup.procs` files the child writes itself into (v1 hierarchies).
    pub join: Vec<RawFd>,
    /// Listening sockets passed as descriptors 3, 4, … (socket activation; at most
    /// [`MAX_SOCKETS`]), with `LISTEN_PID` written by the child into `listen_pid`.
    pub sockets: Vec<RawFd>,
    listen_pid: Option<Box<std::cell::UnsafeCell<[u8; 32]>>>,
    /// The user, groups and umask it takes before exec.
    pub identity: super::launch::Identity,
}

const MAX_SOCKETS: usize = super::sockets::MAX;
const LISTEN_PID: &[u8] = b"LISTEN_PID=";

/// A running leader started by [`spawn`].
pub struct Leader {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<std::process::ExitStatus>,
}

pub struct Spawned {
    pub leader: Leader,
    pub stdout: tokio::net::unix::pipe::Receiver,
    pub stderr: tokio::net::unix::pipe::Receiver,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

impl Plan {
    /// `program` found on `PATH` (from `env`) unless it has a `/`, as execvp would.
    pub fn new(
        program: &OsStr,
        args: &[&OsStr],
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        cwd: Option<&std::path::Path>,
    ) -> io::Result<Plan> {
        let path = resolve(program, env, cwd)?;
        let mut argv = vec![cstring(program)?];
        for a in args {
            argv.push(cstring(a)?);
        }
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the environment"))
            })
            .collect::<io::Result<_>>()?;
        Ok(Plan {
            program: cstring(path.as_os_str())?,
            argv,
            envp,
            cwd: cwd.map(|c| cstring(c.as_os_str())).transpose()?,
            cgroup: None,
            join: Vec::new(),
            sockets: Vec::new(),
            listen_pid: None,
            identity: Default::default(),
        })
    }

    /// Hands `fds` to the child as descriptors 3, 4, …, with `LISTEN_PID` set to its pid.
    /// (`LISTEN_FDS` and `LISTEN_FDNAMES` are in the environment given to [`Plan::new`].)
    pub fn pass_sockets(&mut self, fds: Vec<RawFd>) {
        if fds.is_empty() {
            return;
        }
        let mut buf = [0u8; 32];
        buf[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        self.listen_pid = Some(Box::new(std::cell::UnsafeCell::new(buf)));
        self.sockets = fds;
    }
}

fn resolve(
    program: &OsStr,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    cwd: Option<&std::path::Path>,
) -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = std::path::Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return Ok(match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        });
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|c| std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not found on PATH"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts the child: its own process group, stdin from /dev/null, stdout and stderr to pipes,
/// a parent-death signal, default signal mask and SIGPIPE. An exec failure is reported here.
/// `ENOSYS`/`EPERM` from `clone3` come back as such, for the caller to fall back.
pub fn spawn(plan: &Plan) -> io::Result<Spawned> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (fail_r, fail_w) = pipe()?;
    let null = std::fs::File::open("/dev/null")?;
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    if let Some(cell) = &plan.listen_pid {
        envp.push(cell.get().cast::<libc::c_char>().cast_const());
    }
    envp.push(std::ptr::null());
    let agent = std::process::id() as libc::pid_t;
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = plan.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: clone3 without CLONE_VM forks the process; the child below only makes
    // async-signal-safe calls on memory prepared before, then execs or exits.
    let pid = unsafe {
        libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    if pid == 0 {
        // SAFETY: in the child; see above.
        unsafe {
            child(
                plan,
                &argv,
                &envp,
                agent,
                [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
                fail_w.as_raw_fd(),
            )
        }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    drop((out_w, err_w, fail_w));
    // SAFETY: CLONE_PIDFD stored a new descriptor that we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the OwnedFd is moved into the AsyncFd and stays open for its whole life.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut leader = Leader { pid: pid as u32, pidfd, status: None };
    // The failure pipe closes on exec (success) or carries errno (failure).
    let mut errno = [0u8; 4];
    let mut fail = std::fs::File::from(fail_r);
    let read = std::io::Read::read(&mut fail, &mut errno)?;
    if read == 4 {
        leader.reap_blocking();
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(Spawned {
        leader,
        stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?,
        stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)?,
    })
}

/// The child side. Never returns.
unsafe fn child(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    agent: libc::pid_t,
    stdio: [RawFd; 3],
    fail: RawFd,
) -> ! {
    let report = |fail: RawFd| -> ! {
        let errno = *libc::__errno_location();
        libc::write(fail, errno.to_ne_bytes().as_ptr().cast(), 4);
        libc::_exit(127)
    };
    for fd in &plan.join {
        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
            report(fail);
        }
    }
    // Its user and umask; before the parent-death signal, which a change of user clears.
    if plan.identity.apply().is_err() {
        report(fail);
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
        report(fail);
    }
    // The agent may have died before prctl.
    if libc::getppid() != agent {
        libc::_exit(1);
    }
    // Sockets (and the failure pipe) lifted above 3, 4, … before anything is placed there.
    let n = plan.sockets.len().min(MAX_SOCKETS);
    let fail = libc::fcntl(fail, libc::F_DUPFD_CLOEXEC, super::sockets::FIRST_FD + n as RawFd);
    let mut moved = [0 as RawFd; MAX_SOCKETS];
    if fail < 0 || !super::sockets::lift(&plan.sockets, &mut moved) {
        libc::_exit(127);
    }
    for (target, fd) in stdio.iter().enumerate() {
        if libc::dup2(*fd, target as RawFd) < 0 {
            report(fail);
        }
    }
    if !super::sockets::place(&moved[..n]) {
        report(fail);
    }
    if let Some(cell) = &plan.listen_pid {
        write_pid(&mut *cell.get(), libc::getpid());
    }
    if let Some(dir) = &plan.cwd {
        if libc::chdir(dir.as_ptr()) != 0 {
            report(fail);
        }
    }
    libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    report(fail)
}

/// `LISTEN_PID=` followed by `pid` and a NUL, in place (no allocation: runs in the child).
fn write_pid(buf: &mut [u8; 32], pid: libc::pid_t) {
    let mut digits = [0u8; 12];
    let (mut v, mut len) = (pid.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[LISTEN_PID.len() + i] = digits[len - 1 - i];
    }
    buf[LISTEN_PID.len() + len] = 0;
}

impl Leader {
    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid)
    }

    fn try_reap(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r < 0 => Err(io::Error::last_os_error()),
            _ => {
                let s = std::process::ExitStatus::from_raw(status);
                self.status = Some(s);
                Ok(Some(s))
            }
        }
    }

    fn reap_blocking(&mut self) {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        if unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) } > 0 {
            self.status = Some(std::process::ExitStatus::from_raw(status));
        }
    }

    /// Waits for the exit (the pidfd turns readable) and reaps the child.
    pub async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            let mut ready = self.pidfd.readable().await?;
            ready.clear_ready();
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Never leave a zombie: a leader dropped unreaped is killed and reaped off the runtime.
        if self.status.is_none() {
            let pid = self.pid;
            // SAFETY: kill and waitpid on our own child.
            std::thread::spawn(move || unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        vec![("PATH".into(), "/usr/bin:/bin".into()), ("GREETING".into(), "hi".into())]
    }

    #[tokio::test]
    async fn a_child_runs_with_its_environment_its_own_group_and_its_exit_status() {
        let script = "echo $GREETING; echo oops >&2; [ $(ps -o pgid= $$) -eq $$ ] && exit 3";
        let plan = Plan::new("sh".as_ref(), &["-c".as_ref(), script.as_ref()], &env(), None).unwrap();
        let Spawned { mut leader, mut stdout, mut stderr } = spawn(&plan).unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        stdout.read_to_string(&mut out).await.unwrap();
        stderr.read_to_string(&mut err).await.unwrap();
        let status = leader.wait().await.unwrap();
        assert_eq!((out.as_str(), err.as_str(), status.code()), ("hi\n", "oops\n", Some(3)));
        assert_eq!(leader.id(), None, "reaped");
    }

    #[test]
    fn listen_pid_is_written_in_place() {
        let mut buf = [0u8; 32];
        buf[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        write_pid(&mut buf, 4_194_304);
        assert_eq!(
            std::ffi::CStr::from_bytes_until_nul(&buf).unwrap().to_str().unwrap(),
            "LISTEN_PID=4194304"
        );
    }

    #[tokio::test]
    async fn sockets_arrive_as_descriptors_3_and_up_with_this_pid() {
        let sockets = crate::supervisor::sockets::Sockets::bind(&["127.0.0.1:0".parse().unwrap(); 2]);
        let mut env = env();
        for (k, v) in crate::supervisor::sockets::Sockets::environment("web", 2) {
            env.push((k.into(), v.into()));
        }
        let script = "[ \"$LISTEN_PID\" = $$ ] && [ -S /proc/self/fd/3 ] && [ -S /proc/self/fd/4 ] && echo $LISTEN_FDS $LISTEN_FDNAMES";
        let mut plan = Plan::new("sh".as_ref(), &["-c".as_ref(), script.as_ref()], &env, None).unwrap();
        plan.pass_sockets(sockets.fds().unwrap());
        let Spawned { mut leader, mut stdout, .. } = spawn(&plan).unwrap();
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        assert!(leader.wait().await.unwrap().success(), "{out}");
        assert_eq!(out, "2 web:web\n");
    }

    #[tokio::test]
    async fn exec_failures_and_missing_programs_are_reported_at_spawn() {
        let missing = Plan::new("no-such-program-here".as_ref(), &[], &env(), None);
        assert_eq!(missing.err().unwrap().kind(), io::ErrorKind::NotFound);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.txt");
        std::fs::write(&file, "not a program").unwrap();
        let not_executable = Plan::new(file.as_os_str(), &[], &env(), None).unwrap();
        let e = spawn(&not_executable).err().expect("exec must fail");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }
}
