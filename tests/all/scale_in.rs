//! Idle-aware scale-in: the replicas a group removes are the ones that measure idle, drained
//! first; a replica that reports busy is never stopped — the group scales in less, and says so.

use crate::common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// `POST path` on `127.0.0.1:port`; the status code.
fn post(port: u16, path: &str) -> u16 {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Replica index → (pid, state) of process `name`.
fn replicas(agent: &Agent, name: &str) -> BTreeMap<u64, (u64, String)> {
    let status = agent.status();
    let all = status["processes"].as_array().unwrap();
    all.iter()
        .filter(|p| p["name"] == name)
        .map(|p| {
            let pid = p["pid"].as_u64().unwrap_or(0);
            (p["replica"].as_u64().unwrap(), (pid, p["state"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

fn ready(agent: &Agent, name: &str, count: usize) -> BTreeMap<u64, u64> {
    wait_for(&format!("{count} ready replicas of {name}"), LIMIT, || {
        let all = replicas(agent, name);
        let ready = all.values().filter(|(_, s)| s == "ready").count() == count && all.len() == count;
        ready.then(|| all.into_iter().map(|(r, (pid, _))| (r, pid)).collect())
    })
}

/// The shipped configuration with `replicas` web replicas writing their output to `logs`, a
/// drain deadline of 3 s, and no scaling group yet.
fn shipped(replicas: u32, logs: &std::path::Path) -> (String, u16) {
    let (text, _, own) = default_configuration();
    let (processes, _group) = text.split_once("\n[[group]]").unwrap();
    let text = processes
        .replace("replicas = 2\n", &format!("replicas = {replicas}\n"))
        .replace("deadline = \"20s\"", "deadline = \"3s\"");
    (format!("{text}\n[process.log]\ndir = \"{}\"\n", logs.display()), own)
}

/// The shipped group, evaluated every second, scaling in at once.
const GROUP: &str = "\n[[group]]\nname = \"web\"\ninterval = \"1s\"\n\
    metrics = [{ name = \"process.cpu.utilization\", labels = { process = \"web\" }, window = \"5s\" }]\n\
    policy = \"target-tracking\"\npolicy_config = { target = 0.2 }\nbackend = \"local-replicas\"\n\
    backend_config = { process = \"web\" }\nmin = 1\nmax = 4\n[group.scale_down]\nstabilization = \"0s\"\n";

#[test]
fn scale_in_removes_only_idle_replicas_drained_first_and_holds_while_the_rest_are_busy() {
    let logs = tempfile::tempdir().unwrap();
    let (config, own) = shipped(4, logs.path());
    // The folder lives as long as the agent: a reload that binds a plugin checks its file again.
    let plugins = default_plugins();
    let agent = Agent::start(plugins.path(), &config);
    let pids = ready(&agent, "web", 4);
    // Replicas 1 and 3 have work in flight (a background job each); 0 and 2 are idle.
    for r in [1, 3] {
        assert_eq!(post(own + r, "/job?seconds=600"), 200);
    }
    // The group arrives by a reload: with no load the policy wants its minimum, 1.
    std::fs::write(agent.data.path().join("agent.toml"), config.clone() + GROUP).unwrap();
    let (code, _, err) = agent.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");

    let scaled = decision(&agent, "web", "the scale-in", |d| d["action"] == "scale" && d["current"] == 4);
    let outcome = scaled["outcome"].as_str().unwrap();
    // The two idle ones, each with the CPU it measured (which varies from run to run).
    let rest = outcome.strip_prefix("web: 4 → 2 replicas; removed web#0 (idle: busy 0, ").unwrap_or_default();
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    assert!(rest.starts_with(" % CPU), web#2 (idle: busy 0, "), "{scaled}");
    // It needed three and only two were idle: one of the busy ones is named.
    let kept_busy = |o: &str| {
        o.contains("; kept 1 busy: web#1 (busy: 1 in flight)")
            || o.contains("; kept 1 busy: web#3 (busy: 1 in flight)")
    };
    assert!(kept_busy(outcome), "{outcome}");
    assert_eq!(scaled["target"], 2, "{scaled}");
    let steps = scaled["steps"].to_string();
    assert!(steps.contains(r#""after":2.0,"before":1.0,"guardrail":"busy units""#), "{steps}");
    // The busy ones are the very processes that were running: never stopped, never restarted.
    let left = ready(&agent, "web", 2);
    assert_eq!(left, BTreeMap::from([(1, pids[&1]), (3, pids[&3])]));
    // The removed ones were told to stop taking connections before they were stopped.
    for r in [0, 2] {
        let out = std::fs::read_to_string(logs.path().join(format!("web-{r}.log"))).unwrap_or_default();
        assert!(out.contains(&format!("replica {r} draining")), "web-{r}.log:\n{out}");
    }

    // Both busy: the group holds, and the journal says why.
    let held = decision(&agent, "web", "a hold for the busy replicas", |d| {
        d["action"] == "hold" && d["current"] == 2 && d["steps"].to_string().contains("busy units")
    });
    assert!(kept_busy(held["outcome"].as_str().unwrap()), "{held}");
    assert_eq!(replicas(&agent, "web").len(), 2);
    let (code, out, _) = agent.cli(&["decisions", "--group", "web", "--since", "1m"]);
    assert_eq!(code, 0);
    assert!(out.contains("busy units"), "{out}");

    // Replica 3's job ends: it is the next to go, replica 1 stays as long as it works.
    assert_eq!(post(own + 3, "/job/finish"), 200);
    decision(&agent, "web", "web#3 removed once idle", |d| {
        d["outcome"].as_str().is_some_and(|o| o.starts_with("web: 2 → 1 replicas; removed web#3"))
    });
    assert_eq!(ready(&agent, "web", 1), BTreeMap::from([(1, pids[&1])]));

    // Scaling up again fills the lowest free indices: 0 and 2 (ports own + 0, own + 2).
    let more = config.clone() + &GROUP.replace("min = 1\n", "min = 3\n");
    std::fs::write(agent.data.path().join("agent.toml"), more).unwrap();
    assert_eq!(agent.cli(&["reload"]).0, 0);
    let now = ready(&agent, "web", 3);
    assert_eq!(now.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(now[&1], pids[&1]);
    let (code, stats) = http_get(format!("127.0.0.1:{}", own + 2).parse().unwrap(), "/stats").unwrap();
    assert_eq!(code, 200);
    assert!(stats.contains("\"replica\": 2"), "{stats}");
}

#[test]
fn a_replica_still_busy_at_the_drain_deadline_is_kept_and_its_drain_undone() {
    // The drain hook itself makes the replica busy (work that arrived as it was chosen): the
    // busy probe answers 0 when ranked, 1 after the drain, until the deadline passes.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for r in 0..2 {
        std::fs::write(dir.path().join(format!("busy-{r}")), "0").unwrap();
    }
    let config = format!(
        "[plugins.local-replicas]\nprocesses = [\"app\"]\n\
         [[process]]\nname = \"app\"\ncommand = \"sleep\"\nargs = [\"600\"]\nreplicas = 2\n\
         [process.busy]\ncommand = [\"cat\", \"{d}/busy-{{replica}}\"]\n\
         [process.drain]\ncommand = [\"sh\", \"-c\", \"echo 1 > {d}/busy-{{replica}}\"]\ndeadline = \"1s\"\n\
         undo_command = [\"sh\", \"-c\", \"echo undone > {d}/undo-{{replica}}\"]\n\
         [[group]]\nname = \"app\"\ninterval = \"1s\"\n\
         metrics = [{{ name = \"process.cpu.utilization\", labels = {{ process = \"app\" }}, window = \"3s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 0.5 }}\nbackend = \"local-replicas\"\n\
         backend_config = {{ process = \"app\" }}\nmin = 1\nmax = 2\n[group.scale_down]\nstabilization = \"0s\"\n"
    );
    let plugins = plugin_dir(&[&plugin("target-tracking"), &plugin("local-replicas")]);
    let agent = Agent::start(plugins.path(), &config);
    let pids = ready(&agent, "app", 2);
    let kept = decision(&agent, "app", "a replica kept at its drain deadline", |d| {
        d["outcome"].as_str().is_some_and(|o| o.contains("at the drain deadline of 1s"))
    });
    let outcome = kept["outcome"].as_str().unwrap();
    // Ties go to the highest index, as before: replica 1 was chosen, drained, and kept.
    assert!(outcome.ends_with("kept 1 busy: app#1 (1 in flight at the drain deadline of 1s)"), "{outcome}");
    assert_eq!(kept["action"], "hold", "{kept}");
    assert_eq!(std::fs::read_to_string(dir.path().join("undo-1")).unwrap().trim(), "undone");
    assert_eq!(replicas(&agent, "app").len(), 2, "nothing was stopped");
    // Replica 1 now reports busy: the next evaluation takes replica 0 instead, which the drain
    // makes busy too; both are kept, both drains undone.
    wait_for("replica 0's drain undone", LIMIT, || dir.path().join("undo-0").exists().then_some(()));
    // Kept means the very processes that ran: neither stopped nor stopped and started again.
    assert_eq!(ready(&agent, "app", 2), pids, "the kept replicas are the processes that ran before");
}

#[test]
fn a_backend_built_against_the_frozen_previous_release_scales_on_this_agent() {
    // frozen-backend was built against wit/since_v0.1.1 (released 0.1.1); this agent speaks
    // 0.1.4; 0.1.2 added `scale-in` and `replica-units` to the backend world. frozen-policy
    // (0.1.0) wants one more each time.
    let plugins = plugin_dir(&[&fixture("frozen-backend"), &fixture("frozen-policy")]);
    let config = "[plugins.frozen-backend]\nprocesses = [\"app\"]\n\
        [[process]]\nname = \"app\"\ncommand = \"sleep\"\nargs = [\"600\"]\n\
        [[group]]\nname = \"app\"\ninterval = \"300ms\"\npolicy = \"frozen-policy\"\nbackend = \"frozen-backend\"\n\
        min = 1\nmax = 3\n";
    let agent = Agent::start(plugins.path(), config);
    assert_eq!(agent.plugin("frozen-backend").unwrap()["contract"], "0.1.1");
    ready(&agent, "app", 3);
    let scaled = decision(&agent, "app", "a scale by the 0.1.1 backend", |d| d["action"] == "scale");
    assert!(scaled["outcome"].as_str().unwrap().starts_with("0.1.1 backend set app to "), "{scaled}");
}

/// A frozen `backend` (built against `version`) scales group `app`, a supervised `sleep`, on
/// this agent, and says which decision it carried out; `extra` adds to the configuration.
fn frozen_backend_scales(backend: &str, version: &str, extra: &str) -> Agent {
    let plugins = plugin_dir(&[&fixture(backend), &fixture("frozen-policy")]);
    let config = format!(
        "[plugins.{backend}]\nprocesses = [\"app\"]\n\
         [[process]]\nname = \"app\"\ncommand = \"sleep\"\nargs = [\"600\"]\n\
         [[group]]\nname = \"app\"\ninterval = \"300ms\"\npolicy = \"frozen-policy\"\nbackend = \"{backend}\"\n\
         min = 1\nmax = 3\n{extra}"
    );
    let agent = Agent::start(plugins.path(), &config);
    assert_eq!(agent.plugin(backend).unwrap()["contract"], version);
    ready(&agent, "app", 2);
    let scaled =
        decision(&agent, "app", &format!("a scale by the {version} backend"), |d| d["action"] == "scale");
    let outcome = scaled["outcome"].as_str().unwrap();
    let expected = format!("{version} backend set app to ");
    assert!(outcome.starts_with(&expected) && outcome.contains(" for app#"), "{scaled}");
    agent
}

#[test]
fn a_backend_built_against_the_frozen_release_0_1_2_scales_and_reads_its_decision_on_this_agent() {
    // frozen-backend-0-1-2 was built against wit/since_v0.1.2 (released 0.1.2); this agent
    // speaks 0.1.4; 0.1.3 added `volumes` and the `volume-backend-plugin` world.
    frozen_backend_scales("frozen-backend-0-1-2", "0.1.2", "");
}

#[test]
fn a_backend_built_against_the_frozen_release_0_1_3_scales_and_grows_its_volume_on_this_agent() {
    // frozen-backend-0-1-3 was built against wit/since_v0.1.3 (released 0.1.3, the
    // `volume-backend-plugin` world); this agent speaks 0.1.4, which added `cloud-limits`.
    let storage = "[[group]]\nname = \"data\"\ninterval = \"300ms\"\npolicy = \"frozen-policy\"\n\
        backend = \"frozen-backend-0-1-3\"\n[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"3GiB\"\ncooldown = \"0s\"\n";
    let agent = frozen_backend_scales("frozen-backend-0-1-3", "0.1.3", storage);
    let grown = decision(&agent, "data", "a resize by the 0.1.3 backend", |d| d["action"] == "scale");
    assert!(grown["outcome"].as_str().unwrap().contains("0.1.3 backend grew vol-0-1-3 to 2 GiB"), "{grown}");
}
