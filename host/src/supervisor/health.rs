//! Health checks of one instance: HTTP GET, TCP connect or a command, on an interval, with a
//! start period, and failure and success thresholds. Reports transitions; the instance acts.

use crate::config::{HealthCheck, Probe};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// `success_threshold` probes in a row succeeded.
    Ready,
    /// `failure_threshold` probes in a row failed (outside the start period); the reason of the last.
    Unhealthy(String),
}

/// Runs one probe, within the check's timeout.
pub async fn probe(
    check: &HealthCheck,
    http: &reqwest::Client,
    helpers: &super::launch::Helpers,
) -> Result<(), String> {
    let attempt = async {
        match &check.probe {
            Probe::Http { url, body_contains } => {
                let response = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("GET {url}: HTTP {status}"));
                }
                if let Some(needle) = body_contains {
                    let body =
                        response.text().await.map_err(|e| format!("GET {url}: reading the body: {e}"))?;
                    if !body.contains(needle.as_str()) {
                        return Err(format!("GET {url}: body does not contain {needle:?}"));
                    }
                }
                Ok(())
            }
            Probe::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(|_| ())
                .map_err(|e| format!("connect {address}: {e}")),
            Probe::Command { argv } => {
                let status = helpers
                    .command(argv)
                    .map_err(|e| format!("{}: {e}", argv[0]))?
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|e| format!("{}: {e}", argv[0]))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {status}", argv.join(" ")))
                }
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}ms", check.timeout.as_millis())),
    }
}

/// Probes until `events` is closed (the instance stopped), sending each transition.
pub async fn watch(
    check: HealthCheck,
    http: reqwest::Client,
    helpers: super::launch::Helpers,
    events: mpsc::Sender<Health>,
) {
    let started = Instant::now();
    let (mut successes, mut failures, mut ready) = (0u32, 0u32, false);
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if events.is_closed() {
            return;
        }
        match probe(&check, &http, &helpers).await {
            Ok(()) => {
                failures = 0;
                successes += 1;
                if !ready && successes >= check.success_threshold {
                    ready = true;
                    if events.send(Health::Ready).await.is_err() {
                        return;
                    }
                }
            }
            Err(reason) => {
                successes = 0;
                // Failures in the start period do not count (the program is still starting).
                if started.elapsed() < check.start_period {
                    continue;
                }
                failures += 1;
                if failures >= check.failure_threshold {
                    let _ = events.send(Health::Unhealthy(reason)).await;
                    return;
                }
            }
        }
    }
}

/// One HTTP client for all checks: no proxy from the environment, short connect timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client builds")
}
