//! `/proc/PID/stat`: CPU time and resident memory of one process, read directly (one small file
//! per supervised process per tick).

/// Cumulative CPU time (user + system, in clock ticks) and resident set size (bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for turning `cpu_ticks` into seconds.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

pub fn read(pid: u32) -> Option<ProcStat> {
    let mut stat = parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?, page_size())?;
    // `stat`'s rss is the kernel's approximate per-CPU count, which reads 0 for a process just
    // started on a busy machine (seen in CI); recent kernels sum it for `statm`: read it there.
    if let Some(pages) =
        resident_pages(&std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default())
    {
        stat.rss_bytes = pages * page_size();
    }
    Some(stat)
}

/// The resident pages of a `/proc/PID/statm` text (its second field).
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse(text: &str, page_size: u64) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, rss 24 (1-based, man 5 proc).
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(ProcStat { cpu_ticks: n(14)? + n(15)?, rss_bytes: n(24)? * page_size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let text = "4242 (web (v2) srv) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 1 0 12345 123456789 300 18446744073709551615";
        assert_eq!(parse(text, 4096), Some(ProcStat { cpu_ticks: 300, rss_bytes: 300 * 4096 }));
        assert_eq!(parse("garbage", 4096), None);
    }

    #[test]
    fn resident_memory_is_statm_s_second_field() {
        assert_eq!(resident_pages("2816 300 240 1 0 150 0\n"), Some(300));
        assert_eq!(resident_pages(""), None);
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap();
        assert!(me.rss_bytes > 1 << 20);
    }
}
