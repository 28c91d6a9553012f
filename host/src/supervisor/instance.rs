//! One task per instance: start it, await its exit (no polling), health-check it, restart it
//! with backoff, stop it on request. The task owns the child; nothing else signals it.

use super::health::{self, Health};
use super::output::{self, RotatingFile};
use super::spawn::{self, Slot};
use crate::config::{ProcessSpec, Restart};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcState {
    /// Running, health check not passed yet.
    Starting,
    /// Running and healthy (or running, without a health check).
    Ready,
    /// Failed its health check; being restarted.
    Unhealthy,
    /// Waiting before a restart.
    Backoff,
    /// Not running, by request or by its restart policy.
    Stopped,
    /// Hit its start limit; not restarted until `agent restart` or a configuration change.
    Failed,
}

/// What `/status` and `agent ps` show of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub replica: u32,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub state: ProcState,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
    pub uptime_s: Option<f64>,
    #[serde(skip)]
    pub started_at: Option<Instant>,
}

pub enum Control {
    Start,
    Restart,
    Stop(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

pub struct Instance {
    pub spec: Arc<ProcessSpec>,
    pub slot: Slot,
    pub status: Arc<Mutex<InstanceStatus>>,
    pub marker: Arc<str>,
    pub http: reqwest::Client,
}

/// What a stopped or failed instance was told.
enum Idle {
    /// Start (again), with a clean slate.
    Resume,
    /// Stay down (a stop request while down).
    Stay,
    /// The task ends (shutdown, or the supervisor dropped it).
    End,
}

/// How a running child's time ended.
enum Ended {
    Exited(std::process::ExitStatus),
    Unhealthy(String),
    Control(Control),
}

impl Instance {
    fn set(&self, f: impl FnOnce(&mut InstanceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn log(&self) -> (String, u32) {
        (self.spec.name.clone(), self.slot.replica)
    }

    pub async fn run(self, mut ctl: mpsc::Receiver<Control>) {
        let spec = self.spec.clone();
        let (name, replica) = self.log();
        let mut enabled = true;
        let mut failures = 0u32;
        let mut starts: VecDeque<Instant> = VecDeque::new();
        let mut first_start = true;
        let log_file = spec.log.as_ref().and_then(|cfg| match RotatingFile::open(cfg, &name, replica) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                tracing::error!(process = %name, replica, "cannot open its log file in {}: {e}", cfg.dir.display());
                None
            }
        });

        loop {
            if !enabled {
                match self.idle(&mut ctl, ProcState::Stopped).await {
                    Idle::Resume => {
                        (enabled, failures) = (true, 0);
                        starts.clear();
                    }
                    Idle::Stay => {}
                    Idle::End => return,
                }
                continue;
            }

            // The start limit: too many starts too fast means something is wrong; stop trying.
            let now = Instant::now();
            while starts.front().is_some_and(|t| now.duration_since(*t) > spec.start_limit.interval) {
                starts.pop_front();
            }
            if starts.len() as u32 >= spec.start_limit.count {
                tracing::error!(
                    process = %name, replica,
                    "started {} times within {}; giving up until `agent restart {name}`",
                    starts.len(), crate::duration::format(spec.start_limit.interval)
                );
                match self.idle(&mut ctl, ProcState::Failed).await {
                    Idle::Resume => {
                        failures = 0;
                        starts.clear();
                    }
                    Idle::Stay => enabled = false,
                    Idle::End => return,
                }
                continue;
            }
            starts.push_back(now);

            let mut child = match spawn::command(&spec, &self.slot, &self.marker).spawn() {
                Ok(child) => child,
                Err(e) => {
                    let error = format!("cannot start `{}`: {e}", spec.command);
                    tracing::error!(process = %name, replica, "{error}");
                    self.set(|s| s.last_error = Some(error));
                    failures += 1;
                    match self.backoff(&mut ctl, failures).await {
                        Some(next) => {
                            (enabled, failures) = next;
                            continue;
                        }
                        None => return,
                    }
                }
            };
            let pid = child.id();
            let started = Instant::now();
            if !first_start {
                self.set(|s| s.restarts += 1);
            }
            first_start = false;
            self.set(|s| {
                s.pid = pid;
                s.started_at = Some(started);
                s.state = if spec.health.is_some() { ProcState::Starting } else { ProcState::Ready };
            });
            tracing::debug!(process = %name, replica, pid, "started");
            let name_arc: Arc<str> = name.as_str().into();
            if let Some(out) = child.stdout.take() {
                tokio::spawn(output::forward(out, name_arc.clone(), replica, "stdout", log_file.clone()));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(output::forward(err, name_arc, replica, "stderr", log_file.clone()));
            }
            let (health_tx, mut health_rx) = mpsc::channel(4);
            if let Some(check) = &spec.health {
                let mut check = check.clone();
                check.probe = match check.probe {
                    crate::config::Probe::Http { url, body_contains } => {
                        crate::config::Probe::Http { url: self.slot.expand(&spec, &url), body_contains }
                    }
                    crate::config::Probe::Tcp { address } => {
                        crate::config::Probe::Tcp { address: self.slot.expand(&spec, &address) }
                    }
                    crate::config::Probe::Command { argv } => crate::config::Probe::Command {
                        argv: argv.iter().map(|a| self.slot.expand(&spec, a)).collect(),
                    },
                };
                tokio::spawn(health::watch(check, self.http.clone(), health_tx));
            } else {
                drop(health_tx);
            }

            let ended = self.supervise(&mut child, &mut health_rx, &mut ctl).await;
            drop(health_rx); // stops the health checker
            let ran = started.elapsed();
            match ended {
                Ended::Exited(status) => {
                    // Whatever the leader left behind in its group goes with it.
                    if let Some(pgid) = pid {
                        spawn::signal_group(pgid, libc::SIGKILL);
                    }
                    let exit = describe(status);
                    let success = status.code().is_some_and(|c| spec.success_exit_codes.contains(&c));
                    let restart = match spec.restart {
                        Restart::Always => true,
                        Restart::OnFailure => !success,
                        Restart::Never => false,
                    };
                    self.set(|s| {
                        s.last_exit = Some(exit.clone());
                        s.pid = None;
                        s.started_at = None;
                    });
                    if !restart {
                        tracing::info!(process = %name, replica, "{exit}; not restarted (restart = {:?})", spec.restart);
                        enabled = false;
                        continue;
                    }
                    if ran >= spec.backoff.reset_after {
                        failures = 0;
                    }
                    failures += 1;
                    tracing::warn!(process = %name, replica, "{exit} after {}ms; restarting", ran.as_millis());
                }
                Ended::Unhealthy(reason) => {
                    tracing::warn!(process = %name, replica, "unhealthy ({reason}); restarting");
                    self.set(|s| {
                        s.state = ProcState::Unhealthy;
                        s.last_error = Some(format!("unhealthy: {reason}"));
                    });
                    let status = spawn::stop(&mut child, spec.stop_signal, spec.stop_grace).await;
                    self.set(|s| s.last_exit = status.map(describe));
                    if ran >= spec.backoff.reset_after {
                        failures = 0;
                    }
                    failures += 1;
                }
                Ended::Control(control) => {
                    let status = spawn::stop(&mut child, spec.stop_signal, spec.stop_grace).await;
                    self.set(|s| s.last_exit = status.map(describe));
                    match control {
                        Control::Restart => {
                            tracing::info!(process = %name, replica, "restarting on request");
                            failures = 0;
                            starts.clear();
                            continue;
                        }
                        Control::Stop(ack) => {
                            tracing::info!(process = %name, replica, "stopped on request");
                            enabled = false;
                            let _ = ack.send(());
                            continue;
                        }
                        Control::Shutdown(ack) => {
                            self.set(|s| {
                                s.state = ProcState::Stopped;
                                s.pid = None;
                                s.started_at = None;
                            });
                            let _ = ack.send(());
                            return;
                        }
                        Control::Start => unreachable!("supervise() does not end on Start"),
                    }
                }
            }
            match self.backoff(&mut ctl, failures).await {
                Some(next) => (enabled, failures) = next,
                None => return,
            }
        }
    }

    /// Not running (`Stopped` or `Failed`): waits for a control message saying what next.
    async fn idle(&self, ctl: &mut mpsc::Receiver<Control>, state: ProcState) -> Idle {
        self.set(|s| {
            s.state = state;
            s.pid = None;
            s.started_at = None;
        });
        match ctl.recv().await {
            Some(Control::Start) | Some(Control::Restart) => Idle::Resume,
            Some(Control::Stop(ack)) => {
                let _ = ack.send(());
                Idle::Stay
            }
            Some(Control::Shutdown(ack)) => {
                let _ = ack.send(());
                Idle::End
            }
            None => Idle::End,
        }
    }

    /// Waits for the child to exit, its health check to fail, or a control message.
    async fn supervise(
        &self,
        child: &mut Child,
        health: &mut mpsc::Receiver<Health>,
        ctl: &mut mpsc::Receiver<Control>,
    ) -> Ended {
        let mut health_open = true;
        loop {
            tokio::select! {
                status = child.wait() => {
                    return match status {
                        Ok(status) => Ended::Exited(status),
                        Err(e) => Ended::Unhealthy(format!("waiting for it failed: {e}")),
                    };
                }
                event = health.recv(), if health_open => match event {
                    Some(Health::Ready) => self.set(|s| s.state = ProcState::Ready),
                    Some(Health::Unhealthy(reason)) => return Ended::Unhealthy(reason),
                    None => health_open = false,
                },
                control = ctl.recv() => match control {
                    Some(Control::Start) => {}
                    Some(other) => return Ended::Control(other),
                    None => return Ended::Control(Control::Shutdown(oneshot::channel().0)),
                },
            }
        }
    }

    /// Sleeps the backoff for `failures`, interruptible by control. Returns the new
    /// (enabled, failures), or `None` to end the task.
    async fn backoff(&self, ctl: &mut mpsc::Receiver<Control>, failures: u32) -> Option<(bool, u32)> {
        let delay = self.spec.backoff.delay(failures);
        if delay.is_zero() {
            return Some((true, failures));
        }
        self.set(|s| s.state = ProcState::Backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Some((true, failures)),
            control = ctl.recv() => match control {
                Some(Control::Start) | Some(Control::Restart) => Some((true, 0)),
                Some(Control::Stop(ack)) => {
                    let _ = ack.send(());
                    Some((false, 0))
                }
                Some(Control::Shutdown(ack)) => {
                    let _ = ack.send(());
                    None
                }
                None => None,
            },
        }
    }
}

/// `exited with code 1`, `killed by signal 9`.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

impl InstanceStatus {
    pub fn new(spec: &ProcessSpec, slot: &Slot) -> InstanceStatus {
        InstanceStatus {
            name: spec.name.clone(),
            replica: slot.replica,
            pid: None,
            port: slot.port,
            state: ProcState::Stopped,
            restarts: 0,
            last_exit: None,
            last_error: None,
            uptime_s: None,
            started_at: None,
        }
    }

    /// A copy with `uptime_s` filled in.
    pub fn snapshot(&self) -> InstanceStatus {
        let mut s = self.clone();
        s.uptime_s = s.started_at.map(|t| (t.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        s
    }
}
