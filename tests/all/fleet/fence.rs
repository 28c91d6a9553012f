//! The fence alone: a leader whose view of etcd is stale — its watch stalled, its lease renewed,
//! so every other check says it still leads — loses its key to another holder; the fenced record
//! it writes before acting fails, and it does not call the backend. Without the fence (the
//! record's comparison of the leader key's creation revision) it would.

use super::etcd::{b64, EtcdCluster};
use super::recorder::Recorder;
use super::{config, plugins, LIMIT};
use crate::common::{group_status, wait_for, Agent, JsonServer};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A TCP relay of ours in front of one etcd member that can stall every watch stream: what etcd
/// sends on a connection that asked for `/v3/watch` is held back (not dropped, not closed) while
/// stalled, as a partitioned or overloaded gateway would. Every other request passes.
struct WatchStaller {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
}

impl WatchStaller {
    fn start(upstream: SocketAddr) -> WatchStaller {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, stalled) = (listener.local_addr().unwrap(), Arc::new(AtomicBool::new(false)));
        let stall = stalled.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let watching = Arc::new(AtomicBool::new(false));
                let (up, down) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let seen = watching.clone();
                std::thread::spawn(move || {
                    relay(up, server, |bytes| {
                        if bytes.windows(9).any(|w| w == b"/v3/watch") {
                            seen.store(true, Relaxed);
                        }
                    })
                });
                let stall = stall.clone();
                std::thread::spawn(move || {
                    relay(down, client, move |_| {
                        while watching.load(Relaxed) && stall.load(Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                });
            }
        });
        WatchStaller { addr, stalled }
    }

    fn stall(&self) {
        self.stalled.store(true, Relaxed);
    }
}

/// Copies `from` to `to`, calling `each` with every chunk before it is passed on.
fn relay(mut from: TcpStream, mut to: TcpStream, mut each: impl FnMut(&[u8])) {
    let mut buf = [0u8; 16 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        each(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[test]
fn a_leader_whose_watch_is_stalled_is_fenced_off_by_its_record_and_does_not_act() {
    let test = "fleet::a_leader_whose_watch_is_stalled_is_fenced_off_by_its_record_and_does_not_act";
    let Some(etcd) = EtcdCluster::start_or_skip(test, 1) else {
        return;
    };
    let member: SocketAddr = etcd.client_addr(0);
    let staller = WatchStaller::start(member);
    let (app, recorder) = (JsonServer::start(r#"{"load": 20}"#), Recorder::start(1));
    let dir = plugins();
    let agent_config = config("a", &etcd, &app, &recorder, "0s")
        .replace(&etcd.endpoints_toml(), &format!("[\"http://{}\"]", staller.addr));
    let agent = Agent::start(dir.path(), &agent_config);
    wait_for("the scale to 2", LIMIT, || (recorder.replicas("web") == 2).then_some(()));
    let role = |a: &Agent| group_status(a, "web")["cluster"].clone();
    assert_eq!(role(&agent)["role"], "leader", "{}", role(&agent));

    // From now on the agent hears nothing of etcd's changes; its lease renewals still pass.
    staller.stall();
    // Another holder takes the key: deleted, and created again under a lease of its own — a new
    // creation revision, which only the fenced record compares.
    let key = "/elastic/groups/web/leader";
    etcd.post("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())}), None).unwrap();
    let lease = etcd.post("/v3/lease/grant", &json!({"TTL": 300}), None).unwrap();
    let lease = lease["ID"].as_str().expect("a lease id").to_string();
    let put = json!({"key": b64(key.as_bytes()), "value": b64(b"intruder"), "lease": lease});
    etcd.post("/v3/kv/put", &put, None).unwrap();
    let taken = agent::timefmt::now_ms();

    // The load doubles: the agent, still believing it leads, decides 4 and records it first.
    app.set_body(r#"{"load": 40}"#);
    let after = || recorder.calls().into_iter().filter(|c| c.t_ms >= taken).collect::<Vec<_>>();
    wait_for("the agent's fenced record refused (or its call)", LIMIT, || {
        (agent.log().contains("deposed: the leader key of `web`") || !after().is_empty()).then_some(())
    });
    assert!(after().is_empty(), "the agent called the backend on a key it no longer held: {:?}", after());
    assert_eq!(recorder.replicas("web"), 2, "{:?}", recorder.calls());
    // Deposed, it asks etcd again (not its stalled watch) and follows the new holder.
    wait_for("the agent following `intruder`", LIMIT, || {
        let cluster = role(&agent);
        (cluster["role"] == "follower" && cluster["leader"] == "intruder").then_some(())
    });
    let rows = crate::common::decisions(&agent, "web");
    // The journal says so: the decision to 4 held, for the reason that it was deposed.
    let refused = rows.iter().find(|d| d["outcome"].as_str().is_some_and(|o| o.contains("deposed")));
    let refused = refused.unwrap_or_else(|| panic!("no deposed decision in the journal: {rows:?}"));
    assert!(refused["action"] == "hold" && refused["target"] == 4, "{refused}");
    assert!(after().is_empty(), "{:?}", after());
}
