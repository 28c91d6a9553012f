//! The budgets on outbound HTTP a plugin makes the agent send: requests per call, requests in
//! flight, requests per second to each origin, response bytes per call, and a total time per
//! response (sending to the last byte of the body). A request over a budget fails with the
//! `wasi:http` error a client expects and is counted against the plugin.
//!
//! Requests belong to the call that started them: when the call ends, whatever is still open is
//! cancelled, counted as abandoned, and the instance that holds the handles is discarded, so no
//! request outlives its call and nothing it held stays in memory.

use super::meter::{Budget, Meter, TokenBucket};
use crate::config::{HttpBudget, Origin};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::Error as HttpError;

/// Per-origin request rates of one plugin, shared by its instances.
pub type Rates = Mutex<HashMap<Origin, TokenBucket>>;

/// One plugin instance's outbound HTTP, against its budgets. Clones share the call's counters.
#[derive(Clone)]
pub struct Outbound {
    budget: HttpBudget,
    meter: Arc<Meter>,
    rates: Arc<Rates>,
    call: Arc<CallRequests>,
    /// The call's end: no response may outlive it.
    deadline: Instant,
}

/// The requests of the call in progress.
struct CallRequests {
    started: AtomicU32,
    bytes: AtomicU64,
    in_flight: AtomicU32,
    /// Becomes true when the call ends; every request of the call watches it.
    ended: tokio::sync::watch::Sender<bool>,
}

impl CallRequests {
    fn new() -> Arc<CallRequests> {
        Arc::new(CallRequests {
            started: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            ended: tokio::sync::watch::channel(false).0,
        })
    }
}

impl Outbound {
    pub fn new(budget: HttpBudget, meter: Arc<Meter>, rates: Arc<Rates>) -> Outbound {
        let deadline = Instant::now() + Duration::from_secs(86_400 * 365);
        Outbound { budget, meter, rates, call: CallRequests::new(), deadline }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// A call starts; it must end by `deadline`. (A call that sent nothing leaves nothing to
    /// renew: most calls, a policy's always, cost no allocation here.)
    pub fn begin_call(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if self.call.started.load(Ordering::Relaxed) > 0 {
            self.call = CallRequests::new();
        }
    }

    /// The call ended: cancels what is still open and returns how many requests that was.
    pub fn end_call(&mut self) -> u32 {
        if self.call.started.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let open = self.call.in_flight.load(Ordering::SeqCst);
        self.call.ended.send_replace(true);
        if open > 0 {
            let started = self.call.started.load(Ordering::Relaxed);
            self.meter.exceeded(Budget::HttpAbandoned, open as u64, || {
                format!("{open} of the {started} requests it started were still open when its call ended; cancelled, and its instance discarded")
            });
        }
        open
    }

    /// Whether a request to `origin` may go out now; if so, it counts from here.
    pub fn admit(&self, origin: &Origin) -> Result<InFlight, HttpError> {
        let b = &self.budget;
        let call = &self.call;
        if call.started.load(Ordering::Relaxed) >= b.requests_per_call {
            let max = b.requests_per_call;
            self.meter.exceeded(Budget::HttpRequests, 1, || {
                format!("a call started more than http_requests_per_call ({max}) requests; refused")
            });
            return Err(HttpError::HttpRequestDenied);
        }
        if call.in_flight.load(Ordering::SeqCst) >= b.concurrency {
            let max = b.concurrency;
            self.meter.exceeded(Budget::HttpConcurrency, 1, || {
                format!("more than http_concurrency ({max}) requests in flight; refused")
            });
            return Err(HttpError::ConnectionLimitReached);
        }
        let admitted = {
            let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
            rates.entry(origin.clone()).or_insert_with(|| TokenBucket::new(b.rate, b.burst)).take(1.0)
        };
        if !admitted {
            let rate = b.rate;
            self.meter.exceeded(Budget::HttpRate, 1, || {
                format!("more than http_rate ({rate}/s) requests to {origin}; refused")
            });
            return Err(HttpError::HttpRequestDenied);
        }
        call.started.fetch_add(1, Ordering::Relaxed);
        call.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(InFlight(self.call.clone()))
    }

    /// The longest a response started now may take: its own limit, and never past the call.
    pub fn response_deadline(&self) -> Instant {
        (Instant::now() + self.budget.response_timeout).min(self.deadline)
    }

    /// `fut` (sending a request, or driving its connection), cut when the call ends or at
    /// `deadline` (counted against the plugin if `count`).
    pub fn bounded<T: Send + 'static>(
        &self,
        deadline: Instant,
        count: bool,
        fut: impl Future<Output = Result<T, HttpError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, HttpError>> + Send + 'static {
        let mut ended = self.call.ended.subscribe();
        let meter = self.meter.clone();
        async move {
            tokio::select! {
                r = fut => r,
                _ = ended.wait_for(|e| *e) => Err(HttpError::ConnectionTerminated),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if count {
                        meter.exceeded(Budget::HttpTime, 1, || "a response took longer than http_response_timeout (or the call's timeout); cut".into());
                    }
                    Err(HttpError::HttpResponseTimeout)
                }
            }
        }
    }

    /// The response body, counted against the bytes-per-call budget and cut at `deadline`.
    pub fn meter_body(
        &self,
        body: wasmtime_wasi_http::WasiBody,
        deadline: Instant,
        slot: InFlight,
    ) -> Metered {
        Metered {
            inner: body,
            call: self.call.clone(),
            limit: self.budget.bytes_per_call,
            meter: self.meter.clone(),
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            slot: Some(slot),
        }
    }
}

/// A request counted as in flight until this is dropped.
pub struct InFlight(Arc<CallRequests>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body under the call's budgets.
pub struct Metered {
    inner: wasmtime_wasi_http::WasiBody,
    call: Arc<CallRequests>,
    limit: u64,
    meter: Arc<Meter>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Released when the body ends (or is dropped).
    slot: Option<InFlight>,
}

impl Body for Metered {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.slot.is_none() {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.slot = None;
            self.meter.exceeded(Budget::HttpTime, 1, || {
                "a response body took longer than http_response_timeout (or the call's timeout); cut".into()
            });
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.slot = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(frame)) => frame,
        };
        if let Ok(data) = frame.as_ref().map(Frame::data_ref) {
            let n = data.map_or(0, |d| d.len() as u64);
            let total = self.call.bytes.fetch_add(n, Ordering::Relaxed) + n;
            if total > self.limit {
                self.slot = None;
                let limit = self.limit;
                self.meter.exceeded(Budget::HttpBytes, 1, || {
                    format!(
                        "a call received more than http_kib_per_call ({} KiB); the response was cut",
                        limit >> 10
                    )
                });
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(limit)))));
            }
        }
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.slot.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
