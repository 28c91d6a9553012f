//! One decider per group across a fleet: real agents coordinating through a real etcd (Debian
//! `etcd-server`, started on loopback by the tests), acting on one shared backend — a service
//! of ours that records which agent called with which decision. Without `etcd` each test says
//! loudly that it was skipped (and fails under `REQUIRE_ETCD=1`, which CI sets).

pub mod etcd;
mod fence;
pub mod prometheus;
mod recorder;
mod secure;

use crate::common::{fixture, load_source, plugin, plugin_dir, wait_for, Agent, JsonServer};
use etcd::EtcdCluster;
use recorder::Recorder;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
/// The lease's TTL in these tests, and the evaluation interval.
const TTL_S: u64 = 3;
const INTERVAL_MS: u64 = 1000;

/// One agent of the fleet: `node`'s configuration for a `web` group acting on `recorder`,
/// scaling on the load `app` reports (target 10 per replica), with a scale-down stabilization
/// window of `stabilization`.
fn config(
    node: &str,
    etcd: &EtcdCluster,
    app: &JsonServer,
    recorder: &Recorder,
    stabilization: &str,
) -> String {
    config_with(node, etcd, app, recorder, stabilization, "")
}

/// As [`config`], with `cluster` added to the `[cluster]` table (TLS files, an etcd user).
fn config_with(
    node: &str,
    etcd: &EtcdCluster,
    app: &JsonServer,
    recorder: &Recorder,
    stabilization: &str,
    cluster: &str,
) -> String {
    format!(
        "{source}[plugins.record-backend]\nallow_http = [\"http://{rec}\"]\n\
         [plugins.record-backend.config]\nurl = \"http://{rec}\"\nnode = \"{node}\"\n\
         [cluster]\netcd = {endpoints}\nnode = \"{node}\"\nlease_ttl = \"{TTL_S}s\"\nrenew_every = \"1s\"\nrequest_timeout = \"500ms\"\n{cluster}\
         [[group]]\nname = \"web\"\ncoordination = \"cluster\"\ninterval = \"{INTERVAL_MS}ms\"\n\
         metrics = [{{ name = \"app.load\", window = \"1s\" }}]\npolicy = \"target-tracking\"\n\
         policy_config = {{ target = 10, per = \"total\" }}\nbackend = \"record-backend\"\nmin = 1\nmax = 10\n\
         [group.scale_down]\nstabilization = \"{stabilization}\"\n",
        source = load_source(app),
        rec = recorder.addr,
        endpoints = etcd.endpoints_toml(),
    )
}

fn plugins() -> tempfile::TempDir {
    plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &fixture("record-backend")])
}

/// Starts `nodes` agents; waits until one of them leads `web`.
fn fleet(
    nodes: &[&str],
    etcd: &EtcdCluster,
    app: &JsonServer,
    recorder: &Recorder,
    stabilization: &str,
) -> Vec<Agent> {
    let dir = plugins();
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|n| Agent::start(dir.path(), &config(n, etcd, app, recorder, stabilization)))
        .collect();
    wait_for("a leader of `web`", LIMIT, || leader(&agents));
    agents
}

/// The node that leads `web` by the agents' own account, if exactly one says it does.
fn leader(agents: &[Agent]) -> Option<String> {
    let leading: Vec<String> = agents
        .iter()
        .filter_map(|a| {
            let s = a.status();
            (s["cluster"]["groups"]["web"]["role"] == "leader")
                .then(|| s["cluster"]["node"].as_str().unwrap().to_string())
        })
        .collect();
    (leading.len() == 1).then(|| leading[0].clone())
}

/// Whether all `calls` came from one agent, each under its own decision, in rising order (the
/// scale-up rate limit may take a few steps).
fn one_actor(calls: &[recorder::Call]) -> bool {
    let one = calls.iter().all(|c| c.node == calls[0].node);
    let distinct = calls.windows(2).all(|w| w[0].decision != w[1].decision && w[0].replicas < w[1].replicas);
    !calls.is_empty() && one && distinct
}

fn index_of(nodes: &[&str], node: &str) -> usize {
    nodes.iter().position(|n| *n == node).unwrap()
}

/// Waits for `n` more evaluations across `agents` (only a group's leader evaluates it, and
/// calls its policy once each time).
fn wait_evaluations(agents: &[&Agent], n: u64) {
    let count = || agents.iter().map(|a| crate::common::calls(a, "target-tracking")).sum::<u64>();
    let from = count();
    wait_for(&format!("{n} more evaluations"), LIMIT, || (count() >= from + n).then_some(()));
}

/// The mean of `app.load` a group's last evaluation saw, from target-tracking's reason in its
/// `/status` entry (`app.load mean 40.000 vs target 10: …`).
fn load_mean(group: &serde_json::Value) -> Option<f64> {
    let reason = group["last_reason"].as_str()?;
    reason.split("app.load mean ").nth(1)?.split(' ').next()?.parse().ok()
}

#[test]
fn one_agent_acts_and_a_killed_leader_s_successor_continues_its_stabilization_window() {
    let Some(etcd) = EtcdCluster::start_or_skip(
        "fleet::one_agent_acts_and_a_killed_leader_s_successor_continues_its_stabilization_window",
        1,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 40}"#), Recorder::start(1));
    let nodes = ["a", "b", "c"];
    let mut agents = fleet(&nodes, &etcd, &app, &recorder, "20s");
    wait_for("the scale to 4", LIMIT, || (recorder.replicas("web") == 4).then_some(()));
    let first = leader(&agents).unwrap();
    let calls = recorder.calls();
    assert!(calls.iter().all(|c| c.node == first), "only the leader called: {calls:?}");
    assert!(calls[0].decision.starts_with("web@"), "the decision id carries the fencing revision: {calls:?}");

    // The load falls: the leader wants 1, but its 20 s window still holds 4. Followed through
    // the leader's /status until it has evaluated a whole window at 5; the last evaluation seen
    // that wanted more than 1 (a mean above the target of 10) opens the 20 s the window holds.
    let wanted_more = {
        let leading = &agents[index_of(&nodes, &first)];
        let web = || crate::common::group_status(leading, "web");
        let mut wanted_more = web()["last_ms"].as_i64().unwrap(); // at 40
        app.set_body(r#"{"load": 5}"#);
        wait_for("the leader's evaluation of a whole window at 5", LIMIT, || {
            let entry = web();
            let mean = load_mean(&entry)?;
            if mean > 10.0 {
                wanted_more = wanted_more.max(entry["last_ms"].as_i64()?);
            }
            (mean == 5.0).then_some(())
        });
        wanted_more
    };
    // The leader dies; another takes over within the TTL and an interval.
    let killed = agents[index_of(&nodes, &first)].kill9();
    let (next, took) = wait_for("a new leader", LIMIT, || {
        let alive: Vec<&Agent> = agents.iter().filter(|a| a.status_or_none().is_some()).collect();
        let leading = alive.iter().find(|a| a.status()["cluster"]["groups"]["web"]["role"] == "leader")?;
        Some((leading.status()["cluster"]["node"].as_str().unwrap().to_string(), agent::timefmt::now_ms()))
    });
    assert_ne!(next, first);
    let failover_ms = took - killed;
    // How fast is the scale bench's to say (failover p50/max, benches/fleet_scale.rs); here, that
    // another agent leads at all.
    crate::common::report(&format!("fleet failover: leader SIGKILLed → successor leads in {failover_ms} ms (TTL {TTL_S} s, interval {INTERVAL_MS} ms)"));

    // It continues the window: no scale-in until 20 s after the last evaluation that wanted
    // more than 1 (the HPA's new leader would scale in at once). Both times are this machine's
    // clock as the agents read it, so a slow machine delays both alike.
    let scaled_in =
        wait_for("the scale-in", LIMIT, || recorder.calls().into_iter().find(|c| c.replicas == 1));
    assert_eq!(scaled_in.node, next, "{:?}", recorder.calls());
    assert!(
        scaled_in.t_ms >= wanted_more + 20_000,
        "scaled in {} ms after the last evaluation that wanted more than 1",
        scaled_in.t_ms - wanted_more
    );
    assert!(recorder.calls().iter().all(|c| c.node == first || c.node == next));
}

#[test]
fn a_planned_stop_resigns_so_another_agent_leads_long_before_the_lease_would_lapse() {
    let Some(etcd) = EtcdCluster::start_or_skip(
        "fleet::a_planned_stop_resigns_so_another_agent_leads_long_before_the_lease_would_lapse",
        1,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    // A lease of two minutes: without the resignation, no other agent could lead within the
    // wait below (half of it).
    let long_lease = |c: String| {
        c.replace(&format!("lease_ttl = \"{TTL_S}s\""), "lease_ttl = \"120s\"")
            .replace("renew_every = \"1s\"", "renew_every = \"5s\"")
    };
    let dir = plugins();
    let nodes = ["a", "b"];
    let mut agents: Vec<Option<Agent>> = nodes
        .iter()
        .map(|n| Some(Agent::start(dir.path(), &long_lease(config(n, &etcd, &app, &recorder, "0s")))))
        .collect();
    let live = |agents: &[Option<Agent>]| agents.iter().flatten().map(|a| a.status()).collect::<Vec<_>>();
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    let first = wait_for("one leader", LIMIT, || {
        let leading: Vec<_> =
            live(&agents).into_iter().filter(|s| s["cluster"]["groups"]["web"]["role"] == "leader").collect();
        (leading.len() == 1).then(|| leading[0]["cluster"]["node"].as_str().unwrap().to_string())
    });
    // SIGTERM, as `systemctl stop` sends it: the leader resigns before it exits.
    let said = agents[index_of(&nodes, &first)].take().unwrap().stop_logged();
    assert!(said.contains("resigned the leadership of `web`"), "{said}");
    let next = wait_for("the other agent leads", Duration::from_secs(60), || {
        let s = live(&agents).pop()?;
        (s["cluster"]["groups"]["web"]["role"] == "leader")
            .then(|| s["cluster"]["node"].as_str().unwrap().to_string())
    });
    assert_ne!(next, first);
    // And acts: the load rises, the new leader scales, under its own fencing revision.
    app.set_body(r#"{"load": 40}"#);
    let call = wait_for("the scale to 4", LIMIT, || recorder.calls().into_iter().find(|c| c.replicas == 4));
    assert_eq!(call.node, next, "{:?}", recorder.calls());
}

#[test]
fn a_leader_paused_past_its_ttl_does_not_call_the_backend_when_it_resumes() {
    let Some(etcd) = EtcdCluster::start_or_skip(
        "fleet::a_leader_paused_past_its_ttl_does_not_call_the_backend_when_it_resumes",
        1,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let nodes = ["a", "b"];
    let agents = fleet(&nodes, &etcd, &app, &recorder, "0s");
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    let first = leader(&agents).unwrap();
    let paused = &agents[index_of(&nodes, &first)];
    crate::common::signal(paused.pid(), "STOP");
    // The other takes over once the lease lapses, and acts on a new load.
    app.set_body(r#"{"load": 50}"#);
    let other = nodes.iter().find(|n| **n != first).unwrap().to_string();
    wait_for("the other agent's scale to 5", LIMIT, || {
        recorder.calls().into_iter().find(|c| c.node == other && c.replicas == 5)
    });
    let resumed_at = agent::timefmt::now_ms();
    crate::common::signal(paused.pid(), "CONT");
    // The paused one wakes up mid-loop believing it leads; its fenced record fails.
    app.set_body(r#"{"load": 30}"#);
    wait_for("the scale to 3", LIMIT, || (recorder.replicas("web") == 3).then_some(()));
    // Its own loop has been round since it resumed (the group's entry says follower, which only
    // the loop writes), and the new leader has evaluated three more times: a late call would be
    // in by now.
    wait_for("the resumed agent's loop following", LIMIT, || {
        (crate::common::group_status(paused, "web")["cluster"]["role"] == "follower").then_some(())
    });
    wait_evaluations(&[&agents[index_of(&nodes, &other)]], 3);
    let late: Vec<_> =
        recorder.calls().into_iter().filter(|c| c.node == first && c.t_ms >= resumed_at).collect();
    assert!(late.is_empty(), "the deposed leader called the backend after it resumed: {late:?}");
    let status = paused.status();
    assert_eq!(status["cluster"]["groups"]["web"]["role"], "follower", "{}", status["cluster"]);
    assert_eq!(status["cluster"]["groups"]["web"]["leader"], other.as_str());
    // `agent decisions` says who leads now.
    let (code, out, _) = paused.cli(&["decisions", "--group", "web", "--since", "5m"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("group web: follower here, leader {other}, leader since ")), "{out}");
}

#[test]
fn without_etcd_every_agent_holds_and_they_resume_when_it_returns() {
    let Some(mut etcd) = EtcdCluster::start_or_skip(
        "fleet::without_etcd_every_agent_holds_and_they_resume_when_it_returns",
        1,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let agents = fleet(&["a", "b"], &etcd, &app, &recorder, "0s");
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    etcd.stop_all();
    let stopped_at = agent::timefmt::now_ms();
    app.set_body(r#"{"load": 60}"#);
    for a in &agents {
        wait_for("the group frozen", LIMIT, || {
            let s = a.status();
            (s["cluster"]["groups"]["web"]["role"] == "frozen" && s["cluster"]["etcd_reachable"] == false)
                .then_some(())
        });
        // The group's own entry says so too (what the page shows on the group's card).
        assert_eq!(crate::common::group_status(a, "web")["cluster"]["role"], "frozen");
        let (_, metrics) = crate::common::http_get(a.addr, "/metrics").unwrap();
        assert!(metrics.contains("agent_cluster_etcd_reachable 0"), "{metrics}");
        assert!(metrics.contains("agent_cluster_group_role{group=\"web\",role=\"frozen\"} 1"), "{metrics}");
    }
    // Frozen loops, while time passes by each agent's clock: five sampling ticks (more than
    // three evaluation intervals) each.
    for a in &agents {
        crate::common::wait_ticks(a, 5);
    }
    let during: Vec<_> = recorder.calls().into_iter().filter(|c| c.t_ms > stopped_at).collect();
    assert!(during.is_empty(), "nobody acts without etcd: {during:?}");
    let (code, out, _) = agents[0].cli(&["ps"]);
    assert_eq!(code, 0);
    assert!(out.contains("etcd NOT USABLE: cluster groups frozen"), "{out}");

    etcd.restart_all();
    wait_for("the scale to 6 once etcd is back", LIMIT, || (recorder.replicas("web") == 6).then_some(()));
    let after: Vec<_> = recorder.calls().into_iter().filter(|c| c.t_ms > stopped_at).collect();
    assert!(one_actor(&after), "one agent acted: {after:?}");
}

#[test]
fn a_three_member_etcd_losing_its_leader_still_has_exactly_one_actor() {
    let Some(mut etcd) = EtcdCluster::start_or_skip(
        "fleet::a_three_member_etcd_losing_its_leader_still_has_exactly_one_actor",
        3,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let agents = fleet(&["a", "b", "c"], &etcd, &app, &recorder, "0s");
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    let killed = etcd.kill_leader();
    let at = agent::timefmt::now_ms();
    crate::common::report(&format!("fleet: etcd leader member {killed} killed"));
    app.set_body(r#"{"load": 70}"#);
    wait_for("the scale to 7", LIMIT, || (recorder.replicas("web") == 7).then_some(()));
    // Three more evaluations, by whoever leads: a second actor would have acted by now.
    wait_evaluations(&agents.iter().collect::<Vec<_>>(), 3);
    let after: Vec<_> = recorder.calls().into_iter().filter(|c| c.t_ms > at).collect();
    assert!(one_actor(&after), "exactly one agent acted: {after:?}");
}

/// `agent_cluster_etcd_requests_total` from the agent's own `/metrics`.
fn etcd_requests(agent: &Agent) -> u64 {
    let (_, metrics) = crate::common::http_get(agent.addr, "/metrics").expect("/metrics");
    let line = metrics.lines().find(|l| l.starts_with("agent_cluster_etcd_requests_total "));
    let value = line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok());
    value.unwrap_or_else(|| panic!("no agent_cluster_etcd_requests_total in {metrics}")) as u64
}

/// Waits until every agent's watch over the groups' keys is in step with etcd.
fn watches_synced(agents: &[&Agent]) {
    wait_for("every agent's watch synced", LIMIT, || {
        agents.iter().all(|a| a.status()["cluster"]["watch_synced"] == true).then_some(())
    });
}

/// What etcd serves that an agent's role could cost: KV reads and transactions, lease checks.
const KV_METHODS: [&str; 3] = ["Txn", "Range", "LeaseTimeToLive"];

#[test]
fn a_follower_at_rest_sends_no_etcd_request_beyond_its_lease_renewals() {
    let Some(etcd) = EtcdCluster::start_or_skip(
        "fleet::a_follower_at_rest_sends_no_etcd_request_beyond_its_lease_renewals",
        1,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let nodes = ["a", "b", "c"];
    let agents = fleet(&nodes, &etcd, &app, &recorder, "0s");
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    watches_synced(&agents.iter().collect::<Vec<_>>());
    // A campaign per agent after its watch is synced seeds what it knows; then it is at rest.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    let first = leader(&agents).expect("one leader");
    let before: Vec<u64> = agents.iter().map(etcd_requests).collect();
    let etcd_before = etcd.served(&KV_METHODS);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let etcd_grew = etcd.served(&KV_METHODS) - etcd_before;
    let grew: Vec<u64> = agents.iter().zip(&before).map(|(a, b)| etcd_requests(a) - b).collect();
    let elapsed = started.elapsed();
    assert_eq!(leader(&agents).as_deref(), Some(first.as_str()), "the leadership stayed");

    // One renewal a second (`renew_every`), and nothing else.
    let renewals = elapsed.as_millis() as u64 / 1000;
    let at = index_of(&nodes, &first);
    crate::common::report(&format!(
        "fleet at rest over {elapsed:.1?}: etcd requests per agent {:?} (leader `{first}`), renewals ≈ {renewals}; etcd served {etcd_grew} Txn/Range/LeaseTimeToLive",
        nodes.iter().zip(&grew).collect::<Vec<_>>()
    ));
    for (i, n) in grew.iter().enumerate().filter(|(i, _)| *i != at) {
        assert!(
            *n <= renewals + 1,
            "follower `{}` sent {n} requests in {elapsed:?}: more than its renewals",
            nodes[i]
        );
    }
    // etcd's own account: no KV traffic beyond what the leader's own requests other than its
    // renewals can explain (its fenced records of the state) — none from the followers.
    let leaders_own = grew[at].saturating_sub(renewals.saturating_sub(1));
    assert!(
        etcd_grew <= leaders_own + 2,
        "etcd served {etcd_grew} Txn/Range/LeaseTimeToLive; the leader sent {} requests, {renewals} of them renewals",
        grew[at]
    );
}

#[test]
fn a_deleted_leader_key_is_taken_within_an_interval_and_a_killed_leader_within_a_ttl() {
    let Some(etcd) = EtcdCluster::start_or_skip(
        "fleet::a_deleted_leader_key_is_taken_within_an_interval_and_a_killed_leader_within_a_ttl",
        1,
    ) else {
        return;
    };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let nodes = ["a", "b", "c"];
    let mut agents = fleet(&nodes, &etcd, &app, &recorder, "0s");
    watches_synced(&agents.iter().collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    let first = leader(&agents).unwrap();
    let paused = index_of(&nodes, &first);
    let others: Vec<&Agent> =
        agents.iter().enumerate().filter(|(i, _)| *i != paused).map(|(_, a)| a).collect();
    let leading = |agents: &[&Agent]| {
        agents.iter().find_map(|a| {
            let s = a.status();
            (s["cluster"]["groups"]["web"]["role"] == "leader")
                .then(|| s["cluster"]["node"].as_str().unwrap().to_string())
        })
    };

    // The leader is paused (its lease lives on for the TTL), its key deleted by hand: the
    // followers' watches say so at once, and one leads at its next evaluation.
    crate::common::signal(agents[paused].pid(), "STOP");
    let key = etcd::b64(b"/elastic/groups/web/leader");
    let deleted_at = std::time::Instant::now();
    etcd.post("/v3/kv/deleterange", &serde_json::json!({ "key": key }), None).unwrap();
    let second = wait_for("a follower leads", LIMIT, || leading(&others));
    let took = deleted_at.elapsed();
    crate::common::report(&format!(
        "fleet: leader key deleted → `{second}` leads in {took:?} (interval {INTERVAL_MS} ms)"
    ));
    assert!(took <= Duration::from_millis(INTERVAL_MS + 1000), "{took:?}: more than an interval");
    crate::common::signal(agents[paused].pid(), "CONT");
    wait_for("the resumed agent follows", LIMIT, || {
        let web = agents[paused].status()["cluster"]["groups"]["web"].clone();
        (web["role"] == "follower" && web["leader"] == second.as_str()).then_some(())
    });

    // The new leader dies: its lease ends after the TTL, etcd deletes its key, the watches say
    // so, and another agent leads at its next evaluation.
    let killed_at = agents[index_of(&nodes, &second)].kill9();
    let survivors: Vec<&Agent> =
        agents.iter().enumerate().filter(|(i, _)| *i != index_of(&nodes, &second)).map(|(_, a)| a).collect();
    let third = wait_for("another leader", LIMIT, || leading(&survivors));
    let failover_ms = agent::timefmt::now_ms() - killed_at;
    crate::common::report(&format!(
        "fleet: leader `{second}` SIGKILLed → `{third}` leads in {failover_ms} ms (TTL {TTL_S} s)"
    ));
    assert!(failover_ms <= (TTL_S * 1000 + INTERVAL_MS + 2000) as i64, "{failover_ms} ms");
    assert_ne!(third, second);
}

#[test]
fn a_real_prometheus_scraping_three_agents_feeds_a_group_and_its_outage_holds_the_group() {
    // Three agents each report their own application's load; Prometheus scrapes their /metrics;
    // the first one's group scales on the fleet's total through the `prometheus` plugin.
    let apps = [10, 20, 30].map(|load| JsonServer::start(&format!("{{\"load\": {load}}}")));
    let dir = plugin_dir(&[
        &plugin("http-json"),
        &plugin("prometheus"),
        &plugin("target-tracking"),
        &plugin("ledger"),
    ]);
    let ports: Vec<u16> = (0..3).map(|_| crate::common::free_port()).collect();
    let addrs: Vec<std::net::SocketAddr> =
        ports.iter().map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    let Some(mut prometheus) = prometheus::Prometheus::start_or_skip(
        "fleet::a_real_prometheus_scraping_three_agents_feeds_a_group_and_its_outage_holds_the_group",
        &addrs,
    ) else {
        return;
    };
    let fleet_group = format!(
        "[plugins.prometheus]\nallow_http = [\"http://{p}\"]\ninterval = \"1s\"\n[plugins.prometheus.config]\nurl = \"http://{p}\"\n\
         queries = [{{ metric = \"fleet.load\", query = \"sum(app_load)\" }}]\n\
         [[group]]\nname = \"web\"\ninterval = \"1s\"\nmetrics = [{{ name = \"fleet.load\", window = \"2s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
         min = 1\nmax = 10\n[group.scale_down]\nstabilization = \"0s\"\n",
        p = prometheus.addr
    );
    let agents: Vec<Agent> = apps
        .iter()
        .zip(&addrs)
        .enumerate()
        .map(|(i, (app, addr))| {
            let extra = if i == 0 { fleet_group.as_str() } else { "" };
            let data = tempfile::tempdir().unwrap();
            let a = Agent::spawn_at(dir.path(), &format!("{}{extra}", load_source(app)), data, *addr);
            wait_for("plugins loaded", LIMIT, || (a.status()["plugins_settled"] == true).then_some(()));
            a
        })
        .collect();
    let current = || crate::common::group_status(&agents[0], "web")["current"].as_u64();
    wait_for("6 replicas for a fleet load of 60", Duration::from_secs(60), || {
        (current() == Some(6)).then_some(())
    });
    let series = agents[0].cli(&["metrics", "query", "fleet.load", "--since", "1m"]).1;
    assert!(series.contains("60"), "{series}");

    // Prometheus goes away: no data is not zero — the group holds at 6 instead of falling to 1.
    let stopped_at = agent::timefmt::now_ms();
    prometheus.stop();
    let held = wait_for("a hold without data", LIMIT, || {
        let g = crate::common::group_status(&agents[0], "web");
        let no_data = g["last_reason"].as_str().is_some_and(|r| r.contains("no data for fleet.load"));
        no_data.then_some(g)
    });
    assert_eq!(held["current"], 6, "{held}");
    // Five of the agent's 1 s sampling ticks later — four or more evaluations at 1 s without
    // data (a count of backend calls would end within two: describe and scale are both calls) —
    // still 6, and no evaluation without data moved it.
    crate::common::wait_ticks(&agents[0], 5);
    assert_eq!(current(), Some(6));
    let moved: Vec<_> = crate::common::decisions(&agents[0], "web")
        .into_iter()
        .filter(|d| d["t_ms"].as_i64().is_some_and(|t| t >= stopped_at))
        .filter(|d| d["reason"].as_str().is_some_and(|r| r.contains("no data")) && d["target"] != 6)
        .collect();
    assert!(moved.is_empty(), "evaluations without data moved the group: {moved:?}");
    let source = agents[0].status()["sources"].to_string();
    assert!(source.contains("prometheus") && source.contains("unavailable"), "{source}");
}

/// `node`'s configuration for `groups` cluster groups `g0`… at rest (load 20, target 10 in
/// total, the ledger at 2 replicas).
fn config_many(node: &str, etcd: &EtcdCluster, app: &JsonServer, groups: usize) -> String {
    let mut text = format!(
        "{}[cluster]\netcd = {}\nnode = \"{node}\"\nlease_ttl = \"{TTL_S}s\"\nrenew_every = \"1s\"\nrequest_timeout = \"500ms\"\n",
        load_source(app),
        etcd.endpoints_toml()
    );
    for g in 0..groups {
        text.push_str(&format!(
            "[[group]]\nname = \"g{g}\"\ncoordination = \"cluster\"\ninterval = \"{INTERVAL_MS}ms\"\n\
             metrics = [{{ name = \"app.load\", window = \"1s\" }}]\npolicy = \"target-tracking\"\n\
             policy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
             backend_config = {{ initial = 2 }}\nmin = 1\nmax = 10\n"
        ));
    }
    text
}

/// How many groups each agent leads, by its own account.
fn leads(agents: &[&Agent]) -> Vec<usize> {
    agents
        .iter()
        .map(|a| {
            let s = a.status_or_none().unwrap_or_default();
            let groups = s["cluster"]["groups"].as_object().cloned().unwrap_or_default();
            groups.values().filter(|g| g["role"] == "leader").count()
        })
        .collect()
}

#[test]
fn groups_spread_over_the_agents_that_join_and_a_stopped_agent_s_groups_go_to_the_rest() {
    let Some(etcd) = EtcdCluster::start_or_skip(
        "fleet::groups_spread_over_the_agents_that_join_and_a_stopped_agent_s_groups_go_to_the_rest",
        1,
    ) else {
        return;
    };
    let app = JsonServer::start(r#"{"load": 20}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let a = Agent::start(dir.path(), &config_many("a", &etcd, &app, 6));
    wait_for("`a` alone leads all 6 groups", LIMIT, || (leads(&[&a]) == [6]).then_some(()));
    let b = Agent::start(dir.path(), &config_many("b", &etcd, &app, 6));
    // `c`'s lease lives two minutes: when it stops, only its planned hand-over — each group
    // resigned, then its lease revoked (either alone is enough) — can hand its groups on within
    // the wait below.
    let long_lease = config_many("c", &etcd, &app, 6)
        .replace(&format!("lease_ttl = \"{TTL_S}s\""), "lease_ttl = \"120s\"")
        .replace("renew_every = \"1s\"", "renew_every = \"5s\"");
    let c = Agent::start(dir.path(), &long_lease);
    let started = std::time::Instant::now();
    // a hands one group over every two intervals, to the agents leading fewer.
    wait_for("2 groups each", Duration::from_secs(60), || (leads(&[&a, &b, &c]) == [2, 2, 2]).then_some(()));
    crate::common::report(&format!(
        "fleet spread: 6 groups from 6/0/0 to 2/2/2 in {:.1?}",
        started.elapsed()
    ));
    // Even: it stays so, five evaluations of each group later (a hand-over is decided after an
    // evaluation, one every two intervals).
    wait_evaluations(&[&a, &b, &c], 5 * 6);
    assert_eq!(leads(&[&a, &b, &c]), [2, 2, 2], "the leadership moved again once even");
    // A planned stop: its groups go to the others at once — within the wait, long before its
    // two-minute lease could lapse — and once its registration is gone their share is 3 each.
    // How soon is the scale bench's ("after a planned stop", benches/fleet_scale.rs).
    drop(c.stop());
    let stopped = std::time::Instant::now();
    wait_for("6 groups led by a and b", LIMIT, || {
        let l = leads(&[&a, &b]);
        (l.iter().sum::<usize>() == 6).then_some(l)
    });
    let handed = stopped.elapsed();
    crate::common::report(&format!("fleet spread: a stopped agent's 2 groups led again after {handed:.1?}"));
    wait_for("3 groups each", LIMIT, || (leads(&[&a, &b]) == [3, 3]).then_some(()));
}

#[test]
fn the_agents_are_listed_in_pages_past_what_one_answer_may_hold() {
    let Some(etcd) =
        EtcdCluster::start_or_skip("fleet::the_agents_are_listed_in_pages_past_what_one_answer_may_hold", 1)
    else {
        return;
    };
    // 2 500 registrations (as 2 500 agents would leave): three pages of a keys-only listing.
    let n = 2_500;
    for i in 0..n {
        let body = serde_json::json!({"key": etcd::b64(format!("/elastic/agents/node-{i:05}").as_bytes()), "value": etcd::b64(b"x")});
        etcd.post("/v3/kv/put", &body, None).unwrap();
    }
    let app = JsonServer::start(r#"{"load": 20}"#);
    let spec = agent::config::Config::parse(&config_many("probe", &etcd, &app, 0), "probe.toml".as_ref())
        .unwrap()
        .cluster
        .unwrap();
    let client = agent::cluster::etcd::Etcd::new(&spec);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (keys, _) = rt.block_on(client.keys("/elastic/agents/", "/elastic/agents0", 20_000)).unwrap();
    let names: Vec<String> = keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("/elastic/agents/node-{i:05}")).collect();
    assert_eq!(names, expected, "every key once, in order");
    let (some, _) = rt.block_on(client.keys("/elastic/agents/", "/elastic/agents0", 1_200)).unwrap();
    assert_eq!(some.len(), 1_200, "at most the limit");
}
