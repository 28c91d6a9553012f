//! What the tests no longer time (issue 38): figures that were pass/fail thresholds in
//! tests/all, where a loaded machine failed them, measured here on the release agent.
//!
//!     cargo bench -p e2e --bench timing                             # this tree's release agent
//!     AGENT_BIN=/path/to/old/agent cargo bench -p e2e --bench timing  # another build
//!
//! - sampler: the gaps between consecutive samples at `sample_interval = "100ms"` over 10 s
//!   (monitoring.rs asserted 50–400 ms);
//! - kill -9: how much before a SIGKILL the last stored sample is, at 200 ms, over 5 kills
//!   (monitoring.rs asserted at most 500 ms), and the ticks lost;
//! - crash loop: how late each start comes after its backoff of 200, 400, 800, 1600 ms, over 3
//!   crash loops (supervisor.rs asserted under 1.5 × the backoff + 150 ms);
//! - busy loop: what the agent reads of a busy process's CPU, against /proc's own count over the
//!   same 10 s (monitoring.rs asserted above 20 % of a core);
//! - idle agent: each thread's wake-ups a second over 10 s (footprint.rs and sandbox.rs count
//!   them against the agent's own ticks).

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

use common::{
    cpu_seconds, metrics_query, plugin, plugin_dir, sampler_ticks, thread_wakeups, wait_for, Agent,
};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// The first series' timestamps and values.
fn points(v: &serde_json::Value) -> Vec<(i64, f64)> {
    let t = v[0]["timestamps_ms"].as_array().cloned().unwrap_or_default();
    let x = v[0]["values"].as_array().cloned().unwrap_or_default();
    t.iter().zip(&x).filter_map(|(t, x)| Some((t.as_i64()?, x.as_f64()?))).collect()
}

/// min / p50 / p99 / max of `v`.
fn spread(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "no data".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!("min {:.0}, p50 {:.0}, p99 {:.0}, max {:.0}", at(0.0), at(0.5), at(0.99), at(1.0))
}

fn sampler() {
    let dir = plugin_dir(&[]);
    let agent = Agent::start(dir.path(), "[agent]\nsample_interval = \"100ms\"\n");
    std::thread::sleep(Duration::from_secs(10));
    let stored = points(&metrics_query(agent.data.path(), &["system.memory.limit", "--since", "1m"]));
    let times: Vec<i64> = stored.iter().map(|p| p.0).collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    println!("sampler at 100 ms     {} gaps between samples, ms: {}", gaps.len(), spread(gaps));
}

fn kill_9() {
    let dir = plugin_dir(&[]);
    let config = "[agent]\nsample_interval = \"200ms\"\n";
    let (mut missing, mut lost) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let mut agent = Agent::start(dir.path(), config);
        let data = agent.data.path().to_path_buf();
        wait_for("some samples", LIMIT, || {
            (points(&metrics_query(&data, &["system.memory.limit", "--since", "1m"])).len() >= 10)
                .then_some(())
        });
        let ticks = sampler_ticks(&agent).unwrap_or(0);
        let killed_at = agent.kill9();
        let stored = points(&metrics_query(&data, &["system.memory.limit", "--since", "5m"]));
        missing.push((killed_at - stored.last().map_or(killed_at, |p| p.0)) as f64);
        lost.push(ticks.saturating_sub(stored.len() as u64) as f64);
    }
    println!("kill -9 at 200 ms     ms between the last stored sample and the kill: {}", spread(missing));
    println!("                      ticks counted before the kill and not stored: {}", spread(lost));
}

fn crash_loop() {
    let backoffs = [200i64, 400, 800, 1600];
    let mut late: Vec<Vec<f64>> = vec![Vec::new(); backoffs.len()];
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let starts = dir.path().join("starts");
        let config = format!(
            "[[process]]\nname = \"crasher\"\ncommand = \"date +%s%N >> {}; exit 3\"\nshell = true\n\
             [process.backoff]\ninitial = \"200ms\"\nmultiplier = 2.0\nmax = \"5s\"\n\
             [process.start_limit]\ncount = 5\ninterval = \"1m\"\n",
            starts.display()
        );
        let agent = Agent::start(dir.path(), &config);
        wait_for("the start limit", LIMIT, || {
            let s = agent.status();
            let processes = s["processes"].as_array()?.clone();
            processes.iter().any(|p| p["name"] == "crasher" && p["state"] == "failed").then_some(())
        });
        let text = std::fs::read_to_string(&starts).unwrap();
        let times: Vec<i64> =
            text.lines().filter_map(|l| l.parse::<i64>().ok()).map(|ns| ns / 1_000_000).collect();
        for (i, (w, backoff)) in times.windows(2).zip(backoffs).enumerate() {
            late[i].push((w[1] - w[0] - backoff) as f64);
        }
    }
    for (backoff, late) in backoffs.iter().zip(late) {
        println!("crash loop            start after a {backoff:>4} ms backoff, ms late: {}", spread(late));
    }
}

fn busy_loop() {
    let dir = plugin_dir(&[]);
    let config = "[agent]\nsample_interval = \"100ms\"\n\
                  [[process]]\nname = \"busy\"\ncommand = \"while :; do :; done\"\nshell = true\n";
    let agent = Agent::start(dir.path(), config);
    let pid = wait_for("the busy process", LIMIT, || {
        let s = agent.status();
        let processes = s["processes"].as_array()?.clone();
        processes.iter().find(|p| p["name"] == "busy")?["pid"].as_u64()
    }) as u32;
    std::thread::sleep(Duration::from_secs(2));
    let (t0, cpu0, at0) = (Instant::now(), cpu_seconds(pid), agent::timefmt::now_ms());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu, at1) = (cpu_seconds(pid) - cpu0, agent::timefmt::now_ms());
    let secs = t0.elapsed().as_secs_f64();
    let read = metrics_query(
        agent.data.path(),
        &["process.cpu.utilization", "--label", "process=busy", "--since", "1m"],
    );
    let values: Vec<f64> =
        points(&read).into_iter().filter(|p| p.0 > at0 && p.0 <= at1).map(|p| p.1).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    println!(
        "busy loop             the agent read {:.1} % of the machine ({:.0} % of a core, {} samples); /proc: {:.0} % of a core",
        mean * 100.0,
        mean * cores * 100.0,
        values.len(),
        cpu / secs * 100.0
    );
    let per_core: Vec<f64> = values.iter().map(|v| v * cores * 100.0).collect();
    println!("                      each reading, % of a core: {}", spread(per_core));
}

fn idle_agent() {
    let dir = plugin_dir(&[&plugin("target-tracking"), &plugin("ledger"), &plugin("http-json")]);
    let agent = Agent::start(dir.path(), "[agent]\nsample_interval = \"1s\"\n");
    std::thread::sleep(Duration::from_secs(2));
    let before = thread_wakeups(agent.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let after = thread_wakeups(agent.pid());
    let secs = t0.elapsed().as_secs_f64();
    let mut table: Vec<(String, f64)> = after
        .iter()
        .filter_map(|(thread, n)| Some((thread.1.clone(), (n - before.get(thread)?) as f64 / secs)))
        .collect();
    table.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = table.iter().map(|(name, rate)| format!("{name} {rate:.1}")).collect();
    println!("idle agent            wake-ups a second per thread over {secs:.0} s: {}", shown.join(", "));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no tests here
    }
    if std::env::var_os("AGENT_BIN").is_none() {
        common::use_release_agent();
    }
    println!("agent: {}", std::env::var("AGENT_BIN").unwrap());
    sampler();
    kill_9();
    crash_loop();
    busy_loop();
    idle_agent();
}
