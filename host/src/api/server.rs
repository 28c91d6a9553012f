//! The API's HTTP/1 server: our accept loop in front of hyper, so that no client's pace decides
//! what the agent holds (see `[api]` in docs/configuration.md).
//!
//! - A request head must arrive within `header_timeout` of the connection opening or of its
//!   previous response ending (hyper's header-read timer, which also bounds a kept-alive
//!   connection's idleness).
//! - A handler has `request_timeout` to answer (503 after); a response whose client reads none
//!   of it for `send_timeout` is dropped with its connection.
//! - At most `max_connections` open, `max_connections_per_client` from one address. At a cap a
//!   new connection closes the one that has waited longest for a request head — a slow or idle
//!   client loses its place to one that is ready to ask — and is refused (503) only when every
//!   connection is busy with a request.
//! - `GET /healthz` is answered here, before routing and whatever the handlers are doing.

use crate::config::ApiLimits;
use crate::telemetry::Telemetry;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// The client's address, in each request's extensions (for per-client shares of the reads).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// How long a stopping agent waits for open requests to finish.
const DRAIN: Duration = Duration::from_secs(10);
/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;
/// `waiting_since` of a connection that is serving a request.
const BUSY: u64 = u64::MAX;

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish (at
/// most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ApiLimits,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Table { slots: Mutex::default(), next: AtomicU64::new(0), limits, telemetry });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (or memory): wait for some to close rather than spin.
                    tracing::warn!("the API could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        match table.admit(peer.ip()) {
            Some(slot) => {
                tokio::spawn(connection(stream, peer, slot, table.clone(), router.clone(), stop_rx.clone()));
            }
            None => refuse(stream, &table.telemetry),
        }
        // Let the task of a connection this one evicted run and close its socket before the
        // next accept: a burst of connections then holds the caps' descriptors, not the caps'
        // plus as many evicted ones as the backlog had while this loop kept the worker.
        tokio::task::yield_now().await;
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + DRAIN;
    while table.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Every connection cannot be given a place: say so and close.
fn refuse(stream: TcpStream, telemetry: &Telemetry) {
    telemetry.api_connections_refused.fetch_add(1, Ordering::Relaxed);
    let body = "too many connections, all busy; retry later\n";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Non-blocking: a client that cannot take these bytes at once gets a plain close.
    let _ = stream.try_write(reply.as_bytes());
}

/// Milliseconds since the first call: a monotonic clock for connection ages.
fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One open connection's place.
struct Slot {
    id: u64,
    peer: IpAddr,
    /// When it began waiting for a request head ([`mono_ms`]); [`BUSY`] while serving one.
    waiting_since: AtomicU64,
    /// Since when a write has found the client's window full (0: not blocked).
    blocked_since: AtomicU64,
    /// Notified to close the connection at once (evicted).
    close: tokio::sync::Notify,
}

impl Slot {
    fn serving(&self) {
        self.waiting_since.store(BUSY, Ordering::Relaxed);
    }

    fn waiting(&self) {
        self.waiting_since.store(mono_ms(), Ordering::Relaxed);
    }

    fn stalled(&self, limit: Duration) -> bool {
        let since = self.blocked_since.load(Ordering::Relaxed);
        since != 0 && mono_ms().saturating_sub(since) > limit.as_millis() as u64
    }
}

/// The open connections.
struct Table {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    limits: ApiLimits,
    telemetry: Arc<Telemetry>,
}

impl Table {
    fn open(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A place for a new connection from `peer`, making room by evicting a waiting connection
    /// when a cap is reached; `None` when there is no room.
    fn admit(&self, peer: IpAddr) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let of_peer = slots.values().filter(|s| s.peer == peer).count();
        if of_peer >= self.limits.max_connections_per_client {
            self.evict_oldest_waiting(&mut slots, |s| s.peer == peer)?;
        } else if slots.len() >= self.limits.max_connections {
            self.evict_oldest_waiting(&mut slots, |_| true)?;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            peer,
            waiting_since: AtomicU64::new(mono_ms()),
            blocked_since: AtomicU64::new(0),
            close: tokio::sync::Notify::new(),
        });
        slots.insert(id, slot.clone());
        self.telemetry.api_connections_open.store(slots.len() as u64, Ordering::Relaxed);
        Some(slot)
    }

    fn evict_oldest_waiting(
        &self,
        slots: &mut HashMap<u64, Arc<Slot>>,
        among: impl Fn(&Slot) -> bool,
    ) -> Option<()> {
        let oldest = slots
            .values()
            .filter(|s| among(s))
            .map(|s| (s.waiting_since.load(Ordering::Relaxed), s.id))
            .filter(|(since, _)| *since != BUSY)
            .min()?;
        let slot = slots.remove(&oldest.1)?;
        // `notify_one` keeps the wake-up for a task not yet waiting on it.
        slot.close.notify_one();
        self.telemetry.api_connections_evicted.fetch_add(1, Ordering::Relaxed);
        Some(())
    }

    fn remove(&self, id: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(&id);
        self.telemetry.api_connections_open.store(slots.len() as u64, Ordering::Relaxed);
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    table: Arc<Table>,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let limits = table.limits.clone();
    let io = TokioIo::new(Watched { inner: stream, slot: slot.clone() });
    let service = {
        let slot = slot.clone();
        hyper::service::service_fn(move |req| {
            handle(req, router.clone(), slot.clone(), peer, limits.request_timeout)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval((limits.send_timeout / 2).max(Duration::from_millis(50)));
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if done.as_ref().is_err_and(|e| e.is_timeout()) {
                    table.telemetry.api_header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            _ = slot.close.notified() => break,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => if slot.stalled(limits.send_timeout) { break },
        }
    }
    table.remove(slot.id);
}

async fn handle(
    mut req: hyper::Request<Incoming>,
    router: axum::Router,
    slot: Arc<Slot>,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<hyper::Response<Tracked>, std::convert::Infallible> {
    slot.serving();
    let response = if req.method() == http::Method::GET && req.uri().path() == "/healthz" {
        hyper::Response::new(Body::from("ok"))
    } else {
        req.extensions_mut().insert(ClientAddr(peer));
        match tokio::time::timeout(timeout, router.oneshot(req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the request took longer than api.request_timeout; retry later\n",
            )
                .into_response(),
        }
    };
    Ok(response.map(|body| Tracked { body, slot }))
}

/// A response body; when it is done (or dropped) its connection waits for the next head again.
struct Tracked {
    body: Body,
    slot: Arc<Slot>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.slot.waiting();
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when writes find the client not reading.
struct Watched {
    inner: TcpStream,
    slot: Arc<Slot>,
}

impl Watched {
    fn note<T>(&self, poll: Poll<T>) -> Poll<T> {
        let blocked = &self.slot.blocked_since;
        match poll {
            Poll::Pending => {
                let _ = blocked.compare_exchange(0, mono_ms(), Ordering::Relaxed, Ordering::Relaxed);
            }
            Poll::Ready(_) => blocked.store(0, Ordering::Relaxed),
        }
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per_client: usize) -> Table {
        let limits =
            ApiLimits { max_connections: max, max_connections_per_client: per_client, ..Default::default() };
        Table { slots: Mutex::default(), next: AtomicU64::new(0), limits, telemetry: Default::default() }
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room_and_busy_ones_never_do() {
        let t = table(3, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = t.admit(a).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = t.admit(a).unwrap();
        let third = t.admit(b).unwrap();
        first.serving();
        // Full: the oldest *waiting* one (the second) goes, the busy first stays.
        let fourth = t.admit(b).unwrap();
        assert!(t.slots.lock().unwrap().contains_key(&first.id));
        assert!(!t.slots.lock().unwrap().contains_key(&second.id));
        second.close.notified().now_or_never_for_test();
        // All busy: refused.
        for s in [&third, &fourth] {
            s.serving();
        }
        assert!(t.admit(a).is_none());
        assert_eq!(t.telemetry.api_connections_evicted.load(Ordering::Relaxed), 1);
        third.waiting();
        assert!(t.admit(a).is_some(), "a waiting connection gives its place");
        assert_eq!(t.open(), 3);
    }

    #[test]
    fn one_client_at_its_share_evicts_only_its_own() {
        let t = table(10, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let other = t.admit(b).unwrap();
        let a1 = t.admit(a).unwrap();
        let _a2 = t.admit(a).unwrap();
        let _a3 = t.admit(a).unwrap();
        let slots = t.slots.lock().unwrap();
        assert!(slots.contains_key(&other.id), "another client's older connection is kept");
        assert!(!slots.contains_key(&a1.id));
        assert_eq!(slots.values().filter(|s| s.peer == a).count(), 2);
    }

    trait NowOrNever {
        fn now_or_never_for_test(self);
    }
    impl<F: std::future::Future<Output = ()>> NowOrNever for F {
        /// The eviction's wake-up is stored: the first poll of `notified()` completes.
        fn now_or_never_for_test(self) {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut fut = std::pin::pin!(self);
            assert!(fut.as_mut().poll(&mut cx).is_ready(), "an evicted connection is told to close");
        }
    }
}
