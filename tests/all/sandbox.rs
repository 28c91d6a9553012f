//! Containment: every way a plugin can misbehave fails that one call, and nothing it was not
//! granted is reachable. Real components built from tests/fixtures and plugins/, run in-process.

use crate::common::{fixture, plugin, plugin_dir, JsonServer};
use agent::config::Config;
use agent::plugins::registry::Registry;
use agent::plugins::types::{Bounds, Capacity, PolicyContext};
use agent::plugins::worker::{CallError, Fault, PluginHandle, State};
use agent::plugins::Runtime;
use agent::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An in-process agent core: store, runtime and registry over a folder of plugins.
pub struct Host {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub data: tempfile::TempDir,
}

pub async fn host(files: &[&Path], config: &str) -> Host {
    host_in(files, config, tempfile::tempdir().unwrap()).await
}

pub async fn host_in(files: &[&Path], config: &str, data: tempfile::TempDir) -> Host {
    let dir = plugin_dir(files);
    let config = Arc::new(Config::parse(config, Path::new("agent.toml")).unwrap());
    let store = Store::open(data.path()).unwrap();
    let rt = Runtime::new(Some(&data.path().join("cache"))).unwrap();
    let registry = Registry::new(rt, config, Some(store.clone()), dir.path());
    registry.reconcile().await;
    Host { registry, store, dir, data }
}

impl Host {
    pub fn get(&self, name: &str) -> PluginHandle {
        self.registry
            .get(name)
            .unwrap_or_else(|| panic!("plugin {name} is not loaded: {:?}", self.registry.status().1))
    }
}

pub fn ctx(params: serde_json::Value) -> PolicyContext {
    PolicyContext {
        group: "web".into(),
        now_ms: 0,
        current: Capacity { replicas: 2, ready: 2, tier: 0, tier_name: String::new() },
        bounds: Bounds { min_replicas: 1, max_replicas: 10, max_tier: 0 },
        windows: vec![],
        params: params.to_string(),
    }
}

fn mode(m: &str) -> PolicyContext {
    ctx(serde_json::json!({ "mode": m }))
}

async fn rogue(config: &str) -> (Host, PluginHandle) {
    let h = host(&[&fixture("rogue-policy")], config).await;
    let p = h.get("rogue-policy");
    (h, p)
}

fn fault(r: Result<impl std::fmt::Debug, CallError>) -> Fault {
    match r {
        Err(CallError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_loop_is_stopped_at_its_cpu_limit_and_the_next_call_gets_a_fresh_instance() {
    let (_h, p) = rogue("[plugins.rogue-policy]\ncpu_limit = \"50ms\"\n").await;
    assert_eq!(fault(p.evaluate(mode("spin")).await), Fault::CpuLimit(Duration::from_millis(50)));
    let ok = p.evaluate(mode("ok")).await.unwrap();
    assert_eq!(ok.reason, "fine");
    let status = p.status();
    assert_eq!((status.faults, status.state), (1, State::Ready));
    assert!(status.last_fault.unwrap().contains("CPU limit of 50ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_hoards_memory_hits_its_own_limit() {
    let (_h, p) = rogue("[plugins.rogue-policy]\nmemory_mib = 16\n").await;
    match fault(p.evaluate(mode("oom")).await) {
        Fault::MemoryLimit(m) => assert!(m.contains("memory limit of 16777216 bytes"), "{m}"),
        other => panic!("expected a memory fault, got {other:?}"),
    }
    assert_eq!(p.evaluate(mode("ok")).await.unwrap().reason, "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_traps_and_stack_overflows_fail_only_their_call() {
    let (_h, p) = rogue("").await;
    match fault(p.evaluate(mode("panic")).await) {
        Fault::Trap(m) => assert!(m.contains("rogue panic on purpose") && m.contains("src/lib.rs"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Only that call failed: the next one runs, on a fresh instance.
    assert_eq!(p.evaluate(mode("ok")).await.unwrap().reason, "fine");
    assert!(matches!(fault(p.evaluate(mode("trap")).await), Fault::Trap(m) if m.contains("unreachable")));
    assert_eq!(p.evaluate(mode("ok")).await.unwrap().reason, "fine");
    assert!(matches!(fault(p.evaluate(mode("recurse")).await), Fault::Trap(m) if m.contains("stack")));
    assert_eq!(p.evaluate(mode("ok")).await.unwrap().reason, "fine");
    // Three faults, none in a row: no quarantine (three in a row is the next test).
    let status = p.status();
    assert_eq!(status.faults, 3);
    assert_ne!(status.state, State::Quarantined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_returns_are_faults() {
    let (_h, p) = rogue("[plugins.rogue-policy]\nmax_return_kib = 64\n").await;
    assert!(matches!(fault(p.evaluate(mode("nan")).await), Fault::Malformed(m) if m.contains("NaN")));
    assert_eq!(p.evaluate(mode("ok")).await.unwrap().reason, "fine");
    assert!(matches!(fault(p.evaluate(mode("negative")).await), Fault::Malformed(m) if m.contains("-3")));
    assert_eq!(p.evaluate(mode("ok")).await.unwrap().reason, "fine");
    match fault(p.evaluate(mode("huge")).await) {
        Fault::ReturnTooLarge { size, limit } => assert!(size > 4_000_000 && limit == 64 * 1024),
        other => panic!("{other:?}"),
    }
    // An error the plugin returns on purpose is not a fault.
    assert!(matches!(p.evaluate(mode("error")).await, Err(CallError::Plugin(_))));
    assert_eq!(p.status().faults, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_faults_quarantine_the_plugin_with_backoff_then_it_recovers() {
    let (_h, p) = rogue("").await;
    for _ in 0..3 {
        fault(p.evaluate(mode("trap")).await);
    }
    let status = p.status();
    assert_eq!(status.state, State::Quarantined);
    assert!(status.quarantine_ms.unwrap() <= 1000);
    // Calls are refused without running the plugin while quarantined.
    assert!(matches!(p.evaluate(mode("ok")).await, Err(CallError::Quarantined(_))));
    assert_eq!(p.status().faults, 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first call after the backoff runs; another fault doubles the backoff. The quarantine
    // ends 2 s after that fault, which came after `asked` and before the status was read: at
    // most 2000 ms from the reading, at least 2000 ms from `asked` — bounds a slow machine only
    // widens (by the time between the two), never breaks.
    let asked = Instant::now();
    fault(p.evaluate(mode("trap")).await);
    let ms = p.status().quarantine_ms.unwrap_or(0);
    let since = asked.elapsed().as_millis() as u64;
    assert!(
        ms <= 2000 && ms + since + 2 >= 2000,
        "second quarantine lasts 2s: {ms} ms left {since} ms after the call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_plugin_does_not_starve_other_plugins() {
    // A budget the spin cannot reach while this test looks (a minute of CPU; it is cancelled
    // after): the other plugin's evaluations finish while it spins whatever this machine's
    // speed. How long they take meanwhile is the plugins bench's ("another plugin while one
    // spins").
    let h = host(
        &[&fixture("rogue-policy"), &plugin("target-tracking")],
        "[plugins.rogue-policy]\ncpu_limit = \"60s\"\ntimeout = \"120s\"\n",
    )
    .await;
    let (rogue, good) = (h.get("rogue-policy"), h.get("target-tracking"));
    let runaway = rogue.clone();
    let spinning = tokio::spawn(async move { runaway.evaluate(mode("spin")).await });
    while rogue.status().calls == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // into its loop
    let mut windows_ctx = ctx(serde_json::json!({ "target": 0.5 }));
    windows_ctx.windows.push(agent::plugins::types::Window {
        metric: "cpu".into(),
        labels: vec![],
        length_ms: 60_000,
        timestamps_ms: vec![0],
        values: vec![0.75],
    });
    for _ in 0..50 {
        let r = good.evaluate(windows_ctx.clone()).await.unwrap();
        assert_eq!(r.replicas, 3.0, "ceil(2 × 0.75 / 0.5)");
    }
    assert!(
        !spinning.is_finished(),
        "50 evaluations of another plugin finished while the runaway was still spinning"
    );
    // Its caller gives up: the spin is dropped at its next yield (an epoch tick).
    spinning.abort();
    assert!(spinning.await.unwrap_err().is_cancelled(), "the runaway call was cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_cannot_read_files_list_directories_read_the_environment_or_open_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = format!("[plugins.rogue-policy.config]\naddr = \"{addr}\"\n");
    let (_h, p) = rogue(&config).await;
    for m in ["read-file", "list-root", "read-env", "connect"] {
        let reason = p.evaluate(mode(m)).await.unwrap().reason;
        assert!(reason.starts_with("denied"), "{m}: {reason}");
    }
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing connected to the listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_the_plugin_they_are_granted_to() {
    std::env::set_var("AGENT_TEST_TOKEN", "s3cret-value");
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "from-a-file\n").unwrap();

    let granted = "[plugins.rogue-policy.secrets]\ntoken = { env = \"AGENT_TEST_TOKEN\" }\n";
    let (_h, p) = rogue(granted).await;
    assert_eq!(p.evaluate(mode("secret")).await.unwrap().reason, "secret of 12 bytes");

    let from_file = format!(
        "[plugins.rogue-policy.secrets]\ntoken = {{ file = \"{}\" }}\n",
        secret_file.path().display()
    );
    let (_h, p) = rogue(&from_file).await;
    assert_eq!(p.evaluate(mode("secret")).await.unwrap().reason, "secret of 11 bytes");

    // Granted to another plugin: this one gets nothing.
    let elsewhere = "[plugins.other.secrets]\ntoken = { env = \"AGENT_TEST_TOKEN\" }\n";
    let (_h, p) = rogue(elsewhere).await;
    assert_eq!(p.evaluate(mode("secret")).await.unwrap().reason, "no secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_granted_origins_only() {
    let server = JsonServer::start("{}");
    let url = format!("http://{}/stats", server.addr);
    let config = |grant: &str| {
        format!("[plugins.rogue-source]\n{grant}\n[plugins.rogue-source.config]\nmode = \"http\"\nurl = \"{url}\"\n")
    };

    let h = host(&[&fixture("rogue-source")], &config(&format!("allow_http = [\"http://{}\"]", server.addr)))
        .await;
    let samples = h.get("rogue-source").collect().await.unwrap();
    assert_eq!(samples[0].value, 200.0);
    assert_eq!(server.hits(), 1);

    let denied = [
        String::new(),                                                             // no grant at all
        format!("allow_http = [\"http://127.0.0.1:{}\"]", server.addr.port() + 1), // another port
        format!("allow_http = [\"https://{}\"]", server.addr),                     // another scheme
        format!("allow_http = [\"http://localhost:{}\"]", server.addr.port()),     // another name
    ];
    for grant in denied {
        let h = host(&[&fixture("rogue-source")], &config(&grant)).await;
        match h.get("rogue-source").collect().await {
            Err(CallError::Plugin(e)) => {
                assert!(format!("{e:?}").contains("HttpRequestDenied"), "{grant}: {e:?}")
            }
            other => panic!("{grant}: expected a denied request, got {other:?}"),
        }
    }
    assert_eq!(server.hits(), 1, "no denied request reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_json_source_reads_a_real_endpoint() {
    let server = JsonServer::start(r#"{"requests":{"total":1234},"queue":[{"depth":7}]}"#);
    let config = format!(
        "[plugins.http-json]\nallow_http = [\"http://{0}\"]\n[plugins.http-json.config]\nurl = \"http://{0}/stats\"\n\
         metrics = {{ \"/requests/total\" = \"app.requests\", \"/queue/0/depth\" = \"app.queue.depth\" }}\nlabels = {{ app = \"shop\" }}\n",
        server.addr
    );
    let h = host(&[&plugin("http-json")], &config).await;
    let mut samples = h.get("http-json").collect().await.unwrap();
    samples.sort_by(|a, b| a.metric.cmp(&b.metric));
    let got: Vec<(&str, f64)> = samples.iter().map(|s| (s.metric.as_str(), s.value)).collect();
    assert_eq!(got, [("app.queue.depth", 7.0), ("app.requests", 1234.0)]);
    assert_eq!(samples[0].labels[0].key, "app");

    server.set_body(r#"{"requests":{}}"#);
    match h.get("http-json").collect().await {
        Err(CallError::Plugin(e)) => assert!(format!("{e:?}").contains("/requests/total")),
        other => panic!("a missing number must be an error, not a zero: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_survives_faults_swaps_and_restarts() {
    let h = host(&[&fixture("rogue-policy")], "").await;
    let p = h.get("rogue-policy");
    assert_eq!(p.evaluate(mode("count")).await.unwrap().reason, "count 1");
    fault(p.evaluate(mode("trap")).await); // a new instance after this
    assert_eq!(p.evaluate(mode("count")).await.unwrap().reason, "count 2");

    // Hot swap to a new version of the file.
    let file = h.dir.path().join("rogue-policy.wasm");
    crate::common::put(&file, &crate::common::new_version(&fixture("rogue-policy"), "v2"));
    let changes = h.registry.reconcile().await;
    assert_eq!(changes, [agent::plugins::registry::Change::Swapped("rogue-policy".into())]);
    assert_eq!(p.evaluate(mode("count")).await.unwrap().reason, "count 3");

    // A restart: new runtime and registry over the same data folder.
    let Host { registry, store, data, .. } = h;
    drop((registry, store, p));
    let h = host_in(&[&fixture("rogue-policy")], "", data).await;
    assert_eq!(h.get("rogue-policy").evaluate(mode("count")).await.unwrap().reason, "count 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_another_kind_is_refused_without_a_fault() {
    let h = host(&[&plugin("ledger")], "").await;
    let p = h.get("ledger");
    assert!(matches!(p.evaluate(mode("ok")).await, Err(CallError::WrongKind(agent::plugins::Kind::Backend))));
    assert_eq!(p.status().faults, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_backend_records_targets_per_group_across_restarts() {
    use agent::plugins::types::{Group, Target};
    let group = |name: &str| Group {
        name: name.into(),
        params: r#"{"initial": 2, "tiers": ["small", "large"]}"#.into(),
    };
    let h = host(&[&plugin("ledger")], "").await;
    let b = h.get("ledger");
    let c = b.describe(group("web"), 1000).await.unwrap();
    assert_eq!((c.replicas, c.ready, c.tier_name.as_str()), (2, 2, "small"));
    let out = b.scale(group("web"), Target { replicas: 5, tier: 1 }, 1000, None).await.unwrap();
    assert_eq!(out.detail, "recorded 2 → 5 replicas, tier 0 → 1");
    assert_eq!((out.capacity.replicas, out.capacity.tier_name.as_str()), (5, "large"));
    assert_eq!(b.describe(group("api"), 1000).await.unwrap().replicas, 2, "groups are independent");

    let Host { registry, store, data, .. } = h;
    drop((registry, store, b));
    let h = host_in(&[&plugin("ledger")], "", data).await;
    assert_eq!(h.get("ledger").describe(group("web"), 1000).await.unwrap().replicas, 5);
    let bad = Group { name: "web".into(), params: r#"{"initial": "lots"}"#.into() };
    assert!(matches!(
        h.get("ledger").describe(bad, 1000).await,
        Err(CallError::Plugin(agent::plugins::types::PluginError::BadConfig(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_the_frozen_previous_release_loads_and_runs_after_an_additive_change() {
    // frozen-policy was built against wit/since_v0.1.0 (released 0.1.0); this agent speaks 0.1.1,
    // which added the `about` interface. The old plugin imports none of it and must run as it did.
    let h = host(&[&fixture("frozen-policy")], "").await;
    let p = h.get("frozen-policy");
    assert_eq!(p.status().contract, "0.1.0");
    for call in 1..=2 {
        let r = p.evaluate(ctx(serde_json::json!({}))).await.unwrap();
        assert_eq!((r.replicas, r.reason), (3.0, format!("one more (call {call})")), "host state works too");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_another_compatible_release_of_the_contract_loads_and_runs() {
    // patch-policy was built against elastic:plugin@0.1.7 (this agent speaks 0.1.1): its
    // imports and exports are matched by semver, as a plugin built for an older 0.1.x is.
    let h = host(&[&fixture("patch-policy")], "").await;
    let p = h.get("patch-policy");
    assert_eq!(p.status().contract, "0.1.7");
    let r = p.evaluate(ctx(serde_json::json!({}))).await.unwrap();
    assert_eq!((r.replicas, r.reason.as_str()), (3.0, "one more"));
}

#[test]
fn the_epoch_thread_sleeps_while_no_guest_runs_and_ticks_while_one_does() {
    use crate::common::{thread_woke, wait_ticks};
    // Plugins loaded, nothing calling them: the thread that interrupts guests has nothing to do.
    let dir = plugin_dir(&[&plugin("target-tracking"), &plugin("ledger"), &fixture("rogue-policy")]);
    let config = "[agent]\nsample_interval = \"200ms\"\n[plugins.rogue-policy]\ncpu_limit = \"100ms\"\ntimeout = \"5s\"\n";
    let agent = crate::common::Agent::start(dir.path(), config);
    crate::common::wait_for("plugins loaded", Duration::from_secs(30), || {
        (agent.status()["plugins_settled"] == true).then_some(())
    });
    // Loading called each plugin's metadata(): the ticker keeps ticking 100 ms after a call,
    // then sleeps. Asleep: not one wake-up over three of the agent's 200 ms sampling ticks.
    let before = crate::common::wait_for("the epoch thread asleep", Duration::from_secs(60), || {
        let n = thread_woke(agent.pid(), "plugin-epoch")?;
        wait_ticks(&agent, 3);
        (thread_woke(agent.pid(), "plugin-epoch")? == n).then_some(n)
    });
    // Ten more ticks (more than 1.6 s by the agent's clock): ticking, it would wake hundreds of
    // times (every 5 ms).
    wait_ticks(&agent, 10);
    let idle = thread_woke(agent.pid(), "plugin-epoch").unwrap() - before;
    assert!(idle < 10, "the epoch thread woke {idle} times in 10 sampling intervals, no guest running");
    // A group whose policy spins: the ticker wakes for it, and the spin is stopped at its CPU
    // limit, call after call.
    let spinning = format!(
        "{config}[[group]]\nname = \"spin\"\ninterval = \"300ms\"\nmetrics = [{{ name = \"system.cpu.utilization\", window = \"5s\" }}]\n\
         policy = \"rogue-policy\"\npolicy_config = {{ mode = \"spin\" }}\nbackend = \"ledger\"\nmin = 1\nmax = 3\n"
    );
    std::fs::write(agent.data.path().join("agent.toml"), spinning).unwrap();
    // Applied (exit 1: the hostile policy declares required keys the group does not give).
    let (code, out, err) = agent.cli(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("reloaded: groups: +spin") && out.contains("problem: group `spin`"), "{out}");
    crate::common::wait_for("two spins stopped at the CPU limit", Duration::from_secs(30), || {
        let p = agent.plugin("rogue-policy")?;
        (p["faults"].as_u64()? >= 2 && p["last_fault"].as_str()?.contains("CPU")).then_some(())
    });
    // No group used it at start: it was parked, and linked again from the cache at its first call.
    assert!(agent.log().contains("first call: linking it from the compile cache"), "{}", agent.log());
    // It ticked for them: a spin ends only at a tick, and 100 ms of CPU is 20 ticks of 5 ms. (A
    // starved ticker ticks less often; it cannot tick less than once a spin, so the count is
    // held to what no load can take away.)
    let busy = thread_woke(agent.pid(), "plugin-epoch").unwrap() - before - idle;
    assert!(busy >= 2, "the epoch thread woke only {busy} times for two 100 ms spins");
}
