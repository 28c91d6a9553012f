//! The metrics the sampler produces: names (OpenTelemetry semantic conventions), units, labels
//! and meaning. `/metrics` takes its unit suffixes from here; docs/metrics.md lists the same.

/// One metric the agent itself measures.
pub struct Metric {
    pub name: &'static str,
    /// UCUM-style unit as OpenTelemetry writes it: `1` (a ratio), `By`, `By/s`, `{packet}/s` …
    pub unit: &'static str,
    pub labels: &'static str,
    pub description: &'static str,
}

const fn m(
    name: &'static str,
    unit: &'static str,
    labels: &'static str,
    description: &'static str,
) -> Metric {
    Metric { name, unit, labels, description }
}

pub const CPU_UTILIZATION: &str = "system.cpu.utilization";
pub const LOAD_1M: &str = "system.cpu.load_average.1m";
pub const LOAD_5M: &str = "system.cpu.load_average.5m";
pub const LOAD_15M: &str = "system.cpu.load_average.15m";
pub const MEMORY_USAGE: &str = "system.memory.usage";
pub const MEMORY_LIMIT: &str = "system.memory.limit";
pub const MEMORY_UTILIZATION: &str = "system.memory.utilization";
pub const PAGING_USAGE: &str = "system.paging.usage";
pub const PAGING_UTILIZATION: &str = "system.paging.utilization";
pub const NETWORK_IO: &str = "system.network.io";
pub const NETWORK_PACKETS: &str = "system.network.packets";
pub const DISK_IO: &str = "system.disk.io";
pub const DISK_OPERATIONS: &str = "system.disk.operations";
pub const FILESYSTEM_USAGE: &str = "system.filesystem.usage";
pub const FILESYSTEM_UTILIZATION: &str = "system.filesystem.utilization";
pub const FILESYSTEM_INODES_USAGE: &str = "system.filesystem.inodes.usage";
pub const FILESYSTEM_INODES_UTILIZATION: &str = "system.filesystem.inodes.utilization";
pub const PROCESS_CPU: &str = "process.cpu.utilization";
pub const PROCESS_MEMORY: &str = "process.memory.usage";
pub const PROCESS_RESTARTS: &str = "process.restarts";

pub const CATALOG: &[Metric] = &[
    m(CPU_UTILIZATION, "1", "`cpu` (core number; absent for the whole machine)", "Fraction of time the CPU was busy since the previous tick, 0–1."),
    m(LOAD_1M, "{thread}", "", "Load average over 1 minute."),
    m(LOAD_5M, "{thread}", "", "Load average over 5 minutes."),
    m(LOAD_15M, "{thread}", "", "Load average over 15 minutes."),
    m(MEMORY_USAGE, "By", "`state`: `used`, `available`", "Memory in use, and memory available for new work without swapping."),
    m(MEMORY_LIMIT, "By", "", "Total physical memory."),
    m(MEMORY_UTILIZATION, "1", "", "Used memory / total memory, 0–1."),
    m(PAGING_USAGE, "By", "`state`: `used`, `free`", "Swap space in use and free."),
    m(PAGING_UTILIZATION, "1", "", "Used swap / total swap, 0–1 (absent without swap)."),
    m(NETWORK_IO, "By/s", "`device`, `direction`: `receive`, `transmit`", "Network traffic per interface, bytes per second."),
    m(NETWORK_PACKETS, "{packet}/s", "`device`, `direction`: `receive`, `transmit`", "Packets per second per interface."),
    m(DISK_IO, "By/s", "`device`, `direction`: `read`, `write`", "Disk traffic per block device, bytes per second."),
    m(DISK_OPERATIONS, "{operation}/s", "`device`, `direction`: `read`, `write`", "Completed disk operations per second per block device."),
    m(FILESYSTEM_USAGE, "By", "`device`, `mountpoint`, `type`, `state`: `used`, `free`", "Space used and free per mounted filesystem."),
    m(FILESYSTEM_UTILIZATION, "1", "`device`, `mountpoint`, `type`", "Used / total space per mounted filesystem, 0–1."),
    m(FILESYSTEM_INODES_USAGE, "{inode}", "`device`, `mountpoint`, `type`, `state`: `used`, `free`", "Inodes used and free per mounted filesystem (absent where it has no fixed count, as btrfs)."),
    m(FILESYSTEM_INODES_UTILIZATION, "1", "`device`, `mountpoint`, `type`", "Used / total inodes per mounted filesystem, 0–1: a disk can fill with small files while it has space."),
    m(PROCESS_CPU, "1", "`process`, `replica`", "CPU used by a supervised process since the previous tick, as a fraction of the whole machine (all cores), 0–1."),
    m(PROCESS_MEMORY, "By", "`process`, `replica`", "Resident memory (RSS) of a supervised process."),
    m(PROCESS_RESTARTS, "{restart}", "`process`, `replica`", "Times the supervisor has restarted the process."),
];

/// The unit of a metric the agent measures, if it is one.
pub fn unit_of(name: &str) -> Option<&'static str> {
    CATALOG.iter().find(|m| m.name == name).map(|m| m.unit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_metrics_md_lists_every_metric_with_its_unit() {
        let doc = include_str!("../../../docs/metrics.md");
        for m in super::CATALOG {
            let row = format!("| `{}` | `{}` |", m.name, m.unit);
            assert!(doc.contains(&row), "docs/metrics.md lacks the row for {} ({})", m.name, m.unit);
        }
    }
}
