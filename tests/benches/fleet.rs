//! One decider per group across a fleet, measured: failover time over 10 leader kills, etcd
//! requests per agent per evaluation interval (leader and followers), and what coordination adds
//! to one evaluation. `cargo bench -p e2e --bench fleet` (needs `etcd`: apt-get install etcd-server).
//!
//! Three release agents share one group (`coordination = "cluster"`, lease TTL 3 s, renewal
//! every 1 s, evaluation every 1 s) through a real single-member etcd on loopback; the backend is
//! the tests' recording service.

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../all/fleet/etcd.rs"]
mod etcd;

#[allow(dead_code)]
#[path = "../all/fleet/recorder.rs"]
mod recorder;

#[allow(dead_code)]
#[path = "../all/pki.rs"]
mod pki;

use common::{fixture, load_source, plugin, plugin_dir, wait_for, Agent, JsonServer};
use std::time::{Duration, Instant};

const KILLS: usize = 10;

fn config(node: &str, etcd: &etcd::EtcdCluster, app: &JsonServer, rec: &recorder::Recorder) -> String {
    format!(
        "{source}[plugins.record-backend]\nallow_http = [\"http://{r}\"]\n\
         [plugins.record-backend.config]\nurl = \"http://{r}\"\nnode = \"{node}\"\n\
         [cluster]\netcd = {e}\nnode = \"{node}\"\nlease_ttl = \"3s\"\nrenew_every = \"1s\"\nrequest_timeout = \"500ms\"\n\
         [[group]]\nname = \"web\"\ncoordination = \"cluster\"\ninterval = \"1s\"\n\
         metrics = [{{ name = \"app.load\", window = \"1s\" }}]\npolicy = \"target-tracking\"\n\
         policy_config = {{ target = 10, per = \"total\" }}\nbackend = \"record-backend\"\nmin = 1\nmax = 10\n",
        source = load_source(app),
        r = rec.addr,
        e = etcd.endpoints_toml(),
    )
}

fn role(a: &Agent) -> Option<String> {
    let s = a.status_or_none()?;
    s["cluster"]["groups"]["web"]["role"].as_str().map(String::from)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    common::use_release_agent();
    let Some(etcd) = etcd::EtcdCluster::start_or_skip("the fleet benchmark", 1) else { return };
    let (app, rec) = (JsonServer::start(r#"{"load": 20}"#), recorder::Recorder::start(1));
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &fixture("record-backend")]);
    let nodes = ["a", "b", "c"];
    let mut agents: Vec<Agent> =
        nodes.iter().map(|n| Agent::start(dir.path(), &config(n, &etcd, &app, &rec))).collect();
    let limit = Duration::from_secs(30);
    wait_for("a leader", limit, || agents.iter().position(|a| role(a).as_deref() == Some("leader")));

    // etcd requests per agent per interval, over 30 intervals.
    let requests = |a: &Agent| a.status()["cluster"]["etcd_requests"].as_u64().unwrap();
    let before: Vec<u64> = agents.iter().map(requests).collect();
    std::thread::sleep(Duration::from_secs(30));
    println!("fleet: 3 release agents, one cluster group, lease TTL 3 s, renewal 1 s, interval 1 s, single-member etcd 3.4 on loopback");
    for (i, a) in agents.iter().enumerate() {
        let n = requests(a) - before[i];
        println!("  {:<9} {:>5.2} etcd requests per interval (30 s)", role(a).unwrap(), n as f64 / 30.0);
    }

    // Failover: SIGKILL the leader, time until another agent says it leads.
    let mut times = Vec::new();
    for _ in 0..KILLS {
        let i =
            wait_for("a leader", limit, || agents.iter().position(|a| role(a).as_deref() == Some("leader")));
        let killed = Instant::now();
        agents[i].kill9();
        wait_for("a new leader", limit, || {
            agents
                .iter()
                .enumerate()
                .any(|(j, a)| j != i && role(a).as_deref() == Some("leader"))
                .then_some(())
        });
        times.push(killed.elapsed().as_secs_f64() * 1000.0);
        agents[i] = Agent::start(dir.path(), &config(nodes[i], &etcd, &app, &rec));
    }
    let (p50, max) = (percentile(&mut times.clone(), 0.5), percentile(&mut times, 1.0));
    println!("  failover over {KILLS} leader kills: p50 {p50:.0} ms, max {max:.0} ms (bound: TTL + one interval = 4000 ms)");

    // What coordination adds to one evaluation: the campaign and the fenced record, timed in
    // this process against the same etcd (the agents' path, minus the group's own work).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spec = agent::config::Config::parse(&config("bench", &etcd, &app, &rec), "b.toml".as_ref())
        .unwrap()
        .cluster
        .unwrap();
    let (mut campaign, mut commit) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let cluster = agent::cluster::Cluster::start(spec);
        for _ in 0..200 {
            let t = Instant::now();
            let role = cluster.role("bench", Duration::from_secs(2)).await;
            campaign.push(t.elapsed().as_secs_f64() * 1e6);
            let agent::cluster::Role::Leader { token, .. } = role else { panic!("{role:?}") };
            let state = agent::cluster::SharedState {
                leader: "bench".into(),
                token,
                history: Default::default(),
                decision: None,
            };
            let t = Instant::now();
            assert!(cluster.commit("bench", token, &state).await.unwrap());
            commit.push(t.elapsed().as_secs_f64() * 1e6);
        }
    });
    println!(
        "  per evaluation of a cluster group: campaign p50 {:.0} µs, fenced record p50 {:.0} µs (200 each)",
        percentile(&mut campaign, 0.5),
        percentile(&mut commit, 0.5)
    );
}
