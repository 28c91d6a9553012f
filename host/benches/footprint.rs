//! Start-up figures for docs/benchmarks.md ("Footprint"). Run with:
//!
//!     scripts/build-plugins --release && cargo bench -p agent --bench footprint
//!
//! Starts the real agent binary (this profile's build) again and again on loopback and times,
//! from the spawn: the first `200` from `/healthz`, and `/status` saying every plugin file has
//! been tried (`plugins_settled`) with every plugin ready. The CPU and memory of a running agent
//! beside prometheus-node-exporter are `scripts/bench-footprint`'s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 19_875;
const RUNS: usize = 10;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One GET on loopback: the status code and the body, or nothing while the agent is not up.
fn get(path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // The API answers loopback requests only for loopback host names.
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

struct Run(Child);
impl Drop for Run {
    fn drop(&mut self) {
        // SIGTERM, so the agent stops as it would on a machine, and the next run can bind.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts the agent on `plugins` and `data`; returns (to /healthz, to every plugin ready).
fn start(plugins: &Path, data: &Path, config: &Path) -> (Duration, Duration) {
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["--config", config.to_str().unwrap(), "--plugins", plugins.to_str().unwrap()])
        .args(["--data-dir", data.to_str().unwrap(), "--listen", &format!("127.0.0.1:{PORT}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the agent");
    let _run = Run(child);
    let mut healthy = None;
    loop {
        assert!(t.elapsed() < Duration::from_secs(60), "the agent did not start or settle in 60 s");
        match healthy {
            None => {
                if get("/healthz").is_some_and(|(code, _)| code == 200) {
                    healthy = Some(t.elapsed());
                }
            }
            Some(h) => {
                let settled = get("/status").is_some_and(|(_, body)| {
                    body.contains("\"plugins_settled\":true") && !body.contains("\"state\":\"failed\"")
                });
                if settled {
                    return (h, t.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn median_max(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "median {:>6.1} ms, max {:>6.1} ms",
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

fn main() {
    let built = root().join("target/plugins");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("agent.toml");
    std::fs::write(&config, "[agent]\nsample_interval = \"1s\"\n").unwrap();
    let (none, rust, all) = (work.path().join("none"), work.path().join("rust"), work.path().join("all"));
    for d in [&none, &rust, &all] {
        std::fs::create_dir(d).unwrap();
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&built).expect("target/plugins: run scripts/build-plugins --release first")
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".wasm") {
            continue;
        }
        std::fs::copy(&path, all.join(&name)).unwrap();
        if !name.starts_with("py-") {
            std::fs::copy(&path, rust.join(&name)).unwrap();
        }
        names.push(name);
    }
    println!("## start-up (from the spawn of the process; {RUNS} starts each, cold 3)");
    let line = |what: &str, plugins: &Path, fresh: bool| {
        let kept = tempfile::tempdir().unwrap();
        if !fresh {
            start(plugins, kept.path(), &config); // makes the data folder and fills the compile cache
        }
        let (mut healthz, mut ready) = (Vec::new(), Vec::new());
        for _ in 0..if fresh && plugins != none { 3 } else { RUNS } {
            let new = tempfile::tempdir().unwrap();
            let (h, r) = start(plugins, if fresh { new.path() } else { kept.path() }, &config);
            healthz.push(h);
            ready.push(r);
        }
        println!("{what:44} /healthz {}   all plugins ready {}", median_max(healthz), median_max(ready));
    };
    let rust_count = names.iter().filter(|n| !n.starts_with("py-")).count();
    line("no plugins, new data folder", &none, true);
    line("no plugins, existing data folder", &none, false);
    line(&format!("{rust_count} Rust plugins, cached (warm)"), &rust, false);
    line(&format!("{rust_count} Rust plugins + Python, cached (warm)"), &all, false);
    line(&format!("{rust_count} Rust plugins, compiled at start (cold)"), &rust, true);
}
