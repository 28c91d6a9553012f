//! The supervisor with real processes: crash loops and backoff, the start limit, health checks,
//! stop escalation, no orphans whatever happens to the agent, replicas.

use crate::common::{agent_cli, plugin_dir, wait_for, wait_ticks, Agent};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn instances(agent: &Agent, name: &str) -> Vec<serde_json::Value> {
    agent.status()["processes"].as_array().unwrap().iter().filter(|p| p["name"] == name).cloned().collect()
}

pub(crate) fn instance(agent: &Agent, name: &str, replica: u64) -> Option<serde_json::Value> {
    instances(agent, name).into_iter().find(|p| p["replica"] == replica)
}

/// Pids of live (non-zombie) processes whose environment carries `marker`.
pub(crate) fn marked_processes(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.rfind(')').is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            !zombie && env.split(|b| *b == 0).any(|kv| kv == format!("TEST_MARK={marker}").as_bytes())
        })
        .collect()
}

pub(crate) fn mark() -> String {
    format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() ^ rand_bits())
}

fn rand_bits() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn a_crash_loop_backs_off_exponentially_then_hits_the_start_limit() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let config = format!(
        r#"
[[process]]
name = "crasher"
command = "date +%s%N >> {starts}; exit 3"
shell = true
[process.backoff]
initial = "200ms"
multiplier = 2.0
max = "5s"
[process.start_limit]
count = 5
interval = "1m"
"#,
        starts = starts.display()
    );
    let agent = Agent::start(dir.path(), &config);
    let failed = wait_for("the start limit", LIMIT, || {
        instance(&agent, "crasher", 0).filter(|p| p["state"] == "failed")
    });
    assert_eq!(failed["restarts"], 4);
    assert_eq!(failed["last_exit"], "exited with code 3");
    let times: Vec<i64> = std::fs::read_to_string(&starts)
        .unwrap()
        .lines()
        .map(|l| l.parse::<i64>().unwrap() / 1_000_000)
        .collect();
    assert_eq!(times.len(), 5, "5 starts, then no more");
    // Each failure says the backoff it waits, doubling from 200 ms; and each start came no
    // sooner than that (a loaded machine only makes a start later: how much later is the timing
    // bench's, tests/benches/timing.rs "crash loop").
    let log = agent.log();
    let said: Vec<Option<usize>> = ["200ms", "400ms", "800ms", "1600ms"]
        .iter()
        .map(|backoff| log.find(&format!("; restarting in {backoff}")))
        .collect();
    assert!(
        said.iter().all(Option::is_some) && said.windows(2).all(|w| w[0] < w[1]),
        "backoffs 200, 400, 800, 1600 ms, in this order:\n{log}"
    );
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, backoff) in gaps.iter().zip([200, 400, 800, 1600]) {
        assert!(*gap >= backoff, "gaps {gaps:?}, expected backoffs 200/400/800/1600 ms");
    }
    // `agent restart` clears the failed state.
    let (code, out, err) = agent_cli(&[
        "restart",
        "crasher",
        "--listen",
        &agent.addr.to_string(),
        "--data-dir",
        agent.data.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // It says what it acts on: the failed instance, as it stood.
    assert_eq!(out.trim(), "crasher: restarting 1 instance(s) (crasher-0 failed)");
    wait_for("a sixth start", LIMIT, || {
        (std::fs::read_to_string(&starts).unwrap().lines().count() >= 6).then_some(())
    });
}

#[test]
fn an_unhealthy_instance_is_restarted_and_readiness_follows_the_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = dir.path().join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let config = format!(
        r#"
[[process]]
name = "app"
command = "sleep"
args = ["600"]
[process.health]
command = ["test", "-e", "{healthy}"]
interval = "100ms"
failure_threshold = 3
[process.backoff]
initial = "0s"
"#,
        healthy = healthy.display()
    );
    let agent = Agent::start(dir.path(), &config);
    let ready = wait_for("ready", LIMIT, || instance(&agent, "app", 0).filter(|p| p["state"] == "ready"));
    let first_pid = ready["pid"].as_u64().unwrap();
    std::fs::remove_file(&healthy).unwrap();
    let restarted = wait_for("a restart after the check fails", LIMIT, || {
        instance(&agent, "app", 0)
            .filter(|p| p["restarts"] == 1 && p["pid"].as_u64().is_some_and(|pid| pid != first_pid))
    });
    assert_eq!(restarted["state"], "starting", "not ready until the check passes again");
    assert!(restarted["last_error"].as_str().unwrap().starts_with("unhealthy: test -e"));
    assert!(
        !std::path::Path::new(&format!("/proc/{first_pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{first_pid}/stat")).unwrap_or_default();
            stat.contains(") Z")
        },
        "the unhealthy process was stopped"
    );
    std::fs::write(&healthy, "").unwrap();
    wait_for("ready again", LIMIT, || instance(&agent, "app", 0).filter(|p| p["state"] == "ready"));
}

#[test]
fn a_process_ignoring_sigterm_is_killed_after_its_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[process]]
name = "stubborn"
command = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
shell = true
stop_grace = "500ms"
log_output = true
"#;
    let agent = Agent::start(dir.path(), config);
    let running =
        wait_for("running", LIMIT, || instance(&agent, "stubborn", 0).filter(|p| p["pid"].is_u64()));
    let pid = running["pid"].as_u64().unwrap();
    agent.wait_log("ready process=stubborn");
    let started = Instant::now();
    let (code, _, err) = agent_cli(&[
        "stop",
        "stubborn",
        "--listen",
        &agent.addr.to_string(),
        "--data-dir",
        agent.data.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "waited the grace period ({took:?})");
    let stopped = instance(&agent, "stubborn", 0).unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["last_exit"], "killed by signal 9");
    assert!(agent.log().contains("did not stop within 500ms of signal 15; sending SIGKILL"));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Stopped means stopped: no restart, while the agent's clock runs on (three sampling ticks,
    // more than a second; a restart of a stopped instance would be at once).
    wait_ticks(&agent, 3);
    let still = instance(&agent, "stubborn", 0).unwrap();
    assert_eq!(still["state"], "stopped", "{still}");
    assert!(still["pid"].is_null(), "no process: {still}");
    let (code, _, _) = agent_cli(&[
        "start",
        "stubborn",
        "--listen",
        &agent.addr.to_string(),
        "--data-dir",
        agent.data.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    wait_for("started again", LIMIT, || instance(&agent, "stubborn", 0).filter(|p| p["state"] == "ready"));
}

fn family_config(marker: &str) -> String {
    // Each instance forks a grandchild in its group: both must go when the agent goes.
    format!(
        r#"
[[process]]
name = "family"
command = "sleep 600 & wait"
shell = true
replicas = 2
env = {{ TEST_MARK = "{marker}" }}
"#
    )
}

#[test]
fn stopping_the_agent_stops_every_child_and_grandchild() {
    let marker = mark();
    let dir = plugin_dir(&[]);
    let agent = Agent::start(dir.path(), &family_config(&marker));
    wait_for("4 processes", LIMIT, || (marker_count(&marker) == 4).then_some(()));
    agent.stop();
    assert_eq!(marked_processes(&marker), Vec::<u32>::new(), "SIGTERM to the agent leaves no process behind");
}

fn marker_count(marker: &str) -> usize {
    marked_processes(marker).len()
}

#[test]
fn a_killed_agent_leaves_no_orphans_and_its_successor_starts_no_duplicates() {
    let marker = mark();
    let dir = plugin_dir(&[]);
    let mut agent = Agent::start(dir.path(), &family_config(&marker));
    wait_for("4 processes", LIMIT, || (marker_count(&marker) == 4).then_some(()));
    agent.kill9();
    // The children die with the agent (parent-death signal). Their own children may linger
    // until a new agent on the same data folder finds them.
    wait_for("the direct children to die", LIMIT, || (marker_count(&marker) <= 2).then_some(()));
    let agent = Agent::start_in(dir.path(), &family_config(&marker), agent.stop());
    wait_for("exactly the new 4 processes", LIMIT, || {
        let running = instances(&agent, "family").iter().filter(|p| p["state"] == "ready").count();
        (running == 2 && marker_count(&marker) == 4).then_some(())
    });
    // Three of the new agent's sampling ticks later (more than a second), still those 4.
    wait_ticks(&agent, 3);
    assert_eq!(marker_count(&marker), 4, "no survivors beside the new instances");
    drop(agent);
    wait_for("all gone", LIMIT, || (marker_count(&marker) == 0).then_some(()));
}

#[test]
fn replicas_scale_up_with_new_indices_and_ports_and_down_from_the_highest() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[process]]
name = "web"
command = "echo replica=$REPLICA port=$PORT arg={port}; exec sleep 600"
shell = true
port = 19300
log_output = true
"#;
    let agent = Agent::start(dir.path(), config);
    agent.wait_log("replica=0 port=19300 arg=19300");
    let addr = agent.addr.to_string();
    let data = agent.data.path().to_str().unwrap().to_string();
    let (code, out, err) = agent_cli(&["scale", "web", "3", "--listen", &addr, "--data-dir", &data]);
    assert_eq!((code, out.trim()), (0, "web: 1 → 3 replicas; started web-1, web-2"), "{err}");
    agent.wait_log("replica=2 port=19302 arg=19302");
    let all = wait_for("3 ready", LIMIT, || {
        let i = instances(&agent, "web");
        (i.len() == 3 && i.iter().all(|p| p["state"] == "ready")).then_some(i)
    });
    let pids: Vec<u64> = all.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    let (code, out, _) = agent_cli(&["scale", "web", "1", "--listen", &addr, "--data-dir", &data]);
    assert_eq!((code, out.trim()), (0, "web: 3 → 1 replicas; stopped web-1, web-2"));
    let left = instances(&agent, "web");
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0]["replica"].as_u64(), left[0]["pid"].as_u64()),
        (Some(0), Some(pids[0])),
        "replica 0 kept"
    );
    for pid in &pids[1..] {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "replica with pid {pid} stopped");
    }
    let (code, _, err) = agent_cli(&["ps", "--listen", &addr]);
    assert_eq!(code, 0);
    let (code, _, err2) = agent_cli(&["scale", "web", "2", "--listen", &addr, "--data-dir", "/nonexistent"]);
    assert_eq!(code, 1, "{err}");
    assert!(err2.contains("reading the API token"), "{err2}");
}

#[test]
fn control_requests_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::start(dir.path(), "[[process]]\nname = \"p\"\ncommand = \"sleep\"\nargs = [\"600\"]\n");
    wait_for("p ready", LIMIT, || instance(&agent, "p", 0).filter(|p| p["state"] == "ready"));
    let token_file = agent.data.path().join("api.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let mut s = std::net::TcpStream::connect(agent.addr).unwrap();
    use std::io::{Read, Write};
    write!(s, "POST /processes/p/stop HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer wrong\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", agent.addr).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert_eq!(instance(&agent, "p", 0).unwrap()["state"], "ready", "nothing was stopped");
}
