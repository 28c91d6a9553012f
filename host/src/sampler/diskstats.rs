//! `/proc/diskstats`: what sysinfo does not give, operations per device.

/// Cumulative counters of one block device.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskStats {
    pub device: String,
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub written_bytes: u64,
}

/// Parses `/proc/diskstats`, keeping whole devices (those in `/sys/block`) that are not loop or
/// RAM devices.
pub fn read() -> Vec<DiskStats> {
    let Ok(text) = std::fs::read_to_string("/proc/diskstats") else { return Vec::new() };
    let whole: std::collections::HashSet<String> = std::fs::read_dir("/sys/block")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    parse(&text).into_iter().filter(|d| whole.contains(&d.device)).collect()
}

/// Parses the text of `/proc/diskstats` (sectors are 512 bytes, whatever the device's own size).
pub fn parse(text: &str) -> Vec<DiskStats> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let device = f[2];
            if device.starts_with("loop") || device.starts_with("ram") {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some(DiskStats {
                device: device.to_string(),
                reads: n(3)?,
                read_bytes: n(5)? * 512,
                writes: n(7)?,
                written_bytes: n(9)? * 512,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reads_writes_and_sectors() {
        let text = "\
 253       0 vda 12754 4561 1100026 5412 9987 13151 1093570 13371 0 19740 20035 0 0 0 0 1161 1251
   7       0 loop0 51 0 2180 12 0 0 0 0 0 48 12 0 0 0 0 0 0
 253       1 vda1 12549 4561 1090154 5329 9987 13151 1093570 13371 0 19604 18700 0 0 0 0 0 0";
        let d = parse(text);
        assert_eq!(d.len(), 2, "loop devices are skipped");
        assert_eq!(
            d[0],
            DiskStats {
                device: "vda".into(),
                reads: 12754,
                read_bytes: 1100026 * 512,
                writes: 9987,
                written_bytes: 1093570 * 512
            }
        );
    }
}
