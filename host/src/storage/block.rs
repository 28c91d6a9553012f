//! The block device under a filesystem, as sysfs describes it: its name, its size as the kernel
//! sees it now, and — for a partition — the disk and the partition's number.

use std::path::{Path, PathBuf};

/// A block device, from `/sys/dev/block/MAJOR:MINOR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// `vdb`, `loop0`, `nvme0n1p1`.
    pub name: String,
    /// Its sysfs directory (`/sys/devices/…/block/vdb/vdb1`).
    pub sys: PathBuf,
    /// For a partition: the disk's name and the partition's number.
    pub partition_of: Option<(String, u32)>,
}

impl Device {
    /// The device named by `dev` (`major:minor`) under `sysfs` (`/sys`).
    pub fn of(sysfs: &Path, dev: (u32, u32)) -> Result<Device, String> {
        let link = sysfs.join(format!("dev/block/{}:{}", dev.0, dev.1));
        let sys = std::fs::canonicalize(&link)
            .map_err(|e| format!("no block device {}:{} ({}: {e})", dev.0, dev.1, link.display()))?;
        let name = sys.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let partition_of = match std::fs::read_to_string(sys.join("partition")) {
            Ok(number) => {
                let disk = sys.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
                let number = number.trim().parse().ok();
                disk.zip(number)
            }
            Err(_) => None,
        };
        Ok(Device { name, sys, partition_of })
    }

    /// `/dev/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    /// Its size as the kernel sees it now, in bytes (sysfs counts 512-byte sectors whatever the
    /// device's own sector size).
    pub fn size_bytes(&self) -> Result<u64, String> {
        bytes_of(&self.sys)
    }

    /// The size of the disk holding it: what a volume's new size shows first, before its
    /// partition is grown.
    pub fn disk_bytes(&self) -> Result<u64, String> {
        bytes_of(&self.disk_sys())
    }

    /// `/dev/DISK` of the disk holding it.
    pub fn disk_path(&self) -> PathBuf {
        match &self.partition_of {
            Some((disk, _)) => Path::new("/dev").join(disk),
            None => self.path(),
        }
    }

    /// What this device is built on, when it is a stack whose layers must grow before its
    /// filesystem can: device-mapper (LVM, LUKS, multipath) or md RAID, with what lies under it.
    pub fn stacked(&self) -> Option<String> {
        let name = std::fs::read_to_string(self.sys.join("dm/name")).ok().map(|n| n.trim().to_string());
        let md = self.sys.join("md").is_dir();
        let under: Vec<String> = std::fs::read_dir(self.sys.join("slaves"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let kind = match (name, md) {
            (Some(n), _) => format!("device-mapper `{n}`"),
            (None, true) => "md RAID".to_string(),
            (None, false) if !under.is_empty() => "a stacked device".to_string(),
            (None, false) => return None,
        };
        Some(match under.is_empty() {
            true => kind,
            false => format!("{kind} over {}", under.join(", ")),
        })
    }

    /// The disk holding this device (itself when it is not a partition).
    pub fn disk_sys(&self) -> PathBuf {
        match self.partition_of {
            Some(_) => self.sys.parent().map(Path::to_path_buf).unwrap_or_else(|| self.sys.clone()),
            None => self.sys.clone(),
        }
    }

    /// Asks the disk's bus to read its capacity again where the bus needs asking (SCSI,
    /// virtio-scsi: `device/rescan`); virtio-blk, NVMe and Xen announce a new size themselves.
    /// Whether a rescan was asked.
    pub fn rescan(&self) -> bool {
        let rescan = self.disk_sys().join("device/rescan");
        rescan.exists() && std::fs::write(&rescan, "1").is_ok()
    }
}

/// A sysfs block directory's `size`, in bytes.
fn bytes_of(sys: &Path) -> Result<u64, String> {
    let file = sys.join("size");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let sectors: u64 =
        text.trim().parse().map_err(|_| format!("{}: not a number: {text:?}", file.display()))?;
    Ok(sectors.saturating_mul(512))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs of two devices: a whole disk `vdb` and partition 1 of `vdc`.
    fn sysfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let devices = root.path().join("devices/virtual/block");
        for (dir, size, partition) in [("vdb", "4194304", None), ("vdc/vdc1", "2097152", Some("1"))] {
            let d = devices.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
            if let Some(p) = partition {
                std::fs::write(d.join("partition"), format!("{p}\n")).unwrap();
            }
        }
        std::fs::create_dir_all(root.path().join("dev/block")).unwrap();
        for (dev, dir) in [("252:16", "vdb"), ("252:33", "vdc/vdc1")] {
            std::os::unix::fs::symlink(devices.join(dir), root.path().join("dev/block").join(dev)).unwrap();
        }
        root
    }

    #[test]
    fn a_whole_disk_and_a_partition_are_told_apart_with_their_sizes() {
        let sys = sysfs();
        let disk = Device::of(sys.path(), (252, 16)).unwrap();
        assert_eq!((disk.name.as_str(), disk.partition_of.clone()), ("vdb", None));
        assert_eq!(disk.size_bytes().unwrap(), 2 << 30);
        assert_eq!(disk.path(), Path::new("/dev/vdb"));
        let part = Device::of(sys.path(), (252, 33)).unwrap();
        assert_eq!((part.name.as_str(), part.partition_of.clone()), ("vdc1", Some(("vdc".into(), 1))));
        assert!(part.disk_sys().ends_with("vdc"));
        assert_eq!(part.size_bytes().unwrap(), 1 << 30);
        let disk_size = part.disk_bytes().unwrap_err();
        assert!(disk_size.ends_with("vdc/size: No such file or directory (os error 2)"), "{disk_size}");
        assert!(!part.rescan(), "no device/rescan: nothing to ask");
        assert_eq!(part.stacked(), None);
        let lv = sys.path().join("devices/virtual/block/dm-0");
        std::fs::create_dir_all(lv.join("dm")).unwrap();
        std::fs::create_dir_all(lv.join("slaves/vdb")).unwrap();
        std::fs::write(lv.join("dm/name"), "vg-data\n").unwrap();
        let lv = Device { name: "dm-0".into(), sys: lv, partition_of: None };
        assert_eq!(lv.stacked().as_deref(), Some("device-mapper `vg-data` over vdb"));
        let missing = Device::of(sys.path(), (8, 0)).unwrap_err();
        assert!(missing.starts_with("no block device 8:0"), "{missing}");
    }
}
