//! A real Prometheus server (Debian's `prometheus`) on loopback, scraping the agents' /metrics.

use crate::common::{free_port, skipped, wait_for};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Prometheus {
    pub addr: SocketAddr,
    child: Option<Child>,
    _data: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` every second; `None` (after a loud SKIPPED line) without `prometheus`,
    /// a failure under `REQUIRE_PROMETHEUS=1`.
    pub fn start_or_skip(test: &str, targets: &[SocketAddr]) -> Option<Prometheus> {
        if Command::new("prometheus").arg("--version").output().is_err() {
            assert!(
                std::env::var("REQUIRE_PROMETHEUS").is_err(),
                "{test}: REQUIRE_PROMETHEUS is set but there is no `prometheus` (apt-get install prometheus)"
            );
            skipped(&format!("{test}: no `prometheus` here (apt-get install prometheus to run it)"));
            return None;
        }
        Some(Prometheus::start(targets, "agents", None))
    }

    /// Scrapes `targets` as job `job` every second, evaluating `rules` (a rule file) every second.
    pub fn start(targets: &[SocketAddr], job: &str, rules: Option<&Path>) -> Prometheus {
        let data = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let rule_files = rules.map(|r| format!("rule_files:\n  - \"{}\"\n", r.display())).unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let file = data.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { addr, child: Some(child), _data: data };
        wait_for("prometheus ready", Duration::from_secs(60), || {
            matches!(crate::common::http_get(addr, "/-/ready"), Ok((200, _))).then_some(())
        });
        p
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
