//! The API under clients that do not play fair, measured on a release agent with a week-old
//! database (a week of 1-minute rollups of 20 series, a day of their 1-s samples, a week of a 1-s
//! group's journal: 604 800 rows).
//!
//!     cargo bench -p e2e --bench api                                  # this tree's release agent
//!     AGENT_BIN=/path/to/old/agent cargo bench -p e2e --bench api     # another build, same load
//!
//! - quiet: 60 s, no client but a `/healthz` probe every 250 ms;
//! - read flood: 60 s of 16 clients reading 7-day windows of `/api/series` and `/api/decisions`
//!   back to back (what stopped every evaluation for 20 s before issue 28);
//! - trickle: 500 connections sending a request head one byte at a time for 20 s.
//!
//! Each phase reports the group's evaluation delay (time between consecutive evaluations, less
//! the 1-s interval; p50/p99/max), `/healthz` latency, and for the flood the reads answered and
//! refused; the trickle phase reports the agent's descriptors.

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../all/week_old.rs"]
mod week_old;

use common::{decisions, http_get, http_get_within, plugin, plugin_dir, report, Agent, JsonServer};
use std::io::Write;
use std::time::{Duration, Instant};
use week_old::{one_second_group, ReadFlood, WeekOld, SERIES};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Probes `/healthz` every 250 ms for `length`, calling `each` between probes; latencies in ms
/// (a probe that fails counts as its full 5-s wait).
fn probe(agent: &Agent, length: Duration, mut each: impl FnMut()) -> Vec<f64> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < length {
        let t = Instant::now();
        let ok = matches!(http_get(agent.addr, "/healthz"), Ok((200, _)));
        latencies.push(if ok { t.elapsed().as_secs_f64() * 1e3 } else { 5_000.0 });
        each();
        std::thread::sleep(Duration::from_millis(250));
    }
    latencies
}

/// The group's evaluation delays (ms beyond its 1-s interval) between `from` and `to`.
fn delays(agent: &Agent, from: i64, to: i64) -> Vec<f64> {
    let mut t: Vec<i64> = decisions(agent, "web")
        .iter()
        .filter_map(|d| d["t_ms"].as_i64())
        .filter(|t| *t >= from && *t < to)
        .collect();
    t.sort();
    t.windows(2).map(|w| (w[1] - w[0] - 1000).max(0) as f64).collect()
}

fn phase(name: &str, agent: &Agent, from: i64, mut healthz: Vec<f64>, extra: &str) {
    let mut d = delays(agent, from, agent::timefmt::now_ms());
    let n = d.len() + 1;
    report(&format!(
        "api {name}: {n} evaluations; delay p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; /healthz p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{extra}",
        percentile(&mut d, 0.5),
        percentile(&mut d, 0.99),
        percentile(&mut d, 1.0),
        percentile(&mut healthz, 0.5),
        percentile(&mut healthz, 0.99),
        percentile(&mut healthz, 1.0),
    ));
}

fn flood(agent: &Agent) {
    let flood = ReadFlood::start(agent.addr, 16, "web");
    let from = agent::timefmt::now_ms();
    let healthz = probe(agent, Duration::from_secs(60), || {});
    let mut seen = flood.stop();
    let extra = format!(
        "; reads answered {} (p50 {:.0} ms), refused 503 {}, other {}",
        seen.answered_ms.len(),
        percentile(&mut seen.answered_ms, 0.5),
        seen.refused,
        seen.other.len()
    );
    phase("read flood (16 clients, 7-day windows)", agent, from, healthz, &extra);
}

fn trickle(agent: &Agent) {
    let idle = descriptors(agent.pid());
    let mut held: Vec<std::net::TcpStream> = (0..500)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(agent.addr).ok()?;
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    let (from, mut most) = (agent::timefmt::now_ms(), 0);
    let healthz = probe(agent, Duration::from_secs(20), || {
        for s in &mut held {
            let _ = s.write_all(b"X");
        }
        most = most.max(descriptors(agent.pid()));
    });
    let quiet = Instant::now();
    while descriptors(agent.pid()) > idle + 4 && quiet.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let extra = format!(
        "; descriptors {idle} idle, {most} at most, back to {} {:.1} s after the trickle stopped",
        descriptors(agent.pid()),
        quiet.elapsed().as_secs_f64()
    );
    phase("trickle (500 connections)", agent, from, healthz, &extra);
    drop(held);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // AGENT_BIN=/path/to/another/agent: the same measurement of another build (the benches'
    // default is this tree's release build).
    if std::env::var_os("AGENT_BIN").is_none() {
        common::use_release_agent();
    }
    report(&format!("api: agent {}", std::env::var("AGENT_BIN").unwrap()));
    let data = tempfile::tempdir().unwrap();
    let seeding = Instant::now();
    WeekOld { series: 20, raw_hours: 24, journal_hours: 7 * 24, group: "web" }.seed(data.path());
    let size = std::fs::metadata(data.path().join("agent.db")).map(|m| m.len()).unwrap_or(0);
    report(&format!(
        "api: week-old database seeded in {:.1} s ({} MiB)",
        seeding.elapsed().as_secs_f64(),
        size >> 20
    ));
    let app = JsonServer::start(r#"{"load": 20}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let agent = Agent::start_in(dir.path(), &one_second_group("web", &app), data);
    std::thread::sleep(Duration::from_secs(5));
    let from = agent::timefmt::now_ms();
    let healthz = probe(&agent, Duration::from_secs(60), || {});
    phase("quiet", &agent, from, healthz, "");
    for path in [format!("/api/series?name={SERIES}&window=7d"), "/api/decisions?group=web&window=7d".into()]
    {
        let mut took: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let (status, _) = http_get_within(agent.addr, &path, Duration::from_secs(60)).unwrap();
                assert_eq!(status, 200, "{path}");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        report(&format!("api one client, {path}: median {:.0} ms", percentile(&mut took, 0.5)));
    }
    flood(&agent);
    trickle(&agent);
}
