//! `GET /processes/NAME/logs?replica=N&lines=N&follow=true`: an instance's recent output from
//! its in-memory ring, as text, then (with `follow`) every new line as it comes. Token required:
//! a program's output may hold what only the operator should read.

use super::{refuse, ApiState};
use crate::supervisor::output::{Line, Output};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

#[derive(serde::Deserialize)]
pub struct LogsQuery {
    replica: Option<u32>,
    /// Lines of history. Default 100.
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// `web-1 | text` when several replicas are shown, the text alone otherwise. Control
/// characters are escaped (as journalctl does), so a program's output cannot drive the
/// reader's terminal.
fn format_line(prefix: Option<&str>, line: &Line) -> String {
    let text = crate::text::clean(&line.text, usize::MAX);
    match prefix {
        Some(p) => format!("{p} | {text}\n"),
        None => format!("{text}\n"),
    }
}

pub async fn logs(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(refused) = refuse(&headers, &state) {
        return refused.into_response();
    }
    let supervisor = state.supervisor.as_ref().expect("checked by refuse");
    let outputs = match supervisor.output(&name, q.replica).await {
        Ok(o) => o,
        Err(e) => return (axum::http::StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    };
    let prefixed = outputs.len() > 1;
    let wanted = q.lines.unwrap_or(100);
    let mut history: Vec<(String, Arc<Line>)> = Vec::new();
    let mut live = Vec::new();
    for (replica, output) in &outputs {
        let prefix = format!("{name}-{replica}");
        let (tail, rx) = Output::follow(output, wanted);
        history.extend(tail.into_iter().map(|l| (prefix.clone(), l)));
        live.push((prefix, rx));
    }
    history.sort_by_key(|(_, l)| l.at_ms);
    let skip = history.len().saturating_sub(wanted);
    let text: String =
        history[skip..].iter().map(|(p, l)| format_line(prefixed.then_some(p.as_str()), l)).collect();
    let content_type = [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return (content_type, text).into_response();
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let _ = tx.try_send(Bytes::from(text));
    for (prefix, receiver) in live {
        let stopping = state.stopping.clone();
        tokio::spawn(forward(receiver, prefixed.then_some(prefix), tx.clone(), stopping));
    }
    (content_type, axum::body::Body::new(Lines(rx))).into_response()
}

/// Sends one instance's new lines to the response until the client leaves, the instance is
/// removed or the agent stops. A follower too slow for the output is told how many lines it
/// missed.
async fn forward(
    mut rx: broadcast::Receiver<Arc<Line>>,
    prefix: Option<String>,
    tx: mpsc::Sender<Bytes>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let text = match received {
            Ok(line) => format_line(prefix.as_deref(), &line),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                format!("[… {n} lines skipped: reading too slowly]\n")
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
    }
}

/// A response body fed by a channel.
struct Lines(mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_programs_control_characters_reach_no_terminal() {
        let line = Line { at_ms: 0, stream: "stdout", text: "red \u{1b}[31m bell \u{7}".into() };
        assert_eq!(format_line(Some("web-1"), &line), "web-1 | red \\u{1b}[31m bell \\u{7}\n");
    }
}
