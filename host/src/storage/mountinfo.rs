//! Which filesystem is mounted where: `/proc/self/mountinfo`, parsed (see proc(5)).

use std::path::{Path, PathBuf};

/// One line of mountinfo: what is mounted at `mount_point`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// The `major:minor` the kernel gives the mount (an anonymous device for btrfs).
    pub dev: (u32, u32),
    pub mount_point: PathBuf,
    pub fstype: String,
    /// What was mounted: `/dev/vdb`, `/dev/mapper/data`, or a name such as `tmpfs`.
    pub source: String,
}

/// The filesystem mounted at `mount_point` as the kernel lists it now (the last one, where
/// mounts are stacked), from the text of `/proc/self/mountinfo`.
pub fn find(mountinfo: &str, mount_point: &Path) -> Option<Mount> {
    mountinfo.lines().filter_map(parse).rfind(|m| m.mount_point == mount_point)
}

/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let mut rest = after.split(' ');
    let (fstype, source) = (rest.next()?, rest.next()?);
    Some(Mount {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l
36 22 7:0 / /srv/data rw,relatime shared:7 - xfs /dev/loop0 rw,attr2,inode64
37 22 0:45 / /srv/my\\040vol rw,relatime shared:8 - btrfs /dev/loop1 rw,space_cache=v2,subvolid=5
38 36 0:46 / /srv/data rw,relatime - tmpfs tmpfs rw,size=1024k
";

    #[test]
    fn the_last_mount_at_a_point_is_the_one_seen_there() {
        let m = find(SAMPLE, Path::new("/srv/data")).unwrap();
        assert_eq!((m.fstype.as_str(), m.source.as_str(), m.dev), ("tmpfs", "tmpfs", (0, 46)));
        let first = SAMPLE.lines().take(2).collect::<Vec<_>>().join("\n");
        let m = find(&first, Path::new("/srv/data")).unwrap();
        assert_eq!((m.fstype.as_str(), m.source.as_str(), m.dev), ("xfs", "/dev/loop0", (7, 0)));
    }

    #[test]
    fn escaped_mount_points_and_optional_fields_are_read() {
        let m = find(SAMPLE, Path::new("/srv/my vol")).unwrap();
        assert_eq!((m.fstype.as_str(), m.source.as_str()), ("btrfs", "/dev/loop1"));
        assert_eq!(unescape("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape("trailing\\04"), "trailing\\04", "a short escape is left as it is");
        assert!(find(SAMPLE, Path::new("/nowhere")).is_none());
        assert!(find("garbage without a separator\n", Path::new("/")).is_none());
    }
}
