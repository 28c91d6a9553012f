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

/// Runs every step on this machine (`/proc/self/mountinfo`, `/sys`).
pub fn grow(request: &Request) -> Report {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    grow_on(request, &mountinfo, Path::new("/sys"))
}

fn grow_on(request: &Request, mountinfo: &str, sysfs: &Path) -> Report {
    let at = &request.mount_point;
    let mut report = Report { mount_point: at.clone(), ..Report::default() };
    let Some(mount) = mountinfo::find(mountinfo, at) else {
        return report.failed("find", None, format!("nothing is mounted at {}", at.display()), "");
    };
    report.fstype = Some(mount.fstype.clone());
    let device = match Device::of(sysfs, device_number(&mount)) {
        Ok(d) => d,
        Err(e) => {
            return report.failed("find", None, format!("{} on {}: {e}", mount.fstype, mount.source), "")
        }
    };
    report.device = Some(device.path().display().to_string());
    let part = device.partition_of.as_ref().map(|(disk, n)| format!(", partition {n} of /dev/{disk}"));
    report.done(
        "find",
        None,
        format!("{} on {}{}", mount.fstype, device.path().display(), part.unwrap_or_default()),
    );
    let Some(before) = filesystem_bytes(at) else {
        return report.failed("filesystem", None, format!("statvfs({}) failed", at.display()), "");
    };
    report.before_bytes = Some(before);

    let grow_fs = match grow_command(&mount.fstype, at, &device) {
        Some(c) => c,
        None => {
            let saw = format!("no online grow for `{}` (xfs, btrfs and ext2/3/4 grow online)", mount.fstype);
            return report.failed("filesystem", None, saw, "");
        }
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
        match run(cmd) {
            // growpart exits 1 saying NOCHANGE when the partition already fills the disk.
            Ok(out) | Err(out) if out.contains("NOCHANGE") => {
                report.done("partition", Some(cmd.join(" ")), out)
            }
            Ok(out) => report.done("partition", Some(cmd.join(" ")), out),
            Err(out) => return report.failed("partition", Some(cmd.join(" ")), out, &by_hand(true)),
        }
    }
    match run(&grow_fs) {
        Ok(out) => report.done("filesystem", Some(grow_fs.join(" ")), out),
        // Some kernels refuse ext4's online resize outright: only an offline one is left.
        Err(out) if grow_fs[0] == "resize2fs" && out.contains("Permission denied") => {
            let (dev, at) = (device.path().display().to_string(), at.display());
            let offline = format!("umount {at} && e2fsck -f {dev} && resize2fs {dev} && mount {dev} {at}");
            let saw = format!("{out} (this kernel refuses to grow ext4 online)");
            return report.failed("filesystem", Some(grow_fs.join(" ")), saw, &offline);
        }
        Err(out) => return report.failed("filesystem", Some(grow_fs.join(" ")), out, &by_hand(false)),
    }
    confirm(report, at, before)
}

/// The filesystem's size after: grown, or already as large as its device lets it be.
fn confirm(mut report: Report, at: &Path, before: u64) -> Report {
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
    // the device is clearly larger (then the tool did not do what it said).
    if report.device_bytes.is_some_and(|d| d / 100 * 95 > after + (64 << 20)) {
        let device = report.device_bytes.map(human).unwrap_or_default();
        return report.failed("confirm", None, format!("{saw}: still well short of its {device} device"), "");
    }
    report.done("confirm", None, format!("{saw}: it already fills its device"));
    report
}

/// The device under `mount`: for a source under /dev its own number (btrfs reports an anonymous
/// device in mountinfo), else mountinfo's.
fn device_number(mount: &mountinfo::Mount) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let rdev = mount.source.starts_with("/dev/").then(|| std::fs::metadata(&mount.source).ok()).flatten();
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
        "btrfs" => vec!["btrfs".into(), "filesystem".into(), "resize".into(), "max".into(), at],
        "ext2" | "ext3" | "ext4" => vec!["resize2fs".into(), device.path().display().to_string()],
        _ => return None,
    };
    Some(words)
}

/// Waits until the kernel sees at least `expected` bytes of `device`'s disk (asking the bus to
/// look again once, where it needs asking); its size and what was seen.
fn wait_for_size(device: &Device, expected: Option<u64>, wait: Duration) -> Result<(u64, String), String> {
    let started = Instant::now();
    let mut rescanned = false;
    loop {
        let size = device.disk_bytes()?;
        match expected {
            None => return Ok((size, human(size))),
            Some(e) if size >= e => {
                let after = if rescanned { " after a rescan" } else { "" };
                return Ok((size, format!("{} (the volume's {}){after}", human(size), human(e))));
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
            Some(_) => {
                if !rescanned {
                    rescanned = device.rescan();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
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

/// Runs `cmd`; the last line of its output (bounded) as `Ok` when it exits 0.
fn run(cmd: &[String]) -> Result<String, String> {
    let output = match Command::new(&cmd[0]).args(&cmd[1..]).output() {
        Ok(o) => o,
        Err(e) => return Err(format!("cannot run `{}`: {e}", cmd[0])),
    };
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // The tools end with what they did (`data blocks changed from 81920 to 163840`) or why not;
    // the geometry printed before is theirs to show.
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)");
    let text = crate::text::clean(last.trim(), 300);
    match output.status.code() {
        Some(0) => Ok(text),
        code => Err(format!("exit {}: {text}", code.map_or("by a signal".into(), |c| c.to_string()))),
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
