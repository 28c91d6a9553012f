//! `GET /api/series` and `GET /api/decisions`: windows of the store for the page's charts and
//! decision timeline. Read-only, and bounded whatever the window: at most [`POINTS`] points per
//! series, [`MAX_EVENTS`] timeline events from the newest [`MAX_SCANNED`] evaluations. Reads
//! run on the store's read pool, never on the scaler's connection; a full pool answers 503.

use super::server::ClientAddr;
use super::ApiState;
use crate::store::{Action, JournalEntry, ReadError, Selector};
use crate::timefmt::now_ms;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
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

/// One timeline event: a journal entry, and how many evaluations after it said the same.
#[derive(Serialize)]
struct Event {
    #[serde(flatten)]
    entry: JournalEntry,
    repeats: u32,
}

/// What makes an evaluation worth its own line: what was done, from and to what, and which
/// guardrails changed the number (rounding aside: it almost always does).
fn signature(e: &JournalEntry) -> (Action, u32, u32, u32, Vec<String>) {
    let guardrails = e
        .steps
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s["guardrail"].as_str())
                .filter(|g| *g != "round")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    (e.action, e.current, e.target, e.target_tier, guardrails)
}

/// Run-length: an entry that says what the one before it said is counted in that one's
/// `repeats` (with the evaluations the journal folded into it); every action other than a hold
/// is its own event.
fn events(entries: &[JournalEntry]) -> (Vec<Event>, usize) {
    let mut out: Vec<Event> = Vec::new();
    let mut last = None;
    for e in entries {
        let sig = signature(e);
        let same = e.action == Action::Hold && last.as_ref() == Some(&sig);
        match out.last_mut() {
            Some(event) if same => event.repeats += e.count.max(1),
            // A row the journal folded stands for `count` evaluations already.
            _ => out.push(Event { entry: e.clone(), repeats: e.count.max(1) - 1 }),
        }
        last = Some(sig);
    }
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

    fn entry(t_ms: i64, action: Action, current: u32, target: u32, guardrails: &[&str]) -> JournalEntry {
        let steps: Vec<_> = guardrails.iter().map(|g| json!({"guardrail": g})).collect();
        JournalEntry {
            t_ms,
            group: "web".into(),
            current,
            ready: current,
            recommendation: Some(target as f64),
            reason: format!("at {t_ms}"),
            target,
            tier: 0,
            target_tier: 0,
            steps: json!(steps),
            action,
            outcome: String::new(),
            backend_ms: None,
            inputs: json!({}),
            count: 1,
            first_ms: t_ms,
        }
    }

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
    fn repeated_holds_fold_into_one_event_and_actions_stay_apart() {
        let entries = vec![
            entry(1, Action::Hold, 2, 2, &["round"]),
            entry(2, Action::Hold, 2, 2, &["round"]),
            entry(3, Action::Hold, 2, 2, &["round", "stabilization"]),
            entry(4, Action::Hold, 2, 2, &["stabilization"]),
            entry(5, Action::Scale, 2, 3, &["round"]),
            entry(6, Action::Scale, 3, 4, &["round"]),
            entry(7, Action::Hold, 4, 4, &[]),
        ];
        let (events, omitted) = events(&entries);
        let summary: Vec<(i64, u32)> = events.iter().map(|e| (e.entry.t_ms, e.repeats)).collect();
        assert_eq!(summary, [(1, 1), (3, 1), (5, 0), (6, 0), (7, 0)]);
        assert_eq!(omitted, 0);
    }

    #[test]
    fn a_row_the_journal_folded_counts_every_evaluation_it_stands_for() {
        let folded = |t, count| JournalEntry { count, first_ms: t - 10, ..entry(t, Action::Hold, 2, 2, &[]) };
        let entries = vec![folded(20, 5), folded(40, 3), entry(50, Action::Scale, 2, 3, &[]), folded(70, 4)];
        let (events, _) = events(&entries);
        let summary: Vec<(i64, u32)> = events.iter().map(|e| (e.entry.t_ms, e.repeats)).collect();
        assert_eq!(summary, [(20, 7), (50, 0), (70, 3)]);
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
