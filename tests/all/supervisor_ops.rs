//! The supervisor in production, with real processes: the first crash of a healthy instance
//! restarted at once, whole-tree stop (descendants in their own session included) under each
//! ownership mechanism, cgroup limits, live reload as a diff, `agent logs -f`, `check-config`.

use crate::common::{get_body, http_get, wait_for, Agent};
use crate::supervisor::{instance, instances, mark, marked_processes};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// `agent ARGS --listen … --data-dir … --config …` against `agent`.
fn cli(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    agent.cli(args)
}

fn pid_of(agent: &Agent, name: &str, replica: u64) -> u64 {
    wait_for(&format!("{name}-{replica} running"), LIMIT, || instance(agent, name, replica)?["pid"].as_u64())
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').is_some_and(|i| !stat[i + 1..].trim_start().starts_with('Z'))
}

#[test]
fn a_healthy_instance_that_crashes_is_restarted_at_once_and_a_crash_loop_still_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    // The first run is healthy for 1.5 s, then crashes; every later run crashes at once.
    let config = format!(
        r#"
[[process]]
name = "app"
command = "echo x >> {starts}; if [ $(wc -l < {starts}) -eq 1 ]; then sleep 1.5; fi; exit 1"
shell = true
[process.backoff]
initial = "30s"
"#,
        starts = starts.display()
    );
    let agent = Agent::start(dir.path(), &config);
    let count = || std::fs::read_to_string(&starts).map(|s| s.lines().count()).unwrap_or(0);
    // Restarted without the 30 s backoff: the second start comes within the test's limit.
    wait_for("the first restart", LIMIT, || (count() >= 2).then_some(()));
    // The second failure in a row backs off: 30 s in `backoff`, no third start meanwhile.
    let backing_off = wait_for("backoff after the second crash", LIMIT, || {
        instance(&agent, "app", 0).filter(|p| p["state"] == "backoff")
    });
    assert_eq!(backing_off["restarts"], 1);
    // Three of the agent's sampling ticks later (more than a second), still in its backoff.
    crate::common::wait_ticks(&agent, 3);
    assert_eq!(count(), 2, "no third start during the backoff");
    assert!(agent.log().contains("restarting now"), "{}", agent.log());
    assert!(agent.log().contains("restarting in 30s"), "{}", agent.log());
}

/// The mechanisms this machine can give, by their `process_tree` names.
fn tree_modes() -> Vec<&'static str> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut modes = vec!["subreaper"];
    let writable = |fs: &str| mounts.lines().any(|l| l.contains(&format!(" - {fs} ")) && l.contains(" rw,"));
    if writable("cgroup2") {
        modes.push("cgroup-v2");
    } else {
        crate::common::cgroup_or_skip("process_tree = \"cgroup-v2\": no writable cgroup v2 mount here");
    }
    if writable("cgroup") {
        modes.push("cgroup-v1");
    } else {
        crate::common::cgroup_or_skip("process_tree = \"cgroup-v1\": no writable cgroup v1 mount here");
    }
    modes
}

/// A program whose helpers leave its process group: one with `setsid`, one by double fork.
fn runaway_config(mode: &str, dir: &Path, marker: &str) -> String {
    format!(
        r#"
[agent]
process_tree = "{mode}"
[[process]]
name = "app"
command = "setsid sh -c 'echo $$ > {d}/setsid.pid; exec sleep 600' & sh -c 'sleep 600 & echo $! > {d}/orphan.pid' ; exec sleep 600"
shell = true
env = {{ TEST_MARK = "{marker}" }}
"#,
        d = dir.display()
    )
}

fn helper_pids(dir: &Path) -> Vec<u32> {
    wait_for("both helpers to write their pids", LIMIT, || {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse::<u32>().ok();
        let pids = vec![read("setsid.pid")?, read("orphan.pid")?];
        pids.iter().all(|p| alive(*p)).then_some(pids)
    })
}

#[test]
fn helpers_that_left_the_process_group_die_with_agent_stop_and_with_the_agent() {
    for mode in tree_modes() {
        let dir = tempfile::tempdir().unwrap();
        let marker = mark();
        let agent = Agent::start(dir.path(), &runaway_config(mode, dir.path(), &marker));
        assert_eq!(agent.status()["supervisor"]["process_tree"], mode, "{}", agent.log());
        let helpers = helper_pids(dir.path());
        let (code, _, err) = cli(&agent, &["stop", "app"]);
        assert_eq!(code, 0, "{err}");
        wait_for(&format!("[{mode}] helpers gone after `agent stop`"), LIMIT, || {
            helpers.iter().all(|p| !alive(*p)).then_some(())
        });
        for f in ["setsid.pid", "orphan.pid"] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let (code, _, err) = cli(&agent, &["start", "app"]);
        assert_eq!(code, 0, "{err}");
        let helpers = helper_pids(dir.path());
        agent.stop();
        assert!(helpers.iter().all(|p| !alive(*p)), "[{mode}] helpers survived the agent's SIGTERM");
        assert_eq!(marked_processes(&marker), Vec::<u32>::new(), "[{mode}] nothing of the app is left");
    }
}

#[test]
fn a_crashed_leader_takes_its_runaway_helpers_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let marker = mark();
    let agent = Agent::start(dir.path(), &runaway_config("auto", dir.path(), &marker));
    let helpers = helper_pids(dir.path());
    let leader = pid_of(&agent, "app", 0);
    std::process::Command::new("kill").args(["-KILL", &leader.to_string()]).status().unwrap();
    wait_for("the old helpers gone", LIMIT, || helpers.iter().all(|p| !alive(*p)).then_some(()));
    wait_for("restarted", LIMIT, || instance(&agent, "app", 0).filter(|p| p["restarts"] == 1));
}

#[test]
fn memory_max_is_enforced_and_cpu_max_throttles() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[process]]
name = "hog"
command = "python3"
args = ["-c", "import time; x = bytearray(256 << 20); x[::4096] = b'x' * len(x[::4096]); time.sleep(600)"]
memory_max = "64MiB"
[process.backoff]
initial = "30s"
[[process]]
name = "spin"
command = "python3"
args = ["-c", "while True: pass"]
cpu_max = "20%"
"#;
    let agent = Agent::start(dir.path(), config);
    let tree = &agent.status()["supervisor"];
    if !tree["memory_limits"].as_str().unwrap().starts_with("cgroup") {
        crate::common::cgroup_or_skip(&format!("memory_max/cpu_max: no cgroup limits here ({tree})"));
        assert!(instance(&agent, "hog", 0).unwrap()["limits_error"]
            .as_str()
            .unwrap()
            .contains("cannot be applied"));
        return;
    }
    let killed = wait_for("the OOM kill", LIMIT, || {
        instance(&agent, "hog", 0).filter(|p| p["last_exit"] == "killed by signal 9")
    });
    assert_eq!(killed["limits_error"], serde_json::Value::Null);
    // The kernel says so: the spinner's cgroup ran into its quota (it got CPU, and no more).
    let pid = pid_of(&agent, "spin", 0);
    wait_for("the spinner throttled by its cgroup's cpu.max", LIMIT, || (throttled(pid) > 0).then_some(()));
}

/// How many periods the kernel throttled `pid` in: `nr_throttled` of the cgroup that holds its CPU
/// limit (its own or an ancestor, cgroup v2 or v1's `cpu` hierarchy).
fn throttled(pid: u64) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut dirs = Vec::new();
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        // Where the hierarchy is mounted: v2 alone or beside v1 (`unified`); v1's `cpu` alone
        // or joined with `cpuacct`.
        let roots = match controllers {
            "" => vec!["/sys/fs/cgroup".to_string(), "/sys/fs/cgroup/unified".to_string()],
            c if c.split(',').any(|c| c == "cpu") => {
                vec![format!("/sys/fs/cgroup/{c}"), "/sys/fs/cgroup/cpu".into()]
            }
            _ => continue,
        };
        // The process's cgroup and its ancestors, not the root (which no limit throttles).
        let mut at = Some(Path::new(path)).filter(|p| *p != Path::new("/"));
        while let Some(dir) = at {
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            dirs.extend(roots.iter().map(|r| Path::new(r).join(relative)));
            at = dir.parent().filter(|p| *p != Path::new("/"));
        }
    }
    let count = |dir: &std::path::PathBuf| {
        let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
        stat.lines().find_map(|l| l.strip_prefix("nr_throttled ")).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    dirs.iter().map(count).max().unwrap_or(0)
}

fn three_processes(dir: &Path, b_version: &str, extra: &str) -> String {
    format!(
        r#"
[[process]]
name = "a"
command = "sleep"
args = ["600"]

[[process]]
name = "b"
command = "echo start $REPLICA >> {d}/b-starts; sleep 0.5; echo ready $REPLICA >> {d}/b-starts; touch {d}/ready-$REPLICA-{b_version}; exec sleep 600"
shell = true
replicas = 2
env = {{ VERSION = "{b_version}" }}
[process.health]
command = ["test", "-e", "{d}/ready-{{replica}}-{b_version}"]
interval = "100ms"
start_period = "5s"

[[process]]
name = "c"
command = "sleep"
args = ["600"]
{extra}"#,
        d = dir.display()
    )
}

#[test]
fn a_reload_applies_a_diff_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &three_processes(dir.path(), "v1", ""));
    let file = agent.data.path().join("agent.toml");
    for r in 0..2 {
        wait_for("b ready", LIMIT, || instance(&agent, "b", r).filter(|p| p["state"] == "ready"));
    }
    let (a, c) = (pid_of(&agent, "a", 0), pid_of(&agent, "c", 0));
    let old_b = [pid_of(&agent, "b", 0), pid_of(&agent, "b", 1)];
    std::fs::remove_file(dir.path().join("b-starts")).unwrap();

    // b changes, d is added, a and c stay as they are.
    let added = "\n[[process]]\nname = \"d\"\ncommand = \"sleep\"\nargs = [\"600\"]\n";
    std::fs::write(&file, three_processes(dir.path(), "v2", added)).unwrap();
    let (code, out, err) = cli(&agent, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "reloaded: processes: +d ~b", "{out}");
    pid_of(&agent, "d", 0);
    agent.wait_log("restarted with its new configuration process=b replica=1");
    for r in 0..2 {
        wait_for("b restarted and ready", LIMIT, || {
            instance(&agent, "b", r).filter(|p| {
                p["state"] == "ready" && p["pid"].as_u64().is_some_and(|pid| pid != old_b[r as usize])
            })
        });
    }
    assert_eq!((pid_of(&agent, "a", 0), pid_of(&agent, "c", 0)), (a, c), "unchanged processes untouched");
    // Replica by replica: replica 1's new start came only once replica 0 was ready. Each new
    // instance appends `start R`, then (half a second later) `ready R` just before it makes its
    // health check pass: in the file, b-0's `ready` comes before b-1's `start`.
    let text = std::fs::read_to_string(dir.path().join("b-starts")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = |line: &str| lines.iter().position(|l| *l == line);
    let (ready_0, start_1) = (at("ready 0"), at("start 1"));
    assert!(
        ready_0.is_some() && start_1.is_some() && ready_0 < start_1,
        "b-1 started before b-0 was ready:\n{text}\nlog:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(!log.contains("restarting"), "nothing but the reload restarted anything:\n{log}");

    // A fourth entry with an error: nothing changes, and the error names the line.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{good}\n[[process]]\nname = \"e\"\ncommand = \"sleep\"\nrestart = \"sometimes\"\n"),
    )
    .unwrap();
    let line = good.lines().count() + 5;
    let (code, _, err) = cli(&agent, &["reload"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("agent.toml:{line}:11: process[e].restart")), "{err}");
    let status = agent.status();
    assert_eq!(status["config"]["last_reload"]["ok"], false);
    assert!(status["config"]["last_reload"]["error"].as_str().unwrap().contains(&format!(":{line}:11:")));
    assert!(instances(&agent, "e").is_empty());
    assert_eq!((pid_of(&agent, "a", 0), pid_of(&agent, "c", 0)), (a, c));
    let (_, metrics) = http_get(agent.addr, "/metrics").unwrap();
    assert!(metrics.contains("agent_config_last_reload_successful 0"), "{metrics}");
    let (code, _, err) = cli(&agent, &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("agent.toml:{line}:11: process[e].restart")), "{err}");

    // SIGHUP reloads too: the file fixed, without e and without c.
    let fixed = good.replace("[[process]]\nname = \"c\"\ncommand = \"sleep\"\nargs = [\"600\"]\n", "");
    std::fs::write(&file, fixed).unwrap();
    let (code, out, _) = cli(&agent, &["check-config"]);
    assert_eq!(code, 0);
    assert!(out.contains(": ok (processes: 3,"), "{out}");
    std::process::Command::new("kill").args(["-HUP", &agent.pid().to_string()]).status().unwrap();
    wait_for("c removed", LIMIT, || instances(&agent, "c").is_empty().then_some(()));
    wait_for("c's process gone", LIMIT, || (!alive(c as u32)).then_some(()));
    assert_eq!(pid_of(&agent, "a", 0), a);
    let (_, metrics) = http_get(agent.addr, "/metrics").unwrap();
    assert!(metrics.contains("agent_config_last_reload_successful 1"), "{metrics}");
}

#[test]
fn agent_logs_shows_recent_output_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[process]]
name = "counter"
command = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"
shell = true
"#;
    let agent = Agent::start(dir.path(), config);
    wait_for("some output", LIMIT, || {
        let (_, out, _) = cli(&agent, &["logs", "counter", "-n", "3"]);
        (out.lines().count() == 3).then_some(())
    });
    let (code, out, _) = cli(&agent, &["logs", "counter", "-n", "2", "--replica", "0"]);
    assert_eq!(code, 0);
    assert!(out.lines().all(|l| l.starts_with("line ")), "{out}");
    assert!(!agent.log().contains("line 1"), "without log_output the agent's log stays the agent's");

    let addr = agent.addr.to_string();
    let data = agent.data.path().to_str().unwrap().to_string();
    let mut follower = std::process::Command::new(crate::common::agent_bin())
        .args(["logs", "counter", "-f", "-n", "1", "--listen", &addr, "--data-dir", &data])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    let numbers: Vec<u64> = (0..6)
        .map(|_| lines.next().unwrap().unwrap().strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "consecutive, live: {numbers:?}");

    let (code, _, err) = cli(&agent, &["logs", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no [[process]] named `nope`"), "{err}");
    let (status, _) = http_get(agent.addr, "/processes/counter/logs").unwrap();
    assert_eq!(status, 401, "the output needs the token");

    // A follower does not keep the agent from stopping: SIGTERM ends its stream, and the agent
    // finishes on its own.
    std::process::Command::new("kill").args(["-TERM", &agent.pid().to_string()]).status().unwrap();
    agent.wait_log("agent::daemon: stopped");
    let ended = follower.wait().unwrap();
    assert!(ended.success(), "the follower saw the end of its stream: {ended}");
}

#[test]
fn a_reload_regrants_a_plugin_and_changes_a_group_without_recompiling_anything() {
    use crate::common::{plugin, plugin_dir, JsonServer};
    let app = JsonServer::start(r#"{"load": 100}"#);
    let plugins = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let group = |max: u32| {
        format!(
            "[[group]]\nname = \"web\"\ninterval = \"200ms\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
             policy = \"target-tracking\"\npolicy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
             backend_config = {{ initial = 1 }}\nmin = 1\nmax = {max}\ndry_run = true\n"
        )
    };
    // No grant yet: the source's requests are denied.
    let source = format!(
        "[plugins.http-json]\ninterval = \"100ms\"\n[plugins.http-json.config]\nurl = \"http://{}/\"\nmetrics = {{ \"/load\" = \"app.load\" }}\n",
        app.addr
    );
    let agent = Agent::start(plugins.path(), &format!("{source}\n{}", group(10)));
    wait_for("denied collections", LIMIT, || {
        let s = agent.status()["sources"].as_array()?.iter().find(|s| s["name"] == "http-json")?.clone();
        (s["errors"].as_u64()? >= 2).then_some(())
    });
    assert_eq!(app.hits(), 0);
    let calls_before = agent.plugin("http-json").unwrap()["calls"].as_u64().unwrap();

    let granted = source.replace("interval", &format!("allow_http = [\"http://{}\"]\ninterval", app.addr));
    std::fs::write(agent.data.path().join("agent.toml"), format!("{granted}\n{}", group(4))).unwrap();
    let (code, out, err) = cli(&agent, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "reloaded: groups: ~web; plugins: ~http-json");
    wait_for("the app reached with the new grant", LIMIT, || (app.hits() >= 2).then_some(()));
    let after = agent.plugin("http-json").unwrap();
    assert!(after["calls"].as_u64().unwrap() > calls_before, "the same worker carried on: {after}");
    let log = agent.log();
    assert_eq!(log.matches("loaded source `http-json`").count(), 1, "not loaded again:\n{log}");
    assert!(!log.contains("swapped plugin"), "{log}");
    // The group's new bound is in force: load 100 against a target of 10 asks for 10 units,
    // and the reloaded max holds it at 4.
    wait_for("the group to decide 4", LIMIT, || {
        (crate::common::group_status(&agent, "web")["desired"] == 4).then_some(())
    });
    let decisions = crate::common::decisions(&agent, "web");
    assert!(decisions.iter().all(|d| d["target"].as_u64().is_some_and(|t| t <= 4)), "{decisions:?}");
}

#[test]
fn a_rolling_restart_halts_at_a_replica_that_does_not_become_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = |version: &str, touch: bool| {
        format!(
            r#"
[[process]]
name = "web"
command = "{touch}exec sleep 600"
shell = true
replicas = 2
env = {{ VERSION = "{version}" }}
[process.health]
command = ["test", "-e", "{d}/ready-{{replica}}-{version}"]
interval = "100ms"
timeout = "200ms"
start_period = "500ms"
[process.backoff]
initial = "30s"
"#,
            d = dir.path().display(),
            touch = if touch {
                format!("touch {}/ready-$REPLICA-{version}; ", dir.path().display())
            } else {
                String::new()
            },
        )
    };
    let agent = Agent::start(dir.path(), &config("v1", true));
    for r in 0..2 {
        wait_for("ready", LIMIT, || instance(&agent, "web", r).filter(|p| p["state"] == "ready"));
    }
    let old = [pid_of(&agent, "web", 0), pid_of(&agent, "web", 1)];
    let file = agent.data.path().join("agent.toml");
    // v2 never becomes ready: replica 0 is tried, replica 1 keeps running v1.
    std::fs::write(&file, config("v2", false)).unwrap();
    assert_eq!(cli(&agent, &["reload"]).0, 0);
    agent.wait_log("rolling restart halted");
    assert_ne!(instance(&agent, "web", 0).unwrap()["pid"], old[0]);
    assert_eq!(pid_of(&agent, "web", 1), old[1], "the roll stopped before replica 1");
    // A fixed file rolls every replica again, replica 1 included.
    std::fs::write(&file, config("v3", true)).unwrap();
    let (code, out, _) = cli(&agent, &["reload"]);
    assert_eq!((code, out.trim()), (0, "reloaded: processes: ~web"));
    for r in 0..2 {
        wait_for("v3 ready", LIMIT, || {
            instance(&agent, "web", r).filter(|p| p["state"] == "ready" && p["pid"] != old[r as usize])
        });
    }
}

/// `GET /` on `addr` over a new connection; the body, or the error.
#[test]
fn replicas_share_one_socket_and_a_restart_refuses_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", crate::common::free_port()).parse().unwrap();
    let config = format!(
        r#"
[[process]]
name = "web"
command = "python3"
args = ["{app}"]
replicas = 2
sockets = ["{addr}"]
stop_grace = "2s"
"#,
        app = crate::common::root().join("examples/web.py").display()
    );
    let agent = Agent::start(dir.path(), &config);
    for r in 0..2 {
        wait_for("serving", LIMIT, || {
            let (_, out, _) = cli(&agent, &["logs", "web", "--replica", &r.to_string()]);
            out.contains("serving").then_some(())
        });
    }
    // One port, both replicas answering.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let body = get_body(addr).unwrap();
        seen.insert(body.split(' ').nth(1).unwrap().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "only {seen:?} answered on {addr}");

    // While every replica restarts, connection attempts wait in the socket's backlog (held by
    // the agent) instead of being refused.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let tried = std::sync::Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, tried) = (stop.clone(), tried.clone());
        std::thread::spawn(move || {
            let (mut ok, mut errors) = (0, Vec::new());
            while !stop.load(Relaxed) {
                match get_body(addr) {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e),
                }
                tried.fetch_add(1, Relaxed);
            }
            (ok, errors)
        })
    };
    // Requests before and after, counted rather than timed: however slow this machine, the
    // client was at it on both sides of the restart and of the scale-in.
    let more_requests = |n: usize| {
        let from = tried.load(Relaxed);
        wait_for(&format!("{n} more requests"), LIMIT, || (tried.load(Relaxed) >= from + n).then_some(()));
    };
    more_requests(20);
    let old = [pid_of(&agent, "web", 0), pid_of(&agent, "web", 1)];
    let (code, _, err) = cli(&agent, &["restart", "web"]);
    assert_eq!(code, 0, "{err}");
    for r in 0..2 {
        wait_for("restarted", LIMIT, || {
            instance(&agent, "web", r).filter(|p| p["pid"].as_u64().is_some_and(|pid| pid != old[r as usize]))
        });
    }
    let (code, _, err) = cli(&agent, &["scale", "web", "1"]);
    assert_eq!(code, 0, "{err}");
    more_requests(20);
    stop.store(true, Relaxed);
    let (ok, errors) = client.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed across the restart and scale-in: {:?}",
        errors.len(),
        ok + errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert!(ok > 0);
}

#[test]
fn the_default_configuration_spreads_a_bounded_load_over_the_replicas_its_group_adds() {
    let (text, addr, own) = crate::common::default_configuration();
    let text = crate::common::halve_the_target(&text);
    let plugins = crate::common::default_plugins();
    let agent = Agent::start(plugins.path(), &text);
    for r in 0..2 {
        wait_for("the demo replicas ready", LIMIT, || {
            instance(&agent, "web", r).filter(|p| p["state"] == "ready")
        });
    }
    let stats = |replica: u16| -> Option<u64> {
        let (_, body) = http_get(format!("127.0.0.1:{}", own + replica).parse().unwrap(), "/stats").ok()?;
        serde_json::from_str::<serde_json::Value>(&body).ok()?["served"].as_u64()
    };
    // Bounded load: four clients until the group has added a replica and that replica has served
    // its share, or 3 minutes.
    let load = crate::common::Load::start(addr, 4);
    let served = wait_for("a third replica serving", Duration::from_secs(180), || {
        let n = instances(&agent, "web").len();
        let third = stats(2)?;
        (n >= 3 && third >= 100).then_some((stats(0)?, stats(1)?, third))
    });
    let errors = load.stop();
    assert_eq!(errors, 0, "requests failed while the group scaled");
    assert!(served.0 >= 100 && served.1 >= 100, "every replica served: {served:?}");
    let decisions = crate::common::decisions(&agent, "web");
    assert!(
        decisions.iter().any(|d| d["action"] == "scale" && d["target"].as_u64() >= Some(3)),
        "{decisions:?}"
    );
    assert!(!agent.log().contains("serving on"), "the demo's output stays out of the agent's log");
}
