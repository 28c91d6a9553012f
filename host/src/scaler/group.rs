//! The control loop of one scaling group: every interval, read the metric windows from the
//! store, ask the backend for capacity, ask the policy, apply the guardrails, have the backend
//! act (unless dry-run), and journal all of it. Missing data or a failing policy holds the
//! group (it never scales down on missing data), or scales to the fallback capacity after the
//! configured number of failures in a row.

use super::guardrails::{decide, decide_tier, History};
use crate::cluster::{Cluster, Role, SharedDecision, SharedState};
use crate::config::GroupSpec;
use crate::plugins::bindings::{Bounds, Group, PolicyContext, Target, Window};
use crate::plugins::registry::Registry;
use crate::store::{now_ms, Action, JournalEntry, Labels, Selector, Store};
use serde::Serialize;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// What `/status` shows of a group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub current: Option<u32>,
    pub ready: Option<u32>,
    pub desired: Option<u32>,
    /// Size tier now and decided, and its name (vertical scaling).
    pub tier: Option<u32>,
    pub desired_tier: Option<u32>,
    pub tier_name: Option<String>,
    pub dry_run: bool,
    pub last_action: Option<Action>,
    pub last_reason: Option<String>,
    pub last_ms: Option<i64>,
    pub failures_in_a_row: u32,
    /// What is wrong with the group's configuration given the plugins loaded ("policy `x` is
    /// not loaded; did you mean `y`?").
    pub problems: Vec<String>,
    /// From the configuration: what the group reads and within which bounds (for the page).
    pub min: u32,
    pub max: u32,
    pub interval_ms: u64,
    pub policy: String,
    pub backend: String,
    pub metrics: Vec<MetricRef>,
    /// With `[[group.schedule]]`: the bounds in force, the open windows, the next change.
    pub schedule: Option<super::schedule::Effective>,
    /// For `coordination = "cluster"`: this node's role, the leader, the fencing revision.
    pub cluster: Option<crate::cluster::GroupView>,
}

/// A metric a group reads: name, labels and window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricRef {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub window_ms: u64,
}

impl GroupStatus {
    /// The configuration's part of the status.
    pub fn configured(mut self, spec: &GroupSpec) -> GroupStatus {
        self.min = spec.behavior.min;
        self.max = spec.behavior.max;
        self.interval_ms = spec.interval.as_millis() as u64;
        self.policy = spec.policy.clone();
        self.backend = spec.backend.clone();
        self.metrics = spec
            .metrics
            .iter()
            .map(|m| MetricRef {
                name: m.name.clone(),
                labels: m.labels.iter().cloned().collect(),
                window_ms: m.window.as_millis() as u64,
            })
            .collect();
        self
    }
}

/// Rebuilds stabilization and cooldown memory from the journal, so a restart cannot cause a
/// burst of actions.
pub fn history_from_journal(spec: &GroupSpec, entries: &[JournalEntry]) -> History {
    let mut history = History::default();
    for e in entries {
        if let Some(r) = e.recommendation {
            // Replaying a recommendation records it exactly as it was recorded live.
            decide(r, e.current, e.t_ms, &spec.behavior, &mut history);
        }
        if e.action == Action::Scale {
            if e.target != e.current {
                history.actions.push_back((e.t_ms, e.current, e.target));
            }
            if e.target_tier != e.tier {
                history.last_tier_change_ms = Some(e.t_ms);
            }
        }
    }
    history
}

/// Runs the group's loop. `specs` carries the group's configuration: a reload sends a new one
/// (taken at the next tick, with history kept), and dropping the sender ends the loop.
pub async fn run(
    mut specs: tokio::sync::watch::Receiver<Arc<GroupSpec>>,
    registry: Weak<Registry>,
    store: Store,
    status: Arc<Mutex<GroupStatus>>,
    cluster: Option<Arc<Cluster>>,
) {
    let mut spec = specs.borrow_and_update().clone();
    let lookback = spec.behavior.up.stabilization_ms.max(spec.behavior.down.stabilization_ms).max(3_600_000);
    let history = match store.decisions(Some(&spec.name), now_ms() - lookback) {
        Ok(entries) => history_from_journal(&spec, &entries),
        Err(e) => {
            tracing::error!(group = %spec.name, "reading the journal: {e}; starting without history");
            History::default()
        }
    };
    let mut mem = Memory { history, failures: 0, applied: Vec::new(), last_decision: None };
    // The reason last logged for an evaluation without a recommendation: the same one again is
    // not logged again (the journal has every evaluation).
    let mut unchanged_reason = None;
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match specs.has_changed() {
            Err(_) => return, // the group was removed
            Ok(true) => {
                spec = specs.borrow_and_update().clone();
                if tick.period() != spec.interval {
                    tick = tokio::time::interval(spec.interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                }
                status.lock().unwrap_or_else(|p| p.into_inner()).dry_run = spec.dry_run;
            }
            Ok(false) => {}
        }
        let Some(registry) = registry.upgrade() else { return };
        // Wait for the group's plugins while files are being loaded (at start-up, or a plugin
        // copied in just before the reload that added the group).
        if (!registry.started() || !registry.loading().is_empty())
            && (registry.get(&spec.policy).is_none() || registry.get(&spec.backend).is_none())
        {
            continue;
        }
        let cluster = cluster.as_deref().filter(|_| spec.coordinated);
        let token = match cluster {
            Some(c) => match lead(c, &spec, &mut mem).await {
                Some(token) => Some(token),
                None => {
                    status.lock().unwrap_or_else(|p| p.into_inner()).cluster = c.view(&spec.name);
                    continue;
                }
            },
            None => None,
        };
        let fence = cluster.zip(token).map(|(cluster, token)| Fence { cluster, token });
        let bounds =
            super::schedule::effective(spec.behavior.min, spec.behavior.max, &spec.schedules, now_ms());
        let (entry, tier_name, committed) =
            evaluate(&spec, &registry, &store, &mut mem, &bounds, fence.as_ref()).await;
        mem.history.prune(entry.t_ms, &spec.behavior);
        if let (Some(f), false) = (&fence, committed) {
            // Every evaluation's recommendation goes into the shared state: a new leader
            // continues the stabilization window.
            if let Err(why) = f.commit(&spec.name, &mem, None).await {
                tracing::debug!(group = %spec.name, "{why}");
            }
        }
        if let Err(e) = store.journal(&entry) {
            tracing::error!(group = %spec.name, "journaling a decision: {e}");
        }
        // The outcome in parentheses only when there is one (no stray `()`).
        let outcome = if entry.outcome.is_empty() { String::new() } else { format!(" ({})", entry.outcome) };
        match entry.action {
            _ if entry.target_tier != entry.tier => {
                tracing::info!(group = %spec.name, "{:?} {} → {} replicas, tier {} → {}: {}{outcome}", entry.action, entry.current, entry.target, entry.tier, entry.target_tier, entry.reason)
            }
            Action::Hold => {
                tracing::debug!(group = %spec.name, "hold at {}: {}", entry.current, entry.reason)
            }
            Action::NoRecommendation if unchanged_reason.as_ref() == Some(&entry.reason) => {}
            Action::NoRecommendation => {
                tracing::info!(group = %spec.name, "no recommendation, holding at {}: {}", entry.current, entry.reason);
                unchanged_reason = Some(entry.reason.clone());
            }
            _ => {
                tracing::info!(group = %spec.name, "{:?} {} → {}: {}{outcome}", entry.action, entry.current, entry.target, entry.reason)
            }
        }
        if entry.action != Action::NoRecommendation {
            unchanged_reason = None;
        }
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        s.current = Some(entry.current);
        s.ready = Some(entry.ready);
        s.desired = Some(entry.target);
        s.tier = Some(entry.tier);
        s.desired_tier = Some(entry.target_tier);
        s.tier_name = tier_name.clone();
        s.last_action = Some(entry.action);
        s.last_reason = Some(entry.reason.clone());
        s.last_ms = Some(entry.t_ms);
        s.failures_in_a_row = mem.failures;
        s.cluster = cluster.and_then(|c| c.view(&spec.name));
        s.schedule = (!spec.schedules.is_empty()).then_some(bounds);
    }
}

/// Whether this agent may act on a cluster group now: its fencing token if it leads. On taking
/// over, the group's decision state is read from etcd first (the last leader's stabilization
/// and cooldown memory), so the new leader continues it; its first evaluation describes the
/// backend before anything else, reconciling with what exists.
async fn lead(cluster: &Cluster, spec: &GroupSpec, mem: &mut Memory) -> Option<i64> {
    let Role::Leader { token, takeover } = cluster.role(&spec.name).await else { return None };
    if takeover {
        match cluster.load(&spec.name).await {
            Ok(Some(state)) => {
                let left_by = crate::text::clean(&state.leader, 128);
                tracing::info!(group = %spec.name, "continuing the decision state `{left_by}` left (fencing revision {})", state.token);
                mem.history = state.history;
                mem.last_decision = state.decision;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(group = %spec.name, "reading the group's decision state: {e}; holding");
                return None;
            }
        }
    }
    Some(token)
}

/// What a group's loop remembers between evaluations.
struct Memory {
    history: History,
    failures: u32,
    /// Scheduled `desired` capacities already applied (each window opening once).
    applied: Vec<(String, i64)>,
    /// A cluster group's last decision, as recorded in etcd.
    last_decision: Option<SharedDecision>,
}

/// The right to act on a cluster group: its leader key's creation revision.
struct Fence<'a> {
    cluster: &'a Cluster,
    token: i64,
}

impl Fence<'_> {
    /// Records the group's state — with `decision`, before acting on it — guarded by the token.
    /// `Err(why)` when this agent must not act: deposed, or etcd unreachable (freeze).
    async fn commit(
        &self,
        group: &str,
        mem: &Memory,
        decision: Option<SharedDecision>,
    ) -> Result<(), String> {
        let mut history = mem.history.clone();
        if let Some(d) = &decision {
            history.actions.push_back((d.t_ms, d.from, d.to));
        }
        let decision = decision.or_else(|| mem.last_decision.clone());
        let state =
            SharedState { leader: self.cluster.spec.node.clone(), token: self.token, history, decision };
        match self.cluster.commit(group, self.token, &state).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "deposed: another agent leads `{group}` now (fencing revision {} is gone); not acting",
                self.token
            )),
            Err(e) => Err(format!("{e}; holding (freeze: no decision without the leader key)")),
        }
    }
}

async fn evaluate(
    spec: &GroupSpec,
    registry: &Registry,
    store: &Store,
    mem: &mut Memory,
    bounds: &super::schedule::Effective,
    fence: Option<&Fence<'_>>,
) -> (JournalEntry, Option<String>, bool) {
    let now = now_ms();
    // The bounds in force (the group's, or a schedule's) are what the policy and guardrails see.
    let behavior = super::guardrails::Behavior { min: bounds.min, max: bounds.max, ..spec.behavior.clone() };
    let mut entry = JournalEntry {
        t_ms: now,
        group: spec.name.clone(),
        current: 0,
        ready: 0,
        recommendation: None,
        reason: String::new(),
        target: 0,
        tier: 0,
        target_tier: 0,
        steps: serde_json::json!([]),
        action: Action::NoRecommendation,
        outcome: String::new(),
        backend_ms: None,
        inputs: serde_json::json!({}),
    };
    let group = Group { name: spec.name.clone(), params: spec.backend_params.clone() };
    let Some(backend) = registry.get(&spec.backend) else {
        entry.reason = format!("backend plugin `{}` is not loaded", spec.backend);
        return (entry, None, false);
    };
    let ceiling = spec.behavior.sanity_ceiling;
    let capacity = match backend.describe(group.clone(), ceiling).await {
        Ok(c) => c,
        Err(e) => {
            entry.reason = format!("backend `{}` describe failed: {e}", spec.backend);
            return (entry, None, false);
        }
    };
    (entry.current, entry.ready, entry.target) = (capacity.replicas, capacity.ready, capacity.replicas);
    (entry.tier, entry.target_tier) = (capacity.tier, capacity.tier);
    let tier_name = (!capacity.tier_name.is_empty()).then(|| capacity.tier_name.clone());

    // Every configured metric must have data: a policy never decides on part of its inputs.
    let mut windows = Vec::new();
    let mut missing = Vec::new();
    let mut inputs = serde_json::Map::new();
    for m in &spec.metrics {
        let sel = Selector { name: m.name.clone(), matchers: m.labels.clone() };
        let from = now - m.window.as_millis() as i64;
        let series = store.query(&sel, from, now + 1, None).unwrap_or_default();
        let with_data: Vec<_> = series.into_iter().filter(|s| !s.values.is_empty()).collect();
        if with_data.is_empty() {
            missing.push(m.name.clone());
            continue;
        }
        for s in with_data {
            let mean = s.values.iter().sum::<f64>() / s.values.len() as f64;
            inputs.insert(
                format!("{}{}", s.name, s.labels),
                serde_json::json!({"points": s.values.len(), "mean": mean}),
            );
            windows.push(Window {
                metric: s.name,
                labels: labels(&s.labels),
                length_ms: m.window.as_millis() as u64,
                timestamps_ms: s.timestamps_ms,
                values: s.values,
            });
        }
    }
    entry.inputs = serde_json::Value::Object(inputs);

    let recommendation = if !missing.is_empty() {
        Err(format!("no data for {} in the window; holding", missing.join(", ")))
    } else {
        match registry.get(&spec.policy) {
            None => Err(format!("policy plugin `{}` is not loaded", spec.policy)),
            Some(policy) => {
                let ctx = PolicyContext {
                    group: spec.name.clone(),
                    now_ms: now,
                    current: capacity.clone(),
                    bounds: Bounds {
                        min_replicas: bounds.min,
                        max_replicas: bounds.max,
                        max_tier: spec.tiers.max,
                    },
                    windows,
                    params: spec.policy_params.clone(),
                };
                policy.evaluate(ctx).await.map_err(|e| format!("policy `{}`: {e}", spec.policy))
            }
        }
    };

    let mut wanted_tier = None;
    let target = match recommendation {
        Ok(r) => {
            wanted_tier = r.tier;
            let decision = decide(r.replicas, capacity.replicas, now, &behavior, &mut mem.history);
            entry.recommendation = Some(r.replicas);
            entry.steps = serde_json::Value::Array(decision.steps.iter().map(step_json).collect());
            match decision.plugin_fault {
                Some(fault) => {
                    mem.failures += 1;
                    entry.reason = format!("plugin fault: {fault}");
                }
                None => {
                    mem.failures = 0;
                    entry.reason = r.reason;
                }
            }
            decision.target
        }
        Err(why) => {
            mem.failures += 1;
            entry.reason = why;
            capacity.replicas
        }
    };
    let target = match spec.fallback {
        Some(f) if mem.failures >= f.after => {
            entry.reason =
                format!("{} ({} failures in a row: fallback to {})", entry.reason, mem.failures, f.capacity);
            f.capacity
        }
        _ => target,
    };
    let target = if spec.schedules.is_empty() {
        target
    } else {
        let fresh_ms = 2 * spec.interval.as_millis() as i64;
        let (target, steps) = super::schedule::apply(target, bounds, now, fresh_ms, &mut mem.applied);
        if let serde_json::Value::Array(all) = &mut entry.steps {
            all.extend(steps.iter().map(step_json));
        }
        target
    };
    entry.target = target;
    let (tier, tier_steps) = decide_tier(wanted_tier, capacity.tier, now, &spec.tiers, &mem.history);
    entry.target_tier = tier;
    if let serde_json::Value::Array(steps) = &mut entry.steps {
        steps.extend(tier_steps.iter().map(step_json));
    }
    if target == capacity.replicas && tier == capacity.tier {
        if entry.recommendation.is_some() {
            entry.action = Action::Hold;
        }
        return (entry, tier_name, false);
    }
    if spec.dry_run {
        entry.action = Action::WouldScale;
        entry.outcome =
            format!("dry run: would scale {} → {target}, tier {} → {tier}", capacity.replicas, capacity.tier);
        return (entry, tier_name, false);
    }
    let decision = SharedDecision {
        id: match fence {
            Some(f) => format!("{}@{}#{now}", spec.name, f.token),
            None => format!("{}#{now}", spec.name),
        },
        t_ms: now,
        from: capacity.replicas,
        to: target,
        tier,
    };
    let mut committed = false;
    if let Some(f) = fence {
        // Recorded before acting: a deposed leader's record fails, and it does not act.
        if let Err(why) = f.commit(&spec.name, mem, Some(decision.clone())).await {
            entry.action = Action::Hold;
            entry.outcome = why;
            return (entry, tier_name, false);
        }
        mem.last_decision = Some(decision.clone());
        committed = true;
    }
    let started = Instant::now();
    let result = backend.scale(group, Target { replicas: target, tier }, ceiling, Some(decision.id)).await;
    entry.backend_ms = Some(started.elapsed().as_millis() as u64);
    match result {
        Ok(outcome) => {
            let reached = kept_busy(&mut entry, capacity.replicas, target, outcome.capacity.replicas);
            entry.action = if reached == capacity.replicas && tier == capacity.tier {
                Action::Hold
            } else {
                Action::Scale
            };
            entry.outcome = outcome.detail;
            if reached != capacity.replicas {
                mem.history.actions.push_back((now, capacity.replicas, reached));
            }
            if tier != capacity.tier {
                mem.history.last_tier_change_ms = Some(now);
            }
        }
        Err(e) => {
            entry.action = Action::ScaleFailed;
            entry.outcome = format!("backend `{}` scale failed: {e}", spec.backend);
        }
    }
    (entry, tier_name, committed)
}

/// A scale-in the backend made smaller than asked — it kept units that reported busy rather
/// than kill their work — is journaled as a step of its own; returns the replicas reached.
fn kept_busy(entry: &mut JournalEntry, current: u32, target: u32, after: u32) -> u32 {
    if target >= current || after <= target {
        return target;
    }
    let reached = after.min(current);
    let why = "the backend kept units that report busy rather than stop their work (see its account)";
    let step = super::guardrails::Step {
        guardrail: "busy units",
        before: target as f64,
        after: reached as f64,
        why: why.into(),
    };
    if let serde_json::Value::Array(all) = &mut entry.steps {
        all.push(step_json(&step));
    }
    entry.target = reached;
    reached
}

fn step_json(s: &super::guardrails::Step) -> serde_json::Value {
    serde_json::json!({"guardrail": s.guardrail, "before": s.before, "after": s.after, "why": s.why})
}

fn labels(l: &Labels) -> Vec<crate::plugins::bindings::Label> {
    l.iter().map(|(k, v)| crate::plugins::bindings::Label { key: k.into(), value: v.into() }).collect()
}
