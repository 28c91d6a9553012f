//! The agent's HTTP API: `GET /healthz`, `GET /status`, `GET /metrics`, the operator's page at
//! `GET /` with the data it reads (`/api/series`, `/api/decisions`), and the token-guarded POST
//! actions. Listens on loopback by default.
//!
//! Owns: routes and their JSON shapes. Reads state through the registry and collector; changes
//! state only through the supervisor and reloader, and only with the token.

use crate::collector::Collector;
use crate::plugins::registry::Registry;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

mod data;
mod logs;
pub mod page;
pub mod prometheus;
pub mod server;

/// The token mutating requests must carry (`Authorization: Bearer TOKEN`). The agent writes
/// it to `DATA_DIR/api.token` (mode 0600) at start; the CLI reads it from there.
pub const TOKEN_FILE: &str = "api.token";

pub struct ApiState {
    pub supervisor: Option<Arc<crate::supervisor::Supervisor>>,
    pub scaler: Option<Arc<crate::scaler::Scaler>>,
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    pub token: String,
    pub registry: Option<Arc<Registry>>,
    pub collector: Option<Arc<Collector>>,
    pub started: Instant,
    /// Reads for clients: their own threads and connections, bounded (see [`crate::store::ReadPool`]).
    pub reads: Option<Arc<crate::store::ReadPool>>,
    pub writer: Option<Arc<crate::store::WriterStats>>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Turns true when the agent stops: open-ended responses end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The listen address is loopback: requests must name loopback (see [`page::guard`]).
    pub loopback: bool,
    /// `[agent] sample_interval`, for the page's refresh.
    pub sample_interval_ms: u64,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let loopback = state.loopback;
    let mut router = Router::new();
    for path in page::paths() {
        router = router.route(path, get(page::asset));
    }
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/series", get(data::series))
        .route("/api/decisions", get(data::decisions))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/reload", axum::routing::post(reload))
        .route("/processes/{name}/logs", get(logs::logs))
        .route("/processes/{name}/{action}", axum::routing::post(control))
        .route("/processes/{name}/replicas/{count}", axum::routing::post(replicas))
        .layer(axum::middleware::from_fn(move |req, next| page::guard(loopback, req, next)))
        .with_state(state)
}

/// `?pretty`: indented, for a person reading it with curl.
#[derive(serde::Deserialize)]
struct StatusQuery {
    pretty: Option<String>,
}

async fn status(
    State(state): State<Arc<ApiState>>,
    axum::extract::Query(q): axum::extract::Query<StatusQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = status_json(&state);
    if q.pretty.is_none() {
        return Json(body).into_response();
    }
    let text = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
    ([(axum::http::header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn status_json(state: &ApiState) -> serde_json::Value {
    let (running, failed) = state.registry.as_ref().map(|r| r.status()).unwrap_or_default();
    let sources = state.collector.as_ref().map(|c| c.status()).unwrap_or_default();
    // One list with every plugin file's state: running plugins as they report themselves, and
    // files that provide no running plugin as `failed`, named after the file.
    let config = state.registry.as_ref().map(|r| r.config());
    let mut plugins: Vec<serde_json::Value> = running
        .iter()
        .map(|p| {
            let mut entry = json!(p);
            entry["grants"] = config.as_ref().map(|c| grants(&c.plugin(&p.name))).unwrap_or_default();
            // A source's collections: a failed one is the plugin's problem as much as a fault.
            if let Some(source) = sources.iter().find(|s| s.name == p.name) {
                entry["collection"] = json!(source);
            }
            entry
        })
        .collect();
    for file in state.registry.as_ref().map(|r| r.loading()).unwrap_or_default() {
        let stem = std::path::Path::new(&file).file_stem().map(|s| s.to_string_lossy().into_owned());
        plugins.push(json!({"name": stem, "file": file, "kind": null, "version": null, "state": "loading", "faults": 0}));
    }
    for f in failed.iter().filter(|f| f.kept_running.is_none()) {
        let stem = std::path::Path::new(&f.file).file_stem().map(|s| s.to_string_lossy().into_owned());
        plugins.push(json!({
            "name": stem, "file": f.file, "kind": null, "version": null,
            "state": f.state, "faults": 0, "error": f.error,
        }));
    }
    let processes = state.supervisor.as_ref().map(|s| s.status()).unwrap_or_default();
    let groups = state.scaler.as_ref().map(|s| s.status()).unwrap_or_default();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "groups": groups,
        "cluster": state.scaler.as_ref().and_then(|s| s.cluster()).map(|c| c.status()),
        // What the configuration asks of plugins that the loaded ones do not offer.
        "problems": state.registry.as_ref().map(|r| r.problems()).unwrap_or_default(),
        "processes": processes,
        "supervisor": state.supervisor.as_ref().map(|s| s.tree_status()),
        "config": state.reloader.as_ref().map(|r| r.status()),
        "uptime_s": state.started.elapsed().as_secs(),
        "sample_interval_ms": state.sample_interval_ms,
        "plugins_dir": state.registry.as_ref().map(|r| r.dir().display().to_string()),
        // Every file present at start-up has been tried (loaded or failed).
        "plugins_settled": state.registry.as_ref().is_none_or(|r| r.started()),
        "plugins": plugins,
        "failed_files": failed,
        "sources": sources,
        "store": state.writer.as_ref().map(|w| json!({
            "live_series": w.live_series(),
            "series_refused": w.series_refused.load(std::sync::atomic::Ordering::Relaxed),
            "series_evicted": w.series_evicted.load(std::sync::atomic::Ordering::Relaxed),
        })),
    })
}

/// What a plugin may reach and spend: its origins, the names of its secrets (never their values
/// or where they are kept), the processes it may resize, and its limits.
fn grants(s: &crate::config::PluginSettings) -> serde_json::Value {
    json!({
        "allow_http": s.allow_http.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        "ca_file": s.ca_file.as_ref().map(|c| c.path().display().to_string()),
        "secrets": s.secrets.keys().collect::<Vec<_>>(),
        "processes": s.processes,
        "memory_mib": s.memory_limit_bytes >> 20,
        "cpu_limit_ms": s.cpu_limit.map(|d| d.as_millis() as u64),
        "timeout_ms": s.timeout.map(|d| d.as_millis() as u64),
    })
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl axum::response::IntoResponse {
    // Rendering is proportional to the series (bounded by [store] max_series): off the async
    // workers, so /healthz and the rest never wait on it.
    let body = tokio::task::spawn_blocking(move || {
        let latest = state.writer.as_ref().map(|w| w.latest()).unwrap_or_default();
        let plugins = state.registry.as_ref().map(|r| r.status().0).unwrap_or_default();
        let config = state.reloader.as_ref().map(|r| r.status());
        let cluster = state.scaler.as_ref().and_then(|s| s.cluster()).map(|c| c.status());
        let groups = state.scaler.as_ref().map(|s| s.status()).unwrap_or_default();
        prometheus::render(&prometheus::Inputs {
            groups: &groups,
            cluster: cluster.as_ref(),
            config: config.as_ref(),
            latest: &latest,
            writer: state.writer.as_deref(),
            telemetry: &state.telemetry,
            plugins: &plugins,
            uptime_s: state.started.elapsed().as_secs_f64(),
        })
    })
    .await
    .unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// Whether the request carries the agent's token. Compared in constant time.
fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

type Reply = (axum::http::StatusCode, String);

fn unauthorized() -> Reply {
    (
        axum::http::StatusCode::UNAUTHORIZED,
        format!("a token is required: Authorization: Bearer <DATA_DIR/{TOKEN_FILE}>\n"),
    )
}

fn refuse(headers: &axum::http::HeaderMap, state: &ApiState) -> Option<Reply> {
    if !authorized(headers, &state.token) {
        return Some(unauthorized());
    }
    if state.supervisor.is_none() {
        return Some((axum::http::StatusCode::NOT_FOUND, "this agent supervises no processes\n".into()));
    }
    None
}

fn outcome(result: Result<(), crate::supervisor::SupervisorError>, done: String) -> Reply {
    match result {
        Ok(()) => (axum::http::StatusCode::OK, done + "\n"),
        Err(e @ crate::supervisor::SupervisorError::Unknown(_)) => {
            (axum::http::StatusCode::NOT_FOUND, e.to_string() + "\n")
        }
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string() + "\n"),
    }
}

async fn control(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path((name, action)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Reply {
    if let Some(refused) = refuse(&headers, &state) {
        return refused;
    }
    let supervisor = state.supervisor.as_ref().expect("checked by refuse");
    let before = instances(supervisor, &name);
    let result = match action.as_str() {
        "restart" => supervisor.restart(&name).await,
        "stop" => supervisor.stop(&name).await,
        "start" => supervisor.start_program(&name).await,
        other => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: restart, stop or start\n"),
            )
        }
    };
    let done = match action.as_str() {
        "restart" => "restarting",
        "stop" => "stopped",
        _ => "starting the stopped or failed ones of",
    };
    outcome(result, format!("{name}: {done} {before}"))
}

/// `2 instances (web-0 pid 812 running, web-1 pid 813 running)`: what an action on `name`
/// acts on, as it stood before, so that its answer says what it caused.
fn instances(supervisor: &crate::supervisor::Supervisor, name: &str) -> String {
    let list: Vec<String> = supervisor
        .status()
        .into_iter()
        .filter(|i| i.name == name)
        .map(|i| {
            let pid = i.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
            format!("{name}-{}{pid} {}", i.replica, i.state.describe())
        })
        .collect();
    format!("{} instance(s) ({})", list.len(), list.join(", "))
}

async fn replicas(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path((name, count)): axum::extract::Path<(String, u32)>,
    headers: axum::http::HeaderMap,
) -> Reply {
    if let Some(refused) = refuse(&headers, &state) {
        return refused;
    }
    let supervisor = state.supervisor.as_ref().expect("checked by refuse");
    let before: std::collections::BTreeSet<u32> =
        supervisor.status().into_iter().filter(|i| i.name == name).map(|i| i.replica).collect();
    let result = supervisor.set_replicas(&name, count).await;
    outcome(
        result,
        format!("{name}: {} → {count} replicas; {}", before.len(), replica_changes(&name, &before, count)),
    )
}

/// Which replicas going from `before` to `count` starts or stops, as the supervisor chooses them:
/// new ones take the lowest free indices, removed ones are the highest.
fn replica_changes(name: &str, before: &std::collections::BTreeSet<u32>, count: u32) -> String {
    let named = |r: Vec<u32>| r.iter().map(|r| format!("{name}-{r}")).collect::<Vec<_>>().join(", ");
    let n = before.len();
    match n.cmp(&(count as usize)) {
        std::cmp::Ordering::Less => {
            let free = (0..).filter(|r| !before.contains(r)).take(count as usize - n).collect();
            format!("started {}", named(free))
        }
        std::cmp::Ordering::Greater => format!(
            "stopped {}",
            named(before.iter().rev().take(n - count as usize).rev().copied().collect())
        ),
        std::cmp::Ordering::Equal => "nothing to change".into(),
    }
}

/// `POST /reload`: re-reads the configuration file and applies it. 200 with what changed, or
/// 400 with the reason nothing changed.
async fn reload(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !authorized(&headers, &state.token) {
        return unauthorized().into_response();
    }
    let Some(reloader) = &state.reloader else {
        return (axum::http::StatusCode::NOT_FOUND, "this agent cannot reload\n").into_response();
    };
    match reloader.reload().await {
        Ok(changes) => Json(json!({
            "ok": true,
            "summary": crate::reload::summary(&changes),
            "changes": changes,
        }))
        .into_response(),
        Err(error) => {
            (axum::http::StatusCode::BAD_REQUEST, Json(json!({"ok": false, "error": error}))).into_response()
        }
    }
}

/// Serves the API on `listener` within `limits` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    limits: crate::config::ApiLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let telemetry = state.telemetry.clone();
    server::serve(listener, router(state), limits, telemetry, shutdown).await
}

#[cfg(test)]
mod replica_tests {
    #[test]
    fn the_answer_names_the_replicas_a_scale_starts_or_stops() {
        let before = [0, 2, 3].into_iter().collect();
        assert_eq!(super::replica_changes("web", &before, 5), "started web-1, web-4");
        assert_eq!(super::replica_changes("web", &before, 1), "stopped web-2, web-3");
        assert_eq!(super::replica_changes("web", &before, 3), "nothing to change");
    }
}
