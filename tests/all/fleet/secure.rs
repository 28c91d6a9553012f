//! The fleet's wire secured, against a real etcd: TLS from a private CA, client certificates
//! (`--client-cert-auth`), etcd users with a role limited to the agents' prefix; and keys forged
//! by someone holding etcd's root — a leader key without a lease, a state dated in 2100 — that
//! must not stop the fleet.

use super::etcd::{b64, pki_or_skip, EtcdCluster, Pki};
use super::recorder::Recorder;
use super::{config_with, leader, one_actor, plugins, LIMIT, TTL_S};
use crate::common::{group_status, wait_for, Agent, JsonServer};
use std::time::{Duration, Instant};

const USER: &str = "agent";
const PASSWORD: &str = "the-agents-etcd-password-42";

/// A TLS etcd with users, the PKI it trusts, and the agent user's password file; or `None` when
/// `etcd` or `openssl` is missing (said loudly).
fn secure_etcd(test: &str) -> Option<(Pki, EtcdCluster)> {
    let pki = pki_or_skip(test)?;
    let etcd = EtcdCluster::start_secure_or_skip(test, &pki)?;
    etcd.enable_auth("/elastic/", USER, PASSWORD);
    pki.secret("agent.password", &format!("{PASSWORD}\n"));
    pki.secret("wrong.password", "not-the-password\n");
    Some((pki, etcd))
}

/// The `[cluster]` lines of an agent: `ca` as its CA file, the agent's client certificate when
/// `client_cert`, and the password in `password_file`.
fn security(pki: &Pki, ca: &str, client_cert: bool, password_file: &str) -> String {
    let dir = pki.dir().display();
    let cert = if client_cert {
        format!("cert_file = \"{dir}/agent.pem\"\nkey_file = \"{dir}/agent.key\"\n")
    } else {
        String::new()
    };
    format!(
        "ca_file = \"{dir}/{ca}\"\n{cert}username = \"{USER}\"\npassword = {{ file = \"{dir}/{password_file}\" }}\n"
    )
}

/// Waits until `agent` reports `web` frozen; the reason.
fn frozen_reason(agent: &Agent) -> String {
    wait_for("the group frozen", LIMIT, || {
        let web = agent.status()["cluster"]["groups"]["web"].clone();
        (web["role"] == "frozen").then(|| web["reason"].as_str().unwrap_or_default().to_string())
    })
}

#[test]
fn over_mutual_tls_as_an_etcd_user_two_agents_elect_one_leader_and_strangers_are_refused() {
    let test = "fleet::secure::over_mutual_tls_as_an_etcd_user_two_agents_elect_one_leader_and_strangers_are_refused";
    let Some((pki, mut etcd)) = secure_etcd(test) else { return };
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let dir = plugins();
    let good = security(&pki, "ca.pem", true, "agent.password");
    let agents: Vec<Agent> = ["a", "b"]
        .iter()
        .map(|n| Agent::start(dir.path(), &config_with(n, &etcd, &app, &recorder, "0s", &good)))
        .collect();
    let first = wait_for("a leader of `web`", LIMIT, || leader(&agents));
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    assert!(one_actor(&recorder.calls()), "{:?}", recorder.calls());
    assert_eq!(recorder.calls()[0].node, first);
    let cluster = agents[0].status()["cluster"].clone();
    assert_eq!(
        (&cluster["tls"], &cluster["client_certificate"], &cluster["user"]),
        (&true.into(), &true.into(), &USER.into()),
        "{cluster}"
    );
    // The leader key is the agent's, under its lease, in the prefix its role may write.
    let (value, lease) = etcd.root_get("/elastic/groups/web/leader").expect("the leader key");
    assert_eq!(value, b64(first.as_bytes()));
    assert_ne!(lease, 0);

    // The wrong password: the group freezes and says why; nothing is called.
    let data = tempfile::tempdir().unwrap();
    let wrong = security(&pki, "ca.pem", true, "wrong.password");
    let c = Agent::start_in(dir.path(), &config_with("c", &etcd, &app, &recorder, "0s", &wrong), data);
    let why = frozen_reason(&c);
    assert!(why.contains("etcd refused user `agent`: authentication failed"), "{why}");
    let (_, ps, _) = c.cli(&["ps"]);
    assert!(ps.contains("etcd refused user `agent`: authentication failed"), "{ps}");

    // No client certificate: the member refuses the handshake.
    let no_cert = security(&pki, "ca.pem", false, "agent.password");
    let d = Agent::start_in(dir.path(), &config_with("d", &etcd, &app, &recorder, "0s", &no_cert), c.stop());
    let why = frozen_reason(&d);
    assert!(why.starts_with("etcd unreachable: POST https://127.0.0.1:"), "{why}");
    assert!(why.contains("client certificate"), "the reason points at the missing certificate: {why}");

    // A CA that did not sign the member's certificate: the member is not believed.
    let other_ca = security(&pki, "other-ca.pem", true, "agent.password");
    let e = Agent::start_in(dir.path(), &config_with("e", &etcd, &app, &recorder, "0s", &other_ca), d.stop());
    let why = frozen_reason(&e);
    assert!(why.contains("UnknownIssuer") && why.contains("cluster.ca_file"), "{why}");

    // A prefix outside what the user's role may touch: etcd denies it, and the reason says so.
    let elsewhere = format!("{good}prefix = \"/other\"\n");
    let f =
        Agent::start_in(dir.path(), &config_with("f", &etcd, &app, &recorder, "0s", &elsewhere), e.stop());
    let why = frozen_reason(&f);
    assert!(why.contains("etcd denied user `agent` /v3/kv/txn: etcdserver: permission denied"), "{why}");

    // etcd restarts: the tokens it had issued are gone (simple tokens live in its memory); the
    // agents authenticate again and go on. The two good agents still hold the group between
    // them, and only they ever called the backend. (A restarted member re-applies the requests
    // no write of its store followed, authentications included, and so re-issues their tokens:
    // a write first makes sure none is.)
    etcd.root_put("/test/written-before-the-restart", b"x");
    etcd.stop_all();
    etcd.restart_all();
    app.set_body(r#"{"load": 40}"#);
    wait_for("the scale to 4", LIMIT, || (recorder.replicas("web") == 4).then_some(()));
    assert!(one_actor(&recorder.calls()), "{:?}", recorder.calls());
    let again =
        "etcd no longer takes the agent's token (etcdserver: invalid auth token); authenticating again";
    // A follower at rest meets its stale token when it reopens its watch, not necessarily
    // before the leader scales.
    for a in &agents {
        wait_for("the agent to authenticate again", LIMIT, || a.log().contains(again).then_some(()));
    }
    // Neither the password nor a token reaches a log or /status.
    for a in agents.iter().chain([&f]) {
        let (log, status) = (a.log(), a.status().to_string());
        assert!(
            !log.contains(PASSWORD) && !status.contains(PASSWORD),
            "the password leaked:\n{log}\n{status}"
        );
        assert!(!log.to_lowercase().contains("token\":") && !log.contains("authorization"), "{log}");
    }
}

#[test]
fn a_forged_lease_less_leader_key_is_taken_over_after_the_ttl_and_a_state_dated_2100_does_not_hold_the_leader(
) {
    let test = "fleet::secure::a_forged_lease_less_leader_key_is_taken_over_after_the_ttl_and_a_state_dated_2100_does_not_hold_the_leader";
    let Some((pki, etcd)) = secure_etcd(test) else { return };
    // Someone with etcd's root leaves a leader key without a lease (it would never expire) and a
    // state whose last scale-up is in 2100 (a 10-minute scale-up cooldown would hold until then).
    let year_2100: i64 = 4_102_444_800_000;
    etcd.root_put("/elastic/groups/web/leader", b"ghost");
    let state = serde_json::json!({
        "leader": "ghost", "token": 1,
        "history": {"recommendations": [[year_2100, 1]], "actions": [[year_2100, 1, 2]], "last_tier_change_ms": year_2100},
        "decision": {"id": "web@1#4102444800000", "t_ms": year_2100, "from": 1, "to": 2, "tier": 0},
    });
    etcd.root_put("/elastic/groups/web/state", state.to_string().as_bytes());
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let dir = plugins();
    let security = security(&pki, "ca.pem", true, "agent.password");
    let cooldown = "[group.scale_up]\ncooldown = \"10m\"\n";
    let started = Instant::now();
    let agents: Vec<Agent> = ["a", "b"]
        .iter()
        .map(|n| {
            Agent::start(dir.path(), &(config_with(n, &etcd, &app, &recorder, "0s", &security) + cooldown))
        })
        .collect();
    // Both see the forged holder first…
    wait_for("`ghost` seen as the leader", LIMIT, || {
        let seen = agents.iter().any(|a| a.status()["cluster"]["groups"]["web"]["leader"] == "ghost");
        seen.then_some(())
    });
    // …and one takes the key once it has seen it without a lease for the TTL.
    let first = wait_for("an agent leading `web`", LIMIT, || leader(&agents));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(TTL_S), "taken over after {took:?}, before the TTL");
    let new_leader = agents.iter().find(|a| a.status()["cluster"]["node"] == first.as_str()).unwrap();
    let log = new_leader.log();
    assert!(
        log.contains("the leader key of `web` (`ghost`, lease 0) had no live lease for 3s: deleted it"),
        "{log}"
    );
    let (value, lease) = etcd.root_get("/elastic/groups/web/leader").unwrap();
    assert_eq!((value, lease != 0), (b64(first.as_bytes()), true), "the key is the agent's, under its lease");

    // The forged state is read, its future entries dropped: the leader scales at once.
    wait_for("the scale to 2 despite the cooldown dated 2100", LIMIT, || {
        (recorder.replicas("web") == 2).then_some(())
    });
    let log = new_leader.log();
    assert!(log.contains("the decision state of `web` at `/elastic/groups/web/state` had 4 entries dated more than 30s in the future: dropped"), "{log}");
    let calls = recorder.calls();
    assert!(calls.len() == 1 && calls[0].node == first, "{calls:?}");
    // Without the forged cooldown it scales on: the load doubles, so does the group.
    app.set_body(r#"{"load": 40}"#);
    // …but its own 10-minute cooldown now holds it, as it should: once it has evaluated a whole
    // window at 40 (its journal's inputs), it held at 2 by that cooldown.
    let held = wait_for("an evaluation of a whole window at 40", LIMIT, || {
        crate::common::decisions(new_leader, "web").into_iter().rev().find(|d| {
            let inputs = d["inputs"].as_object();
            let load = inputs.and_then(|i| i.iter().find(|(k, _)| k.starts_with("app.load")));
            load.is_some_and(|(_, v)| v["mean"] == 40.0)
        })
    });
    let steps = held["steps"].to_string();
    assert!(held["action"] == "hold" && held["target"] == 2 && steps.contains("cooldown"), "{held}");
    let web = group_status(new_leader, "web");
    assert_eq!(web["current"], 2, "the leader's own 10-minute cooldown now holds, as it should: {web}");
}
