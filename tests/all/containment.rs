//! Containment of what a plugin makes the *agent* do: series, samples, the `/metrics` page, the
//! log, state, the journal, loading, identity, lies, and outbound HTTP. Each test runs a hostile
//! component of ours (tests/fixtures) against the real agent or the real runtime.

use crate::common::{agent_cli, fixture, http_get, plugin, plugin_dir, put, wait_for, Agent, JsonServer};
use crate::sandbox::host;
use agent::plugins::types::Group;
use agent::plugins::worker::{CallError, Fault};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// The rogue source in `mode`, collected every `interval`, with more `settings` and `config`.
fn source(mode: &str, interval: &str, settings: &str, config: &str) -> String {
    format!(
        "[agent]\nsample_interval = \"1s\"\n[plugins.rogue-source]\ninterval = \"{interval}\"\n{settings}\n\
         [plugins.rogue-source.config]\nmode = \"{mode}\"\n{config}\n"
    )
}

/// The count of budget `budget` in the `/status` entry of `plugin`.
fn over_budget(agent: &Agent, plugin: &str, budget: &str) -> u64 {
    agent.plugin(plugin).and_then(|p| p["over_budget"][budget].as_u64()).unwrap_or(0)
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_series_flood_is_capped_per_source_and_the_store_keeps_its_ceiling() {
    let dir = plugin_dir(&[&fixture("rogue-source")]);
    let agent =
        Agent::start(dir.path(), &source("flood-series", "200ms", "max_series = 300", "count = 1000"));
    // Several collections of 1000 new series each: 300 admitted, the rest dropped and counted.
    wait_for("the series budget to be hit a few times", LIMIT, || {
        (over_budget(&agent, "rogue-source", "series") >= 3 * 700).then_some(())
    });
    let (_, body) = http_get(agent.addr, "/metrics").unwrap();
    let live = metric(&body, "agent_store_live_series").expect("live series on /metrics");
    let flooded = body.lines().filter(|l| l.starts_with("rogue_flood_s")).count();
    assert_eq!(flooded, 300, "exactly max_series of the source's series are live");
    assert!(live < 300.0 + 200.0, "the sampler's own series plus the source's cap, got {live}");
    let counted = body
        .lines()
        .find(|l| l.starts_with("agent_plugin_over_budget_total") && l.contains("budget=\"series\""));
    assert!(counted.is_some(), "{body}");
    // One log line for the episode, not one per collection.
    let lines = agent.log().matches("over its series budget").count();
    assert_eq!(lines, 1, "{}", agent.log());
}

/// `promtool check metrics` from Debian's `prometheus` package: a parse error is exit 1 (lint
/// findings about names a plugin chose are exit 3, and allowed). `None` when promtool is absent.
fn promtool(page: &str) -> Option<(i32, String)> {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var_os("CI").is_none() => {
            crate::common::skipped(
                "containment promtool check: promtool (Debian package prometheus) is not installed; .ci/run installs it",
            );
            return None;
        }
        Err(e) => panic!("promtool is required in CI (apt-get install prometheus): {e}"),
    };
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), said))
}

#[test]
fn hostile_metric_names_and_labels_leave_the_metrics_page_valid() {
    let dir = plugin_dir(&[&fixture("rogue-source")]);
    let agent = Agent::start(dir.path(), &source("odd-names", "200ms", "", ""));
    let body = wait_for("the odd series on /metrics", LIMIT, || {
        let (_, body) = http_get(agent.addr, "/metrics").ok()?;
        body.contains("quote_name").then_some(body)
    });
    if let Some((code, said)) = promtool(&body) {
        assert!(code == 0 || code == 3, "promtool exit {code}: {said}\n{body}");
        assert!(!said.contains("error"), "{said}");
    }
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("a Prometheus parser accepts the page");
    // The agent's own families are untouched: one TYPE, the agent's own sample, no plugin label.
    assert_eq!(body.matches("# TYPE agent_uptime_seconds gauge").count(), 1);
    assert!(body.lines().filter(|l| l.starts_with("agent_uptime_seconds")).all(|l| !l.contains("source")));
    assert!(
        !body.contains("agent_plugin_calls_total_total")
            && !body.contains("agent_plugin_calls_total{__name__")
    );
    assert!(
        metric(&body, "agent_exposition_series_hidden").unwrap() >= 2.0,
        "agent_* from a plugin, and a_b/a.b"
    );
    // Names and labels sanitised and escaped by the format's rules.
    assert!(body.contains(r#"k_ey="va\"lue""#), "{body}");
    assert!(body.contains(r#"new_line="two\nlines\n# TYPE x counter""#), "{body}");
    assert!(!body.lines().any(|l| l.starts_with("# TYPE x ")), "no forged family");
    assert!(body.contains(r#"_name_="forged""#) && !body.contains("__name__"));
    // The 500 000-byte name is refused at the door, counted, and not echoed.
    wait_for("the oversized sample counted", LIMIT, || {
        (over_budget(&agent, "rogue-source", "sample-shape") > 0).then_some(())
    });
    assert!(!body.contains(&"n".repeat(1000)) && !agent.log().contains(&"n".repeat(1000)));
}

#[test]
fn samples_stamped_far_from_now_are_dropped_and_counted() {
    let dir = plugin_dir(&[&fixture("rogue-source")]);
    let agent = Agent::start(dir.path(), &source("time-travel", "200ms", "", ""));
    wait_for("time travellers counted", LIMIT, || {
        (over_budget(&agent, "rogue-source", "sample-time") >= 4).then_some(())
    });
    let data = agent.data.path().to_str().unwrap();
    let (code, out, err) = agent_cli(&[
        "metrics",
        "query",
        "rogue.time",
        "--since",
        "100000d",
        "--format",
        "json",
        "--data-dir",
        data,
    ]);
    assert_eq!(code, 0, "{err}");
    let series: serde_json::Value = serde_json::from_str(&out).unwrap();
    let values: Vec<f64> = serde_json::from_value(series[0]["values"].clone()).unwrap();
    assert!(
        !values.is_empty() && values.iter().all(|&v| v == 5.0),
        "only the sample stamped now: {values:?}"
    );
    let (_, body) = http_get(agent.addr, "/metrics").unwrap();
    assert_eq!(metric(&body, "rogue_time"), Some(5.0), "no year-9999 sample pins the gauge");
}

#[test]
fn a_log_flood_is_rate_limited_summarised_and_cannot_forge_a_line() {
    let dir = plugin_dir(&[&fixture("rogue-source")]);
    let agent = Agent::start(dir.path(), &source("log-flood", "1s", "", "count = 5000"));
    agent.wait_log("suppressed");
    let log = agent.log();
    let written = log.lines().filter(|l| l.contains("forged by a plugin")).count();
    // The burst (5 s of 10 lines a second) and what refills while the test runs; never 5000.
    assert!((10..200).contains(&written), "{written} lines written");
    assert!(!log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z ERROR")), "a plugin forged a log line");
    assert!(
        log.contains(r"line 0\n2026-12-01T00:00:00Z ERROR agent: forged by a plugin"),
        "escaped in place"
    );
    assert!(over_budget(&agent, "rogue-source", "log-lines") >= 4900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_held_to_its_total_and_its_write_rate() {
    // Ten 1 MiB values cross into the host: in a debug build that is ~140 ms of host CPU, which
    // the plugin pays for; the budget under test here is state, not CPU.
    let config = "[plugins.rogue-source]\nstate_kib = 4096\ncpu_limit = \"5s\"\n[plugins.rogue-source.config]\nmode = \"state-flood\"\ncount = 10\n";
    let h = host(&[&fixture("rogue-source")], config).await;
    let p = h.get("rogue-source");
    let samples = p.collect().await.unwrap();
    // 4 MiB would hold three 1 MiB values, but the write rate (1 MiB a minute) lets one through.
    assert_eq!(samples[0].value, 1.0, "{samples:?}");
    assert_eq!(p.meter().count(agent::plugins::meter::Budget::State), 9);
    let stored = h.store.plugin_state("rogue-source").get("k0").map(|v| v.len());
    assert_eq!(stored, Some(1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_claims_impossible_capacity_is_a_fault() {
    let h = host(&[&fixture("rogue-backend")], "").await;
    let b = h.get("rogue-backend");
    let lie = Group { name: "g".into(), params: r#"{"mode": "lie"}"#.into() };
    match b.describe(lie, 1000).await {
        Err(CallError::Fault(Fault::Implausible { replicas, ceiling })) => {
            assert_eq!((replicas, ceiling), (u32::MAX, 1000))
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    let honest = Group { name: "g".into(), params: String::new() };
    assert_eq!(b.describe(honest, 1000).await.unwrap().replicas, 1);
}

/// `wasm` with every occurrence of `from` replaced by `to` (same length: the component stays valid).
fn patched(wasm: &std::path::Path, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(wasm).unwrap();
    let mut found = 0;
    for i in 0..bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from.as_bytes() {
            bytes[i..i + from.len()].copy_from_slice(to.as_bytes());
            found += 1;
        }
    }
    assert!(found > 0, "{from} not in {}", wasm.display());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_that_could_forge_a_log_line_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let forged = "1.0\n2026 ERROR forged line!!!!!!!!!";
    put(
        &dir.path().join("b.wasm"),
        &patched(&fixture("rogue-backend"), "0.0.1+placeholder-version-for-tests", forged),
    );
    let h = host(&[&dir.path().join("b.wasm")], "").await;
    let (_, failed) = h.registry.status();
    assert_eq!(failed.len(), 1);
    let error = &failed[0].error;
    assert!(error.contains("says its version is `1.0\\n2026 ERROR"), "{error}");
    assert!(!error.contains('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_of_another_kind_is_refused_and_the_running_version_keeps_running() {
    let h = host(&[&fixture("rogue-policy")], "").await;
    let file = h.dir.path().join("rogue-policy.wasm");
    // A source that calls itself `rogue-policy`, dropped over the policy's file.
    put(&file, &patched(&fixture("rogue-source"), "rogue-source", "rogue-policy"));
    h.registry.reconcile().await;
    let (running, failed) = h.registry.status();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].kind, agent::plugins::Kind::Policy, "/status reports what runs");
    assert!(
        failed[0].error.contains("is now a source, but `rogue-policy` runs as a policy"),
        "{:?}",
        failed[0]
    );
    let ok =
        h.get("rogue-policy").evaluate(crate::sandbox::ctx(serde_json::json!({"mode": "ok"}))).await.unwrap();
    assert_eq!(ok.reason, "fine");
}

/// The `/status` entry of a file that failed to load, by file name.
fn failed_file(agent: &Agent, name: &str) -> Option<serde_json::Value> {
    let status = agent.status();
    status["failed_files"]
        .as_array()?
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|f| f.ends_with(name)))
        .cloned()
}

#[test]
fn a_slow_metadata_never_holds_the_api_or_a_good_neighbour() {
    let dir = plugin_dir(&[&fixture("slow-backend"), &plugin("target-tracking")]);
    // The API answers while the slow file is still loading (its metadata() has 2 s), and says so.
    let agent = Agent::spawn(dir.path(), "", tempfile::tempdir().unwrap());
    wait_for("slow-backend shown as loading", LIMIT, || {
        let status = agent.status();
        status["plugins"]
            .as_array()?
            .iter()
            .any(|p| p["state"] == "loading" && p["name"] == "slow-backend")
            .then_some(())
    });
    assert_eq!(agent.status()["plugins_settled"], false);
    wait_for("target-tracking ready", LIMIT, || {
        agent.plugin("target-tracking").filter(|p| p["state"] == "ready")
    });
    let failed = wait_for("slow-backend refused", LIMIT, || failed_file(&agent, "slow-backend.wasm"));
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("metadata() failed: did not return within its timeout of 2000ms"), "{error}");
}

#[test]
fn a_file_too_heavy_to_compile_is_stopped_and_reported_while_others_load() {
    let heavy = plugin("py-target-tracking");
    let dir = plugin_dir(&[&heavy, &plugin("target-tracking")]);
    let config = "[agent]\ncompile_memory_mib = 256\n";
    let agent = Agent::spawn(dir.path(), config, tempfile::tempdir().unwrap());
    wait_for("target-tracking ready", LIMIT, || {
        agent.plugin("target-tracking").filter(|p| p["state"] == "ready")
    });
    let failed = wait_for("the heavy file refused", Duration::from_secs(90), || {
        failed_file(&agent, "py-target-tracking.wasm")
    });
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("compile_memory_mib (256 MiB)"), "{error}");
    assert!(!agent.log().contains("panicked"));
}

/// A loopback server that accepts connections and never answers; counts them.
fn silent_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, accepted)
}

/// A loopback server whose body never ends: one byte every 50 ms.
fn dripping_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
                while s.write_all(b"x").is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    addr
}

fn http_source(mode: &str, origin: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[plugins.rogue-source]\nallow_http = [\"http://{origin}\"]\n{extra}\n[plugins.rogue-source.config]\n\
         mode = \"{mode}\"\nurl = \"http://{origin}/\"\ncount = 100\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_left_open_end_with_the_call_and_are_capped_in_flight() {
    let (addr, accepted) = silent_server();
    let h = host(&[&fixture("rogue-source")], &http_source("abandon", addr, "")).await;
    let p = h.get("rogue-source");
    // Each call starts 100 requests and returns: http_concurrency (4) are sent, 96 refused.
    for _ in 0..3 {
        p.collect().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each call's 4 were cancelled when it returned; nothing keeps connecting afterwards.
    let after = accepted.load(Ordering::SeqCst);
    assert!(after <= 12, "{after} connections for 3 calls of 4");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), after);
    let m = p.meter();
    assert_eq!(m.count(agent::plugins::meter::Budget::HttpAbandoned), 12);
    assert_eq!(m.count(agent::plugins::meter::Budget::HttpConcurrency), 3 * 96);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_may_send_only_its_budget_of_requests_and_waiting_is_not_cpu() {
    let server = JsonServer::start("{}");
    // 32 requests a call, each a wait on the network: under the old tick-per-wake-up
    // accounting 32 wake-ups cost 160 ms of "CPU"; guest execution is a few milliseconds.
    let h = host(&[&fixture("rogue-source")], &http_source("http-many", server.addr, "cpu_limit = \"60ms\""))
        .await;
    let p = h.get("rogue-source");
    let samples = p.collect().await.unwrap();
    let value = |name: &str| samples.iter().find(|s| s.metric == name).unwrap().value;
    assert_eq!((value("rogue.http.ok"), value("rogue.http.refused")), (32.0, 68.0));
    assert_eq!(server.hits(), 32);
    assert_eq!(p.meter().count(agent::plugins::meter::Budget::HttpRequests), 68);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_body_is_cut_at_the_total_response_time() {
    let addr = dripping_server();
    let extra = "http_response_timeout = \"1s\"\ntimeout = \"20s\"";
    let h = host(&[&fixture("rogue-source")], &http_source("read-body", addr, extra)).await;
    let p = h.get("rogue-source");
    // Cut by the response's own time (the plugin sees HttpResponseTimeout), long before the
    // call's 20 s timeout would have faulted it.
    match p.collect().await {
        Err(CallError::Plugin(e)) => assert!(format!("{e:?}").contains("HTTP response timeout"), "{e:?}"),
        other => panic!("expected the body to be cut, got {other:?}"),
    }
    assert_eq!(p.meter().count(agent::plugins::meter::Budget::HttpTime), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_too_many_host_handles_is_reported_as_what_it_is() {
    // The host's work for 20 000 handles is the plugin's CPU (a debug build under load nears the
    // default 100 ms); the budget under test is handles.
    let config = "[plugins.rogue-source]\nallow_http = [\"http://127.0.0.1:9\"]\ncpu_limit = \"5s\"\n[plugins.rogue-source.config]\nmode = \"handles\"\ncount = 20000\n";
    let h = host(&[&fixture("rogue-source")], config).await;
    let p = h.get("rogue-source");
    match p.collect().await {
        Err(CallError::Fault(Fault::Handles(why))) => assert!(why.contains("table"), "{why}"),
        other => panic!("expected a handles fault, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_and_again_for_what_was_not_granted_is_counted_not_logged_each_time() {
    // 1 000 refused requests are host work the plugin pays for: 78 ms of CPU in a debug build
    // here, near the default 100 ms; the budget under test is the refusals' counting.
    let config = "[plugins.rogue-source]\ncpu_limit = \"5s\"\n[plugins.rogue-source.config]\nmode = \"http-many\"\nurl = \"http://127.0.0.1:9/\"\ncount = 1000\n";
    let h = host(&[&fixture("rogue-source")], config).await;
    let p = h.get("rogue-source");
    let samples = p.collect().await.unwrap();
    assert_eq!(samples[1].value, 1000.0, "every request refused: {samples:?}");
    assert_eq!(p.meter().count(agent::plugins::meter::Budget::Denied), 1000);
}

#[test]
fn a_backend_cannot_rank_another_group_or_touch_replicas_it_was_not_granted() {
    // The rogue backend scales group `mine`; `web` is supervised but granted to no plugin.
    let plugins = plugin_dir(&[&fixture("rogue-backend"), &fixture("frozen-policy"), &plugin("ledger")]);
    let config = "[[process]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"600\"]\nreplicas = 2\n\
        [[group]]\nname = \"mine\"\ninterval = \"300ms\"\npolicy = \"frozen-policy\"\nbackend = \"rogue-backend\"\n\
        backend_config = { mode = \"snoop\" }\nmin = 1\nmax = 3\n\
        [[group]]\nname = \"someone-else\"\ninterval = \"1h\"\npolicy = \"frozen-policy\"\nbackend = \"ledger\"\nmin = 1\nmax = 3\n";
    let agent = Agent::start(plugins.path(), config);
    let pids = || {
        let status = agent.status();
        let all = status["processes"].as_array().unwrap().clone();
        all.iter().map(|p| p["pid"].as_u64()).collect::<Vec<_>>()
    };
    let before = wait_for("both web replicas running", LIMIT, || {
        Some(pids()).filter(|p| p.len() == 2 && p.iter().all(Option::is_some))
    });
    let outcome = wait_for("the snooping scale", LIMIT, || {
        let all = crate::common::decisions(&agent, "mine");
        all.into_iter()
            .find_map(|d| d["outcome"].as_str().filter(|o| o.starts_with("rank:")).map(String::from))
    });
    let expected = [
        "rank: Err(PluginError::BadConfig(\"`someone-else` is not a group this backend scales\"))",
        // Its own group: ranked, but `web#0` is not a replica it may measure — an unknown unit.
        "own rank: Ok(2)",
        "units: Err(PluginError::BadConfig(\"process `web` is not granted to this plugin ([plugins.rogue-backend] processes)\"))",
        "remove: Err(PluginError::BadConfig(\"process `web` is not granted to this plugin ([plugins.rogue-backend] processes)\"))",
        "5000: Err(PluginError::InvalidInput(\"5000 units: at most 1000\"))",
        // Eight rankings per call of the plugin (three were above): the loop's 5th is its last.
        "loop: [Ok(0), Ok(0), Err(PluginError::QuotaExceeded(\"more than 8 scale-in.rank / replica-units.remove calls in one call\"))]",
        // Another group's cloud bounds are not its to report (0.1.4); its own, not upside down.
        "limits: Err(PluginError::BadConfig(\"`someone-else` is not a group this backend scales\"))",
        "upside down: Err(PluginError::InvalidInput(\"min-replicas 3 is above max-replicas 1\"))",
    ];
    assert_eq!(outcome, expected.join("; "));
    assert_eq!(pids(), before, "no replica was stopped or restarted");
    let denied = agent.plugin("rogue-backend").unwrap()["over_budget"]["denied"].as_u64().unwrap_or(0);
    assert!(denied >= 4, "each refusal is counted against the plugin: {denied}");
}
