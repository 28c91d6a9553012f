//! What a supervised program's processes start with, as systemd starts a service: a clean
//! environment, not the agent's (which holds the cloud's password and the API token), and the
//! identity the operator gave the program. Health checks and busy/drain hooks start the same way.
//!
//! The environment, in order (later wins): a base (`PATH`, and `LANG`, `LC_ALL`, `TZ` when the
//! agent has them; `HOME`, `USER`, `LOGNAME`, `SHELL` of the program's user, or of the agent's
//! when it has none), `env_file`, `env`, the agent's variables named in `pass_env`, then what the
//! agent sets (`REPLICA`, `PROCESS_NAME`, `PORT`, `CREDENTIALS_DIRECTORY`, its markers).

use super::spawn::Slot;
use crate::config::ProcessSpec;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// `PATH` when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The identity a child takes between fork and exec. Prepared before the fork: applying it
/// allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// uid, gid and supplementary groups, when the program has a `user`.
    pub user: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    pub umask: Option<libc::mode_t>,
}

impl Identity {
    pub fn of(spec: &ProcessSpec) -> Identity {
        Identity {
            user: spec.launch.run_as.as_ref().map(|r| (r.uid, r.gid, r.groups.clone())),
            // systemd's default for services; the agent's own (077) is for its files alone.
            umask: Some(spec.launch.umask.unwrap_or(0o022)),
        }
    }

    /// Takes the identity: groups, then gid, then uid (after which nothing can be taken back),
    /// then the umask. Raw system calls, not libc's wrappers: after a raw `clone3` glibc still
    /// believes the parent's threads exist and its `setuid` would try to signal each of them
    /// (`__nptl_setxid`); the system call changes the calling thread, the child's only one.
    ///
    /// # Safety
    /// Only async-signal-safe calls: for the child between fork and exec.
    pub unsafe fn apply(&self) -> io::Result<()> {
        if let Some((uid, gid, groups)) = &self.user {
            let (uid, gid) = (*uid as libc::c_long, *gid as libc::c_long);
            if libc::syscall(libc::SYS_setgroups, groups.len() as libc::c_long, groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(mask) = self.umask {
            libc::umask(mask);
        }
        Ok(())
    }
}

/// The environment of `spec`'s replica `slot` (see the module's comment), without the agent's
/// own markers, which [`super::spawn`] adds to the program's.
pub fn environment(
    spec: &ProcessSpec,
    slot: &Slot,
    credentials: Option<&Path>,
) -> io::Result<BTreeMap<OsString, OsString>> {
    let mut env = BTreeMap::new();
    let agent = |k: &str| std::env::var_os(k);
    env.insert("PATH".into(), agent("PATH").unwrap_or_else(|| DEFAULT_PATH.into()));
    for k in ["LANG", "LC_ALL", "TZ"] {
        if let Some(v) = agent(k) {
            env.insert(k.into(), v);
        }
    }
    match &spec.launch.run_as {
        Some(r) => {
            for (k, v) in [("HOME", &r.home), ("USER", &r.name), ("LOGNAME", &r.name), ("SHELL", &r.shell)] {
                if !v.is_empty() {
                    env.insert(k.into(), v.into());
                }
            }
        }
        None => {
            for k in ["HOME", "USER", "LOGNAME", "SHELL"] {
                if let Some(v) = agent(k) {
                    env.insert(k.into(), v);
                }
            }
        }
    }
    if let Some(file) = &spec.launch.env_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| io::Error::new(e.kind(), format!("env_file {}: {e}", file.display())))?;
        env.extend(parse_env_file(&text).into_iter().map(|(k, v)| (k.into(), v.into())));
    }
    for (k, v) in &spec.env {
        env.insert(k.into(), slot.expand(spec, v).into());
    }
    for k in &spec.launch.pass_env {
        if let Some(v) = agent(k) {
            env.insert(k.into(), v);
        }
    }
    env.insert("REPLICA".into(), slot.replica.to_string().into());
    env.insert("PROCESS_NAME".into(), spec.name.clone().into());
    if let Some(port) = slot.port {
        env.insert("PORT".into(), port.to_string().into());
    }
    if let Some(dir) = credentials {
        env.insert("CREDENTIALS_DIRECTORY".into(), dir.into());
    }
    Ok(env)
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped, `export ` and one pair of
/// surrounding quotes dropped, as systemd's `EnvironmentFile=` reads them.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = ['"', '\''].iter().find_map(|q| v.strip_prefix(*q)?.strip_suffix(*q)).unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
        .collect()
}

/// A helper of replica `slot` of `spec` — its health-check command, its busy or drain hook —
/// started as the program is: its environment (not the agent's), its user and umask.
pub fn helper(spec: &ProcessSpec, slot: &Slot, argv: &[String]) -> io::Result<tokio::process::Command> {
    let env = environment(spec, slot, None)?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().envs(env);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let identity = Identity::of(spec);
    // SAFETY: `apply` makes only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || identity.apply());
    }
    Ok(cmd)
}

/// The way to start replica `slot`'s helpers, for a task that outlives a borrow.
#[derive(Clone)]
pub struct Helpers {
    spec: std::sync::Arc<ProcessSpec>,
    slot: Slot,
}

impl Helpers {
    pub fn new(spec: std::sync::Arc<ProcessSpec>, slot: Slot) -> Helpers {
        Helpers { spec, slot }
    }

    /// [`helper`] for `argv`.
    pub fn command(&self, argv: &[String]) -> io::Result<tokio::process::Command> {
        helper(&self.spec, &self.slot, argv)
    }
}

/// Where the instances' credentials folders live: systemd's `RuntimeDirectory=` when the agent
/// runs under one, else `/run/agent-MARKER` (a memory file system only root may write) as root,
/// else the data folder (an agent that is not root runs its programs as itself, and its data
/// folder is its own). Mode 0711: a program can reach its own folder, not list the others.
pub fn credentials_root(data_dir: &Path, marker: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        return PathBuf::from(dir).join("credentials");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && Path::new("/run").is_dir() {
        return PathBuf::from(format!("/run/agent-{marker}"));
    }
    data_dir.join("credentials")
}

/// Makes `root` (mode 0711) unless it exists, and refuses it unless it is a folder of the
/// agent's own, not a link, that no one else may write: the folder the secrets go into.
fn own_root(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o711).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(e.kind(), format!("credentials folder {}: {e}", root.display())))
        }
    }
    let meta = std::fs::symlink_metadata(root)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "credentials folder {}: not a folder of the agent's own that only it may write",
                root.display()
            ),
        ));
    }
    // 0711 whatever the agent's umask (077) made of it: programs pass through to their own.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
}

/// Writes replica `slot`'s credentials into `root/NAME.REPLICA/` (files 0400, the folder 0500,
/// both the program user's), replacing what an earlier start left; `None` when it has none.
pub fn write_credentials(spec: &ProcessSpec, slot: &Slot, root: &Path) -> io::Result<Option<PathBuf>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if spec.launch.credentials.is_empty() {
        return Ok(None);
    }
    own_root(root)?;
    let dir = instance_dir(spec, slot, root);
    remove_dir(&dir)?;
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let owner = spec.launch.run_as.as_ref().map(|r| (r.uid, r.gid));
    for (name, source) in &spec.launch.credentials {
        let value = source.read().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("credential `{name}`: {source:?} cannot be read"))
        })?;
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        io::Write::write_all(&mut file, value.as_bytes())?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))?;
    Ok(Some(dir))
}

/// Removes replica `slot`'s credentials folder (when the replica is gone for good).
pub fn remove_credentials(spec: &ProcessSpec, slot: &Slot, root: &Path) {
    if let Err(e) = remove_dir(&instance_dir(spec, slot, root)) {
        tracing::warn!(process = %spec.name, replica = slot.replica, "removing its credentials: {e}");
    }
}

/// Removes a credentials folder an earlier start left (made writable first: it is 0500, and an
/// agent that is not root may not delete what a folder it cannot write holds).
fn remove_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            std::fs::remove_dir_all(dir)
        }
        Ok(_) => std::fs::remove_file(dir),
    }
}

fn instance_dir(spec: &ProcessSpec, slot: &Slot, root: &Path) -> PathBuf {
    root.join(format!("{}.{}", spec.name, slot.replica))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_as_systemd_reads_them() {
        let parsed = parse_env_file("# c\n\nA=1\nexport B = \"two words\"\nC='x=y'\nnot a pair\n D=\n");
        let want = [("A", "1"), ("B", "two words"), ("C", "x=y"), ("D", "")];
        assert_eq!(parsed, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}
