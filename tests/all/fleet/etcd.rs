//! Real etcd members on loopback (the `etcd` of Debian's `etcd-server`, 3.4), one data folder
//! each, stopped with the test; optionally over TLS with client certificates (a private CA made
//! by the test with `openssl`) and with etcd users.

use crate::common::{free_port, skipped, wait_for};
pub use crate::pki::Pki;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The password of etcd's `root` user in these tests.
pub const ROOT_PASSWORD: &str = "root-password-of-the-test";

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    /// With TLS: the members' certificate and key, `--client-cert-auth` against the CA.
    tls: Option<MemberTls>,
    /// How the test itself talks to the members (with the test's client certificate over TLS).
    http: reqwest::blocking::Client,
}

struct MemberTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Whether `program` runs here; if not, a loud SKIPPED line (or, under `REQUIRE_ETCD=1`, a
/// failure naming the Debian package).
fn present_or_skip(test: &str, program: &str, package: &str) -> bool {
    if Command::new(program).arg("version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("REQUIRE_ETCD").is_err(),
        "{test}: REQUIRE_ETCD is set but there is no `{program}` (apt-get install {package})"
    );
    skipped(&format!("{test}: no `{program}` here (apt-get install {package} to run it)"));
    false
}

impl EtcdCluster {
    /// `size` members forming one cluster, or `None` (after a loud SKIPPED line) without the
    /// `etcd` binary. Under `REQUIRE_ETCD=1` a missing binary fails the test instead.
    pub fn start_or_skip(test: &str, size: usize) -> Option<EtcdCluster> {
        Self::start(test, size, None)
    }

    /// One member serving clients over TLS only, with `pki`'s member certificate, requiring a
    /// client certificate signed by `pki`'s CA (`--client-cert-auth`); or `None` as above.
    pub fn start_secure_or_skip(test: &str, pki: &Pki) -> Option<EtcdCluster> {
        let tls =
            MemberTls { ca: pki.path("ca.pem"), cert: pki.path("member.pem"), key: pki.path("member.key") };
        Self::start(test, 1, Some(tls))
    }

    fn start(test: &str, size: usize, tls: Option<MemberTls>) -> Option<EtcdCluster> {
        if !present_or_skip(test, "etcd", "etcd-server") {
            return None;
        }
        let mut http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).no_proxy();
        if let Some(t) = &tls {
            let ca = std::fs::read(&t.ca).unwrap();
            let dir = t.ca.parent().unwrap();
            let mut identity = std::fs::read(dir.join("agent.pem")).unwrap();
            identity.extend(std::fs::read(dir.join("agent.key")).unwrap());
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .identity(reqwest::Identity::from_pem(&identity).unwrap());
        }
        let http = http.build().unwrap();
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: tempfile::tempdir().unwrap(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { members, tls, http };
        cluster.restart_all();
        Some(cluster)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn initial_cluster(&self) -> String {
        let peers: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        peers.join(",")
    }

    /// The running members' process ids (for their CPU and memory).
    #[allow(dead_code)] // used by benches/fleet_scale.rs, which includes this file
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.child.as_ref().map(Child::id)).collect()
    }

    /// Where member `i` serves its clients.
    pub fn client_addr(&self, i: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    /// The client URLs, as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let urls: Vec<String> =
            self.members.iter().map(|m| format!("\"{}://127.0.0.1:{}\"", self.scheme(), m.client)).collect();
        format!("[{}]", urls.join(", "))
    }

    /// Starts every member that is not running (on its data folder: a restart keeps the data);
    /// waits until the cluster answers.
    pub fn restart_all(&mut self) {
        let initial = self.initial_cluster();
        let scheme = self.scheme();
        for m in &mut self.members {
            if m.child.is_some() {
                continue;
            }
            let mut etcd = Command::new("etcd");
            if let Some(t) = &self.tls {
                etcd.arg("--cert-file").arg(&t.cert).arg("--key-file").arg(&t.key);
                etcd.arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
            }
            let child = etcd
                .args(["--name", &m.name, "--data-dir"])
                .arg(m.data.path())
                .args(["--listen-client-urls", &format!("{scheme}://127.0.0.1:{}", m.client)])
                .args(["--advertise-client-urls", &format!("{scheme}://127.0.0.1:{}", m.client)])
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
            let leader = self.status(m.client)?["leader"].as_str()?.to_string();
            self.members.iter().position(|x| {
                x.child.is_some()
                    && self
                        .status(x.client)
                        .is_some_and(|s| s["header"]["member_id"].as_str() == Some(&leader))
            })
        })
    }

    /// `/v3/maintenance/status` of the member listening on `port`.
    fn status(&self, port: u16) -> Option<Value> {
        let url = format!("{}://127.0.0.1:{port}/v3/maintenance/status", self.scheme());
        serde_json::from_str(&self.http.post(url).body("{}").send().ok()?.text().ok()?).ok()
    }

    /// POSTs `body` to the first member's JSON gateway at `path`, with `token`; the answer, or
    /// the error etcd gave.
    pub fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value, String> {
        let url = format!("{}://127.0.0.1:{}{path}", self.scheme(), self.members[0].client);
        let mut request = self.http.post(url).body(body.to_string());
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let response = request.send().map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))
    }

    /// How many `methods` (gRPC method names: `Txn`, `Range`, `LeaseTimeToLive`) the first
    /// member has served, whatever their outcome, by its own `/metrics` — the gateway's requests
    /// included, since it calls the member's gRPC server.
    pub fn served(&self, methods: &[&str]) -> u64 {
        let url = format!("{}://127.0.0.1:{}/metrics", self.scheme(), self.members[0].client);
        let text = self.http.get(url).send().and_then(|r| r.text()).expect("etcd's /metrics");
        let counted = |line: &&str| {
            line.starts_with("grpc_server_handled_total{")
                && methods.iter().any(|m| line.contains(&format!("grpc_method=\"{m}\"")))
        };
        let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        text.lines().filter(counted).map(value).sum::<f64>() as u64
    }

    /// Turns etcd's authentication on: `root` (password [`ROOT_PASSWORD`]), and `user` with
    /// `password` in a role that may read and write the keys under `prefix` and nothing else.
    pub fn enable_auth(&self, prefix: &str, user: &str, password: &str) {
        let end =
            format!("{}{}", &prefix[..prefix.len() - 1], (prefix.as_bytes()[prefix.len() - 1] + 1) as char);
        let steps = [
            ("/v3/auth/user/add", json!({"name": "root", "password": ROOT_PASSWORD})),
            ("/v3/auth/role/add", json!({"name": "root"})),
            ("/v3/auth/user/grant", json!({"user": "root", "role": "root"})),
            ("/v3/auth/user/add", json!({"name": user, "password": password})),
            ("/v3/auth/role/add", json!({"name": "agents"})),
            (
                "/v3/auth/role/grant",
                json!({"name": "agents", "perm": {"key": b64(prefix.as_bytes()), "range_end": b64(end.as_bytes()), "permType": "READWRITE"}}),
            ),
            ("/v3/auth/user/grant", json!({"user": user, "role": "agents"})),
            ("/v3/auth/enable", json!({})),
        ];
        for (path, body) in steps {
            self.post(path, &body, None).unwrap_or_else(|e| panic!("setting up etcd users: {e}"));
        }
    }

    /// A token of etcd's `root` user.
    fn root_token(&self) -> String {
        let v = self.post("/v3/auth/authenticate", &json!({"name": "root", "password": ROOT_PASSWORD}), None);
        v.unwrap()["token"].as_str().unwrap().to_string()
    }

    /// Writes `key` as root, without a lease (what an intruder with etcd's root, or a hand
    /// slip, could leave behind).
    pub fn root_put(&self, key: &str, value: &[u8]) {
        let body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        self.post("/v3/kv/put", &body, Some(&self.root_token())).unwrap();
    }

    /// `key` read as root: its base64 value and its lease, if it exists.
    pub fn root_get(&self, key: &str) -> Option<(String, i64)> {
        let v = self
            .post("/v3/kv/range", &json!({"key": b64(key.as_bytes())}), Some(&self.root_token()))
            .unwrap();
        let kv = v["kvs"].as_array()?.first()?.clone();
        let lease = kv["lease"].as_str().and_then(|l| l.parse().ok()).unwrap_or(0);
        Some((kv["value"].as_str().unwrap_or_default().to_string(), lease))
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

/// Standard base64, as the gateway reads keys and values.
pub fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' };
            out.push(c);
        }
    }
    out
}

/// The fleet's private PKI (see [`Pki`]): a CA, a member certificate for 127.0.0.1 signed by it,
/// an agent's client certificate signed by it, and another CA that signed nothing here (what a
/// misconfigured agent might trust). `None` (after a loud SKIPPED line) without `openssl`.
pub fn pki_or_skip(test: &str) -> Option<Pki> {
    if !present_or_skip(test, "openssl", "openssl") {
        return None;
    }
    let pki = Pki::new();
    pki.ca("ca", "fleet-test-ca");
    pki.ca("other-ca", "another-ca");
    // The member's certificate serves clients, and is also the client certificate etcd's
    // gateway presents to etcd's own gRPC server (hence clientAuth too). Its CN is no etcd
    // user's name: etcd takes a client certificate's CN as the user when there is no token.
    pki.signed(
        "member",
        "/CN=etcd-test-member",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    );
    // No CN: with users enabled, etcd 3.4 refuses gateway requests whose client certificate
    // has one (it could not be passed on as the user).
    pki.signed("agent", "/O=fleet-agents", "extendedKeyUsage=clientAuth\n");
    Some(pki)
}
