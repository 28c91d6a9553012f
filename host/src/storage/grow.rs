//! Grows a mounted filesystem to fill its block device, online, after the volume under it grew:
//! find the device, wait until the kernel sees the new size, grow the partition the filesystem
//! sits on (if it sits on one), grow the filesystem, confirm from `statvfs`. Every step is kept
//! with what it ran and what it saw; a failure says what to run by hand — the volume stays grown.

use super::block::Device;
use super::mountinfo;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What to grow.
#[derive(Debug, Clone)]
pub struct Request {
    pub mount_point: PathBuf,
    /// The volume's new size, when the backend knows it: wait (at most `wait`) until the kernel
    /// sees at least this much.
    pub device_bytes: Option<u64>,
    pub wait: Duration,
}

/// One step: what it ran (a command line), what it saw, whether it went well.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    pub step: &'static str,
    pub ran: Option<String>,
    pub saw: String,
    pub ok: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub mount_point: PathBuf,
    pub fstype: Option<String>,
    pub device: Option<String>,
    pub device_bytes: Option<u64>,
    pub before_bytes: Option<u64>,
    pub after_bytes: Option<u64>,
    pub steps: Vec<Step>,
    /// Why it stopped, and what to run by hand.
    pub error: Option<String>,
}

impl Report {
    pub fn grew(&self) -> bool {
        self.error.is_none() && self.after_bytes > self.before_bytes
    }

    fn done(&mut self, step: &'static str, ran: Option<String>, saw: String) {
        self.steps.push(Step { step, ran, saw, ok: true });
    }

    fn failed(mut self, step: &'static str, ran: Option<String>, saw: String, by_hand: &str) -> Report {
        let what =
            if by_hand.is_empty() { String::new() } else { format!("; to finish, run as root: {by_hand}") };
        self.error = Some(format!("{step}: {saw}{what}"));
        self.steps.push(Step { step, ran, saw, ok: false });
        self
    }
}

/// A filesystem that has not caught up with its volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// What it has, in a sentence.
    pub why: String,
    /// The size of the disk under it as the kernel sees it now, when it could be read.
    pub disk_bytes: Option<u64>,
}

/// Whether the filesystem at `at` lags a volume of `volume_bytes`: `None` when it holds at least
/// 90 % of it (a filesystem's own metadata takes the rest). Only reads (`/proc/self/mountinfo`,
/// `/sys`, `statvfs`): cheap enough for every evaluation.
pub fn behind(at: &Path, volume_bytes: u64) -> Option<Lag> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let at = std::fs::canonicalize(at).unwrap_or_else(|_| at.to_path_buf());
    let Some(mount) = mountinfo::find(&mountinfo, &at) else {
        return Some(Lag { why: format!("nothing is mounted at {}", at.display()), disk_bytes: None });
    };
    let fs = filesystem_bytes(&at)?;
    if (fs as u128) * 10 >= (volume_bytes as u128) * 9 {
        return None;
    }
    let disk_bytes =
        Device::of(Path::new("/sys"), device_number(&mount)).ok().and_then(|d| d.disk_bytes().ok());
    let seen = disk_bytes.map(|b| format!(" (the kernel sees a {} disk)", human(b))).unwrap_or_default();
    let why = format!(
        "the filesystem at {} has {} of the volume's {}{seen}",
        at.display(),
        human(fs),
        human(volume_bytes)
    );
    Some(Lag { why, disk_bytes })
}

/// Runs every step on this machine (`/proc/self/mountinfo`, `/sys`), as root.
pub fn grow(request: &Request) -> Report {
    // A relative path, `..` or a symlink to the mount point names the same mount.
    let at = std::fs::canonicalize(&request.mount_point).unwrap_or_else(|_| request.mount_point.clone());
    let request = Request { mount_point: at, ..request.clone() };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let report = Report { mount_point: request.mount_point.clone(), ..Report::default() };
        let why = "growing a partition or a filesystem needs root".to_string();
        return report.failed("privileges", None, why, "");
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    grow_on(&request, &mountinfo, Path::new("/sys"))
}

/// The steps, each a function that records itself in the report and answers whether to go on.
fn grow_on(request: &Request, mountinfo: &str, sysfs: &Path) -> Report {
    let at = &request.mount_point;
    let mut report = Report { mount_point: at.clone(), ..Report::default() };
    let (mount, device) = match find(&mut report, mountinfo, sysfs, at) {
        Ok(found) => found,
        Err(failed) => return *failed,
    };
    let Some(before) = filesystem_bytes(at) else {
        return report.failed("filesystem", None, format!("statvfs({}) failed", at.display()), "");
    };
    report.before_bytes = Some(before);
    let Some(grow_fs) = grow_command(&mount.fstype, at, &device) else {
        let saw = format!("no online grow for `{}` (xfs, btrfs and ext2/3/4 grow online)", mount.fstype);
        return report.failed("filesystem", None, saw, "");
    };
    let partition = device
        .partition_of
        .as_ref()
        .map(|(disk, n)| vec!["growpart".into(), format!("/dev/{disk}"), n.to_string()]);
    let by_hand = |from_partition: bool| {
        let mut steps: Vec<String> = Vec::new();
        if from_partition {
            steps.extend(partition.iter().map(|c| c.join(" ")));
        }
        steps.push(grow_fs.join(" "));
        steps.join(" && ")
    };
    match wait_for_size(&device, request.device_bytes, request.wait) {
        Ok((bytes, saw)) => {
            report.device_bytes = Some(bytes);
            report.done("kernel size", None, saw);
        }
        Err(saw) => {
            // Where the bus needs asking, say how; elsewhere the kernel learns the size from the
            // hypervisor (is the volume attached to this server, and extended?).
            let rescan = device.disk_sys().join("device/rescan");
            let hint = match rescan.exists() {
                true => format!("echo 1 > {} && {}", rescan.display(), by_hand(true)),
                false => by_hand(true),
            };
            return report.failed("kernel size", None, saw, &hint);
        }
    }
    if let Some(cmd) = &partition {
        let out = run(cmd);
        let ran = Some(cmd.join(" "));
        // growpart exits 1 saying NOCHANGE when the partition already fills the disk.
        if !out.ok && !out.text.contains("NOCHANGE") {
            return report.failed("partition", ran, out.summary(), &by_hand(true));
        }
        report.done("partition", ran, out.summary());
    }
    let out = run(&grow_fs);
    let ran = Some(grow_fs.join(" "));
    if !out.ok {
        let (saw, hint) = match grow_fs[0].as_str() {
            "resize2fs" if out.text.contains("Permission denied to resize filesystem") => {
                ext4_refused(&out, &device, at)
            }
            _ => (out.summary(), by_hand(false)),
        };
        return report.failed("filesystem", ran, saw, &hint);
    }
    report.done("filesystem", ran, out.summary());
    let holds = device.size_bytes().ok();
    confirm(report, at, before, holds)
}

/// The mount at `at` and the block device under it: refused (with what was seen) when nothing
/// is mounted there, it is not a block device, or it is a stack (LVM, LUKS, md) whose layers
/// must grow first.
fn find(
    report: &mut Report,
    mountinfo: &str,
    sysfs: &Path,
    at: &Path,
) -> Result<(mountinfo::Mount, Device), Box<Report>> {
    let fail =
        |report: &mut Report, saw: String| Box::new(std::mem::take(report).failed("find", None, saw, ""));
    let Some(mount) = mountinfo::find(mountinfo, at) else {
        return Err(fail(report, format!("nothing is mounted at {}", at.display())));
    };
    report.fstype = Some(mount.fstype.clone());
    let device = match Device::of(sysfs, device_number(&mount)) {
        Ok(d) => d,
        Err(e) => return Err(fail(report, format!("{} on {}: {e}", mount.fstype, mount.source))),
    };
    report.device = Some(device.path().display().to_string());
    if let Some(stack) = device.stacked() {
        let saw = format!(
            "{} on {} ({stack}): grow its layers first (pvresize, lvextend, cryptsetup resize, mdadm --grow), then run this again",
            mount.fstype, mount.source
        );
        return Err(fail(report, saw));
    }
    let part = device.partition_of.as_ref().map(|(disk, n)| format!(", partition {n} of /dev/{disk}"));
    let saw = format!("{} on {}{}", mount.fstype, device.path().display(), part.unwrap_or_default());
    report.done("find", None, saw);
    Ok((mount, device))
}

/// ext4 refused an online grow (EPERM): why, from what this process can tell, and the offline
/// sequence.
fn ext4_refused(out: &Ran, device: &Device, at: &Path) -> (String, String) {
    let (dev, at) = (device.path().display().to_string(), at.display());
    let offline = format!("umount {at} && e2fsck -f {dev} && resize2fs {dev} && mount {dev} {at}");
    let why = match has_capability(CAP_SYS_RESOURCE) {
        Some(false) => {
            "this process lacks CAP_SYS_RESOURCE (a container drops it), which ext4's online grow needs"
        }
        _ => "ext4 refuses to grow online while errors are recorded on it (see dmesg)",
    };
    (format!("{}: {why}", out.summary()), offline)
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds capability `bit`, from `CapEff` in /proc/self/status.
fn has_capability(bit: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << bit) != 0)
}

/// The filesystem's size after: grown, or already as large as the device that holds it (the
/// partition, when it sits on one) lets it be.
fn confirm(mut report: Report, at: &Path, before: u64, holds: Option<u64>) -> Report {
    let Some(after) = filesystem_bytes(at) else {
        return report.failed("confirm", None, format!("statvfs({}) failed", at.display()), "");
    };
    report.after_bytes = Some(after);
    let saw = format!("{} → {}", human(before), human(after));
    if after > before {
        report.done("confirm", None, saw);
        return report;
    }
    // The tool succeeded and nothing changed: the filesystem already filled its device, unless
    // that device is clearly larger (then the tool did not do what it said).
    if holds.is_some_and(|d| d / 100 * 95 > after + (64 << 20)) {
        let device = holds.map(human).unwrap_or_default();
        return report.failed("confirm", None, format!("{saw}: still well short of its {device} device"), "");
    }
    report.done("confirm", None, format!("{saw}: it already fills its device"));
    report
}

/// The device under `mount`: for a source that is a device file its own number (btrfs reports
/// an anonymous device in mountinfo), else mountinfo's.
fn device_number(mount: &mountinfo::Mount) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let rdev = mount.source.starts_with('/').then(|| std::fs::metadata(&mount.source).ok()).flatten();
    match rdev.map(|m| m.rdev()).filter(|r| *r != 0) {
        Some(r) => (libc::major(r), libc::minor(r)),
        None => mount.dev,
    }
}

/// The command that grows a mounted filesystem of type `fstype` to its device's size.
fn grow_command(fstype: &str, at: &Path, device: &Device) -> Option<Vec<String>> {
    let at = at.display().to_string();
    let words: Vec<String> = match fstype {
        "xfs" => vec!["xfs_growfs".into(), at],
        // `max` alone resizes device 1, which on a filesystem that had a device added and
        // another removed is not this one: name it.
        "btrfs" => {
            let size = btrfs_devid(&at, device).map_or("max".to_string(), |id| format!("{id}:max"));
            vec!["btrfs".into(), "filesystem".into(), "resize".into(), size, at]
        }
        "ext2" | "ext3" | "ext4" => vec!["resize2fs".into(), device.path().display().to_string()],
        _ => return None,
    };
    Some(words)
}

/// The id of `device` in the btrfs filesystem mounted at `at`, from `btrfs filesystem show`
/// (`devid    2 size 20.00GiB used 1.00GiB path /dev/vdc`).
fn btrfs_devid(at: &str, device: &Device) -> Option<u64> {
    let out = run(&["btrfs".into(), "filesystem".into(), "show".into(), at.into()]);
    let path = device.path().display().to_string();
    out.stdout.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = words.iter().position(|w| *w == "devid").and_then(|i| words.get(i + 1)?.parse().ok())?;
        (words.last() == Some(&path.as_str())).then_some(id)
    })
}

/// Waits until the kernel sees at least `expected` bytes of `device`'s disk, having asked the
/// bus to look again where it needs asking (also without `expected`: a SCSI disk's new size is
/// seen only after a rescan); its size and what was seen.
fn wait_for_size(device: &Device, expected: Option<u64>, wait: Duration) -> Result<(u64, String), String> {
    let started = Instant::now();
    let rescanned = if device.rescan() { " after a rescan" } else { "" };
    loop {
        let size = device.disk_bytes()?;
        match expected {
            None => return Ok((size, format!("{}{rescanned}", human(size)))),
            Some(e) if size >= e => {
                return Ok((size, format!("{} (the volume's {}){rescanned}", human(size), human(e))));
            }
            Some(e) if started.elapsed() >= wait => {
                return Err(format!(
                    "the kernel still sees {} of {} after {:.0?}, not the volume's {}",
                    human(size),
                    device.disk_path().display(),
                    started.elapsed(),
                    human(e)
                ))
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The filesystem's size by `statvfs`: blocks × fragment size.
pub fn filesystem_bytes(at: &Path) -> Option<u64> {
    statvfs(at).map(|st| st.f_blocks.saturating_mul(st.f_frsize))
}

/// `statvfs(2)` of the filesystem holding `at`.
pub fn statvfs(at: &Path) -> Option<libc::statvfs> {
    let path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a NUL-terminated path and a statvfs the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0).then_some(st)
}

/// What a command did: whether it exited 0, and its output.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
    /// Both, for looking for a word.
    text: String,
}

impl Ran {
    /// For the report: the tools end with what they did (`data blocks changed from 81920 to
    /// 163840`) or why not, so the last line of each stream (the geometry printed before is
    /// theirs to show), bounded and escaped.
    fn summary(&self) -> String {
        let last = |t: &str| t.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string());
        let lines: Vec<String> = [last(&self.stdout), last(&self.stderr)].into_iter().flatten().collect();
        let line = if lines.is_empty() { "(no output)".to_string() } else { lines.join(" — ") };
        let status = if self.ok { String::new() } else { "failed: ".to_string() };
        crate::text::clean(&format!("{status}{line}"), 400)
    }
}

/// Runs `cmd` to its end.
fn run(cmd: &[String]) -> Ran {
    match Command::new(&cmd[0]).args(&cmd[1..]).output() {
        Ok(o) => {
            let (stdout, stderr) = (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            );
            Ran { ok: o.status.success(), text: format!("{stdout}\n{stderr}"), stdout, stderr }
        }
        Err(e) => {
            let stderr = format!("cannot run `{}`: {e}", cmd[0]);
            Ran { ok: false, stdout: String::new(), text: stderr.clone(), stderr }
        }
    }
}

/// 1.5 GiB, 300 MiB.
pub fn human(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_mounted_and_an_unknown_filesystem_stop_with_what_was_seen() {
        let request = Request { mount_point: "/srv/data".into(), device_bytes: None, wait: Duration::ZERO };
        let r = grow_on(&request, "", Path::new("/nonexistent"));
        assert_eq!(r.error.as_deref(), Some("find: nothing is mounted at /srv/data"));
        let tmpfs = "38 22 0:46 / /srv/data rw,relatime - tmpfs tmpfs rw\n";
        let r = grow_on(&request, tmpfs, Path::new("/nonexistent"));
        assert!(
            r.error.as_deref().is_some_and(|e| e.starts_with("find: tmpfs on tmpfs: no block device 0:46")),
            "{r:?}"
        );
        assert!(!r.grew());
    }

    #[test]
    fn each_filesystem_grows_with_its_own_tool() {
        let device = Device { name: "vdb".into(), sys: "/sys/x".into(), partition_of: None };
        let at = Path::new("/srv/data");
        assert_eq!(grow_command("xfs", at, &device).unwrap(), ["xfs_growfs", "/srv/data"]);
        assert_eq!(
            grow_command("btrfs", at, &device).unwrap(),
            ["btrfs", "filesystem", "resize", "max", "/srv/data"]
        );
        assert_eq!(grow_command("ext4", at, &device).unwrap(), ["resize2fs", "/dev/vdb"]);
        assert_eq!(grow_command("vfat", at, &device), None);
        assert_eq!((human(3 << 29), human(300 << 20)), ("1.5 GiB".to_string(), "300 MiB".to_string()));
    }
}
