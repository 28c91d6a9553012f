//! Each plugin has one worker: its linked component, its current instance, its fault count and
//! its quarantine. Calls run one at a time (the worker is behind a fair lock), in the caller's
//! own task — no hop to another task and back, so a call costs about what the guest does — each
//! under a CPU budget, a wall-clock timeout, a memory limit and a cap on what it returns. A call
//! that faults fails alone: the instance is dropped (it may be poisoned) and a fresh one is made
//! for the next call. So is an instance whose call was abandoned by its caller midway.
//!
//! A plugin keeps no instance until it is first called, and a parked one (a policy or backend
//! no group uses) not even its linked component: it costs nothing until a group calls it.

use super::bindings::volume_backend::exports::elastic::plugin::volumes::Guest as VolumesGuest;
use super::bindings::{backend::BackendPlugin, policy::PolicyPlugin, source::SourcePlugin};
use super::convert;
use super::engine::GuestRunning;
use super::loader::{one_line, Pre, Prepared};
use super::sandbox::{Grants, HostState, MemoryLimitExceeded};
use super::types::{
    Capacity, ConfigKey, Group, Label, Metadata, Outcome, PluginError, PolicyContext, Recommendation,
    Resized, Sample, Target, Volume, VolumeGroup,
};
use super::{Kind, Runtime};
use crate::config::PluginSettings;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::UpdateDeadline;

/// The limits one call runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU time: the guest's code and every host function it calls, measured as the thread's
    /// CPU time while the call runs (see [`super::cpu`]). Time waiting (on HTTP, a timer, the
    /// async runtime's queue) does not count; the wall-clock `timeout` bounds that.
    pub cpu: Duration,
    /// Wall-clock time for the whole call.
    pub timeout: Duration,
    /// Largest return value, in bytes of strings and numbers.
    pub max_return: u64,
    pub memory: u64,
}

impl Limits {
    /// The configured limits, or the defaults of `kind`.
    pub fn for_kind(kind: Kind, s: &PluginSettings) -> Limits {
        let (cpu, timeout) = match kind {
            Kind::Policy => (Duration::from_millis(100), Duration::from_secs(1)),
            Kind::Source => (Duration::from_millis(100), Duration::from_secs(10)),
            Kind::Backend => (Duration::from_secs(2), Duration::from_secs(600)),
        };
        Limits {
            cpu: s.cpu_limit.unwrap_or(cpu),
            timeout: s.timeout.unwrap_or(timeout),
            max_return: s.max_return_bytes,
            memory: s.memory_limit_bytes,
        }
    }

    /// `metadata()`'s limits, the same for every kind and every configuration: saying who it is
    /// takes a plugin microseconds, and loading must never wait on one that takes longer.
    pub fn metadata() -> Limits {
        Limits {
            cpu: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            max_return: 64 << 10,
            memory: 64 << 20,
        }
    }
}

/// Longest text a plugin's reply may carry into the log, the journal and `/status` (a
/// recommendation's reason, an outcome's detail, an error's message). Longer text is cut.
pub const MAX_TEXT: usize = 1024;
/// Longest tier name.
pub const MAX_TIER_NAME: usize = 64;

/// How a call went wrong on the plugin's side (as opposed to a [`PluginError`] it returned).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Fault {
    #[error("exceeded its CPU limit of {}ms per call", .0.as_millis())]
    CpuLimit(Duration),
    #[error("did not return within its timeout of {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    MemoryLimit(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {size} bytes, more than its limit of {limit} (max_return_kib)")]
    ReturnTooLarge { size: u64, limit: u64 },
    #[error("returned an invalid value: {0}")]
    Malformed(String),
    #[error("reported {replicas} replicas, above the group's sanity ceiling of {ceiling}")]
    Implausible { replicas: u32, ceiling: u32 },
    #[error("holds too many open handles ({0}); a plugin must drop what it no longer uses")]
    Handles(String),
}

/// Why a call produced no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin ran and returned one of the contract's errors.
    #[error("{}", describe_plugin_error(.0))]
    Plugin(PluginError),
    /// The plugin misbehaved; the call was stopped.
    #[error("{0}")]
    Fault(Fault),
    /// The plugin failed repeatedly and is not called until the backoff passes.
    #[error("quarantined for another {}ms after repeated faults", .0.as_millis())]
    Quarantined(Duration),
    /// The plugin is not of the kind this call needs.
    #[error("is a {0}, which does not answer this call")]
    WrongKind(Kind),
    /// A storage call to a backend that exports no `volumes`.
    #[error("exports no `volumes` interface (contract 0.1.3), so it cannot grow a storage group's volume; use a backend that does (openstack, ledger)")]
    NoVolumes,
    /// A parked plugin could not be linked again for this call.
    #[error("could not be prepared for its first call: {0}")]
    Unprepared(String),
}

/// A plugin's error for people: the variant in words, then its message.
pub fn describe_plugin_error(e: &PluginError) -> String {
    e.to_string()
}

/// A live instance of a plugin in its own store.
pub struct Instance {
    store: wasmtime::Store<HostState>,
    bound: Bound,
    calls: u64,
    /// It left requests open when a call ended: its handles go with it.
    abandoned: bool,
}

enum Bound {
    Source(SourcePlugin),
    Policy(PolicyPlugin),
    /// And its `volumes` export, when it has one.
    Backend(BackendPlugin, Option<VolumesGuest>),
}

/// Calls a plugin answers, by kind.
#[derive(Debug, Clone)]
pub enum Call {
    Collect,
    Evaluate(PolicyContext),
    /// With the group's sanity ceiling: a capacity above it is a lie, and a fault.
    Describe(Group, u32),
    /// And the id of the decision it carries out (`decision.id`).
    Scale(Group, Target, u32, Option<String>),
    /// A storage group's volume (backends that export `volumes`).
    DescribeVolume(VolumeGroup),
    /// Grow it to this many GiB, for the decision named.
    ResizeVolume(VolumeGroup, u64, Option<String>),
}

#[derive(Debug, Clone)]
pub enum Reply {
    Samples(Vec<Sample>),
    Recommendation(Recommendation),
    Capacity(Capacity),
    Outcome(Outcome),
    Volume(Volume),
    Resized(Resized),
}

/// Instances are recycled after this many calls, since linear memory never shrinks.
const RECYCLE_AFTER_CALLS: u64 = 100_000;

impl Instance {
    /// Makes a fresh store and instance; instantiation runs under the call limits too.
    pub async fn new(
        rt: &Runtime,
        pre: &Pre,
        grants: Arc<Grants>,
        limits: &Limits,
    ) -> Result<Instance, Fault> {
        let mut store = wasmtime::Store::new(&rt.engine, HostState::new(grants, pre.kind()));
        store.limiter(|s| &mut s.limiter);
        // Each tick the guest is still running: stop it past its CPU budget (what the call has
        // cost so far, host functions included), else yield to the executor so a loop starves
        // no other task.
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().cpu.spent() {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        });
        let deadline = arm(&mut store, limits);
        let _running = GuestRunning::start();
        let cpu = store.data().cpu.clone();
        let result = tokio::time::timeout_at(
            deadline.into(),
            cpu.metered(async {
                match pre {
                    Pre::Source(p) => p.instantiate_async(&mut store).await.map(Bound::Source),
                    Pre::Policy(p) => p.instantiate_async(&mut store).await.map(Bound::Policy),
                    Pre::Backend(p, volumes) => match p.instance_pre().instantiate_async(&mut store).await {
                        Ok(instance) => BackendPlugin::new(&mut store, &instance).and_then(|b| {
                            let v = volumes.as_ref().map(|i| i.load(&mut store, &instance)).transpose()?;
                            Ok(Bound::Backend(b, v))
                        }),
                        Err(e) => Err(e),
                    },
                }
            }),
        )
        .await;
        let bound = settle(&store, result, limits)?;
        Ok(Instance { store, bound, calls: 0, abandoned: false })
    }

    pub async fn metadata(&mut self, limits: &Limits) -> Result<Metadata, Fault> {
        let deadline = arm(&mut self.store, limits);
        let _running = GuestRunning::start();
        let cpu = self.store.data().cpu.clone();
        let store = &mut self.store;
        let result = tokio::time::timeout_at(
            deadline.into(),
            cpu.metered(async {
                match &self.bound {
                    Bound::Source(b) => b.elastic_plugin_source().call_metadata(store).await,
                    Bound::Policy(b) => b.elastic_plugin_policy().call_metadata(store).await,
                    Bound::Backend(b, _) => b.elastic_plugin_backend().call_metadata(store).await,
                }
            }),
        )
        .await;
        let metadata = Metadata::from(settle(&self.store, result, limits)?);
        let size = metadata.name.len()
            + metadata.version.len()
            + metadata.description.len()
            + metadata.config_keys.iter().map(|k| k.name.len() + k.description.len()).sum::<usize>();
        check_size(size as u64, limits)?;
        Ok(metadata)
    }

    /// Runs one call. `Ok(Err(_))` is an error the plugin returned; `Err(_)` is a fault. The
    /// call's values are converted to and from the contract's generated types here, around the
    /// generated export (see [`super::convert`]).
    pub async fn call(
        &mut self,
        call: Call,
        limits: &Limits,
    ) -> Result<Result<Reply, PluginError>, CallFault> {
        let deadline = arm(&mut self.store, limits);
        self.calls += 1;
        let ceiling = match &call {
            Call::Describe(_, c) | Call::Scale(_, _, c, _) => *c,
            _ => u32::MAX,
        };
        let cpu = self.store.data().cpu.clone();
        let store = &mut self.store;
        let running = GuestRunning::start();
        let result = tokio::time::timeout_at(
            deadline.into(),
            cpu.metered(async {
                Ok(match (&self.bound, call) {
                    (Bound::Source(b), Call::Collect) => b
                        .elastic_plugin_source()
                        .call_collect(store)
                        .await
                        .map(|r| convert::result(r.map(convert::list)).map(Reply::Samples)),
                    (Bound::Policy(b), Call::Evaluate(ctx)) => b
                        .elastic_plugin_policy()
                        .call_evaluate(store, &ctx.into())
                        .await
                        .map(|r| convert::result(r).map(Reply::Recommendation)),
                    (Bound::Backend(b, _), Call::Describe(g, _)) => b
                        .elastic_plugin_backend()
                        .call_describe(store, &g.into())
                        .await
                        .map(|r| convert::result(r).map(Reply::Capacity)),
                    (Bound::Backend(b, _), Call::Scale(g, t, _, decision)) => {
                        store.data_mut().decision = decision;
                        let r = b.elastic_plugin_backend().call_scale(&mut *store, &g.into(), t.into()).await;
                        store.data_mut().decision = None;
                        r.map(|r| convert::result(r).map(Reply::Outcome))
                    }
                    (Bound::Backend(_, Some(v)), Call::DescribeVolume(g)) => {
                        v.call_describe(store, &g.into()).await.map(|r| convert::result(r).map(Reply::Volume))
                    }
                    (Bound::Backend(_, Some(v)), Call::ResizeVolume(g, size, decision)) => {
                        store.data_mut().decision = decision;
                        let r = v.call_resize(&mut *store, &g.into(), size).await;
                        store.data_mut().decision = None;
                        r.map(|r| convert::result(r).map(Reply::Resized))
                    }
                    (Bound::Backend(_, None), Call::DescribeVolume(_) | Call::ResizeVolume(..)) => {
                        return Err(None)
                    }
                    (bound, _) => return Err(Some(bound.kind())),
                })
            }),
        )
        .await;
        drop(running);
        // Whatever it started and left open ends with the call.
        self.abandoned |= self.store.data_mut().end_call() > 0;
        let result = match result {
            Ok(Err(Some(kind))) => return Err(CallFault::WrongKind(kind)),
            Ok(Err(None)) => return Err(CallFault::NoVolumes),
            Ok(Ok(r)) => Ok(r),
            Err(elapsed) => Err(elapsed),
        };
        let mut reply = settle(&self.store, result, limits).map_err(CallFault::Fault)?;
        if let Ok(reply) = &reply {
            check_size(reply_size(reply), limits).map_err(CallFault::Fault)?;
            validate(reply, ceiling).map_err(CallFault::Fault)?;
        }
        clean_reply(&self.store.data().grants.meter, &mut reply);
        Ok(reply)
    }

    /// Whether this instance has served long enough to be replaced by a fresh one.
    fn worn_out(&self, limits: &Limits) -> bool {
        self.abandoned
            || self.calls >= RECYCLE_AFTER_CALLS
            || self.store.data().limiter.peak as u64 > limits.memory / 2
    }
}

/// A fault, or a call to a plugin of the wrong kind (which is the caller's mistake).
#[derive(Debug)]
pub enum CallFault {
    Fault(Fault),
    WrongKind(Kind),
    NoVolumes,
}

impl Bound {
    fn kind(&self) -> Kind {
        match self {
            Bound::Source(_) => Kind::Source,
            Bound::Policy(_) => Kind::Policy,
            Bound::Backend(..) => Kind::Backend,
        }
    }
}

/// Sets the budget for the next call (the epoch deadline starts at 0, so it must be set every
/// time); returns the call's wall-clock deadline.
fn arm(store: &mut wasmtime::Store<HostState>, limits: &Limits) -> Instant {
    let deadline = Instant::now() + limits.timeout;
    store.data().cpu.arm(limits.cpu);
    store.data_mut().begin_call(deadline);
    store.data().stderr.clear();
    store.set_epoch_deadline(1);
    deadline
}

/// Turns the outcome of a guarded guest call into a value or a classified fault.
fn settle<T>(
    store: &wasmtime::Store<HostState>,
    result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    limits: &Limits,
) -> Result<T, Fault> {
    if store.data().cpu.over_budget() {
        // Ended over budget between two ticks, or in a long host function: as a loop would.
        return Err(Fault::CpuLimit(limits.cpu));
    }
    let error = match result {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => e,
        Err(_) => return Err(Fault::Timeout(limits.timeout)),
    };
    let meter = &store.data().grants.meter;
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Err(Fault::MemoryLimit(limit.to_string()));
    }
    if let Some(full) = error.downcast_ref::<wasmtime::component::ResourceTableError>() {
        return Err(Fault::Handles(full.to_string()));
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Err(Fault::CpuLimit(limits.cpu)),
        Some(trap) => {
            let mut message = trap.to_string();
            if let Some(said) = store.data().stderr.summary() {
                message = format!("{message}; it said: {}", meter.clean(&said, 512));
            }
            Err(Fault::Trap(message))
        }
        None => Err(Fault::Malformed(meter.clean(&one_line(&error), 512))),
    }
}

fn check_size(size: u64, limits: &Limits) -> Result<(), Fault> {
    if size > limits.max_return {
        return Err(Fault::ReturnTooLarge { size, limit: limits.max_return });
    }
    Ok(())
}

/// Approximate bytes of a reply: strings plus 8 per number. Enough to stop a flood.
fn reply_size(reply: &Reply) -> u64 {
    let labels = |l: &[Label]| l.iter().map(|l| l.key.len() + l.value.len()).sum::<usize>();
    let size = match reply {
        Reply::Samples(s) => s.iter().map(|s| s.metric.len() + labels(&s.labels) + 16).sum(),
        Reply::Recommendation(r) => r.reason.len() + 16,
        Reply::Capacity(c) => c.tier_name.len() + 12,
        Reply::Outcome(o) => o.detail.len() + o.capacity.tier_name.len() + 12,
        Reply::Volume(v) => volume_size(v),
        Reply::Resized(r) => r.detail.len() + volume_size(&r.volume),
    };
    size as u64
}

fn volume_size(v: &Volume) -> usize {
    v.id.len() + v.status.len() + v.pending.as_ref().map_or(0, String::len) + v.attachment.len() + 8
}

/// No cloud has a volume larger than a pebibyte (EBS: 64 TiB); a volume of 0 GiB does not exist.
const MAX_VOLUME_GIB: u64 = 1 << 20;

/// Values the contract forbids, and capacities no group can have.
fn validate(reply: &Reply, ceiling: u32) -> Result<(), Fault> {
    let capacity = match reply {
        Reply::Capacity(c) => Some(c),
        Reply::Outcome(o) => Some(&o.capacity),
        _ => None,
    };
    if let Some(c) = capacity.filter(|c| c.replicas > ceiling) {
        return Err(Fault::Implausible { replicas: c.replicas, ceiling });
    }
    match reply {
        Reply::Recommendation(r) if !r.replicas.is_finite() || r.replicas < 0.0 => {
            Err(Fault::Malformed(format!("recommendation of {} replicas", r.replicas)))
        }
        Reply::Capacity(c) if c.ready > c.replicas => {
            Err(Fault::Malformed(format!("capacity with {} ready of {} replicas", c.ready, c.replicas)))
        }
        Reply::Volume(v) | Reply::Resized(Resized { volume: v, .. })
            if !(1..=MAX_VOLUME_GIB).contains(&v.size_gib) =>
        {
            Err(Fault::Malformed(format!("a volume of {} GiB", v.size_gib)))
        }
        _ => Ok(()),
    }
}

/// A volume's words are short: the id and status as a tier name, the rest as an outcome.
fn clean_volume(meter: &super::meter::Meter, v: &mut Volume) {
    meter.clean_in_place(&mut v.id, MAX_TIER_NAME);
    meter.clean_in_place(&mut v.status, MAX_TIER_NAME);
    meter.clean_in_place(&mut v.attachment, MAX_TEXT);
    if let Some(p) = &mut v.pending {
        meter.clean_in_place(p, MAX_TEXT);
    }
}

/// Masks the plugin's secrets in the text a reply carries, and escapes and caps it, so it is
/// safe for every medium it reaches.
fn clean_reply(meter: &super::meter::Meter, reply: &mut Result<Reply, PluginError>) {
    let clean_in_place = |text: &mut String, max| meter.clean_in_place(text, max);
    match reply {
        Ok(Reply::Recommendation(r)) => clean_in_place(&mut r.reason, MAX_TEXT),
        Ok(Reply::Capacity(c)) => clean_in_place(&mut c.tier_name, MAX_TIER_NAME),
        Ok(Reply::Outcome(o)) => {
            clean_in_place(&mut o.detail, MAX_TEXT);
            clean_in_place(&mut o.capacity.tier_name, MAX_TIER_NAME);
        }
        Ok(Reply::Volume(v)) => clean_volume(meter, v),
        Ok(Reply::Resized(r)) => {
            clean_in_place(&mut r.detail, MAX_TEXT);
            clean_volume(meter, &mut r.volume);
        }
        // Shaped and counted by the collector; only masked here (names and labels are kept
        // byte for byte otherwise: the collector's size limits and `/metrics` escaping apply).
        Ok(Reply::Samples(samples)) => {
            for s in samples {
                let text = std::iter::once(&mut s.metric)
                    .chain(s.labels.iter_mut().flat_map(|l| [&mut l.key, &mut l.value]));
                text.for_each(|t| meter.mask_in_place(t));
            }
        }
        Err(
            PluginError::BadConfig(m)
            | PluginError::Unavailable(m)
            | PluginError::InvalidInput(m)
            | PluginError::QuotaExceeded(m)
            | PluginError::Conflict(m)
            | PluginError::Other(m),
        ) => {
            name_the_table(m, meter.plugin());
            clean_in_place(m, MAX_TEXT)
        }
    }
}

/// The SDK names a plugin's table `[plugins.<name>…]`, not knowing the name the agent gives it:
/// the agent fills it in, so that every error names the plugin it is about.
fn name_the_table(message: &mut String, plugin: &str) {
    const PLACEHOLDER: &str = "[plugins.<name>";
    if message.contains(PLACEHOLDER) {
        *message = message.replace(PLACEHOLDER, &format!("[plugins.{plugin}"));
    }
}

/// What `/status` and `agent plugins list` show of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub kind: Kind,
    /// The plugin's own version.
    pub version: String,
    /// The contract version it was built against.
    pub contract: String,
    pub file: String,
    pub sha256: String,
    /// The `[trust]` key whose signature the file carries, if any.
    pub signer: Option<String>,
    /// Whether its name is bound to this file by the configuration (`bound`: it gets its
    /// `[plugins.NAME]` grants and groups) or is only what it declares (`unbound`: no grants).
    pub binding: &'static str,
    pub state: State,
    pub calls: u64,
    pub faults: u64,
    /// Time spent in calls, including queueing behind earlier calls, in nanoseconds.
    pub call_ns_total: u64,
    /// CPU time the calls cost (guest code and host functions), in nanoseconds.
    pub cpu_ns_total: u64,
    pub last_fault: Option<String>,
    /// Milliseconds until a quarantined plugin is tried again.
    pub quarantine_ms: Option<u64>,
    /// Budgets the plugin ran into (series, log-lines, state, http-*), with their counts.
    pub over_budget: std::collections::BTreeMap<&'static str, u64>,
    /// The configuration keys it says it reads (checked against the configuration).
    #[serde(skip)]
    pub config_keys: Vec<ConfigKey>,
}

impl Status {
    /// The status of a plugin that has just started, as `metadata` describes it.
    pub fn ready(metadata: &Metadata, kind: Kind, contract: &str, file: &str, sha256: &str) -> Status {
        Status {
            name: metadata.name.clone(),
            kind,
            version: metadata.version.clone(),
            contract: contract.into(),
            file: file.into(),
            sha256: sha256.into(),
            signer: None,
            binding: "unbound",
            state: State::Ready,
            calls: 0,
            faults: 0,
            call_ns_total: 0,
            cpu_ns_total: 0,
            last_fault: None,
            quarantine_ms: None,
            over_budget: Default::default(),
            config_keys: metadata.config_keys.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ready,
    Quarantined,
    Failed,
}

struct Shared {
    meter: Arc<super::meter::Meter>,
    status: Mutex<Status>,
    quarantined_until: Mutex<Option<Instant>>,
    /// Counted outside `status`: no lock on the call path for them.
    calls: std::sync::atomic::AtomicU64,
    call_ns_total: std::sync::atomic::AtomicU64,
    cpu_ns_total: std::sync::atomic::AtomicU64,
    /// Calls, swaps and regrants take turns here, in arrival order.
    worker: tokio::sync::Mutex<Worker>,
}

/// The way to a plugin's worker. Cloning is cheap; the worker and its instance go when the
/// last handle drops.
#[derive(Clone)]
pub struct PluginHandle {
    shared: Arc<Shared>,
    /// What the plugin runs with now (a reload replaces it).
    grants: Arc<std::sync::RwLock<Arc<Grants>>>,
}

impl PluginHandle {
    /// The worker for `prepared` with `grants`; no instance until the first call. A `parked`
    /// plugin (one nothing is configured to call) does not even keep its linked component:
    /// it is mapped and linked again from the compile cache at its first call.
    pub fn new(rt: Arc<Runtime>, prepared: Prepared, grants: Arc<Grants>, parked: bool) -> PluginHandle {
        let mut status = Status::ready(
            &prepared.metadata,
            prepared.kind(),
            &prepared.header.contract,
            &prepared.path.display().to_string(),
            &prepared.hash,
        );
        status.signer = prepared.signer.clone();
        status.binding = binding(&prepared);
        let limits = Limits::for_kind(prepared.kind(), &grants.settings);
        let current = Arc::new(std::sync::RwLock::new(grants.clone()));
        let worker = Worker {
            rt,
            pre: (!parked).then_some(prepared.pre),
            path: prepared.path,
            hash: prepared.hash,
            grants: grants.clone(),
            limits,
            live: None,
            consecutive_faults: 0,
        };
        let shared = Arc::new(Shared {
            meter: grants.meter.clone(),
            status: Mutex::new(status),
            quarantined_until: Mutex::new(None),
            calls: Default::default(),
            call_ns_total: Default::default(),
            cpu_ns_total: Default::default(),
            worker: tokio::sync::Mutex::new(worker),
        });
        PluginHandle { shared, grants: current }
    }

    /// What the plugin runs with now.
    pub fn grants(&self) -> Arc<Grants> {
        self.grants.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs the plugin under new grants and limits from its next call on: the instance is
    /// rebuilt from the compiled component (nothing is recompiled); a call in progress finishes
    /// under the old ones.
    pub async fn regrant(&self, grants: Arc<Grants>) {
        *self.grants.write().unwrap_or_else(|p| p.into_inner()) = grants.clone();
        let mut worker = self.shared.worker.lock().await;
        worker.limits = Limits::for_kind(lock(&self.shared.status).kind, &grants.settings);
        worker.grants = grants;
        worker.live = None;
    }

    pub fn status(&self) -> Status {
        use std::sync::atomic::Ordering::Relaxed;
        let mut status = lock(&self.shared.status).clone();
        status.calls = self.shared.calls.load(Relaxed);
        status.call_ns_total = self.shared.call_ns_total.load(Relaxed);
        status.cpu_ns_total = self.shared.cpu_ns_total.load(Relaxed);
        status.over_budget = self.shared.meter.counts();
        if let Some(until) = *lock(&self.shared.quarantined_until) {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                status.state = State::Quarantined;
                status.quarantine_ms = Some(left.as_millis() as u64);
            }
        }
        status
    }

    /// Records whether the configuration now binds the plugin's name to its file.
    pub fn set_bound(&self, bound: bool) {
        lock(&self.shared.status).binding = if bound { "bound" } else { "unbound" };
    }

    pub fn name(&self) -> String {
        lock(&self.shared.status).name.clone()
    }

    /// The plugin's budget counters.
    pub fn meter(&self) -> Arc<super::meter::Meter> {
        self.shared.meter.clone()
    }

    pub fn kind(&self) -> Kind {
        lock(&self.shared.status).kind
    }

    /// Runs `call` on the plugin's worker, after the calls before it.
    pub async fn call(&self, call: Call) -> Result<Reply, CallError> {
        let started = Instant::now();
        let mut worker = self.shared.worker.lock().await;
        let result = worker.call(&self.shared, call).await;
        drop(worker);
        let spent = started.elapsed().as_nanos() as u64;
        self.shared.call_ns_total.fetch_add(spent, std::sync::atomic::Ordering::Relaxed);
        result
    }

    pub async fn collect(&self) -> Result<Vec<Sample>, CallError> {
        match self.call(Call::Collect).await? {
            Reply::Samples(s) => Ok(s),
            _ => unreachable!("the worker answers Collect with Samples"),
        }
    }

    pub async fn evaluate(&self, ctx: PolicyContext) -> Result<Recommendation, CallError> {
        match self.call(Call::Evaluate(ctx)).await? {
            Reply::Recommendation(r) => Ok(r),
            _ => unreachable!("the worker answers Evaluate with a Recommendation"),
        }
    }

    /// The backend's capacity for `group`; above `ceiling` replicas it is a fault.
    pub async fn describe(&self, group: Group, ceiling: u32) -> Result<Capacity, CallError> {
        match self.call(Call::Describe(group, ceiling)).await? {
            Reply::Capacity(c) => Ok(c),
            _ => unreachable!("the worker answers Describe with a Capacity"),
        }
    }

    /// Moves `group` towards `target`, carrying out decision `decision` (its id for the plugin).
    pub async fn scale(
        &self,
        group: Group,
        target: Target,
        ceiling: u32,
        decision: Option<String>,
    ) -> Result<Outcome, CallError> {
        match self.call(Call::Scale(group, target, ceiling, decision)).await? {
            Reply::Outcome(o) => Ok(o),
            _ => unreachable!("the worker answers Scale with an Outcome"),
        }
    }

    /// A storage group's volume (a backend that exports `volumes`).
    pub async fn describe_volume(&self, group: VolumeGroup) -> Result<Volume, CallError> {
        match self.call(Call::DescribeVolume(group)).await? {
            Reply::Volume(v) => Ok(v),
            _ => unreachable!("the worker answers DescribeVolume with a Volume"),
        }
    }

    /// Grows a storage group's volume to `size_gib`, carrying out decision `decision`.
    pub async fn resize_volume(
        &self,
        group: VolumeGroup,
        size_gib: u64,
        decision: Option<String>,
    ) -> Result<Resized, CallError> {
        match self.call(Call::ResizeVolume(group, size_gib, decision)).await? {
            Reply::Resized(r) => Ok(r),
            _ => unreachable!("the worker answers ResizeVolume with Resized"),
        }
    }

    /// Replaces the running version with `prepared` between two calls. State carries over
    /// (it lives in the database under the plugin's name); the fault history starts afresh.
    pub async fn swap(&self, prepared: Prepared, parked: bool) {
        let mut worker = self.shared.worker.lock().await;
        worker.pre = (!parked).then(|| prepared.pre.clone());
        worker.path = prepared.path.clone();
        worker.hash = prepared.hash.clone();
        worker.live = None;
        worker.consecutive_faults = 0;
        *lock(&self.shared.quarantined_until) = None;
        let mut status = lock(&self.shared.status);
        status.version = prepared.metadata.version.clone();
        status.contract = prepared.header.contract.clone();
        status.config_keys = prepared.metadata.config_keys.clone();
        status.file = prepared.path.display().to_string();
        status.sha256 = prepared.hash.clone();
        status.signer = prepared.signer.clone();
        status.binding = binding(&prepared);
        status.state = State::Ready;
    }
}

fn binding(prepared: &Prepared) -> &'static str {
    if prepared.bound {
        "bound"
    } else {
        "unbound"
    }
}

impl Shared {
    /// Counts the CPU time a call cost.
    fn charge(&self, cpu: Duration) {
        self.cpu_ns_total.fetch_add(cpu.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// After this many faults in a row the plugin is quarantined.
const QUARANTINE_AFTER: u32 = 3;
const QUARANTINE_FIRST: Duration = Duration::from_secs(1);
const QUARANTINE_MAX: Duration = Duration::from_secs(300);

struct Worker {
    rt: Arc<Runtime>,
    /// The linked component; `None` while parked.
    pre: Option<Pre>,
    /// The file it was loaded from and its content hash, to link it again.
    path: std::path::PathBuf,
    hash: String,
    grants: Arc<Grants>,
    limits: Limits,
    live: Option<Instance>,
    consecutive_faults: u32,
}

impl Worker {
    async fn call(&mut self, shared: &Shared, call: Call) -> Result<Reply, CallError> {
        if let Some(until) = *lock(&shared.quarantined_until) {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(CallError::Quarantined(left));
            }
        }
        shared.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.pre.is_none() {
            let kind = lock(&shared.status).kind;
            tracing::info!(plugin = %self.grants.plugin, "first call: linking it from the compile cache");
            let pre = super::loader::relink(&self.rt, &self.path, &self.hash, kind).await;
            self.pre = Some(pre.map_err(CallError::Unprepared)?);
        }
        let pre = self.pre.as_ref().expect("linked above");
        // Taken out for the call: if the caller abandons it midway, the instance is not reused.
        let result = match self.live.take() {
            Some(live) => Ok(live),
            None => Instance::new(&self.rt, pre, self.grants.clone(), &self.limits).await,
        };
        let outcome = match result {
            Err(fault) => Err(fault),
            Ok(mut live) => {
                let result = live.call(call, &self.limits).await;
                shared.charge(live.store.data().cpu.used());
                match result {
                    Ok(reply) => {
                        if !live.worn_out(&self.limits) {
                            self.live = Some(live);
                        }
                        Ok(reply)
                    }
                    Err(CallFault::WrongKind(kind)) => {
                        self.live = Some(live);
                        return Err(CallError::WrongKind(kind));
                    }
                    Err(CallFault::NoVolumes) => {
                        self.live = Some(live);
                        return Err(CallError::NoVolumes);
                    }
                    // The instance may be poisoned: it is dropped here, and the next call makes a new one.
                    Err(CallFault::Fault(fault)) => Err(fault),
                }
            }
        };
        match outcome {
            Ok(reply) => {
                self.consecutive_faults = 0;
                reply.map_err(CallError::Plugin)
            }
            Err(fault) => {
                self.consecutive_faults += 1;
                let mut status = lock(&shared.status);
                status.faults += 1;
                status.last_fault = Some(fault.to_string());
                tracing::warn!(plugin = %self.grants.plugin, "call failed: {fault}; the instance was discarded");
                if self.consecutive_faults >= QUARANTINE_AFTER {
                    let exponent = (self.consecutive_faults - QUARANTINE_AFTER).min(16);
                    let backoff = (QUARANTINE_FIRST * 2u32.pow(exponent)).min(QUARANTINE_MAX);
                    *lock(&shared.quarantined_until) = Some(Instant::now() + backoff);
                    tracing::error!(
                        plugin = %self.grants.plugin,
                        "quarantined for {}ms after {} faults in a row",
                        backoff.as_millis(),
                        self.consecutive_faults
                    );
                }
                Err(CallError::Fault(fault))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_about_the_plugins_table_names_the_plugin() {
        let mut m = "[plugins.<name>.config]: missing field `url`".to_string();
        super::name_the_table(&mut m, "prometheus");
        assert_eq!(m, "[plugins.prometheus.config]: missing field `url`");
        let mut other = "no key `url`".to_string();
        super::name_the_table(&mut other, "prometheus");
        assert_eq!(other, "no key `url`");
    }

    #[test]
    fn a_volume_of_no_size_or_of_more_than_a_pebibyte_is_a_fault() {
        use super::{validate, Reply, Resized, Volume};
        let v = |size_gib| Volume { id: "v".into(), size_gib, ..Default::default() };
        assert!(validate(&Reply::Volume(v(1)), 10).is_ok());
        assert!(validate(&Reply::Volume(v(1 << 20)), 10).is_ok(), "GiB are not replicas: no sanity ceiling");
        for bad in [0, (1 << 20) + 1, u64::MAX] {
            assert!(validate(&Reply::Volume(v(bad)), 10).is_err(), "{bad}");
            let resized = Reply::Resized(Resized { volume: v(bad), detail: String::new() });
            assert!(validate(&resized, 10).is_err(), "{bad}");
        }
    }
}
