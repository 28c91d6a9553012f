//! System load, sampled at a steady interval: CPU, load, memory, swap, network, disks,
//! filesystems, and the processes the supervisor runs. See `catalog` for names and units.
//!
//! Owns: readings of /proc (through sysinfo, and /proc/diskstats and /proc/net/dev directly) and the previous
//! readings that rates are computed from. Does not store anything: a tick returns samples.
//! Cost: only the supervised processes are refreshed, never a scan of every process.

pub mod catalog;
mod counters;
mod diskstats;
mod netdev;
mod procstat;
pub mod schedule;

use crate::store::{Labels, Sample, SeriesKey};
use catalog::*;
use counters::Counters;
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

/// A process the sampler should measure (the supervisor's instances).
#[derive(Debug, Clone)]
pub struct ProcessRef {
    pub name: String,
    pub replica: u32,
    pub pid: u32,
    pub restarts: u64,
}

pub struct Sampler {
    system: System,
    disks: Disks,
    /// `/proc/self/mountinfo`, open: the kernel flags it when a filesystem is mounted or
    /// unmounted, and then the list of disks is read again (a volume mounted later is sampled).
    mounts: Option<std::fs::File>,
    counters: Counters,
    ticks_per_second: f64,
    cores: f64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// Takes the first readings, so that the first tick already has something to compare with.
    pub fn new() -> Sampler {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::everything()),
        );
        let mut sampler = Sampler {
            system,
            mounts: std::fs::File::open("/proc/self/mountinfo").ok(),
            disks: Disks::new_with_refreshed_list(),
            counters: Counters::default(),
            ticks_per_second: procstat::ticks_per_second() as f64,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        };
        sampler.tick(crate::timefmt::now_ms(), &[]);
        sampler
    }

    /// One reading of everything, stamped `t_ms`.
    pub fn tick(&mut self, t_ms: i64, processes: &[ProcessRef]) -> Vec<Sample> {
        let mut out = Vec::with_capacity(64);
        self.gauges(t_ms, &mut out);
        self.rates(t_ms, &mut out);
        if !processes.is_empty() {
            self.processes(t_ms, processes, &mut out);
        }
        out
    }

    fn gauges(&mut self, t_ms: i64, out: &mut Vec<Sample>) {
        let mut put = |name: &str, labels: Labels, value: f64| push(out, t_ms, name, labels, value);

        self.system.refresh_cpu_usage();
        put(CPU_UTILIZATION, Labels::new(), self.system.global_cpu_usage() as f64 / 100.0);
        for (i, cpu) in self.system.cpus().iter().enumerate() {
            put(CPU_UTILIZATION, Labels::new().with("cpu", i.to_string()), cpu.cpu_usage() as f64 / 100.0);
        }
        let load = System::load_average();
        put(LOAD_1M, Labels::new(), load.one);
        put(LOAD_5M, Labels::new(), load.five);
        put(LOAD_15M, Labels::new(), load.fifteen);

        self.system.refresh_memory();
        let (total, available) = (self.system.total_memory(), self.system.available_memory());
        let used = total.saturating_sub(available);
        put(MEMORY_USAGE, Labels::new().with("state", "used"), used as f64);
        put(MEMORY_USAGE, Labels::new().with("state", "available"), available as f64);
        put(MEMORY_LIMIT, Labels::new(), total as f64);
        if total > 0 {
            put(MEMORY_UTILIZATION, Labels::new(), used as f64 / total as f64);
        }
        let (swap_total, swap_used) = (self.system.total_swap(), self.system.used_swap());
        put(PAGING_USAGE, Labels::new().with("state", "used"), swap_used as f64);
        put(PAGING_USAGE, Labels::new().with("state", "free"), swap_total.saturating_sub(swap_used) as f64);
        if swap_total > 0 {
            put(PAGING_UTILIZATION, Labels::new(), swap_used as f64 / swap_total as f64);
        }

        if mounts_changed(self.mounts.as_ref()) {
            self.disks.refresh(true);
        } else {
            for disk in self.disks.list_mut() {
                disk.refresh();
            }
        }
        for disk in self.disks.list() {
            let total = disk.total_space();
            if total == 0 {
                continue;
            }
            let free = disk.available_space();
            let labels = Labels::new()
                .with("device", disk.name().to_string_lossy())
                .with("mountpoint", disk.mount_point().to_string_lossy())
                .with("type", disk.file_system().to_string_lossy());
            put(FILESYSTEM_USAGE, labels.clone().with("state", "used"), total.saturating_sub(free) as f64);
            put(FILESYSTEM_USAGE, labels.clone().with("state", "free"), free as f64);
            put(FILESYSTEM_UTILIZATION, labels.clone(), total.saturating_sub(free) as f64 / total as f64);
            if let Some((inodes, free)) = inodes(disk.mount_point()) {
                put(FILESYSTEM_INODES_USAGE, labels.clone().with("state", "used"), (inodes - free) as f64);
                put(FILESYSTEM_INODES_USAGE, labels.clone().with("state", "free"), free as f64);
                put(FILESYSTEM_INODES_UTILIZATION, labels, (inodes - free) as f64 / inodes as f64);
            }
        }
    }

    /// Counters become rates; the first reading of each yields none.
    fn rates(&mut self, t_ms: i64, out: &mut Vec<Sample>) {
        let counters = &mut self.counters;
        // A device's bytes and operations, each way: four rates.
        let mut device = |device: &str, (bytes, operations): (&str, &str), ways: [(&str, u64, u64); 2]| {
            for (direction, byte_count, operation_count) in ways {
                let labels = Labels::new().with("device", device).with("direction", direction);
                out.extend(counters.rate(SeriesKey::new(bytes, labels.clone()), t_ms, byte_count));
                out.extend(counters.rate(SeriesKey::new(operations, labels), t_ms, operation_count));
            }
        };
        for n in netdev::read() {
            device(
                &n.device,
                (NETWORK_IO, NETWORK_PACKETS),
                [
                    ("receive", n.received_bytes, n.received_packets),
                    ("transmit", n.transmitted_bytes, n.transmitted_packets),
                ],
            );
        }
        for d in diskstats::read() {
            device(
                &d.device,
                (DISK_IO, DISK_OPERATIONS),
                [("read", d.read_bytes, d.reads), ("write", d.written_bytes, d.writes)],
            );
        }
        // Interfaces and devices that disappeared stop being remembered after a minute.
        self.counters.forget_older_than(t_ms - 60_000);
    }

    /// Reads only the given processes: never a scan of every process on the machine. CPU is a
    /// rate of CPU time, so a process's first reading (and a new pid after a restart) has none.
    fn processes(&mut self, t_ms: i64, processes: &[ProcessRef], out: &mut Vec<Sample>) {
        for p in processes {
            let labels =
                Labels::new().with("process", p.name.as_str()).with("replica", p.replica.to_string());
            push(out, t_ms, PROCESS_RESTARTS, labels.clone(), p.restarts as f64);
            let Some(stat) = procstat::read(p.pid) else { continue };
            let counter = SeriesKey::new(PROCESS_CPU, labels.clone().with("pid", p.pid.to_string()));
            if let Some(rate) = self.counters.rate(counter, t_ms, stat.cpu_ticks) {
                let fraction = rate.value / self.ticks_per_second / self.cores;
                push(out, t_ms, PROCESS_CPU, labels.clone(), fraction.min(1.0));
            }
            push(out, t_ms, PROCESS_MEMORY, labels, stat.rss_bytes as f64);
        }
    }
}

/// Whether the mount table changed since the last look: the kernel marks an open
/// `/proc/self/mountinfo` with POLLPRI after a mount or unmount (proc(5)), and the poll that sees
/// the mark clears it (`mounts_poll` in fs/proc_namespace.c records the event it reported). One
/// syscall a tick instead of reading the table.
fn mounts_changed(mounts: Option<&std::fs::File>) -> bool {
    use std::os::fd::AsRawFd;
    let Some(file) = mounts else { return false };
    let mut fd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
    // SAFETY: one pollfd, valid for the call; a zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

/// A filesystem's inodes and free inodes; `None` where it has no fixed count (btrfs says 0).
fn inodes(mount_point: &std::path::Path) -> Option<(u64, u64)> {
    let st = crate::storage::grow::statvfs(mount_point).filter(|st| st.f_files > 0)?;
    Some((st.f_files, st.f_ffree.min(st.f_files)))
}

fn push(out: &mut Vec<Sample>, t_ms: i64, name: &str, labels: Labels, value: f64) {
    if value.is_finite() {
        out.push(Sample { key: SeriesKey::new(name, labels), t_ms, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(samples: &'a [Sample], name: &str, label: Option<(&str, &str)>) -> Option<&'a Sample> {
        samples
            .iter()
            .find(|s| s.key.name == name && label.is_none_or(|(k, v)| s.key.labels.get(k) == Some(v)))
    }

    #[test]
    fn a_tick_reports_the_machine_within_sane_ranges() {
        let mut sampler = Sampler::new();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let s = sampler.tick(crate::timefmt::now_ms(), &[]);
        let cpu = find(&s, CPU_UTILIZATION, None).unwrap().value;
        assert!((0.0..=1.0).contains(&cpu), "{cpu}");
        let cores =
            s.iter().filter(|s| s.key.name == CPU_UTILIZATION && s.key.labels.get("cpu").is_some()).count();
        assert_eq!(cores, std::thread::available_parallelism().unwrap().get());
        let limit = find(&s, MEMORY_LIMIT, None).unwrap().value;
        let used = find(&s, MEMORY_USAGE, Some(("state", "used"))).unwrap().value;
        assert!(limit > 0.0 && used > 0.0 && used < limit);
        assert!(find(&s, LOAD_1M, None).is_some());
        // Loopback always exists, so its rates appear from the second reading on.
        assert!(find(&s, NETWORK_IO, Some(("device", "lo"))).is_some());
        for sample in &s {
            assert!(sample.value.is_finite() && sample.value >= 0.0, "{sample:?}");
            if unit_of(&sample.key.name) == Some("1") {
                assert!(sample.value <= 1.0, "{sample:?}");
            }
        }
    }

    /// Kills the child when the test ends, passed or not.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn supervised_processes_are_measured_and_cpu_needs_two_readings() {
        let child = Reaped(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id();
        // `spawn` returns once exec has begun; the new image's pages may not be resident yet (a
        // loaded machine read an RSS of 0), so wait until the shell has faulted some in.
        let resident = || procstat::read(pid).is_some_and(|s| s.rss_bytes > 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !resident() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let p = ProcessRef { name: "busy".into(), replica: 0, pid, restarts: 2 };
        let mut sampler = Sampler::new();
        let first = sampler.tick(crate::timefmt::now_ms(), std::slice::from_ref(&p));
        assert!(find(&first, PROCESS_CPU, None).is_none(), "no CPU figure from one reading");
        assert!(find(&first, PROCESS_MEMORY, None).unwrap().value > 0.0);
        assert_eq!(find(&first, PROCESS_RESTARTS, None).unwrap().value, 2.0);
        // The second reading once the kernel counts 100 ms of CPU for the loop since the first
        // (its utime + stime, in 10 ms clock ticks), however little of a core this machine has
        // left for it: then the reading is above zero. What share it got is not this test's.
        let used = || -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, f)| f).split_whitespace().collect();
            fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum::<u64>())
        };
        let before = used();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while used() < before + 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let second = sampler.tick(crate::timefmt::now_ms(), &[p]);
        let cpu = find(&second, PROCESS_CPU, Some(("process", "busy"))).unwrap().value;
        let ticks = used().saturating_sub(before);
        assert!(cpu > 0.0 && cpu <= 1.0, "{cpu} of the machine after {ticks} clock ticks of CPU");
    }
}
