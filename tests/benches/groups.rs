//! Many groups on one agent: the agent's CPU per evaluation and the journal rows a day it
//! writes, with every group at rest (the metric steady, the policy asking for what there is).
//!
//!     cargo bench -p e2e --bench groups                             # this tree's release agent
//!     AGENT_BIN=/path/to/old/agent cargo bench -p e2e --bench groups  # another build, same plugins
//!     GROUPS=100 cargo bench -p e2e --bench groups                  # another number of groups
//!
//! Each group: `app.load` (one http-json source, a constant 20) over 5 s → `target-tracking`
//! (target 10 in total: 2 replicas) → `ledger` (2 replicas): a hold every second.

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

use common::{cpu_seconds, load_source, plugin, plugin_dir, wait_for, Agent, JsonServer};
use std::time::{Duration, Instant};

const MEASURE: Duration = Duration::from_secs(30);

fn config(groups: usize, app: &JsonServer) -> String {
    let mut text = load_source(app);
    for i in 0..groups {
        text.push_str(&format!(
            "[[group]]\nname = \"g{i:04}\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"5s\" }}]\n\
             policy = \"target-tracking\"\npolicy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
             backend_config = {{ initial = 2 }}\nmin = 1\nmax = 10\n"
        ));
    }
    text
}

/// Evaluations so far: every evaluation at rest calls the policy once.
fn evaluations(agent: &Agent) -> u64 {
    agent.plugin("target-tracking").and_then(|p| p["calls"].as_u64()).unwrap_or(0)
}

/// Rows in the journal now (read beside the running agent: SQLite in WAL mode).
fn journal_rows(agent: &Agent) -> u64 {
    let db = rusqlite::Connection::open_with_flags(
        agent.data.path().join("agent.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("SELECT count(*) FROM decisions", [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("AGENT_BIN").is_none() {
        common::use_release_agent();
    }
    let groups: usize = std::env::var("GROUPS").ok().and_then(|g| g.parse().ok()).unwrap_or(1000);
    println!("agent: {}", std::env::var("AGENT_BIN").unwrap());
    let app = JsonServer::start(r#"{"load": 20}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let agent = Agent::start(dir.path(), &config(groups, &app));
    // The same agent without groups, measured over the same seconds: what sampling the source
    // (ten HTTP requests a second) and the rest of the agent cost without any evaluation.
    let idle = Agent::start(dir.path(), &config(0, &app));
    wait_for("every group evaluated", Duration::from_secs(120), || {
        (evaluations(&agent) >= groups as u64 * 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(10));
    let (t0, cpu0, evals0, rows0) =
        (Instant::now(), cpu_seconds(agent.pid()), evaluations(&agent), journal_rows(&agent));
    let idle0 = cpu_seconds(idle.pid());
    std::thread::sleep(MEASURE);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(agent.pid()) - cpu0;
    let idle_cpu = cpu_seconds(idle.pid()) - idle0;
    let evals = evaluations(&agent) - evals0;
    let rows = journal_rows(&agent) - rows0;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss = rss.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("VmRSS: ?").to_string();
    println!("{groups} groups at 1 s, at rest, over {secs:.0} s:");
    println!("  evaluations         {evals} ({:.0} a second)", evals as f64 / secs);
    println!("  agent CPU           {:.1} % of a core", cpu / secs * 100.0);
    println!("  without groups      {:.1} % of a core (the same source, no group)", idle_cpu / secs * 100.0);
    println!(
        "  CPU per evaluation  {:.1} µs (the whole agent's CPU / evaluations)",
        cpu / evals as f64 * 1e6
    );
    println!(
        "                      {:.1} µs (beyond the agent without groups)",
        (cpu - idle_cpu).max(0.0) / evals as f64 * 1e6
    );
    println!("  journal rows        {rows} ({:.0} a day)", rows as f64 / secs * 86_400.0);
    println!("  {rss}");
}
