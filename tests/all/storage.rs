//! Growing a mounted filesystem once the volume under it grew, on this machine, as root: a loop
//! device plays the volume — the test plays the hypervisor's part (it grows the backing file and
//! tells the loop device) — and `agent storage grow` finds the device under the mount point,
//! waits for the kernel to see the new size and grows the filesystem online. Without root, loop
//! devices or the filesystems' tools (Debian `xfsprogs`, `btrfs-progs`) it says loudly that it
//! was skipped; CI installs them and runs it.

use crate::common::{agent_cli, skipped};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file-backed loop device holding a filesystem mounted on a folder of its own; gone on drop.
struct LoopVolume {
    image: PathBuf,
    /// The loop device (the disk).
    disk: String,
    /// What holds the filesystem: the disk, or its first partition.
    device: String,
    mount: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match out.status.success() {
        true => Ok(text),
        false => Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
    }
}

impl LoopVolume {
    /// A `mib` MiB volume holding a `fstype` filesystem — on partition 1 of an MBR filling the
    /// disk when `partitioned` — mounted; `Err` (the test skips) where this machine cannot make
    /// one.
    fn make_on(fstype: &str, mib: u64, partitioned: bool) -> Result<LoopVolume, String> {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("volume.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(mib << 20)).map_err(|e| e.to_string())?;
        if partitioned {
            let table = dir.path().join("table");
            std::fs::write(&table, "label: dos\n,,L\n").unwrap();
            let script = format!("sfdisk -q {} < {}", image.display(), table.display());
            sh(&["sh", "-c", &script])?;
        }
        let disk = sh(&["losetup", "--find", "--show", "--partscan", image.to_str().unwrap()])?;
        let mount = tempfile::tempdir().unwrap();
        let mut volume = LoopVolume { image, disk: disk.clone(), device: disk, mount, _dir: dir };
        if partitioned {
            volume.device = format!("{}p1", volume.disk);
            let name = volume.device.trim_start_matches("/dev/").to_string();
            // The kernel's scan at attach time does not always list the partition: ask again.
            if !Path::new(&format!("/sys/class/block/{name}")).exists() {
                sh(&["partx", "--add", &volume.disk])?;
            }
            // No udev here to make its node: made in the test's own folder (a /dev node left by
            // an earlier run could name another device by now).
            let dev =
                std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).map_err(|e| e.to_string())?;
            let (major, minor) = dev.trim().split_once(':').unwrap();
            let node = volume._dir.path().join(&name).display().to_string();
            sh(&["mknod", &node, "b", major, minor])?;
            volume.device = node;
        }
        let mkfs = format!("mkfs.{fstype}");
        let quiet = if fstype == "ext4" { "-q" } else { "-f" };
        sh(&[&mkfs, quiet, &volume.device])?;
        sh(&["mount", &volume.device, volume.mount.path().to_str().unwrap()])?;
        Ok(volume)
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    /// The hypervisor's part: the volume is now `mib` MiB, and the loop device is told so (as
    /// virtio-blk tells the guest's kernel of a resized disk).
    fn extend(&self, mib: u64) {
        std::fs::OpenOptions::new().write(true).open(&self.image).unwrap().set_len(mib << 20).unwrap();
        sh(&["losetup", "--set-capacity", &self.disk]).unwrap();
    }
}

impl Drop for LoopVolume {
    fn drop(&mut self) {
        let _ = sh(&["umount", self.mount.path().to_str().unwrap()]);
        let _ = sh(&["losetup", "--detach", &self.disk]);
    }
}

/// A volume, or a loud skip naming what this machine lacks.
fn volume_or_skip(test: &str, fstype: &str, tool: &str, mib: u64) -> Option<LoopVolume> {
    volume_on_or_skip(test, fstype, &[tool], mib, false)
}

fn volume_on_or_skip(
    test: &str,
    fstype: &str,
    tools: &[&str],
    mib: u64,
    partitioned: bool,
) -> Option<LoopVolume> {
    let root = sh(&["id", "-u"]).is_ok_and(|u| u == "0");
    let mkfs = format!("mkfs.{fstype}");
    let present = ["losetup", mkfs.as_str()].iter().chain(tools).all(|t| sh(&["which", t]).is_ok());
    let made = match (root, present) {
        (false, _) => Err("not root".to_string()),
        (true, false) => Err(format!(
            "no {mkfs} or {} (Debian xfsprogs, btrfs-progs, cloud-guest-utils)",
            tools.join(", ")
        )),
        (true, true) => LoopVolume::make_on(fstype, mib, partitioned),
    };
    made.map_err(|why| skipped(&format!("{test} ({fstype}): {why}"))).ok()
}

fn grow(at: &Path, size: &str) -> (i32, String, String) {
    agent_cli(&["storage", "grow", at.to_str().unwrap(), "--size", size, "--wait", "30s"])
}

fn filesystem_mib(at: &Path) -> u64 {
    let out = sh(&["df", "--output=size", "-B1M", at.to_str().unwrap()]).unwrap();
    out.lines().last().unwrap().trim().parse().unwrap()
}

#[test]
fn a_mounted_xfs_and_btrfs_grow_online_after_their_loop_device_grew() {
    let test = "storage::a_mounted_xfs_and_btrfs_grow_online_after_their_loop_device_grew";
    for (fstype, tool, command) in
        [("xfs", "xfs_growfs", "xfs_growfs"), ("btrfs", "btrfs", "btrfs filesystem resize 1:max")]
    {
        let Some(volume) = volume_or_skip(test, fstype, tool, 320) else { continue };
        let at = volume.path();
        std::fs::write(at.join("data"), b"kept across the grow").unwrap();
        let before = filesystem_mib(at);

        // Nothing grew yet: nothing to do, and it says so.
        let (code, out, err) = agent_cli(&["storage", "grow", at.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("nothing to grow: the filesystem already fills its device"), "{out}");
        assert!(out.contains(&format!("{fstype} on {}", volume.device)), "{out}");

        // The volume doubles while the agent waits for the kernel to see it; then it grows the
        // filesystem. (Started first, so that its wait is what runs; the order is not asserted.)
        let waiting = {
            let at = at.to_path_buf();
            std::thread::spawn(move || grow(&at, "640MiB"))
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        volume.extend(640);
        let (code, out, err) = waiting.join().unwrap();
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("kernel size  640 MiB (the volume's 640 MiB)"), "{out}");
        assert!(out.contains(&format!("ran `{command} ")), "{out}");
        assert!(out.contains("grown: "), "{out}");
        let after = filesystem_mib(at);
        assert!(after >= before + 300, "{fstype}: {before} MiB → {after} MiB\n{out}");
        assert_eq!(std::fs::read(at.join("data")).unwrap(), b"kept across the grow");

        // Asked for more than the kernel sees: it waits, then says what it saw and what to run.
        let (code, out, err) =
            agent_cli(&["storage", "grow", at.to_str().unwrap(), "--size", "1GiB", "--wait", "1s"]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("the kernel still sees 640 MiB of") && err.contains("not the volume's 1.0 GiB"),
            "{err}"
        );
        assert!(err.contains(&format!("to finish, run as root: {command} ")), "{err}");
        let (code, out, _) = agent_cli(&["storage", "grow", at.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["fstype"], fstype);
        assert_eq!(report["device_bytes"], 640u64 << 20);
        let steps: Vec<&str> =
            report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(steps, ["find", "kernel size", "filesystem", "confirm"]);
    }
}

#[test]
fn ext4_refused_online_says_how_to_grow_it_offline_and_a_path_without_a_volume_is_named() {
    let test =
        "storage::ext4_refused_online_says_how_to_grow_it_offline_and_a_path_without_a_volume_is_named";
    let (code, _, err) = agent_cli(&["storage", "grow", "/nonexistent-mount"]);
    assert_eq!(code, 1);
    assert!(err.contains("find: nothing is mounted at /nonexistent-mount"), "{err}");
    let Some(volume) = volume_or_skip(test, "ext4", "resize2fs", 320) else { return };
    volume.extend(640);
    let (code, out, err) = grow(volume.path(), "640MiB");
    // Where the kernel allows ext4's online resize it grows; where it refuses (EPERM, as on the
    // containers this was written in, which drop CAP_SYS_RESOURCE), the agent says why and how
    // to finish offline.
    match code {
        0 => assert!(out.contains("grown: "), "{out}"),
        _ => {
            let why =
                ["lacks CAP_SYS_RESOURCE (a container drops it)", "errors are recorded on it (see dmesg)"];
            assert!(why.iter().any(|w| err.contains(w)), "{out}{err}");
            let dev = &volume.device;
            let at = volume.path().display();
            assert!(err.contains(&format!("umount {at} && e2fsck -f {dev} && resize2fs {dev}")), "{err}");
        }
    }
}

#[test]
fn a_filesystem_mounted_after_the_agent_started_is_sampled_with_its_inodes() {
    let test = "storage::a_filesystem_mounted_after_the_agent_started_is_sampled_with_its_inodes";
    let dir = crate::common::plugin_dir(&[]);
    let agent = crate::common::Agent::start(dir.path(), "[agent]\nsample_interval = \"200ms\"\n");
    crate::common::wait_ticks(&agent, 2);
    let Some(volume) = volume_or_skip(test, "xfs", "xfs_growfs", 320) else { return };
    let at = volume.path().to_str().unwrap().to_string();
    let label = format!("mountpoint={at}");
    let data = agent.data.path().to_path_buf();
    let query = |name: &str| {
        let v = crate::common::metrics_query(&data, &[name, "--label", &label, "--since", "1m"]);
        let found = v.as_array().is_some_and(|a| !a.is_empty());
        found.then_some(v)
    };
    let space =
        crate::common::wait_for("the new mount's utilization", std::time::Duration::from_secs(30), || {
            query("system.filesystem.utilization")
        });
    assert_eq!(space[0]["labels"]["type"], "xfs", "{space}");
    // Inodes: a few used of the many XFS allots, as a share and as counts.
    let inodes = crate::common::wait_for("its inodes", std::time::Duration::from_secs(30), || {
        query("system.filesystem.inodes.utilization")
    });
    let share = inodes[0]["values"][0].as_f64().unwrap();
    assert!(share > 0.0 && share < 0.01, "{inodes}");
    let counts = query("system.filesystem.inodes.usage").expect("inode counts");
    let states: Vec<&str> =
        counts.as_array().unwrap().iter().map(|s| s["labels"]["state"].as_str().unwrap()).collect();
    assert!(states.contains(&"used") && states.contains(&"free"), "{counts}");
    // Unmounted, it is no longer sampled: its newest sample stops while the agent ticks on.
    drop(volume);
    crate::common::wait_ticks(&agent, 3);
    let last =
        |v: &serde_json::Value| v[0]["timestamps_ms"].as_array().unwrap().last().unwrap().as_i64().unwrap();
    let gone = last(&query("system.filesystem.utilization").unwrap());
    crate::common::wait_ticks(&agent, 3);
    assert_eq!(last(&query("system.filesystem.utilization").unwrap()), gone, "sampled after its unmount");
}

#[test]
fn a_filesystem_on_a_partition_grows_after_growpart_grows_its_partition() {
    let test = "storage::a_filesystem_on_a_partition_grows_after_growpart_grows_its_partition";
    let tools = ["xfs_growfs", "growpart", "sfdisk"];
    let Some(volume) = volume_on_or_skip(test, "xfs", &tools, 320, true) else { return };
    let at = volume.path();
    let before = filesystem_mib(at);
    volume.extend(640);
    let (code, out, err) = grow(at, "640MiB");
    assert_eq!(code, 0, "{out}{err}");
    let disk = &volume.disk;
    let part = format!("{}p1", disk.trim_start_matches("/dev/"));
    assert!(out.contains(&format!("xfs on /dev/{part}, partition 1 of {disk}")), "{out}");
    assert!(out.contains(&format!("ran `growpart {disk} 1`: CHANGED: partition=1")), "{out}");
    let after = filesystem_mib(at);
    assert!(after >= before + 300, "{before} MiB → {after} MiB\n{out}");
}

/// A storage group on `volume` (1 GiB) filled to ~80 % (800 MiB allocated, not written), grown
/// by the `ledger` backend, evaluated every `interval`, waiting `grow_wait` for the kernel: the
/// agent, its plugins folder and the mount point.
fn storage_group_on(
    volume: &LoopVolume,
    interval: &str,
    grow_wait: &str,
) -> (crate::common::Agent, tempfile::TempDir, String) {
    sh(&["fallocate", "-l", "800M", volume.path().join("data").to_str().unwrap()]).unwrap();
    let at = volume.path().display().to_string();
    let config = format!(
        "[agent]\nsample_interval = \"200ms\"\n[[group]]\nname = \"data\"\ninterval = \"{interval}\"\n\
         metrics = [{{ name = \"system.filesystem.utilization\", labels = {{ mountpoint = \"{at}\" }}, window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 0.6 }}\nbackend = \"ledger\"\n\
         [group.storage]\nmin_size = \"1GiB\"\nmax_size = \"8GiB\"\nmount = \"{at}\"\ngrow_wait = \"{grow_wait}\"\n"
    );
    let dir = crate::common::plugin_dir(&[
        &crate::common::plugin("target-tracking"),
        &crate::common::plugin("ledger"),
    ]);
    let agent = crate::common::Agent::start(dir.path(), &config);
    (agent, dir, at)
}

#[test]
fn a_storage_group_grows_its_volume_then_the_mounted_filesystem_online_and_never_shrinks_it() {
    let test = "storage::a_storage_group_grows_its_volume_then_the_mounted_filesystem_online";
    let Some(volume) = volume_or_skip(test, "xfs", "xfs_growfs", 1024) else { return };
    let (agent, _plugins, at) = storage_group_on(&volume, "1s", "60s");
    // The backend grew the volume (the ledger records 2 GiB); the agent now waits for the kernel
    // to see it. The hypervisor's part: the disk grows, and the guest is told.
    agent.wait_log(&format!("growing the filesystem at {at}"));
    volume.extend(2048);
    let grown = crate::common::decision(&agent, "data", "the resize", |d| d["action"] == "scale");
    assert_eq!((grown["current"].as_u64(), grown["target"].as_u64()), (Some(1), Some(2)), "{grown}");
    let outcome = grown["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("recorded volume data 1 → 2 GiB (data#"), "{outcome}");
    assert!(outcome.contains(&format!("; filesystem {at} (xfs) grown from")), "{outcome}");
    crate::common::report(&format!("storage group, the journal's outcome: {outcome}"));
    let ran: Vec<&str> =
        grown["steps"].as_array().unwrap().iter().filter_map(|s| s["ran"].as_str()).collect();
    assert!(
        ran.iter().any(|r| r.starts_with("xfs_growfs")),
        "every step journaled with what it ran: {grown}"
    );
    assert!(filesystem_mib(volume.path()) > 1900, "the mounted filesystem fills the grown disk");
    // Emptied: 1 GiB would do, and a volume never shrinks.
    std::fs::remove_file(volume.path().join("data")).unwrap();
    let t = grown["t_ms"].as_i64().unwrap();
    let held = crate::common::decision(&agent, "data", "a hold below 2 GiB wanted", |d| {
        d["t_ms"].as_i64().unwrap() > t && d["recommendation"].as_f64().is_some_and(|r| r < 2.0)
    });
    assert_eq!((held["action"].as_str(), held["target"].as_u64()), (Some("hold"), Some(2)), "{held}");
    assert!(held["steps"][0]["why"].as_str().unwrap().ends_with("a volume never shrinks"), "{held}");
    assert!(filesystem_mib(volume.path()) > 1900, "nothing shrank the filesystem");
}

#[test]
fn a_storage_group_on_a_backend_without_volumes_holds_and_says_which_backend_to_use() {
    let config = "[[group]]\nname = \"data\"\ninterval = \"300ms\"\npolicy = \"target-tracking\"\n\
        policy_config = { target = 0.6 }\nbackend = \"local-replicas\"\n\
        [group.storage]\nmin_size = \"1GiB\"\nmax_size = \"4GiB\"\n";
    let dir = crate::common::plugin_dir(&[
        &crate::common::plugin("target-tracking"),
        &crate::common::plugin("local-replicas"),
    ]);
    let agent = crate::common::Agent::start(dir.path(), config);
    let held = crate::common::decision(&agent, "data", "an evaluation", |_| true);
    assert_eq!(held["action"], "no-recommendation", "{held}");
    let reason = held["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("backend `local-replicas` volumes.describe failed: exports no `volumes` interface (contract 0.1.3)"),
        "{reason}"
    );
    // `/status` shows it as a storage group with no volume described.
    let status = crate::common::group_status(&agent, "data");
    assert_eq!(
        (status["storage"]["unit"].as_str(), status["min"].as_u64(), status["max"].as_u64()),
        (Some("GiB"), Some(1), Some(4)),
        "{status}"
    );
    assert!(status["storage"]["volume"].is_null(), "{status}");
}

#[test]
fn a_filesystem_that_missed_its_volumes_growth_holds_the_group_until_grown_when_the_kernel_sees_it() {
    let test = "storage::a_filesystem_that_missed_its_volumes_growth_holds_the_group";
    let Some(volume) = volume_or_skip(test, "btrfs", "btrfs", 1024) else { return };
    let (agent, _plugins, at) = storage_group_on(&volume, "500ms", "1s");
    // The hypervisor does not tell the guest in time: the volume is grown, the filesystem not,
    // and the outcome says what to run by hand.
    let grown = crate::common::decision(&agent, "data", "the resize", |d| d["action"] == "scale");
    let outcome = grown["outcome"].as_str().unwrap();
    assert!(
        outcome.contains(&format!("; filesystem {at} NOT grown (the volume stays grown): kernel size:")),
        "{outcome}"
    );
    assert!(outcome.contains("to finish, run as root: "), "{outcome}");
    // Still 80 % full, but no second resize while the filesystem lags the volume.
    let t = grown["t_ms"].as_i64().unwrap();
    let lagging = |d: &serde_json::Value| {
        d["t_ms"].as_i64().unwrap() > t
            && d["steps"][0]["guardrail"] == "in-progress"
            && d["steps"][0]["why"]
                .as_str()
                .is_some_and(|w| w.contains("of the volume's") && w.ends_with("no resize until it caught up"))
    };
    let held = crate::common::decision(&agent, "data", "a hold while the filesystem lags", lagging);
    assert_eq!(
        (held["action"].as_str(), held["current"].as_u64(), held["target"].as_u64()),
        (Some("hold"), Some(2), Some(2)),
        "{held}"
    );
    assert!(held["recommendation"].as_f64().unwrap() > 2.0, "the policy wanted more: {held}");
    // The disk grows now: the agent sees the kernel's new size and grows the filesystem.
    volume.extend(2048);
    let caught = crate::common::decision(&agent, "data", "the filesystem grown later", |d| {
        d["outcome"].as_str().is_some_and(|o| o.starts_with(&format!("filesystem {at} (btrfs) grown from")))
    });
    assert_eq!((caught["action"].as_str(), caught["target"].as_u64()), (Some("hold"), Some(2)), "{caught}");
    assert!(filesystem_mib(volume.path()) > 1900, "the filesystem fills the grown disk");
    let scales = crate::common::decisions(&agent, "data").iter().filter(|d| d["action"] == "scale").count();
    assert_eq!(scales, 1, "one resize while the filesystem lagged");
}

#[test]
fn what_a_hostile_volume_backend_says_reaches_the_journal_log_and_status_escaped_capped_and_masked() {
    // rogue-backend's volume: a terminal escape in its id, and in its pending text (group
    // `held`) or its resize's detail (group `grown`) an escape, a forged log line, the secret
    // granted to it and 20 KB.
    const SECRET: &str = "s3cr3t-volume-token";
    let dir = crate::common::plugin_dir(&[
        &crate::common::fixture("rogue-backend"),
        &crate::common::fixture("frozen-policy"),
    ]);
    let group = |name: &str, mode: &str| {
        format!(
            "[[group]]\nname = \"{name}\"\ninterval = \"300ms\"\npolicy = \"frozen-policy\"\nbackend = \"rogue-backend\"\n\
             backend_config = {{ mode = \"{mode}\" }}\n[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"4GiB\"\n"
        )
    };
    let config = format!(
        "[plugins.rogue-backend]\nsecrets = {{ token = {{ env = \"ROGUE_VOLUME_TOKEN\" }} }}\n{}{}",
        group("held", "volume-pending"),
        group("grown", "volume-detail")
    );
    let agent = crate::common::Agent::start_env(dir.path(), &config, &[("ROGUE_VOLUME_TOKEN", SECRET)]);
    let held = crate::common::decision(&agent, "held", "a hold on the pending text", |d| {
        d["steps"][0]["guardrail"] == "in-progress"
    });
    let grown = crate::common::decision(&agent, "grown", "a resize", |d| d["action"] == "scale");
    let pending = held["steps"][0]["why"].as_str().unwrap();
    let detail = grown["outcome"].as_str().unwrap();
    for text in [pending, detail] {
        assert!(!text.contains('\u{1b}') && !text.contains('\n'), "escaped: {text:.200}");
        assert!(text.contains("token=***") && !text.contains(SECRET), "masked: {text:.200}");
        assert!(text.len() < 2_000, "capped: {} bytes", text.len());
    }
    let status = crate::common::group_status(&agent, "held");
    let volume = status["storage"]["volume"].as_str().unwrap();
    assert!(!volume.contains('\u{1b}') && volume.ends_with("vol"), "{status}");
    assert!(status["storage"]["attachment"].as_str().unwrap().len() < 2_000, "{status}");
    let log = agent.log();
    assert!(!log.contains(SECRET), "the secret reached the log");
    assert!(!log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z ERROR")), "a volume forged a log line");
}
