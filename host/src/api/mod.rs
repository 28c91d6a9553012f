//! The agent's HTTP API: `GET /healthz`, `GET /status`, `GET /metrics`. Listens on loopback by
//! default.
//!
//! Owns: routes and their JSON shapes. Reads state through the registry and collector; mutates
//! nothing.

use crate::collector::Collector;
use crate::plugins::registry::Registry;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

pub mod prometheus;

pub struct ApiState {
    pub registry: Option<Arc<Registry>>,
    pub collector: Option<Arc<Collector>>,
    pub started: Instant,
    pub store: Option<crate::store::Store>,
    pub writer: Option<Arc<crate::store::WriterStats>>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn status(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let (running, failed) = state.registry.as_ref().map(|r| r.status()).unwrap_or_default();
    let sources = state.collector.as_ref().map(|c| c.status()).unwrap_or_default();
    // One list with every plugin file's state: running plugins as they report themselves, and
    // files that provide no running plugin as `failed`, named after the file.
    let mut plugins: Vec<serde_json::Value> = running.iter().map(|p| json!(p)).collect();
    for f in failed.iter().filter(|f| f.kept_running.is_none()) {
        let stem = std::path::Path::new(&f.file).file_stem().map(|s| s.to_string_lossy().into_owned());
        plugins.push(json!({
            "name": stem, "file": f.file, "kind": null, "version": null,
            "state": "failed", "faults": 0, "error": f.error,
        }));
    }
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "plugins_dir": state.registry.as_ref().map(|r| r.dir().display().to_string()),
        "plugins": plugins,
        "failed_files": failed,
        "sources": sources,
    }))
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl axum::response::IntoResponse {
    let latest = state.writer.as_ref().map(|w| w.latest()).unwrap_or_default();
    let plugins = state.registry.as_ref().map(|r| r.status().0).unwrap_or_default();
    let body = prometheus::render(&prometheus::Inputs {
        latest: &latest,
        writer: state.writer.as_deref(),
        telemetry: &state.telemetry,
        plugins: &plugins,
        uptime_s: state.started.elapsed().as_secs_f64(),
    });
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
