//! The API under clients that do not play fair (issue 28): hundreds of connections trickling a
//! request head, and a flood of heavy reads on a week-old database. The agent's descriptors stay
//! bounded, `/healthz` answers throughout, and a 1-s group keeps evaluating.

use crate::common::{http_get, http_get_within, plugin, plugin_dir, wait_for, Agent, JsonServer};
use crate::week_old::{one_second_group, ReadFlood, WeekOld};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn metric(agent: &Agent, name: &str) -> f64 {
    let (_, text) = http_get(agent.addr, "/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn five_hundred_trickling_connections_hold_no_descriptors_and_healthz_answers() {
    let dir = plugin_dir(&[]);
    let agent = Agent::start(dir.path(), "[api]\nheader_timeout = \"2s\"\n");
    let idle = descriptors(agent.pid());
    // 500 clients each send the start of a request head, then one byte at a time.
    let mut held: Vec<TcpStream> = (0..500)
        .filter_map(|_| {
            let mut s = TcpStream::connect(agent.addr).ok()?;
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(held.len() >= 400, "the test itself could open only {} connections", held.len());
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < Duration::from_secs(5) {
        for s in &mut held {
            let _ = s.write_all(b"X");
        }
        let (status, body) =
            http_get(agent.addr, "/healthz").expect("/healthz answers under 500 trickling clients");
        assert_eq!((status, body.as_str()), (200, "ok"));
        most = most.max(descriptors(agent.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    // One client (all of them share 127.0.0.1) holds at most max_connections_per_client (64).
    assert!(most <= idle + 64 + 8, "{most} descriptors open under the trickle, {idle} idle");
    assert!(metric(&agent, "agent_api_connections_evicted_total") > 0.0);
    // The tricklers go quiet but keep their sockets: the header timeout closes them.
    let back = wait_for("the held connections to be closed", Duration::from_secs(15), || {
        let n = descriptors(agent.pid());
        (n <= idle + 4).then_some(n)
    });
    assert!(back <= idle + 4);
    assert!(metric(&agent, "agent_api_header_timeouts_total") > 0.0);
    drop(held);
}

#[test]
fn a_flood_of_week_long_reads_is_refused_in_part_and_a_1s_group_keeps_evaluating() {
    let data = tempfile::tempdir().unwrap();
    WeekOld { series: 4, raw_hours: 2, journal_hours: 24, group: "web" }.seed(data.path());
    let app = JsonServer::start(r#"{"load": 20}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let agent = Agent::start_in(dir.path(), &one_second_group("web", &app), data);
    // Each evaluation asks the policy once (the journal folds a run of holds into one row).
    let evaluations = || agent.plugin("target-tracking").and_then(|p| p["calls"].as_u64()).unwrap_or(0);
    wait_for("the group's first evaluations", Duration::from_secs(30), || (evaluations() > 0).then_some(()));
    let evaluated = evaluations();
    // The flood lasts 10 s, and until the group has evaluated 5 times under it (read from
    // /status with a patience no flood should need): a group the flood stops fails here.
    let flood = ReadFlood::start(agent.addr, 16, "web");
    let under_flood = || {
        let (_, body) = http_get_within(agent.addr, "/status", Duration::from_secs(60)).expect("/status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let plugins = status["plugins"].as_array().cloned().unwrap_or_default();
        let policy = plugins.iter().find(|p| p["name"] == "target-tracking");
        policy.and_then(|p| p["calls"].as_u64()).unwrap_or(0)
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) || under_flood() < evaluated + 5 {
        let so_far = started.elapsed();
        assert!(so_far < Duration::from_secs(120), "fewer than 5 evaluations in {so_far:?} of flood");
        assert_eq!(http_get(agent.addr, "/healthz").expect("/healthz under the flood").0, 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    let seen = flood.stop();
    assert!(seen.other.is_empty(), "every read is answered or refused as busy: {:?}", seen.other);
    let (ok, busy) = (seen.answered_ms.len(), seen.refused);
    assert!(ok > 0, "some reads are answered ({busy} refused)");
    assert!(busy > 0, "a flood beyond the read pool is refused at once with 503 ({ok} answered)");
    // Before read pools, such a flood stopped every evaluation; now the group keeps evaluating
    // (above). Its pace under the flood — the delays between evaluations — is measured by
    // `cargo bench -p e2e --bench api`.
    assert!(metric(&agent, "agent_api_reads_refused_total") >= busy as f64);
}
