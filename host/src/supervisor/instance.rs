//! One task per instance: start it, await its exit (no polling), health-check it, restart it
//! with backoff, stop it on request. The task owns the child; nothing else signals it.

use super::health::{self, Health};
use super::output::{self, Output, RotatingFile, Sinks};
use super::spawn::{self, Slot};
use super::tree::{self, Members};
use crate::config::{Backoff, ProcessSpec, Restart};
use serde::Serialize;
use spawn::Child;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

impl ProcState {
    /// The state in words, for people (a scale-in's reasons).
    pub fn describe(self) -> &'static str {
        match self {
            ProcState::Starting => "starting",
            ProcState::Ready => "ready",
            ProcState::Unhealthy => "unhealthy",
            ProcState::Backoff => "waiting to restart",
            ProcState::Stopped => "stopped",
            ProcState::Failed => "failed",
        }
    }
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
    /// The instance's cgroup, when the supervisor uses cgroups.
    pub cgroup: Option<String>,
    /// `memory_max`/`cpu_max` that could not be applied, and why.
    pub limits_error: Option<String>,
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
    /// Where its credentials folder goes.
    pub credentials: Arc<std::path::Path>,
    pub http: reqwest::Client,
    pub members: Members,
    pub output: Arc<Output>,
    pub sockets: Arc<super::sockets::Sockets>,
}

/// Without a health check, an instance counts as having been up once it ran this long
/// (supervisord's `startsecs`): a program that exits at once is a crash loop from the start.
const UP_WITHOUT_CHECK: Duration = Duration::from_secs(1);

/// Failures in a row, and the delay each costs. The first failure of an instance that was up
/// (ready by its health check, running for 1 s without one, or running for
/// `backoff.reset_after`) is restarted at once, as supervisord and systemd do; backoff is for
/// crash loops and applies from the second failure in a row.
#[derive(Debug, Default)]
struct Failures {
    in_row: u32,
    backed_off: u32,
}

impl Failures {
    /// A run of `ran` ended in failure; the delay before the next start.
    fn failed(&mut self, backoff: &Backoff, ran: Duration, was_up: bool) -> Duration {
        if ran >= backoff.reset_after {
            *self = Failures::default();
        }
        self.in_row += 1;
        if self.in_row == 1 && (was_up || ran >= backoff.reset_after) {
            return Duration::ZERO;
        }
        self.backed_off += 1;
        backoff.delay(self.backed_off)
    }
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

/// What the loop does next.
enum Next {
    /// Start again after this delay (zero: at once).
    Start(Duration),
    /// Start again now with a clean slate (a restart request).
    Fresh,
    /// Stay down until told otherwise.
    Down,
    /// The task ends.
    End,
}

/// A child that is running.
struct Running {
    child: Child,
    pid: Option<u32>,
    started: Instant,
}

impl Instance {
    fn set(&self, f: impl FnOnce(&mut InstanceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    pub async fn run(self, mut ctl: mpsc::Receiver<Control>) {
        let log_file = self.open_log_file();
        let mut failures = Failures::default();
        let mut starts: VecDeque<Instant> = VecDeque::new();
        let mut next = Next::Start(Duration::ZERO);
        let mut first_start = true;
        loop {
            next = match next {
                Next::End => {
                    super::launch::remove_credentials(&self.spec, &self.slot, &self.credentials);
                    return;
                }
                Next::Down => match self.idle(&mut ctl, ProcState::Stopped).await {
                    Idle::Resume => Next::Fresh,
                    Idle::Stay => Next::Down,
                    Idle::End => Next::End,
                },
                Next::Fresh => {
                    (failures, starts) = (Failures::default(), VecDeque::new());
                    Next::Start(Duration::ZERO)
                }
                Next::Start(delay) if !delay.is_zero() => self.backoff(&mut ctl, delay).await,
                Next::Start(_) => {
                    if self.over_start_limit(&mut starts) {
                        match self.idle(&mut ctl, ProcState::Failed).await {
                            Idle::Resume => Next::Fresh,
                            Idle::Stay => Next::Down,
                            Idle::End => Next::End,
                        }
                    } else {
                        starts.push_back(Instant::now());
                        match self.start(&log_file, first_start) {
                            Err(()) => {
                                Next::Start(failures.failed(&self.spec.backoff, Duration::ZERO, false))
                            }
                            Ok(running) => {
                                first_start = false;
                                self.watch(running, &mut ctl, &mut failures).await
                            }
                        }
                    }
                }
            };
        }
    }

    fn open_log_file(&self) -> Option<Arc<Mutex<RotatingFile>>> {
        let cfg = self.spec.log.as_ref()?;
        match RotatingFile::open(cfg, self.name(), self.slot.replica) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                let replica = self.slot.replica;
                tracing::error!(process = %self.name(), replica, "cannot open its log file in {}: {e}", cfg.dir.display());
                None
            }
        }
    }

    /// The start limit: too many starts too fast means something is wrong; stop trying.
    fn over_start_limit(&self, starts: &mut VecDeque<Instant>) -> bool {
        let limit = self.spec.start_limit;
        let now = Instant::now();
        while starts.front().is_some_and(|t| now.duration_since(*t) > limit.interval) {
            starts.pop_front();
        }
        if (starts.len() as u32) < limit.count {
            return false;
        }
        let (name, replica) = (self.name(), self.slot.replica);
        tracing::error!(
            process = %name, replica,
            "started {} times within {}; giving up until `agent restart {name}`",
            starts.len(), crate::duration::format(limit.interval)
        );
        true
    }

    /// Spawns the child into its cgroup and wires its output and health check.
    fn start(&self, log_file: &Option<Arc<Mutex<RotatingFile>>>, first: bool) -> Result<Running, ()> {
        let spec = &self.spec;
        let replica = self.slot.replica;
        let spawned =
            self.sockets.fds().map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrInUse, e)).and_then(
                |fds| {
                    let place = spawn::Place { marker: &self.marker, credentials: &self.credentials };
                    spawn::start(spec, &self.slot, place, &self.members, &fds)
                },
            );
        let started = match spawned {
            Ok(started) => started,
            Err(e) => {
                let error = format!("cannot start `{}`: {e}", spec.command);
                tracing::error!(process = %self.name(), replica, "{error}");
                self.set(|s| s.last_error = Some(error));
                return Err(());
            }
        };
        let spawn::Started { child, stdout, stderr } = started;
        let pid = child.id();
        let started = Instant::now();
        self.set(|s| {
            s.restarts += u64::from(!first);
            s.pid = pid;
            s.started_at = Some(started);
            s.state = if spec.health.is_some() { ProcState::Starting } else { ProcState::Ready };
        });
        tracing::debug!(process = %self.name(), replica, pid, "started");
        let sinks = Sinks {
            process: self.name().into(),
            replica,
            log: spec.log_output,
            ring: self.output.clone(),
            file: log_file.clone(),
        };
        tokio::spawn(output::forward(stdout, "stdout", sinks.clone()));
        tokio::spawn(output::forward(stderr, "stderr", sinks));
        Ok(Running { child, pid, started })
    }

    /// The health check of this instance, with its placeholders filled in.
    fn health_check(&self) -> Option<crate::config::HealthCheck> {
        use crate::config::Probe;
        let (spec, slot) = (&self.spec, &self.slot);
        let mut check = spec.health.clone()?;
        check.probe = match check.probe {
            Probe::Http { url, body_contains } => Probe::Http { url: slot.expand(spec, &url), body_contains },
            Probe::Tcp { address } => Probe::Tcp { address: slot.expand(spec, &address) },
            Probe::Command { argv } => {
                Probe::Command { argv: argv.iter().map(|a| slot.expand(spec, a)).collect() }
            }
        };
        Some(check)
    }

    /// Runs the child until it ends; decides what comes next.
    async fn watch(
        &self,
        mut run: Running,
        ctl: &mut mpsc::Receiver<Control>,
        failures: &mut Failures,
    ) -> Next {
        let (health_tx, mut health_rx) = mpsc::channel(4);
        if let Some(check) = self.health_check() {
            let helpers = super::launch::Helpers::new(self.spec.clone(), self.slot.clone());
            tokio::spawn(health::watch(check, self.http.clone(), helpers, health_tx));
        } else {
            drop(health_tx);
        }
        let mut was_ready = false;
        let ended = self.supervise(&mut run.child, &mut health_rx, ctl, &mut was_ready).await;
        drop(health_rx); // stops the health checker
        let ran = run.started.elapsed();
        let was_up = was_ready || (self.spec.health.is_none() && ran >= UP_WITHOUT_CHECK);
        let (name, replica) = (self.name(), self.slot.replica);
        match ended {
            Ended::Exited(status) => {
                if let Some(pid) = run.pid {
                    tree::leader_reaped(pid);
                }
                // Whatever the leader left behind goes with it, whatever group or session it is in.
                spawn::finish(&self.members, run.pid).await;
                let exit = describe(status);
                self.set(|s| {
                    s.last_exit = Some(exit.clone());
                    s.pid = None;
                    s.started_at = None;
                });
                let success = status.code().is_some_and(|c| self.spec.success_exit_codes.contains(&c));
                let restart = match self.spec.restart {
                    Restart::Always => true,
                    Restart::OnFailure => !success,
                    Restart::Never => false,
                };
                if !restart {
                    tracing::info!(process = %name, replica, "{exit}; not restarted (restart = {:?})", self.spec.restart);
                    return Next::Down;
                }
                let delay = failures.failed(&self.spec.backoff, ran, was_up);
                tracing::warn!(
                    process = %name, replica,
                    "{exit} after {}ms; restarting {}",
                    ran.as_millis(),
                    if delay.is_zero() { "now".to_string() } else { format!("in {}", crate::duration::format(delay)) }
                );
                Next::Start(delay)
            }
            Ended::Unhealthy(reason) => {
                tracing::warn!(process = %name, replica, "unhealthy ({reason}); restarting");
                self.set(|s| {
                    s.state = ProcState::Unhealthy;
                    s.last_error = Some(format!("unhealthy: {reason}"));
                });
                self.stop_child(&mut run).await;
                Next::Start(failures.failed(&self.spec.backoff, ran, was_up))
            }
            Ended::Control(control) => {
                self.stop_child(&mut run).await;
                match control {
                    Control::Restart => {
                        tracing::info!(process = %name, replica, "restarting on request");
                        Next::Fresh
                    }
                    Control::Stop(ack) => {
                        tracing::info!(process = %name, replica, "stopped on request");
                        self.set(|s| s.state = ProcState::Stopped);
                        let _ = ack.send(());
                        Next::Down
                    }
                    Control::Shutdown(ack) => {
                        self.set(|s| s.state = ProcState::Stopped);
                        let _ = ack.send(());
                        Next::End
                    }
                    Control::Start => unreachable!("supervise() does not end on Start"),
                }
            }
        }
    }

    /// Stops the running child and everything it started.
    async fn stop_child(&self, run: &mut Running) {
        let status =
            spawn::stop(&mut run.child, &self.members, self.spec.stop_signal, self.spec.stop_grace).await;
        self.set(|s| {
            s.last_exit = status.map(describe);
            s.pid = None;
            s.started_at = None;
        });
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
        was_ready: &mut bool,
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
                    Some(Health::Ready) => {
                        *was_ready = true;
                        self.set(|s| s.state = ProcState::Ready);
                    }
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

    /// Waits `delay` before the next start, interruptible by control.
    async fn backoff(&self, ctl: &mut mpsc::Receiver<Control>, delay: Duration) -> Next {
        self.set(|s| s.state = ProcState::Backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Next::Start(Duration::ZERO),
            control = ctl.recv() => match control {
                Some(Control::Start) | Some(Control::Restart) => Next::Fresh,
                Some(Control::Stop(ack)) => {
                    let _ = ack.send(());
                    Next::Down
                }
                Some(Control::Shutdown(ack)) => {
                    let _ = ack.send(());
                    Next::End
                }
                None => Next::End,
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
            // Launched: its task is about to start it.
            state: ProcState::Starting,
            restarts: 0,
            last_exit: None,
            last_error: None,
            uptime_s: None,
            cgroup: None,
            limits_error: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_first_crash_of_an_instance_that_was_up_restarts_at_once_then_backoff_applies() {
        let (b, mut f) = (backoff(), Failures::default());
        let two_s = Duration::from_secs(2);
        assert_eq!(f.failed(&b, two_s, true), Duration::ZERO);
        assert_eq!(f.failed(&b, two_s, true), Duration::from_secs(1));
        assert_eq!(f.failed(&b, two_s, true), Duration::from_secs(2));
        assert_eq!(f.failed(&b, two_s, true), Duration::from_secs(4));
        // Up for reset_after: a new first failure.
        assert_eq!(f.failed(&b, Duration::from_secs(61), false), Duration::ZERO);
        assert_eq!(f.failed(&b, two_s, false), Duration::from_secs(1));
    }

    #[test]
    fn a_crash_loop_that_was_never_up_backs_off_from_the_first_failure() {
        let (b, mut f) = (backoff(), Failures::default());
        let quick = Duration::from_millis(50);
        let delays: Vec<u64> = (0..8).map(|_| f.failed(&b, quick, false).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
