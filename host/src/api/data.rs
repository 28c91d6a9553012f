//! `GET /api/series` and `GET /api/decisions`: windows of the store for the page's charts and
//! decision timeline. Read-only, and bounded whatever the window: at most [`POINTS`] points per
//! series, [`MAX_EVENTS`] timeline events from the newest [`MAX_SCANNED`] evaluations. Reads
//! run on the store's read pool, never on the scaler's connection; a full pool answers 503.

use super::server::ClientAddr;
use super::ApiState;
use crate::store::{JournalEntry, ReadError, Selector};
use crate::timefmt::now_ms;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Points per chart line: about one per pixel of a wide chart.
const POINTS: i64 = 600;
/// The newest this many timeline events are sent.
const MAX_EVENTS: usize = 500;
/// The newest this many evaluations are read for the timeline (about 5.5 hours of a 1-s group).
const MAX_SCANNED: usize = 20_000;
/// Longest window: a week, as the page offers (rollups keep longer, `agent metrics query` reads it).
const MAX_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

#[derive(Deserialize)]
pub struct SeriesQuery {
    name: String,
    /// `key=value,key=value`: labels the series must have.
    labels: Option<String>,
    /// A duration (`15m`, `6h`, `7d`); default 15m.
    window: Option<String>,
}

#[derive(Deserialize)]
pub struct DecisionsQuery {
    group: String,
    window: Option<String>,
}

type Refusal = (StatusCode, String);

/// The window asked for, in ms, or why it is refused.
fn window_ms(text: Option<&str>) -> Result<i64, Refusal> {
    let ms = match text {
        None => 15 * 60_000,
        Some(t) => crate::duration::parse(t)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("window: {e}\n")))?
            .as_millis() as i64,
    };
    if !(1_000..=MAX_WINDOW_MS).contains(&ms) {
        return Err((StatusCode::BAD_REQUEST, "window: between 1s and 7d\n".into()));
    }
    Ok(ms)
}

/// The bucket width that gives about [`POINTS`] points over `window_ms`: whole seconds, and
/// whole minutes from a minute up, so that older windows read the 1-minute rollups.
pub fn step_ms(window_ms: i64) -> i64 {
    let step = (window_ms / POINTS).max(1_000);
    let unit = if step >= 60_000 { 60_000 } else { 1_000 };
    (step + unit - 1) / unit * unit
}

fn matchers(text: Option<&str>) -> Result<Vec<(String, String)>, Refusal> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Vec::new()) };
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err((StatusCode::BAD_REQUEST, format!("labels: `{pair}` is not key=value\n"))),
        })
        .collect()
}

pub async fn series(
    State(state): State<Arc<ApiState>>,
    client: Option<Extension<ClientAddr>>,
    Query(q): Query<SeriesQuery>,
) -> Response {
    let (window, matchers) = match (window_ms(q.window.as_deref()), matchers(q.labels.as_deref())) {
        (Ok(w), Ok(m)) => (w, m),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let (to, step) = (now_ms() + 1, step_ms(window));
    let from = to - window;
    let sel = Selector { name: q.name, matchers };
    let read = read(&state, client, move |store| store.query(&sel, from, to, Some(step))).await;
    match read {
        Ok(series) => {
            Json(json!({"from_ms": from, "to_ms": to, "step_ms": step, "series": series})).into_response()
        }
        Err(refused) => refused,
    }
}

/// Runs `f` on the API's read pool for the requesting client; a refusal as the response to send.
async fn read<T: Send + 'static>(
    state: &ApiState,
    client: Option<Extension<ClientAddr>>,
    f: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    let Some(pool) = state.reads.as_ref() else {
        return Err((StatusCode::NOT_FOUND, "this agent has no store\n").into_response());
    };
    match pool.read(client.map(|c| c.0 .0.ip()), f).await {
        Ok(value) => Ok(value),
        Err(ReadError::Busy) => {
            state.telemetry.api_reads_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "1")],
                format!("{}\n", ReadError::Busy),
            )
                .into_response())
        }
        Err(e) => {
            Err((StatusCode::INTERNAL_SERVER_ERROR, format!("reading the store: {e}\n")).into_response())
        }
    }
}

/// The newest [`MAX_EVENTS`] runs of `entries`, and how many older ones were left out.
fn events(entries: &[JournalEntry]) -> (Vec<crate::store::Run>, usize) {
    let mut out = crate::store::runs(entries);
    let omitted = out.len().saturating_sub(MAX_EVENTS);
    (out.split_off(omitted), omitted)
}

pub async fn decisions(
    State(state): State<Arc<ApiState>>,
    client: Option<Extension<ClientAddr>>,
    Query(q): Query<DecisionsQuery>,
) -> Response {
    let window = match window_ms(q.window.as_deref()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let (from, step) = (now_ms() - window, step_ms(window));
    let group = q.group;
    let read = read(&state, client, move |store| {
        // Capacity is folded per bucket by SQLite; the timeline reads only the newest
        // evaluations: a week of a 1-s group is 600 000 rows, never all in memory.
        let capacity = store.capacity_steps(&group, from, step)?;
        let entries = store.recent_decisions(&group, from, MAX_SCANNED)?;
        let scanned_from = entries.first().filter(|_| entries.len() == MAX_SCANNED).map(|e| e.t_ms);
        let (events, omitted) = events(&entries);
        Ok(json!({
            "from_ms": from,
            "step_ms": step,
            "evaluations": capacity.evaluations,
            "capacity": capacity,
            "events": events,
            "omitted": omitted,
            // Set when the window held more evaluations than are read for the timeline: events
            // are those since this instant.
            "events_from_ms": scanned_from,
        }))
    })
    .await;
    match read {
        Ok(body) => Json(body).into_response(),
        Err(refused) => refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_whole_seconds_then_whole_minutes() {
        assert_eq!(step_ms(15 * 60_000), 2_000);
        assert_eq!(step_ms(60_000), 1_000);
        assert_eq!(step_ms(3_600_000), 6_000);
        assert_eq!(step_ms(24 * 3_600_000), 180_000);
        assert_eq!(step_ms(MAX_WINDOW_MS) % 60_000, 0);
        assert!(MAX_WINDOW_MS / step_ms(MAX_WINDOW_MS) <= POINTS);
    }

    #[test]
    fn bad_windows_and_labels_are_refused_with_the_field() {
        assert!(window_ms(Some("forever")).unwrap_err().1.starts_with("window:"));
        assert!(window_ms(Some("30d")).is_err());
        assert_eq!(window_ms(Some("1h")).unwrap(), 3_600_000);
        assert!(matchers(Some("process")).unwrap_err().1.starts_with("labels:"));
        assert_eq!(matchers(Some("process=web,replica=0")).unwrap().len(), 2);
    }
}
