//! Choosing and removing particular replicas: the facts a scale-in ranks them by (state, the
//! `[process.busy]` probe asked now), and removal with `[process.drain]` — drain, wait until
//! idle or the deadline, stop; a replica still busy then is kept, never killed.

use super::spawn::Slot;
use super::{shutdown_all, ProcState, Supervisor, SupervisorError};
use crate::config::{BusyProbe, Hook, ProcessSpec};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest answer read from a busy probe or a hook.
const MAX_ANSWER: usize = 4096;
/// How often a draining replica's busy probe is asked again.
const POLL: Duration = Duration::from_millis(250);

pub use crate::plugins::sandbox::{Removal, ReplicaFacts};

impl Supervisor {
    /// The replica indices of `name` that exist, in order.
    pub fn replica_indices(&self, name: &str) -> Option<Vec<u32>> {
        let all: Vec<u32> = self.status().into_iter().filter(|s| s.name == name).map(|s| s.replica).collect();
        (!all.is_empty() || self.known(name)).then_some(all)
    }

    /// Each of `replicas`' state and its busy probe's answer, asked of all at once.
    pub async fn inspect(&self, name: &str, replicas: &[u32]) -> Result<Vec<ReplicaFacts>, SupervisorError> {
        let spec = self.spec_of(name, replicas).await?;
        let states = self.status();
        let mut probes = tokio::task::JoinSet::new();
        for &replica in replicas {
            let (spec, http) = (spec.clone(), self.http.clone());
            probes.spawn(async move { (replica, ask_busy(&spec, replica, &http).await) });
        }
        let mut facts = Vec::new();
        while let Some(Ok((replica, busy))) = probes.join_next().await {
            let state = states
                .iter()
                .find(|s| s.name == name && s.replica == replica)
                .map_or(ProcState::Stopped, |s| s.state);
            facts.push(ReplicaFacts {
                replica,
                ready: state == ProcState::Ready,
                state: state.describe(),
                busy,
            });
        }
        facts.sort_by_key(|f| f.replica);
        Ok(facts)
    }

    /// Removes these replicas of `name`, all at once: drains each, waits until it is idle (or
    /// the drain deadline), and stops it — unless it still reports busy, then it is kept and
    /// its drain undone. Waits for all of that.
    pub async fn remove_replicas(&self, name: &str, replicas: &[u32]) -> Result<Removal, SupervisorError> {
        let spec = self.spec_of(name, replicas).await?;
        let mut drains = tokio::task::JoinSet::new();
        for &replica in replicas {
            let (spec, http) = (spec.clone(), self.http.clone());
            drains.spawn(async move { (replica, drain(&spec, replica, &http).await) });
        }
        let mut removal = Removal::default();
        while let Some(Ok((replica, outcome))) = drains.join_next().await {
            match outcome {
                Ok(()) => removal.removed.push(replica),
                Err(why) => removal.kept.push((replica, why)),
            }
        }
        removal.removed.sort_unstable();
        removal.kept.sort_unstable();
        let stopping = {
            let mut programs = self.programs.lock().await;
            let program = programs.get_mut(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
            let gone: Vec<_> = removal.removed.iter().filter_map(|r| program.instances.remove(r)).collect();
            let count = program.instances.len();
            tracing::info!(process = %name, "removed replicas {:?}, kept {:?}: {count} left", removal.removed, removal.kept);
            gone
        };
        self.refresh_statuses().await;
        shutdown_all(stopping, true).await;
        Ok(removal)
    }

    /// The spec of `name`, once every one of `replicas` is known to exist.
    async fn spec_of(&self, name: &str, replicas: &[u32]) -> Result<Arc<ProcessSpec>, SupervisorError> {
        let programs = self.programs.lock().await;
        let program = programs.get(name).ok_or_else(|| SupervisorError::Unknown(name.to_string()))?;
        if let Some(missing) = replicas.iter().find(|r| !program.instances.contains_key(r)) {
            return Err(SupervisorError::NoReplica(name.to_string(), *missing));
        }
        Ok(program.spec.clone())
    }
}

/// The busy probe's answer for one replica, within its timeout; `Ok(None)` without a probe.
async fn ask_busy(spec: &ProcessSpec, replica: u32, http: &reqwest::Client) -> Result<Option<f64>, String> {
    let Some(probe) = &spec.busy else { return Ok(None) };
    ask(probe, spec, replica, http).await.map(Some)
}

async fn ask(
    probe: &BusyProbe,
    spec: &ProcessSpec,
    replica: u32,
    http: &reqwest::Client,
) -> Result<f64, String> {
    let answer = run(&probe.hook, spec, replica, http, "GET", probe.timeout).await?;
    parse_busy(&answer).ok_or_else(|| {
        format!("busy probe answered {:?}, not a number", crate::text::clean(answer.trim(), 40))
    })
}

/// `3`, `0.5`, `true`/`false`, `busy`/`idle` → work in flight (never negative).
pub fn parse_busy(answer: &str) -> Option<f64> {
    match answer.trim() {
        "true" | "busy" => Some(1.0),
        "false" | "idle" => Some(0.0),
        text => text.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0),
    }
}

/// Drains one replica and waits until it is idle; `Err(why)` when it must be kept.
async fn drain(spec: &ProcessSpec, replica: u32, http: &reqwest::Client) -> Result<(), String> {
    let deadline_len = spec.drain.as_ref().map_or(Duration::ZERO, |d| d.deadline);
    let deadline = Instant::now() + deadline_len;
    if let Some(d) = &spec.drain {
        if let Err(why) = run(&d.hook, spec, replica, http, "POST", deadline_len).await {
            // The replica may be idle all the same: the busy probe decides below.
            tracing::warn!(process = %spec.name, replica, "drain hook: {why}");
        }
    }
    let Some(probe) = &spec.busy else { return Ok(()) };
    loop {
        match ask(probe, spec, replica, http).await {
            Ok(busy) if busy > 0.0 && Instant::now() + POLL < deadline => {}
            Ok(busy) if busy > 0.0 => {
                let why = match &spec.drain {
                    Some(_) => {
                        format!(
                            "{busy} in flight at the drain deadline of {}",
                            crate::duration::format(deadline_len)
                        )
                    }
                    None => format!("busy: {busy} in flight"),
                };
                undo(spec, replica, http).await;
                return Err(why);
            }
            // Idle, or not answering (a replica that does not report busy is not kept).
            _ => return Ok(()),
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn undo(spec: &ProcessSpec, replica: u32, http: &reqwest::Client) {
    let Some((hook, deadline)) = spec.drain.as_ref().and_then(|d| Some((d.undo.as_ref()?, d.deadline)))
    else {
        return;
    };
    if let Err(why) = run(hook, spec, replica, http, "POST", deadline).await {
        tracing::warn!(process = %spec.name, replica, "undoing the drain: {why}");
    }
}

/// Runs a hook for one replica (placeholders filled in) within `limit`; its answer: the body
/// of a 2xx response, or the standard output of a command that exited 0.
async fn run(
    hook: &Hook,
    spec: &ProcessSpec,
    replica: u32,
    http: &reqwest::Client,
    method: &str,
    limit: Duration,
) -> Result<String, String> {
    let slot = Slot::new(spec, replica);
    let attempt = async {
        match hook {
            Hook::Http { url } => {
                let url = slot.expand(spec, url);
                let request = match method {
                    "GET" => http.get(&url),
                    _ => http.post(&url),
                };
                let mut response = request.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("{method} {url}: HTTP {}", response.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| format!("{method} {url}: {e}"))? {
                    body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER - body.len())]);
                    if body.len() >= MAX_ANSWER {
                        break;
                    }
                }
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            Hook::Command { argv } => {
                let argv: Vec<String> = argv.iter().map(|a| slot.expand(spec, a)).collect();
                use tokio::io::AsyncReadExt;
                let mut child = super::launch::helper(spec, &slot, &argv)
                    .map_err(|e| format!("{}: {e}", argv[0]))?
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("{}: {e}", argv[0]))?;
                let mut out = Vec::new();
                if let Some(stdout) = child.stdout.take() {
                    let _ = stdout.take(MAX_ANSWER as u64).read_to_end(&mut out).await;
                }
                let status = child.wait().await.map_err(|e| format!("{}: {e}", argv[0]))?;
                if !status.success() {
                    return Err(format!("{} exited with {status}", argv.join(" ")));
                }
                Ok(String::from_utf8_lossy(&out).into_owned())
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}", crate::duration::format(limit))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_busy;

    #[test]
    fn busy_answers_are_numbers_or_words() {
        assert_eq!(parse_busy("0\n"), Some(0.0));
        assert_eq!(parse_busy(" 3 "), Some(3.0));
        assert_eq!(parse_busy("true"), Some(1.0));
        assert_eq!(parse_busy("idle"), Some(0.0));
        assert_eq!(parse_busy("-1"), None);
        assert_eq!(parse_busy("NaN"), None);
        assert_eq!(parse_busy("<html>"), None);
    }
}
