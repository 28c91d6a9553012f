//! The control loop of one scaling group: every interval, read the metric windows from the
//! store, ask the backend for capacity, ask the policy, apply the guardrails, have the backend
//! act (unless dry-run), and journal all of it. Missing data or a failing policy holds the
//! group (it never scales down on missing data), or scales to the fallback capacity after the
//! configured number of failures in a row.

use crate::cluster::{Cluster, Role, SharedDecision, SharedState};
use crate::config::GroupSpec;
use crate::decide::decision::{decide, Advice, Decision, Observed};
use crate::decide::guardrails::History;
use crate::decide::schedule::Effective;
use crate::plugins::registry::Registry;
use crate::plugins::types::{
    Bounds, Capacity, Group, Label, Outcome, PolicyContext, Resized, Target, Volume, VolumeGroup, Window,
};
use crate::store::{Action, JournalEntry, Labels, Selector, Store};
use crate::timefmt::now_ms;
use serde::Serialize;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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
    /// `policy_config`'s `target`, when it is a number: the value the policy holds its metric at
    /// (target-tracking's), drawn as the page's target line. Nothing else of `policy_config` is
    /// shown: it may hold what only the policy should read.
    pub target: Option<f64>,
    /// With `[[group.schedule]]`: the bounds in force, the open windows, the next change.
    pub schedule: Option<crate::decide::schedule::Effective>,
    /// For `coordination = "cluster"`: this node's role, the leader, the fencing revision.
    pub cluster: Option<crate::cluster::GroupView>,
    /// For a storage group (`[group.storage]`): `current`, `desired`, `min` and `max` are GiB;
    /// the mount point grown, and the volume as the backend last described it.
    pub storage: Option<StorageStatus>,
    #[serde(skip)]
    pub volume: Option<Volume>,
}

/// What `/status` shows of a storage group beyond the numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageStatus {
    pub unit: &'static str,
    pub mount: Option<String>,
    pub volume: Option<String>,
    pub volume_status: Option<String>,
    pub pending: Option<String>,
    pub attachment: Option<String>,
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
        self.target = serde_json::from_str::<serde_json::Value>(&spec.policy_params)
            .ok()
            .and_then(|p| p.get("target")?.as_f64());
        self.storage = spec.storage.as_ref().map(|s| StorageStatus {
            unit: "GiB",
            mount: s.mount.as_ref().map(|m| m.display().to_string()),
            volume: self.volume.as_ref().map(|v| v.id.clone()),
            volume_status: self.volume.as_ref().map(|v| v.status.clone()),
            pending: self.volume.as_ref().and_then(|v| v.pending.clone()),
            attachment: self.volume.as_ref().map(|v| v.attachment.clone()).filter(|a| !a.is_empty()),
        });
        self
    }
}

/// Rebuilds stabilization and cooldown memory from the journal, so a restart cannot cause a
/// burst of actions.
pub fn history_from_journal(spec: &GroupSpec, entries: &[JournalEntry]) -> History {
    let mut history = History::default();
    for e in entries {
        if let Some(r) = e.recommendation {
            // Replaying a recommendation records it exactly as it was recorded live. A folded
            // row is a run of one whole recommendation at one capacity: live, the run was kept
            // as its latest evaluation, which is the row's time.
            crate::decide::guardrails::decide(r, e.current, e.t_ms, &spec.behavior, &mut history);
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
/// (taken at once, in force from the next tick, with history kept), and dropping the sender
/// ends the loop — after the evaluation in flight, if any, and for a cluster group this agent
/// leads, after deleting its leader key so another agent leads at its next evaluation.
pub async fn run(
    mut specs: tokio::sync::watch::Receiver<Arc<GroupSpec>>,
    registry: Weak<Registry>,
    store: Store,
    status: Arc<Mutex<GroupStatus>>,
    cluster: Option<Arc<Cluster>>,
) {
    let mut spec = specs.borrow_and_update().clone();
    let mut mem = Memory { decided: remembered(&spec, &store), ..Default::default() };
    // The reason last logged for an evaluation without a recommendation: the same one again is
    // not logged again (the journal has every evaluation).
    let mut unchanged_reason = None;
    let mut tick = ticker(spec.interval);
    let mut first = true;
    loop {
        tokio::select! {
            // A removal or a stop wins over a tick that is due as well: no evaluation after it.
            biased;
            changed = specs.changed() => {
                if changed.is_err() {
                    break; // the group was removed, or the agent stops
                }
                let was_coordinated = spec.coordinated;
                spec = specs.borrow_and_update().clone();
                status.lock().unwrap_or_else(|p| p.into_inner()).dry_run = spec.dry_run;
                if was_coordinated && !spec.coordinated {
                    resign(cluster.as_deref(), &spec.name, &mut mem).await;
                }
                continue;
            }
            _ = due(&mut tick, &mut first) => {}
        }
        // A new interval takes effect at the tick due under the old one, which evaluates; the
        // next tick is on the new interval's grid.
        if tick.period() != spec.interval.max(MIN_TICK) {
            tick = ticker(spec.interval);
        }
        let Some(registry) = registry.upgrade() else { break };
        // Wait for the group's plugins while files are being loaded (at start-up, or a plugin
        // copied in just before the reload that added the group).
        if (!registry.started() || !registry.loading().is_empty())
            && (registry.get(&spec.policy).is_none() || registry.get(&spec.backend).is_none())
        {
            continue;
        }
        let cluster = cluster.as_deref().filter(|_| spec.coordinated);
        let fence = match cluster {
            Some(c) => match lead(c, &spec, &mut mem).await {
                Some(token) => Some(Fence { cluster: c, token }),
                None => {
                    status.lock().unwrap_or_else(|p| p.into_inner()).cluster = c.view(&spec.name);
                    continue;
                }
            },
            None => None,
        };
        let now = now_ms();
        let plugins = Loaded { registry: &registry, spec: &spec };
        let (entry, tier_name, committed) = match &spec.storage {
            Some(storage) => {
                let (entry, volume) =
                    super::storage::evaluate(&spec, storage, &plugins, &store, now, &mut mem.grow_tried)
                        .await;
                status.lock().unwrap_or_else(|p| p.into_inner()).volume = volume;
                (entry, None, false)
            }
            None => evaluate(&spec, &plugins, &store, &mut mem, now, fence.as_ref()).await,
        };
        if let (Some(f), false) = (&fence, committed) {
            // The shared state follows the recommendations, so a new leader continues the
            // stabilization window; written when it changed, and during a run of one
            // recommendation every half stabilization window (the reader continues the run
            // from there to its takeover, see `lead`), not every evaluation.
            let stale = refresh_every(&spec).is_some_and(|r| now - mem.written_ms >= r);
            if stale || mem.written != Some(Written::of(f.token, &mem, None)) {
                if let Err(why) = f.commit(&spec.name, &mut mem, None).await {
                    tracing::debug!(group = %spec.name, "{why}");
                }
            }
        }
        if let Some(f) = &fence {
            hand_over_if_over_share(f, &spec, &mut mem).await;
        }
        log_entry(&spec.name, &entry, &mut unchanged_reason);
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        show(&mut s, &entry, tier_name);
        s.failures_in_a_row = mem.decided.failures;
        s.cluster = cluster.and_then(|c| c.view(&spec.name));
        s.schedule = (!spec.schedules.is_empty()).then(|| spec.rules().bounds(now));
        drop(s);
        if let Err(e) = store.journal(entry, spec.interval) {
            tracing::error!(group = %spec.name, "journaling a decision: {e}");
        }
    }
    if spec.coordinated {
        resign(cluster.as_deref(), &spec.name, &mut mem).await;
    }
}

/// The group's status after the evaluation journaled as `entry`.
fn show(s: &mut GroupStatus, entry: &JournalEntry, tier_name: Option<String>) {
    s.current = Some(entry.current);
    s.ready = Some(entry.ready);
    s.desired = Some(entry.target);
    s.tier = Some(entry.tier);
    s.desired_tier = Some(entry.target_tier);
    s.tier_name = tier_name;
    s.last_action = Some(entry.action);
    if s.last_reason.as_deref() != Some(entry.reason.as_str()) {
        s.last_reason = Some(entry.reason.clone());
    }
    s.last_ms = Some(entry.t_ms);
}

/// Ticks every `period` on the agent's grid for that period (its multiples since the first
/// group started), from the first grid point at least half a period away. Groups with the same
/// interval so evaluate together: the runtime and the plugins' epoch ticker wake once an
/// interval for all of them rather than once per group (a thousand times a second for a
/// thousand groups at 1 s).
fn ticker(period: Duration) -> tokio::time::Interval {
    static GRID: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let period = period.max(MIN_TICK);
    let soonest = GRID.get_or_init(Instant::now).elapsed() + period / 2;
    let past = Duration::from_nanos((soonest.as_nanos() % period.as_nanos()) as u64);
    let start = tokio::time::Instant::now() + period / 2 + (period - past);
    let mut tick = tokio::time::interval_at(start, period);
    // A tick served late (the thousandth group of a grid point, or after a long evaluation)
    // does not move the group's next ones off the grid; one missed altogether is skipped.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// The shortest interval a ticker keeps (the configuration allows no shorter than 100 ms).
const MIN_TICK: Duration = Duration::from_millis(1);

/// The group's next tick; the first evaluation is at once.
async fn due(tick: &mut tokio::time::Interval, first: &mut bool) {
    if !std::mem::take(first) {
        tick.tick().await;
    }
}

/// The stabilization and cooldown memory rebuilt from the journal, so a restart cannot cause a
/// burst of actions.
fn remembered(spec: &GroupSpec, store: &Store) -> crate::decide::decision::Memory {
    let lookback = spec.behavior.up.stabilization_ms.max(spec.behavior.down.stabilization_ms).max(3_600_000);
    let history = match store.decisions(Some(&spec.name), now_ms() - lookback) {
        Ok(entries) => history_from_journal(spec, &entries),
        Err(e) => {
            tracing::error!(group = %spec.name, "reading the journal: {e}; starting without history");
            History::default()
        }
    };
    crate::decide::decision::Memory { history, ..Default::default() }
}

/// Gives up the leadership of a cluster group this agent leads (a planned stop, a group
/// removed or made local): its leader key is deleted, so another agent leads at its next
/// evaluation instead of a lease TTL later.
async fn resign(cluster: Option<&Cluster>, group: &str, mem: &mut Memory) {
    if let (Some(c), Some(token)) = (cluster, mem.led.take()) {
        c.resign(group, token).await;
    }
    if let Some(c) = cluster {
        c.leave(group);
    }
}

/// One line in the agent's log per evaluation worth one: holds at debug, a reason without a
/// recommendation once until it changes.
fn log_entry(group: &str, entry: &JournalEntry, unchanged_reason: &mut Option<String>) {
    // The outcome in parentheses only when there is one (no stray `()`).
    let outcome = if entry.outcome.is_empty() { String::new() } else { format!(" ({})", entry.outcome) };
    match entry.action {
        _ if entry.target_tier != entry.tier => {
            tracing::info!(
                group = %group,
                "{:?} {} → {} replicas, tier {} → {}: {}{outcome}",
                entry.action,
                entry.current,
                entry.target,
                entry.tier,
                entry.target_tier,
                entry.reason
            )
        }
        Action::Hold => tracing::debug!(group = %group, "hold at {}: {}", entry.current, entry.reason),
        Action::NoRecommendation if unchanged_reason.as_ref() == Some(&entry.reason) => {}
        Action::NoRecommendation => {
            tracing::info!(group = %group, "no recommendation, holding at {}: {}", entry.current, entry.reason);
            *unchanged_reason = Some(entry.reason.clone());
        }
        _ => {
            tracing::info!(
                group = %group,
                "{:?} {} → {}: {}{outcome}",
                entry.action,
                entry.current,
                entry.target,
                entry.reason
            )
        }
    }
    if entry.action != Action::NoRecommendation {
        *unchanged_reason = None;
    }
}

/// Whether this agent may act on a cluster group now: its fencing token if it leads. On taking
/// over, the group's decision state is read from etcd first (the last leader's stabilization
/// and cooldown memory), so the new leader continues it; its first evaluation describes the
/// backend before anything else, reconciling with what exists.
async fn lead(cluster: &Cluster, spec: &GroupSpec, mem: &mut Memory) -> Option<i64> {
    let (token, takeover) = match cluster.role(&spec.name, spread_wait(spec)).await {
        Role::Leader { token, takeover } => (token, takeover),
        Role::Follower { .. } | Role::Deferring { .. } => {
            mem.led = None;
            return None;
        }
        // Etcd out of reach: the key may still be ours; a resignation (fenced) will tell.
        Role::Frozen { .. } => return None,
    };
    mem.led = Some(token);
    if takeover {
        match cluster.load(&spec.name).await {
            Ok(Some(state)) => {
                let left_by = crate::text::clean(&state.leader, 128);
                tracing::info!(group = %spec.name, "continuing the decision state `{left_by}` left (fencing revision {})", state.token);
                mem.decided.history = state.history;
                // The last leader wrote its latest recommendation at least every
                // `refresh_every` while it went on recommending it, and its lease outlived it
                // by at most `lease_ttl`: continue the run that far, never across a longer gap
                // (a group without a leader for an hour recommended nothing meanwhile).
                let reach = refresh_every(spec).unwrap_or(0)
                    + cluster.spec.lease_ttl.as_millis() as i64
                    + 2 * spec.interval.as_millis() as i64;
                if let Some(last) = mem.decided.history.recommendations.back_mut() {
                    last.0 = last.0.max(now_ms().min(last.0.saturating_add(reach)));
                }
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

/// How long a vacant key is left to agents leading fewer groups, and how often an agent hands
/// one over: two of the group's intervals (they evaluate, and so campaign, once in each).
fn spread_wait(spec: &GroupSpec) -> Duration {
    spec.interval.saturating_mul(2)
}

/// Hands the group over if this agent leads more than its share (see `cluster::spread`): its
/// state written first, so the next leader continues it exactly.
async fn hand_over_if_over_share(f: &Fence<'_>, spec: &GroupSpec, mem: &mut Memory) {
    if !f.cluster.hands_over(spread_wait(spec)) {
        return;
    }
    if let Err(why) = f.commit(&spec.name, mem, None).await {
        tracing::debug!(group = %spec.name, "{why}");
        return;
    }
    if f.cluster.hand_over(&spec.name, f.token).await {
        mem.led = None;
    }
}

/// What a group's loop remembers between evaluations: the decision's memory, and a cluster
/// group's last decision as recorded in etcd.
#[derive(Default)]
pub(crate) struct Memory {
    pub(crate) decided: crate::decide::decision::Memory,
    last_decision: Option<SharedDecision>,
    /// The fencing token of the leader key this agent holds for the group, if it leads.
    led: Option<i64>,
    /// What the group's state in etcd last said, as far as it changes a decision, and when.
    written: Option<Written>,
    written_ms: i64,
    /// A storage group: when the agent last grew a filesystem that lagged its volume.
    pub(crate) grow_tried: Option<super::storage::GrowTried>,
}

/// How often a leader rewrites an unchanged state during a run of one recommendation: half the
/// shortest stabilization window (none without one: the history then decides nothing).
fn refresh_every(spec: &GroupSpec) -> Option<i64> {
    let b = &spec.behavior;
    [b.up.stabilization_ms, b.down.stabilization_ms]
        .into_iter()
        .filter(|w| *w > 0)
        .min()
        .map(|w| (w / 2).max(1_000))
}

/// The part of a group's shared state that changes what a new leader would decide: the latest
/// recommendation (a run of it is one entry, continued to the takeover), the latest action,
/// the last tier change, the last decision, under which leader key.
#[derive(Debug, PartialEq)]
struct Written {
    token: i64,
    recommendation: Option<u32>,
    action: Option<(i64, u32, u32)>,
    tier_change_ms: Option<i64>,
    decision: Option<String>,
}

impl Written {
    fn of(token: i64, mem: &Memory, decision: Option<&SharedDecision>) -> Written {
        let h = &mem.decided.history;
        let action = decision.map(|d| (d.t_ms, d.from, d.to)).or_else(|| h.actions.back().copied());
        Written {
            token,
            recommendation: h.recommendations.back().map(|r| r.1),
            action,
            tier_change_ms: h.last_tier_change_ms,
            decision: decision.or(mem.last_decision.as_ref()).map(|d| d.id.clone()),
        }
    }
}

/// The right to act on a cluster group: its leader key's creation revision.
pub(crate) struct Fence<'a> {
    cluster: &'a Cluster,
    token: i64,
}

impl Fence<'_> {
    /// Records the group's state — with `decision`, before acting on it — guarded by the token.
    /// `Err(why)` when this agent must not act: deposed, or etcd unreachable (freeze).
    async fn commit(
        &self,
        group: &str,
        mem: &mut Memory,
        decision: Option<SharedDecision>,
    ) -> Result<(), String> {
        let written = Written::of(self.token, mem, decision.as_ref());
        let mut history = mem.decided.history.clone();
        if let Some(d) = &decision {
            history.actions.push_back((d.t_ms, d.from, d.to));
        }
        let decision = decision.or_else(|| mem.last_decision.clone());
        let state =
            SharedState { leader: self.cluster.spec.node.clone(), token: self.token, history, decision };
        match self.cluster.commit(group, self.token, &state).await {
            Ok(true) => {
                mem.written = Some(written);
                mem.written_ms = now_ms();
                Ok(())
            }
            Ok(false) => Err(format!(
                "deposed: another agent leads `{group}` now (fencing revision {} is gone); not acting",
                self.token
            )),
            Err(e) => Err(format!("{e}; holding (freeze: no decision without the leader key)")),
        }
    }
}

/// What an evaluation asks of the group's plugins: the registry's handles in the agent, a model
/// of a backend in the live/replay equivalence test. Errors are the journal's wording.
pub trait GroupPlugins {
    fn describe(&self, group: &Group, ceiling: u32) -> impl Future<Output = Result<Capacity, String>> + Send;
    fn advise(&self, ctx: PolicyContext) -> impl Future<Output = Result<Advice, String>> + Send;
    fn scale(
        &self,
        group: &Group,
        target: Target,
        ceiling: u32,
        decision: String,
    ) -> impl Future<Output = Result<Outcome, String>> + Send;
    /// A storage group's volume (a backend that exports `volumes`).
    fn describe_volume(&self, group: &VolumeGroup) -> impl Future<Output = Result<Volume, String>> + Send;
    /// Grows it to `size_gib`, for decision `decision`.
    fn resize_volume(
        &self,
        group: &VolumeGroup,
        size_gib: u64,
        decision: String,
    ) -> impl Future<Output = Result<Resized, String>> + Send;
    /// The cloud's own bounds on the group, as its backend reported them (contract 0.1.4).
    fn cloud_limits(&self, _group: &str) -> Option<(u32, u32)> {
        None
    }
}

/// The group's plugins as loaded in the registry now.
struct Loaded<'a> {
    registry: &'a Registry,
    spec: &'a GroupSpec,
}

impl Loaded<'_> {
    fn get(&self, what: &str, name: &str) -> Result<crate::plugins::worker::PluginHandle, String> {
        self.registry.get(name).ok_or_else(|| format!("{what} plugin `{name}` is not loaded"))
    }
}

impl GroupPlugins for Loaded<'_> {
    fn cloud_limits(&self, group: &str) -> Option<(u32, u32)> {
        self.registry.cloud_limits(group, &self.spec.backend)
    }

    async fn describe(&self, group: &Group, ceiling: u32) -> Result<Capacity, String> {
        let backend = self.get("backend", &self.spec.backend)?;
        let described = backend.describe(group.clone(), ceiling).await;
        described.map_err(|e| format!("backend `{}` describe failed: {e}", self.spec.backend))
    }

    async fn advise(&self, ctx: PolicyContext) -> Result<Advice, String> {
        let policy = self.get("policy", &self.spec.policy)?;
        let r = policy.evaluate(ctx).await.map_err(|e| format!("policy `{}`: {e}", self.spec.policy))?;
        Ok(Advice { replicas: r.replicas, tier: r.tier, reason: r.reason })
    }

    async fn scale(
        &self,
        group: &Group,
        target: Target,
        ceiling: u32,
        decision: String,
    ) -> Result<Outcome, String> {
        let backend = self.get("backend", &self.spec.backend)?;
        let scaled = backend.scale(group.clone(), target, ceiling, Some(decision)).await;
        scaled.map_err(|e| format!("backend `{}` scale failed: {e}", self.spec.backend))
    }

    async fn describe_volume(&self, group: &VolumeGroup) -> Result<Volume, String> {
        let backend = self.get("backend", &self.spec.backend)?;
        let described = backend.describe_volume(group.clone()).await;
        described.map_err(|e| format!("backend `{}` volumes.describe failed: {e}", self.spec.backend))
    }

    async fn resize_volume(
        &self,
        group: &VolumeGroup,
        size_gib: u64,
        decision: String,
    ) -> Result<Resized, String> {
        let backend = self.get("backend", &self.spec.backend)?;
        let resized = backend.resize_volume(group.clone(), size_gib, Some(decision)).await;
        resized.map_err(|e| format!("backend `{}` volumes.resize failed: {e}", self.spec.backend))
    }
}

/// What the group is, as gathered for one evaluation.
struct Gathered {
    capacity: Capacity,
    windows: Vec<Window>,
    /// Every configured metric's name that had no data in its window.
    missing: Vec<String>,
    /// What the journal shows of the inputs: points and mean per series.
    inputs: serde_json::Value,
}

/// One evaluation: gather → decide → act → record (the journal entry; the memory settled).
/// Returns the entry, the tier's name, and whether the group's state went to etcd already.
pub(crate) async fn evaluate(
    spec: &GroupSpec,
    plugins: &impl GroupPlugins,
    store: &Store,
    mem: &mut Memory,
    now: i64,
    fence: Option<&Fence<'_>>,
) -> (JournalEntry, Option<String>, bool) {
    let mut rules = spec.rules();
    let bounds = rules.bounds(now);
    let group = Group { name: spec.name.clone(), params: spec.backend_params.clone() };
    let gathered = match gather(spec, plugins, &group, store, now).await {
        Ok(g) => g,
        Err(why) => return (unrecorded(spec, now, why), None, false),
    };
    // What the backend's describe just reported of the cloud's own bounds.
    rules.cloud = plugins.cloud_limits(&spec.name);
    let Gathered { capacity, windows, missing, inputs } = gathered;
    let seen = Observed { now_ms: now, current: capacity.replicas, tier: capacity.tier };
    let ready = capacity.ready;
    let tier_name = (!capacity.tier_name.is_empty()).then(|| capacity.tier_name.clone());
    let advice = if missing.is_empty() {
        plugins.advise(policy_context(spec, &bounds, capacity, windows, now)).await
    } else {
        Err(format!("no data for {} in the window; holding", missing.join(", ")))
    };
    let decision = decide(&rules, &bounds, seen, advice, &mut mem.decided);
    let mut entry = record(spec, &seen, ready, &decision, inputs);
    let (reached, tier, committed) =
        act(spec, plugins, &group, &seen, &decision, mem, fence, &mut entry).await;
    mem.decided.settle(&rules, &seen, reached, tier);
    (entry, tier_name, committed)
}

/// The backend's capacity and the metric windows from the store.
async fn gather(
    spec: &GroupSpec,
    plugins: &impl GroupPlugins,
    group: &Group,
    store: &Store,
    now: i64,
) -> Result<Gathered, String> {
    let capacity = plugins.describe(group, spec.behavior.sanity_ceiling).await?;
    let Windows { windows, missing, inputs } = windows(spec, store, now);
    Ok(Gathered { capacity, windows, missing, inputs })
}

/// The group's metric windows from the store, what had no data, and what the journal shows.
pub(super) struct Windows {
    pub windows: Vec<Window>,
    pub missing: Vec<String>,
    pub inputs: serde_json::Value,
}

/// Every configured metric's window; a policy never decides on part of its inputs, so the
/// caller holds when one is missing.
pub(super) fn windows(spec: &GroupSpec, store: &Store, now: i64) -> Windows {
    let mut windows = Vec::new();
    let mut missing = Vec::new();
    let mut inputs = serde_json::Map::new();
    for m in &spec.metrics {
        let sel = Selector { name: m.name.clone(), matchers: m.labels.clone() };
        let from = now - m.window.as_millis() as i64;
        let with_data = store.window(&sel, from, now + 1).unwrap_or_default();
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
    Windows { windows, missing, inputs: serde_json::Value::Object(inputs) }
}

/// What the policy is told: the capacity now, the bounds in force, the windows.
pub(super) fn policy_context(
    spec: &GroupSpec,
    bounds: &Effective,
    current: Capacity,
    windows: Vec<Window>,
    now: i64,
) -> PolicyContext {
    PolicyContext {
        group: spec.name.clone(),
        now_ms: now,
        current,
        bounds: Bounds { min_replicas: bounds.min, max_replicas: bounds.max, max_tier: spec.tiers.max },
        windows,
        params: spec.policy_params.clone(),
    }
}

/// The journal entry of an evaluation that could not describe the group: nothing decided.
pub(super) fn unrecorded(spec: &GroupSpec, now: i64, why: String) -> JournalEntry {
    JournalEntry {
        t_ms: now,
        group: spec.name.clone(),
        current: 0,
        ready: 0,
        recommendation: None,
        reason: why,
        target: 0,
        tier: 0,
        target_tier: 0,
        steps: serde_json::json!([]),
        action: Action::NoRecommendation,
        outcome: String::new(),
        backend_ms: None,
        inputs: serde_json::json!({}),
        count: 1,
        first_ms: now,
    }
}

/// The journal entry of `decision`, before acting: a hold unless acting changes it.
fn record(
    spec: &GroupSpec,
    seen: &Observed,
    ready: u32,
    decision: &Decision,
    inputs: serde_json::Value,
) -> JournalEntry {
    JournalEntry {
        t_ms: seen.now_ms,
        group: spec.name.clone(),
        current: seen.current,
        ready,
        recommendation: decision.recommendation,
        reason: decision.reason.clone(),
        target: decision.target,
        tier: seen.tier,
        target_tier: decision.target_tier,
        steps: serde_json::Value::Array(decision.steps.iter().map(step_json).collect()),
        action: if decision.recommendation.is_some() { Action::Hold } else { Action::NoRecommendation },
        outcome: String::new(),
        backend_ms: None,
        inputs,
        count: 1,
        first_ms: seen.now_ms,
    }
}

/// Carries `decision` out (unless dry-run, or deposed): the replicas and tier reached, and
/// whether the group's state went to etcd. The entry gets the action and the outcome.
#[allow(clippy::too_many_arguments)]
async fn act(
    spec: &GroupSpec,
    plugins: &impl GroupPlugins,
    group: &Group,
    seen: &Observed,
    decision: &Decision,
    mem: &mut Memory,
    fence: Option<&Fence<'_>>,
    entry: &mut JournalEntry,
) -> (u32, u32, bool) {
    let (now, current, tier) = (seen.now_ms, seen.current, decision.target_tier);
    let unchanged = (current, seen.tier, false);
    if !decision.changes(seen) {
        return unchanged;
    }
    let target = decision.target;
    if spec.dry_run {
        entry.action = Action::WouldScale;
        entry.outcome = format!("dry run: would scale {current} → {target}, tier {} → {tier}", seen.tier);
        return unchanged;
    }
    let shared = SharedDecision {
        id: decision_id(&spec.name, fence.map(|f| f.token), now),
        t_ms: now,
        from: current,
        to: target,
        tier,
    };
    let mut committed = false;
    if let Some(f) = fence {
        // Recorded before acting: a deposed leader's record fails, and it does not act.
        if let Err(why) = f.commit(&spec.name, mem, Some(shared.clone())).await {
            entry.action = Action::Hold;
            entry.outcome = why;
            return unchanged;
        }
        mem.last_decision = Some(shared.clone());
        committed = true;
    }
    let started = Instant::now();
    let ceiling = spec.behavior.sanity_ceiling;
    let result = plugins.scale(group, Target { replicas: target, tier }, ceiling, shared.id).await;
    entry.backend_ms = Some(started.elapsed().as_millis() as u64);
    match result {
        Ok(outcome) => {
            let reached = kept_busy(entry, current, target, outcome.capacity.replicas);
            let moved = reached != current || tier != seen.tier;
            entry.action = if moved { Action::Scale } else { Action::Hold };
            entry.outcome = outcome.detail;
            (reached, tier, committed)
        }
        Err(why) => {
            entry.action = Action::ScaleFailed;
            entry.outcome = why;
            (current, seen.tier, committed)
        }
    }
}

/// The id a backend tags what it does with (`decision.id`): `GROUP#TIME`, or `GROUP@TOKEN#TIME`
/// under a cluster leader's fencing token.
pub(super) fn decision_id(group: &str, token: Option<i64>, now: i64) -> String {
    match token {
        Some(token) => format!("{group}@{token}#{now}"),
        None => format!("{group}#{now}"),
    }
}

/// A scale-in the backend made smaller than asked — it kept units that reported busy rather
/// than kill their work — is journaled as a step of its own; returns the replicas reached.
fn kept_busy(entry: &mut JournalEntry, current: u32, target: u32, after: u32) -> u32 {
    if target >= current || after <= target {
        return target;
    }
    let reached = after.min(current);
    let why = "the backend kept units that report busy rather than stop their work (see its account)";
    let step = crate::decide::guardrails::Step {
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

pub(crate) fn step_json(s: &crate::decide::guardrails::Step) -> serde_json::Value {
    serde_json::json!({"guardrail": s.guardrail, "before": s.before, "after": s.after, "why": s.why})
}

fn labels(l: &Labels) -> Vec<Label> {
    l.iter().map(|(k, v)| Label { key: k.into(), value: v.into() }).collect()
}
