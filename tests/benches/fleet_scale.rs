//! A fleet at scale on one machine: AGENTS release agents (default 100) share GROUPS cluster
//! groups (default 20) through one etcd (MEMBERS=3: a 3-member cluster), every group evaluated
//! every second, all at rest (http-json load 20 → target-tracking target 10 → ledger at 2).
//! Measured: etcd requests a second (the agents' own count and etcd's), etcd's and the agents'
//! CPU and memory, how the groups' leadership is spread, and the failover of every group an
//! agent led after a SIGKILL and after a planned stop (SIGTERM), read from etcd's keys.
//!
//!     cargo bench -p e2e --bench fleet_scale                 # needs `etcd` (etcd-server)
//!     AGENTS=20 GROUPS=5 MEMBERS=3 cargo bench -p e2e --bench fleet_scale
//!     AGENT_BIN=/path/to/agent cargo bench -p e2e --bench fleet_scale   # another build

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../all/fleet/etcd.rs"]
mod etcd;

#[allow(dead_code)]
#[path = "../all/pki.rs"]
mod pki;

use common::{cpu_seconds, load_source, plugin, plugin_dir, signal, wait_for, Agent, JsonServer};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MEASURE: Duration = Duration::from_secs(30);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(node: &str, groups: usize, etcd: &etcd::EtcdCluster, app: &JsonServer) -> String {
    let mut text =
        format!("{}[cluster]\netcd = {}\nnode = \"{node}\"\n", load_source(app), etcd.endpoints_toml());
    for g in 0..groups {
        text.push_str(&format!(
            "[[group]]\nname = \"g{g:02}\"\ncoordination = \"cluster\"\ninterval = \"1s\"\n\
             metrics = [{{ name = \"app.load\", window = \"5s\" }}]\npolicy = \"target-tracking\"\n\
             policy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
             backend_config = {{ initial = 2 }}\nmin = 1\nmax = 10\n"
        ));
    }
    text
}

/// Each group's leader (the node name in its leader key), read from etcd in one range.
fn leaders(etcd: &etcd::EtcdCluster) -> BTreeMap<String, String> {
    let (from, to) = ("/elastic/groups/", "/elastic/groups0");
    let body = json!({"key": etcd::b64(from.as_bytes()), "range_end": etcd::b64(to.as_bytes())});
    let Ok(v) = etcd.post("/v3/kv/range", &body, None) else { return BTreeMap::new() };
    let decode = |s: &serde_json::Value| {
        use base64::Engine;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap_or("")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    v["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = decode(&kv["key"]);
            let group = key.strip_prefix(from)?.strip_suffix("/leader")?.to_string();
            Some((group, decode(&kv["value"])))
        })
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

/// Every etcd request the first member served, by its own metrics.
const METHODS: &[&str] = &[
    "Range",
    "Txn",
    "Put",
    "DeleteRange",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseTimeToLive",
    "Watch",
];

/// The node that leads the most groups, and those groups.
fn busiest(led: &BTreeMap<String, String>) -> (String, Vec<String>) {
    let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (g, n) in led {
        by_node.entry(n).or_default().push(g.clone());
    }
    let (node, groups) = by_node.into_iter().max_by_key(|(_, g)| g.len()).expect("a leader");
    (node.to_string(), groups)
}

/// The time from `at` until every group in `groups` has a leader other than `node`, per group.
fn handed_over(etcd: &etcd::EtcdCluster, node: &str, groups: &[String], at: Instant) -> Vec<f64> {
    let mut times: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = at + Duration::from_secs(120);
    while times.len() < groups.len() && Instant::now() < deadline {
        let led = leaders(etcd);
        for g in groups {
            if led.get(g).is_some_and(|n| n != node) {
                times.entry(g.clone()).or_insert_with(|| at.elapsed().as_secs_f64() * 1000.0);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(times.len(), groups.len(), "every group of `{node}` found a new leader within 120 s");
    times.into_values().collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (agents_n, groups, members) = (env("AGENTS", 100), env("GROUPS", 20), env("MEMBERS", 1));
    if std::env::var_os("AGENT_BIN").is_none() {
        common::use_release_agent();
    }
    let Some(etcd) = etcd::EtcdCluster::start_or_skip("the fleet scale benchmark", members) else { return };
    let app = JsonServer::start(r#"{"load": 20}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let started = Instant::now();
    let mut agents: Vec<(String, Agent)> = (0..agents_n)
        .map(|i| {
            let node = format!("n{i:03}");
            let agent = Agent::start(dir.path(), &config(&node, groups, &etcd, &app));
            (node, agent)
        })
        .collect();
    let all_up = Instant::now();
    wait_for("every group led", Duration::from_secs(120), || (leaders(&etcd).len() == groups).then_some(()));
    println!(
        "fleet at scale: {agents_n} release agents × {groups} cluster groups at 1 s, {members}-member etcd on loopback, \
         lease_ttl 15 s, renewal 5 s (the defaults); started one after the other in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let share = groups.div_ceil(agents_n);
    wait_for("the leadership spread", Duration::from_secs(300), || {
        (busiest(&leaders(&etcd)).1.len() <= share).then_some(())
    });
    println!(
        "  spread: no agent leads more than {share} group(s) {:.1} s after the last agent started",
        all_up.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(10)); // every agent's watch open, start-up campaigns done

    let requests = |a: &Agent| a.status()["cluster"]["etcd_requests"].as_u64().unwrap_or(0);
    let pids: Vec<u32> = agents.iter().map(|(_, a)| a.pid()).collect();
    let etcd_pids = etcd.pids();
    let (agent_req0, served0) = (agents.iter().map(|(_, a)| requests(a)).sum::<u64>(), etcd.served(METHODS));
    let agent_cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let etcd_cpu0: f64 = etcd_pids.iter().map(|p| cpu_seconds(*p)).sum();
    std::thread::sleep(MEASURE);
    let secs = MEASURE.as_secs_f64();
    let agent_req = (agents.iter().map(|(_, a)| requests(a)).sum::<u64>() - agent_req0) as f64 / secs;
    let served = (etcd.served(METHODS) - served0) as f64 / secs;
    let agent_cpu = (pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - agent_cpu0) / secs * 100.0;
    let etcd_cpu = (etcd_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - etcd_cpu0) / secs * 100.0;
    let agent_rss = pids.iter().map(|p| rss_mib(*p)).sum::<f64>() / pids.len() as f64;
    let etcd_rss: f64 = etcd_pids.iter().map(|p| rss_mib(*p)).sum();
    println!("  at rest over {secs:.0} s:");
    println!(
        "    etcd requests: {agent_req:.1}/s by the agents' count ({:.3} per agent per s; renewals alone {:.1}/s), \
         {served:.1}/s served by member 1",
        agent_req / agents_n as f64,
        agents_n as f64 / 5.0
    );
    println!("    etcd: {etcd_cpu:.1} % of a core, RSS {etcd_rss:.0} MiB (all members)");
    println!(
        "    agents: {agent_cpu:.1} % of a core in all ({:.2} % each), RSS {agent_rss:.0} MiB each",
        agent_cpu / agents_n as f64
    );
    let led = leaders(&etcd);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in led.values() {
        *per_node.entry(n).or_default() += 1;
    }
    let most = per_node.values().max().copied().unwrap_or(0);
    println!(
        "    leadership: {} of {agents_n} agents lead a group; the busiest leads {most} of {groups}",
        per_node.len()
    );

    // Failover after a SIGKILL of the busiest leader: every one of its groups, from the kill.
    let (node, its) = busiest(&led);
    let i = agents.iter().position(|(n, _)| *n == node).unwrap();
    // The agents that stay: what they sent etcd while the groups were vacant.
    let sent = |agents: &[(String, Agent)]| {
        agents.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, (_, a))| requests(a)).sum::<u64>()
    };
    let (at, before) = (Instant::now(), sent(&agents));
    agents[i].1.kill9();
    let mut killed = handed_over(&etcd, &node, &its, at);
    let (took, during) = (at.elapsed().as_secs_f64(), sent(&agents) - before);
    println!(
        "    SIGKILL of `{node}` (leading {}): its groups led again after p50 {:.0} ms, max {:.0} ms (bound: lease_ttl 15 s + one interval); \
         the agents sent etcd {during} requests meanwhile ({:.0} of them renewals)",
        its.len(),
        percentile(&mut killed, 0.5),
        percentile(&mut killed, 1.0),
        took * (agents_n - 1) as f64 / 5.0
    );

    // A planned stop of the busiest leader now.
    std::thread::sleep(Duration::from_secs(3));
    let led = leaders(&etcd);
    let (node, its) = busiest(&led);
    let i = agents.iter().position(|(n, _)| *n == node).unwrap();
    let at = Instant::now();
    signal(agents[i].1.pid(), "TERM");
    let mut stopped = handed_over(&etcd, &node, &its, at);
    println!(
        "    SIGTERM of `{node}` (leading {}): its groups led again after p50 {:.0} ms, max {:.0} ms (bound: one interval, 1 s)",
        its.len(),
        percentile(&mut stopped, 0.5),
        percentile(&mut stopped, 1.0)
    );
    let led = leaders(&etcd);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in led.values() {
        *per_node.entry(n).or_default() += 1;
    }
    println!(
        "    leadership afterwards: {} agents lead; per agent {:?}",
        per_node.len(),
        per_node.values().collect::<Vec<_>>()
    );
    drop(agents);
}
