//! What a plugin instance can reach: the per-store host state, the deny-all WASI context, the
//! outbound-HTTP gate, the memory limiter and the CPU budget.
//!
//! Every grant is checked here and only here: HTTP origins in [`HttpGate::check`], secrets in
//! [`Grants::secret`], supervised processes in [`Grants::replicas_for`], the scale-in ranking in
//! [`Grants::ranking_for`], a group's cloud bounds in [`Grants::report_limits`]. Nothing else in
//! the agent hands a plugin anything.

use crate::config::{Origin, PluginSettings};
use crate::store::PluginState;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// How often the epoch advances: a running guest's CPU time is checked, and it yields to other
/// tasks, at least this often.
pub const TICK: Duration = Duration::from_millis(5);

/// What a plugin was granted, shared by all its instances.
pub struct Grants {
    pub plugin: Arc<str>,
    pub settings: PluginSettings,
    /// `None` while a plugin is only being inspected.
    pub state: Option<PluginState>,
    /// The supervisor's replica control; reachable only for the processes in `settings.processes`.
    pub replicas: Option<Arc<dyn ReplicaControl>>,
    /// Ranks units for `scale-in.rank`; reached only through [`Grants::ranking_for`].
    pub ranking: Option<Arc<dyn Ranking>>,
    /// Where `cloud-limits.report` writes; reached only through [`Grants::report_limits`].
    pub cloud_limits: Option<Arc<CloudLimits>>,
    /// What the plugin has made the agent spend, against its budgets.
    pub meter: Arc<super::meter::Meter>,
    /// Its outbound request rate per origin, shared by its instances.
    pub http_rates: Arc<super::outbound::Rates>,
    /// How its requests go out: TLS with the roots it trusts (its `ca_file` too).
    pub client: Arc<super::tls::Client>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Changing the replica count of a supervised process: what the `replicas` host interface
/// reaches. The supervisor implements it; plugins get it only through [`Grants::replicas_for`].
pub trait ReplicaControl: Send + Sync {
    /// (instances, ready instances) of `process`, or `None` if there is no such process.
    fn get(&self, process: &str) -> Option<(u32, u32)>;
    /// Sets the count; resolves once started and stopped. The error is for the plugin.
    fn set(&self, process: String, count: u32) -> BoxFuture<Result<(u32, u32), String>>;
    /// The replica indices of `process` that exist, or `None` if there is no such process.
    fn list(&self, process: &str) -> Option<Vec<u32>>;
    /// Each replica's state and busy probe answer, asked now.
    fn inspect(&self, process: String, replicas: Vec<u32>) -> BoxFuture<Result<Vec<ReplicaFacts>, String>>;
    /// Drains and stops these replicas; keeps those still busy.
    fn remove(&self, process: String, replicas: Vec<u32>) -> BoxFuture<Result<Removal, String>>;
}

/// What the supervisor knows of one replica when a scale-in ranks it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaFacts {
    pub replica: u32,
    /// Running and healthy (or running, without a health check).
    pub ready: bool,
    /// Its state in words (`starting`, `waiting to restart`).
    pub state: &'static str,
    /// The busy probe's answer now: `Ok(None)` without a probe, `Err` when it did not answer.
    pub busy: Result<Option<f64>, String>,
}

/// What a removal of replicas did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Removal {
    pub removed: Vec<u32>,
    /// Kept after all, with why.
    pub kept: Vec<(u32, String)>,
}

/// Ranking units for `scale-in.rank`: the scaler implements it, the daemon wires it (as the
/// supervisor's [`ReplicaControl`]); plugins reach it only through [`Grants::ranking_for`].
pub trait Ranking: Send + Sync {
    /// The backend `group` is scaled by now, if there is such a group; `Err(why)` when the
    /// agent cannot say (it is stopping).
    fn backend_of(&self, group: &str) -> Result<Option<String>, String>;
    /// Ranks `units` of `group` for backend `plugin` (checked again against the configuration
    /// in force when it ranks); units `PROCESS#N` of the `granted` processes are measured as
    /// replicas, any other unit by the group's `[group.scale_in]` series.
    fn rank(&self, plugin: String, group: String, granted: Vec<String>, units: Vec<String>)
        -> RankFuture<'_>;
}

/// What [`Ranking::rank`] returns.
pub type RankFuture<'a> = Pin<
    Box<
        dyn std::future::Future<Output = Result<Vec<super::types::Candidate>, super::types::PluginError>>
            + Send
            + 'a,
    >,
>;

/// The clouds' own bounds on groups, as their backends report them (`cloud-limits.report`,
/// contract 0.1.4): the scaler keeps a group's target inside them. A report counts only while
/// the plugin that made it is still the group's backend.
#[derive(Default)]
pub struct CloudLimits(Mutex<std::collections::HashMap<String, Reported>>);

/// Which backend reported a group's cloud bounds, and the bounds.
type Reported = (Arc<str>, u32, u32);

impl CloudLimits {
    pub fn set(&self, group: &str, backend: &Arc<str>, min: u32, max: u32) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(group.to_string(), (backend.clone(), min, max));
    }

    /// `group`'s bounds as `backend` last reported them.
    pub fn get(&self, group: &str, backend: &str) -> Option<(u32, u32)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(group).filter(|(b, ..)| &**b == backend).map(|(_, lo, hi)| (*lo, *hi))
    }
}

/// Most units one `scale-in.rank` call may name.
pub const MAX_RANKED_UNITS: usize = 1000;

impl Grants {
    pub fn new(
        plugin: &str,
        settings: PluginSettings,
        state: Option<PluginState>,
        replicas: Option<Arc<dyn ReplicaControl>>,
    ) -> Grants {
        let meter = super::meter::Meter::new(plugin.into(), settings.budgets.log);
        let http_rates = Default::default();
        let client = Arc::new(super::tls::Client::new(plugin.into(), settings.ca_file.as_ref()));
        warn_of(plugin, &settings);
        let grants = Grants {
            plugin: plugin.into(),
            settings,
            state,
            replicas,
            ranking: None,
            cloud_limits: None,
            meter,
            http_rates,
            client,
        };
        grants.mask_secrets();
        grants
    }

    /// Reads every granted secret once, so that its value is masked in what the plugin writes
    /// even before (or without) the plugin asking for it.
    fn mask_secrets(&self) {
        for source in self.settings.secrets.values() {
            if let Some(value) = source.read() {
                self.meter.remember_secret(&value);
            }
        }
    }

    /// The same plugin under new settings (a reloaded configuration): its meter and outbound
    /// rates carry on.
    pub fn renewed(&self, settings: PluginSettings, state: Option<PluginState>) -> Grants {
        if settings.budgets.log != self.settings.budgets.log {
            self.meter.set_log_limits(settings.budgets.log);
        }
        if settings.allow_http != self.settings.allow_http {
            warn_of(&self.plugin, &settings);
        }
        let grants = Grants {
            client: Arc::new(self.client.renewed(settings.ca_file.as_ref())),
            plugin: self.plugin.clone(),
            settings,
            state,
            replicas: self.replicas.clone(),
            ranking: self.ranking.clone(),
            cloud_limits: self.cloud_limits.clone(),
            meter: self.meter.clone(),
            http_rates: self.http_rates.clone(),
        };
        grants.mask_secrets();
        grants
    }

    /// The replica control for `process`, if — and only if — it was granted to this plugin.
    pub fn replicas_for(&self, process: &str) -> Result<Arc<dyn ReplicaControl>, String> {
        if !self.settings.processes.iter().any(|p| p == process) {
            let process = self.meter.clean(process, 64);
            self.meter.exceeded(super::meter::Budget::Denied, 1, || {
                format!("replica control of `{process}` denied: not in processes")
            });
            return Err(format!(
                "process `{process}` is not granted to this plugin ([plugins.{}] processes)",
                self.plugin
            ));
        }
        self.replicas.clone().ok_or_else(|| "this agent supervises no processes".to_string())
    }

    /// The scale-in ranking for `group`, if — and only if — this plugin is the group's backend,
    /// and for at most [`MAX_RANKED_UNITS`] units.
    pub fn ranking_for(
        &self,
        group: &str,
        units: usize,
    ) -> Result<Arc<dyn Ranking>, super::types::PluginError> {
        use super::types::PluginError;
        let ranking = self.backend_of_own(group, "scale-in.rank")?;
        if units > MAX_RANKED_UNITS {
            return Err(PluginError::InvalidInput(format!("{units} units: at most {MAX_RANKED_UNITS}")));
        }
        Ok(ranking)
    }

    /// Records the cloud's bounds on `group` (`cloud-limits.report`), if — and only if — this
    /// plugin is the group's backend.
    pub fn report_limits(&self, group: &str, min: u32, max: u32) -> Result<(), super::types::PluginError> {
        use super::types::PluginError;
        self.backend_of_own(group, "cloud-limits.report")?;
        if min > max {
            return Err(PluginError::InvalidInput(format!("min-replicas {min} is above max-replicas {max}")));
        }
        let limits = self
            .cloud_limits
            .as_ref()
            .ok_or_else(|| PluginError::Unavailable("no cloud limits in this agent".into()))?;
        limits.set(group, &self.plugin, min, max);
        Ok(())
    }

    /// The ranking (which knows each group's backend), when this plugin is `group`'s backend;
    /// a denied call is metered and refused.
    fn backend_of_own(&self, group: &str, what: &str) -> Result<Arc<dyn Ranking>, super::types::PluginError> {
        use super::types::PluginError;
        let ranking = self
            .ranking
            .clone()
            .ok_or_else(|| PluginError::Unavailable("no scale-in ranking in this agent".into()))?;
        let backend = ranking.backend_of(group).map_err(PluginError::Unavailable)?;
        if backend.as_deref() != Some(&*self.plugin) {
            let group = self.meter.clean(group, 64);
            let why = format!("`{group}` is not a group this backend scales");
            self.meter.exceeded(super::meter::Budget::Denied, 1, || format!("{what}: {why}"));
            return Err(PluginError::BadConfig(why));
        }
        Ok(ranking)
    }

    /// Reads the secret `name` if, and only if, it was granted to this plugin.
    pub fn secret(&self, name: &str) -> Option<String> {
        let source = self.settings.secrets.get(name)?;
        let value = source.read();
        if let Some(value) = &value {
            self.meter.remember_secret(value);
        } else {
            // Say where we looked, never what we found.
            self.meter.exceeded(super::meter::Budget::Denied, 1, || {
                format!("secret `{name}` is granted but {source:?} could not be read")
            });
        }
        value
    }
}

/// Logs what is unwise in what a plugin is granted, when it is granted: the daemon's start and a
/// reload that changes it. (`check-config` prints the same lines: [`crate::config::Config::warnings`].)
fn warn_of(plugin: &str, settings: &PluginSettings) {
    for line in settings.warnings(plugin) {
        tracing::warn!("{line}");
    }
}

/// The `T` of every plugin `Store<T>`.
pub struct HostState {
    pub grants: Arc<Grants>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    gate: HttpGate,
    pub limiter: MemoryLimiter,
    /// The CPU time of the current call (guest code and host functions), against its budget.
    pub cpu: super::cpu::CpuMeter,
    /// The last bytes the guest wrote to stderr (a panic message ends up here).
    pub stderr: TailBuffer,
    /// `scale-in` / `replica-units` calls made by the current call (each may make the agent
    /// probe every replica): at most [`SCALE_IN_CALLS`].
    pub scale_in_calls: u32,
    /// The id of the decision the current `scale` call carries out (`decision.id`).
    pub decision: Option<String>,
}

/// Most `scale-in.rank` and `replica-units.remove` calls one backend call may make.
pub const SCALE_IN_CALLS: u32 = 8;

impl HostState {
    pub fn new(grants: Arc<Grants>, kind: super::Kind) -> HostState {
        let stderr = TailBuffer::default();
        // Deny-all: no preopened directories, no environment, no arguments, no sockets, no
        // name lookups. Clocks and randomness are the host's (they reveal nothing).
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let outbound = super::outbound::Outbound::new(
            grants.settings.budgets.http(kind),
            grants.meter.clone(),
            grants.http_rates.clone(),
        );
        let gate = HttpGate {
            allowed: grants.settings.allow_http.clone().into(),
            outbound,
            client: grants.client.clone(),
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        HostState {
            limiter: MemoryLimiter::new(grants.settings.memory_limit_bytes),
            grants,
            wasi,
            table,
            http: WasiHttpCtx::new(),
            gate,
            cpu: Default::default(),
            stderr,
            scale_in_calls: 0,
            decision: None,
        }
    }
}

/// Host resources (HTTP requests, bodies, streams, pollables) one instance may hold at once.
const MAX_HANDLES: usize = 10_000;

impl HostState {
    /// A call starts: its outbound requests must end by `deadline`.
    pub fn begin_call(&mut self, deadline: std::time::Instant) {
        self.gate.outbound.begin_call(deadline);
        self.scale_in_calls = 0;
    }

    /// The call ended: cancels its open requests; returns how many there were.
    pub fn end_call(&mut self) -> u32 {
        self.gate.outbound.end_call()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.gate }
    }
}

/// The one place outbound HTTP is allowed or denied.
pub struct HttpGate {
    allowed: Arc<[Origin]>,
    outbound: super::outbound::Outbound,
    client: Arc<super::tls::Client>,
}

/// Longest a plugin's request may wait on the network at each stage, whatever it asks for.
const HTTP_STAGE_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpGate {
    /// Whether a request to `scheme://authority` may go out. The request's origin is normalised
    /// exactly as grants are (see [`Origin`]), then compared for equality.
    pub fn check(&self, scheme: Option<&str>, authority: Option<&str>) -> Result<Origin, String> {
        let authority = authority.ok_or("request has no host")?;
        let origin = Origin::of_request(scheme, authority)?;
        if self.allowed.contains(&origin) {
            Ok(origin)
        } else {
            Err(format!("{origin} is not in allow_http"))
        }
    }
}

type HttpResult<T> = wasmtime_wasi_http::Result<T>;
type IoFuture = Box<dyn std::future::Future<Output = HttpResult<()>> + Send>;

impl wasmtime_wasi_http::WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn std::future::Future<Output = HttpResult<(http::Response<wasmtime_wasi_http::WasiBody>, IoFuture)>>
            + Send,
    > {
        let uri = request.uri();
        let origin = match self.check(uri.scheme_str(), uri.authority().map(|a| a.as_str())) {
            Ok(origin) => origin,
            Err(why) => {
                let why = self.outbound.meter().clean(&why, 200);
                self.outbound
                    .meter()
                    .exceeded(super::meter::Budget::Denied, 1, || format!("outbound HTTP denied: {why}"));
                return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
            }
        };
        let slot = match self.outbound.admit(&origin) {
            Ok(slot) => slot,
            Err(e) => return Box::new(async { Err(e) }),
        };
        let cap = |t: Option<Duration>| Some(t.map_or(HTTP_STAGE_TIMEOUT, |t| t.min(HTTP_STAGE_TIMEOUT)));
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        drop(fut);
        let (out, deadline) = (self.outbound.clone(), self.outbound.response_deadline());
        let client = self.client.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            let send = async move { client.send(request, options).await };
            let (response, io) = out.bounded(deadline, true, send).await?;
            let response = response.map(|b| out.meter_body(b.boxed_unsync(), deadline, slot).boxed_unsync());
            let io = out.bounded(deadline, false, io);
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// Raised (as the error of a `memory.grow`) when a plugin asks for more memory than it may have.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired})")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

/// Caps every linear memory and table of an instance.
pub struct MemoryLimiter {
    limit: usize,
    /// The largest memory the instance has grown to: it never shrinks, so this is its footprint.
    pub peak: usize,
}

impl MemoryLimiter {
    fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter { limit: usize::try_from(limit).unwrap_or(usize::MAX), peak: 0 }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded { limit: self.limit, desired }.into());
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        64
    }
}

/// Keeps the last few KiB a guest wrote to stderr, so a panic message can be reported.
#[derive(Clone, Default)]
pub struct TailBuffer(Arc<Mutex<Vec<u8>>>);

const TAIL: usize = 4096;

impl TailBuffer {
    /// The last non-empty line written, if any.
    pub fn last_line(&self) -> Option<String> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&buf);
        text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
    }

    /// What a Rust panic printed (`panicked at FILE:LINE:COL:` and the message on the next
    /// line), else the last line written.
    pub fn summary(&self) -> Option<String> {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
            let at = lines[i].split("panicked at").nth(1).unwrap_or("").trim().trim_end_matches(':');
            let message = lines.get(i + 1).copied().unwrap_or("");
            return Some(format!("panicked at {at}: {message}"));
        }
        lines.last().map(|l| l.to_string())
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl IsTerminal for TailBuffer {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailBuffer {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for TailBuffer {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(data);
        if buf.len() > TAIL {
            let cut = buf.len() - TAIL;
            buf.drain(..cut);
        }
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(allowed: &[&str]) -> HttpGate {
        let meter = crate::plugins::meter::Meter::new("t".into(), Default::default());
        HttpGate {
            allowed: allowed.iter().map(|a| Origin::parse_grant(a).unwrap()).collect::<Vec<_>>().into(),
            outbound: crate::plugins::outbound::Outbound::new(
                crate::config::Budgets::default().http(crate::plugins::Kind::Source),
                meter,
                Default::default(),
            ),
            client: Arc::new(crate::plugins::tls::Client::new("t".into(), None)),
        }
    }

    #[test]
    fn only_the_exact_granted_origin_passes() {
        let g = gate(&["http://127.0.0.1:8080"]);
        assert!(g.check(Some("http"), Some("127.0.0.1:8080")).is_ok());
        assert!(g.check(Some("HTTP"), Some("127.0.0.1.:8080")).is_ok());
        // Each way around it.
        assert!(g.check(Some("http"), Some("127.0.0.1:8081")).is_err(), "other port");
        assert!(g.check(Some("https"), Some("127.0.0.1:8080")).is_err(), "other scheme");
        assert!(g.check(Some("http"), Some("127.0.0.1")).is_err(), "default port is 80");
        assert!(g.check(Some("http"), Some("localhost:8080")).is_err(), "other name, same address");
        assert!(g.check(Some("http"), Some("127.0.0.1:8080@evil.example")).is_err(), "userinfo trick");
        assert!(g.check(Some("http"), Some("evil.example#@127.0.0.1:8080")).is_err());
        assert!(g.check(Some("http"), None).is_err(), "no authority");
        assert!(gate(&[]).check(Some("http"), Some("127.0.0.1:8080")).is_err(), "no grant");
    }

    #[test]
    fn memory_limiter_refuses_growth_past_the_limit_with_its_own_error() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        let err = l.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
        assert_eq!(l.peak, 1 << 20);
    }

    #[test]
    fn tail_buffer_keeps_the_last_line() {
        use tokio::io::AsyncWrite;
        let t = TailBuffer::default();
        let mut w = t.clone();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let _ = Pin::new(&mut w).poll_write(&mut cx, &vec![b'x'; 10_000]);
        let _ = Pin::new(&mut w).poll_write(&mut cx, b"\npanicked at src/lib.rs:3: boom\n");
        assert_eq!(t.last_line().unwrap(), "panicked at src/lib.rs:3: boom");
    }
}
