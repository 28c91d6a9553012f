//! The agent's HTTP API: `GET /healthz` and `GET /status`. Listens on loopback by default.
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

pub struct ApiState {
    pub registry: Option<Arc<Registry>>,
    pub collector: Option<Arc<Collector>>,
    pub started: Instant,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .with_state(state)
}

async fn status(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let (plugins, failed) = state
        .registry
        .as_ref()
        .map(|r| r.status())
        .unwrap_or_default();
    let sources = state
        .collector
        .as_ref()
        .map(|c| c.status())
        .unwrap_or_default();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "plugins_dir": state.registry.as_ref().map(|r| r.dir().display().to_string()),
        "plugins": plugins,
        "failed_files": failed,
        "sources": sources,
    }))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
