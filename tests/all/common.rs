//! Helpers for the end-to-end tests: build the real plugins and the agent once, run the agent as
//! a child process, talk to it over loopback HTTP, and serve test endpoints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn target_debug() -> PathBuf {
    // .../target/debug/deps/all-<hash> → .../target/debug
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

/// `cargo` (or a script that runs it) as a person would run it in this workspace: without the
/// variables cargo sets for this test process (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …). Build
/// scripts such as ring's watch them; inherited, they make ring and all that depends on it build
/// again here, and again at the next `cargo build` in a shell.
pub fn as_in_a_shell(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let set_for_tests =
            ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_"].iter().any(|p| k.starts_with(p))
                || ["CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"]
                    .contains(&k.as_ref());
        if set_for_tests {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// `cargo` in this workspace, [as in a shell](as_in_a_shell).
pub fn cargo() -> Command {
    as_in_a_shell(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())))
}

/// Builds the plugins, the fixtures and the `agent` binary, once per test run.
fn build() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = as_in_a_shell(Command::new(root().join("scripts/build-plugins")))
            .status()
            .expect("running scripts/build-plugins");
        assert!(status.success(), "scripts/build-plugins failed");
        let status = cargo()
            .args(["build", "--quiet", "-p", "agent", "--bin", "agent"])
            .current_dir(root())
            .status()
            .expect("building the agent");
        assert!(status.success(), "building the agent binary failed");
    });
}

/// A real plugin built from `plugins/`.
pub fn plugin(name: &str) -> PathBuf {
    build();
    root().join("target/plugins").join(format!("{name}.wasm"))
}

/// Whether node and npm are here (JavaScript plugins need them); `false` after a loud skip.
pub fn npm_or_skip(test: &str) -> bool {
    // With the clone's cache: even `--version` makes npm write its logs there.
    let found =
        Command::new("npm").arg("--version").envs(npm_env()).output().is_ok_and(|o| o.status.success());
    if !found {
        skipped(&format!("{test}: no npm here (apt-get install nodejs npm); CI installs it"));
    }
    found
}

/// npm's settings for the tests: the clone's own cache (filled by `scripts/build-plugins`),
/// preferred to the registry, so nothing is kept outside the clone.
pub fn npm_env() -> [(&'static str, PathBuf); 2] {
    [("npm_config_cache", root().join("target/npm-cache")), ("npm_config_prefer_offline", "true".into())]
}

/// A test fixture built from `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    build();
    root().join("target/test-plugins").join(format!("{name}.wasm"))
}

/// The agent binary: the debug build, or `AGENT_BIN` (the benches run the release build).
pub fn agent_bin() -> PathBuf {
    build();
    std::env::var_os("AGENT_BIN").map(PathBuf::from).unwrap_or_else(|| target_debug().join("agent"))
}

/// A temporary plugins folder holding copies of `files`.
pub fn plugin_dir(files: &[&Path]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// Writes `bytes` to `path` the way an operator's `cp` + `mv` would: never half a file.
pub fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The same component with a custom section appended: a new version with the same behaviour.
pub fn new_version(wasm: &Path, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(wasm).unwrap();
    let mut section = vec![tag.len() as u8];
    section.extend_from_slice(tag.as_bytes());
    section.extend_from_slice(b"payload");
    bytes.push(0); // custom section id
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit` saying `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on `addr`; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// [`http_get`], waiting up to `patience` for the answer.
pub fn http_get_within(addr: SocketAddr, path: &str, patience: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(patience))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    // Chunked bodies (axum's JSON): strip the chunk framing.
    let body = if response.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// A running `agent` child process with its own data folder and port. Stopped on drop.
pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts `agent run --plugins DIR` with `config` (TOML, may be empty), waits for /healthz
    /// and for the plugins present at start-up to be tried.
    pub fn start(plugins: &Path, config: &str) -> Agent {
        Self::start_in(plugins, config, tempfile::tempdir().unwrap())
    }

    /// As [`Agent::start`], reusing a data folder (for restarts).
    pub fn start_in(plugins: &Path, config: &str, data: tempfile::TempDir) -> Agent {
        let agent = Agent::spawn(plugins, config, data);
        // The API answers before the plugins are loaded; most tests start from a loaded folder.
        wait_for("the plugins present at start-up to be tried", Duration::from_secs(90), || {
            agent.status()["plugins_settled"].as_bool().filter(|s| *s)
        });
        agent
    }

    /// Starts the agent and waits for /healthz only: plugins may still be loading.
    pub fn spawn(plugins: &Path, config: &str, data: tempfile::TempDir) -> Agent {
        Agent::spawn_at(plugins, config, data, format!("127.0.0.1:{}", free_port()).parse().unwrap())
    }

    /// As [`Agent::spawn`], on `addr` (to restart an agent where its clients expect it).
    pub fn spawn_at(plugins: &Path, config: &str, data: tempfile::TempDir, addr: SocketAddr) -> Agent {
        Agent::spawn_env(plugins, config, data, addr, &[])
    }

    /// As [`Agent::start`], with `env` added to the agent's environment (what an operator's
    /// `EnvironmentFile=` gives it).
    pub fn start_env(plugins: &Path, config: &str, env: &[(&str, &str)]) -> Agent {
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Agent::spawn_env(plugins, config, tempfile::tempdir().unwrap(), addr, env)
    }

    fn spawn_env(
        plugins: &Path,
        config: &str,
        data: tempfile::TempDir,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Agent {
        let config_path = data.path().join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(agent_bin())
            .arg("run")
            .arg("--plugins")
            .arg(plugins)
            .arg("--data-dir")
            .arg(data.path())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--config")
            .arg(&config_path)
            .env("AGENT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the agent");
        let log = Arc::new(Mutex::new(String::new()));
        let (sink, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut agent = Agent { child, addr, data, log };
        let started = Instant::now();
        loop {
            if let Ok((200, body)) = http_get(addr, "/healthz") {
                assert_eq!(body, "ok");
                break;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited with {status} before serving /healthz; log:\n{}", agent.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "agent did not come up; log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// The agent's process id (for signals).
    /// `agent ARGS` pointed at this agent (its address, data folder and configuration file).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let (addr, data) = (self.addr.to_string(), self.data.path().to_str().unwrap().to_string());
        let config = self.data.path().join("agent.toml");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--listen", &addr, "--data-dir", &data, "--config", config.to_str().unwrap()]);
        agent_cli(&all)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.addr, "/status").expect("GET /status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
    }

    /// `/status`, or `None` when the agent does not answer (killed, stopped).
    pub fn status_or_none(&self) -> Option<serde_json::Value> {
        match http_get(self.addr, "/status") {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The `/status` entry of plugin `name`, if running.
    pub fn plugin(&self, name: &str) -> Option<serde_json::Value> {
        self.status()["plugins"].as_array()?.iter().find(|p| p["name"] == name).cloned()
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str) {
        wait_for(&format!("`{text}` in the agent's log"), Duration::from_secs(10), || {
            self.log().contains(text).then_some(())
        });
    }

    /// Sends SIGKILL (no chance to flush anything) and waits; returns when it happened, in ms.
    pub fn kill9(&mut self) -> i64 {
        let at = agent::timefmt::now_ms();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        at
    }

    /// Sends SIGTERM and waits for the exit; returns the data folder for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let data = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data, data)
    }

    /// Sends SIGTERM, waits for the exit, and returns all it logged (to its last line,
    /// `stopped`).
    pub fn stop_logged(mut self) -> String {
        self.terminate();
        let log = self.log.clone();
        wait_for("the agent's last log line", Duration::from_secs(10), || {
            let text = log.lock().unwrap().clone();
            text.contains("agent::daemon: stopped").then_some(text)
        })
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A loopback HTTP server answering every request with `body` (as JSON), counting requests.
pub struct JsonServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
    status: Arc<std::sync::atomic::AtomicU16>,
}

impl JsonServer {
    pub fn start(body: &str) -> JsonServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(body.to_string()));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let (h, b, st) = (hits.clone(), body.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                h.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = b.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    st.load(Ordering::SeqCst),
                    body.len()
                );
            }
        });
        JsonServer { addr, hits, body, status }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The HTTP status of the following answers (200 at first).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }
}

/// Builds the release agent and has [`Agent`] start it (for the benchmarks).
#[allow(dead_code)] // used by tests/benches, which include this file
pub fn use_release_agent() {
    let status = cargo()
        .args(["build", "--release", "--quiet", "-p", "agent", "--bin", "agent"])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success());
    std::env::set_var("AGENT_BIN", root().join("target/release/agent"));
}

/// The CPU time (user + system) process `pid` has used so far, in seconds.
#[allow(dead_code)] // used by tests/benches, which include this file
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0 // USER_HZ
}

/// Prints a measurement where the test run's output shows it (the harness does not capture it).
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "MEASURED {line}");
}

/// Sends signal `name` (`STOP`, `CONT`, …) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{name} {pid}");
}

/// Says loudly, on the real stderr (not captured by the test harness), that a test or part of
/// one could not run here; `scripts/test` lists these lines again at the end of the run. Under
/// `CI=true` a skip fails the test, unless `tests/skips-allowed` names it with its reason.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {what} ***\n");
    if std::env::var("CI").is_ok_and(|v| v == "true") && !skip_allowed(what) {
        panic!(
            "skipped under CI=true: {what}. CI runs every test: provide what it needs, or add it to \
             tests/skips-allowed with the reason a CI machine may lack it"
        );
    }
}

/// Whether `tests/skips-allowed` lets a run under `CI=true` skip `what`.
pub fn skip_allowed(what: &str) -> bool {
    const ALLOWED: &str = include_str!("../skips-allowed");
    ALLOWED
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" | ").map(|(start, _)| start))
        .any(|start| what.starts_with(start))
}

/// Under `REQUIRE_CGROUP=1` a missing cgroup is a failure, not a skip.
pub fn cgroup_or_skip(what: &str) {
    assert!(std::env::var_os("REQUIRE_CGROUP").is_none(), "REQUIRE_CGROUP is set but {what}");
    skipped(what);
}

/// Runs `agent ARGS` to completion; returns (exit code, stdout, stderr).
pub fn agent_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin()).args(args).env("AGENT_LOG", "warn").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The evaluations journal rows stand for: a run of identical holds is one row with its count.
pub fn evaluations<'a>(rows: impl IntoIterator<Item = &'a serde_json::Value>) -> u64 {
    rows.into_iter().map(|d| d["count"].as_u64().unwrap_or(1)).sum()
}

/// The journal of `group` over the last 10 minutes, through `agent decisions --format json`.
pub fn decisions(agent: &Agent, group: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = agent_cli(&[
        "decisions",
        "--group",
        group,
        "--since",
        "10m",
        "--format",
        "json",
        "--data-dir",
        agent.data.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().clone()
}

/// The newest journal entry of `group` that satisfies `check`, waited for (60 s at most).
pub fn decision(
    agent: &Agent,
    group: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let limit = std::time::Duration::from_secs(60);
    wait_for(what, limit, || decisions(agent, group).into_iter().rev().find(|d| check(d)))
}

/// The `/status` entry of scaling group `name`.
pub fn group_status(agent: &Agent, name: &str) -> serde_json::Value {
    agent.status()["groups"].as_array().unwrap().iter().find(|g| g["name"] == name).unwrap().clone()
}

/// The http-json source reading `{"load": N}` from the test's application every 100 ms.
pub fn load_source(app: &JsonServer) -> String {
    format!(
        "[plugins.http-json]\nallow_http = [\"http://{addr}\"]\ninterval = \"100ms\"\n[plugins.http-json.config]\n\
         url = \"http://{addr}/\"\nmetrics = {{ \"/load\" = \"app.load\" }}\n",
        addr = app.addr
    )
}

/// Every thread of `pid`: (thread id, name) → voluntary context switches so far, i.e. the times
/// it went to sleep and was woken.
pub fn thread_wakeups(pid: u32) -> std::collections::BTreeMap<(u32, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else { continue };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
        if let Some(n) = switches {
            out.insert((tid, name), n);
        }
    }
    out
}

/// The voluntary context switches so far of `pid`'s thread named `name` (how often it woke).
pub fn thread_woke(pid: u32, name: &str) -> Option<u64> {
    thread_wakeups(pid).into_iter().find(|((_, n), _)| n == name).map(|(_, count)| count)
}

/// `agent metrics query ARGS --format json` on the data folder `data`, parsed.
pub fn metrics_query(data: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["metrics", "query"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--format", "json", "--data-dir", data.to_str().unwrap()]);
    let (code, out, err) = agent_cli(&full);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The agent's sampling ticks so far (`agent_sampler_ticks_total` in its `/metrics`).
pub fn sampler_ticks(agent: &Agent) -> Option<u64> {
    let (_, body) = http_get(agent.addr, "/metrics").ok()?;
    let line = body.lines().find(|l| l.starts_with("agent_sampler_ticks_total "))?;
    line.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as u64)
}

/// Waits until the agent's sampler has ticked `n` more times. Its ticks keep to a grid and skip
/// the slots they miss rather than bursting, so `n` more ticks are the agent's own proof that
/// more than `n - 2` sample intervals passed while it ran. A check that something did *not*
/// happen waits for this (or for [`wait_calls`]) instead of sleeping: on a loaded machine a
/// sleep may end before the agent had the chance to do the wrong thing.
pub fn wait_ticks(agent: &Agent, n: u64) {
    let from = wait_for("the agent's sampling ticks", Duration::from_secs(30), || sampler_ticks(agent));
    wait_for(&format!("{n} more sampling ticks"), Duration::from_secs(120), || {
        (sampler_ticks(agent)? >= from + n).then_some(())
    });
}

/// Calls of plugin `name` so far, by `/status` (0 before it is loaded): for a group's policy or
/// backend, its evaluations; for a source, its collections.
pub fn calls(agent: &Agent, name: &str) -> u64 {
    agent.plugin(name).and_then(|p| p["calls"].as_u64()).unwrap_or(0)
}

/// Waits until plugin `name` has been called `more` times after now: so many evaluations (or
/// collections) took place — the positive signal a check that something did not happen waits
/// for.
pub fn wait_calls(agent: &Agent, name: &str, more: u64) {
    let from = calls(agent, name);
    wait_for(&format!("{more} more calls of `{name}`"), Duration::from_secs(60), || {
        (calls(agent, name) >= from + more).then_some(())
    });
}

/// `GET /` over HTTP/1.0 on `addr`; the body, or what went wrong.
pub fn get_body(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    s.read_to_string(&mut response).map_err(|e| e.to_string())?;
    response.split("\r\n\r\n").nth(1).map(str::to_string).ok_or(response)
}

/// A free port `p` with `p + 1 … p + count - 1` free too.
pub fn free_ports(count: u16) -> u16 {
    loop {
        let base = free_port();
        if base < 60000 && (1..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// The repository's agent.toml as shipped, on ports of its own, the demo app's path made
/// absolute (the README runs it from the repository's root). Returns the text, the address all
/// replicas serve, and replica 0's own port (replica i: + i; four free).
pub fn default_configuration() -> (String, SocketAddr, u16) {
    let (shared, own) = (free_port(), free_ports(4));
    let text = std::fs::read_to_string(root().join("agent.toml"))
        .unwrap()
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{shared}"))
        .replace("port = 8091", &format!("port = {own}"))
        .replace("\"examples/web.py\"", &format!("\"{}\"", root().join("examples/web.py").display()));
    (text, format!("127.0.0.1:{shared}").parse().unwrap(), own)
}

/// The shipped group's target (0.2 of the machine per replica) halved, for tests that load the
/// demo until its group scales up: the load shows as the replicas' CPU share, and a machine busy
/// with other work (CI runs the suite beside a CPU-heavy job) leaves them less of it.
pub fn halve_the_target(config: &str) -> String {
    let shipped = "policy_config = { target = 0.2 }";
    assert!(config.contains(shipped), "the shipped group's target changed: {config}");
    config.replace(shipped, "policy_config = { target = 0.1 }")
}

/// The plugins the default configuration uses.
pub fn default_plugins() -> tempfile::TempDir {
    plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("local-replicas")])
}

/// Clients sending `GET /` to `addr` back to back until stopped.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<usize>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut errors = 0;
                    while !stop.load(Ordering::Relaxed) {
                        errors += usize::from(get_body(addr).is_err());
                    }
                    errors
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; returns how many requests failed.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.into_iter().map(|c| c.join().unwrap()).sum()
    }
}
