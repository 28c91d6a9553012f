//! `/proc/net/dev`: every interface's counters in one read (sysinfo asks netlink for the
//! interfaces and then reads seven files per interface, each tick).

/// Cumulative counters of one network interface.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDev {
    pub device: String,
    pub received_bytes: u64,
    pub received_packets: u64,
    pub transmitted_bytes: u64,
    pub transmitted_packets: u64,
}

pub fn read() -> Vec<NetDev> {
    std::fs::read_to_string("/proc/net/dev").map(|text| parse(&text)).unwrap_or_default()
}

/// Parses the text of `/proc/net/dev`: two header lines, then `name: 16 counters`.
pub fn parse(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (device, counters) = line.split_once(':')?;
            let f: Vec<u64> = counters.split_whitespace().map_while(|v| v.parse().ok()).collect();
            if f.len() < 10 {
                return None;
            }
            Some(NetDev {
                device: device.trim().to_string(),
                received_bytes: f[0],
                received_packets: f[1],
                transmitted_bytes: f[8],
                transmitted_packets: f[9],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_packets_each_way_and_skips_the_headers() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1441612094 15558112    0 13840    0     0          0         0 1441612094 15558112    0    0    0     0       0          0
  eth0: 883152224   46214    0    0    0     0          0         0  2836606   28836    0    0    0     0       0          0";
        let d = parse(text);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[1],
            NetDev {
                device: "eth0".into(),
                received_bytes: 883152224,
                received_packets: 46214,
                transmitted_bytes: 2836606,
                transmitted_packets: 28836
            }
        );
    }

    #[test]
    fn this_machine_has_loopback() {
        assert!(read().iter().any(|d| d.device == "lo"));
    }
}
