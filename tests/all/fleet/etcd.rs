//! Real etcd members on loopback (the `etcd` of Debian's `etcd-server`, 3.4), one data folder
//! each, stopped with the test.

use crate::common::{free_port, skipped, wait_for};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    /// `size` members forming one cluster, or `None` (after a loud SKIPPED line) without the
    /// `etcd` binary. Under `REQUIRE_ETCD=1` a missing binary fails the test instead.
    pub fn start_or_skip(test: &str, size: usize) -> Option<EtcdCluster> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var("REQUIRE_ETCD").is_err(),
                "{test}: REQUIRE_ETCD is set but there is no `etcd` (apt-get install etcd-server)"
            );
            skipped(&format!("{test}: no `etcd` here (apt-get install etcd-server to run it)"));
            return None;
        }
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: tempfile::tempdir().unwrap(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { members };
        cluster.restart_all();
        Some(cluster)
    }

    fn initial_cluster(&self) -> String {
        let peers: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        peers.join(",")
    }

    /// The client URLs, as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let urls: Vec<String> =
            self.members.iter().map(|m| format!("\"http://127.0.0.1:{}\"", m.client)).collect();
        format!("[{}]", urls.join(", "))
    }

    /// Starts every member that is not running (on its data folder: a restart keeps the data);
    /// waits until the cluster answers.
    pub fn restart_all(&mut self) {
        let initial = self.initial_cluster();
        for m in &mut self.members {
            if m.child.is_some() {
                continue;
            }
            let child = Command::new("etcd")
                .args(["--name", &m.name, "--data-dir"])
                .arg(m.data.path())
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", m.client)])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", m.client)])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting etcd");
            m.child = Some(child);
        }
        wait_for("etcd to answer", Duration::from_secs(30), || self.leader_index().map(|_| ()));
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// The index of the member the others follow, by the members' own status.
    fn leader_index(&self) -> Option<usize> {
        self.members.iter().filter(|m| m.child.is_some()).find_map(|m| {
            let leader = status(m.client)?["leader"].as_str()?.to_string();
            self.members.iter().position(|x| {
                x.child.is_some()
                    && status(x.client).is_some_and(|s| s["header"]["member_id"].as_str() == Some(&leader))
            })
        })
    }

    /// Kills the etcd leader member; its name.
    pub fn kill_leader(&mut self) -> String {
        let i = self.leader_index().expect("an etcd leader");
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        m.name.clone()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `/v3/maintenance/status` of the member listening on `port`.
fn status(port: u16) -> Option<serde_json::Value> {
    let out = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?
        .post(format!("http://127.0.0.1:{port}/v3/maintenance/status"))
        .body("{}")
        .send()
        .ok()?;
    serde_json::from_str(&out.text().ok()?).ok()
}
