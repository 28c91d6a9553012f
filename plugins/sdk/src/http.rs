//! Outgoing HTTP through `wasi:http`, for sources and backends. The agent decides whether a
//! request may leave (`allow_http`); a denied origin comes back as [`HttpError::Denied`].
//!
//! ```ignore
//! let r = elastic_sdk::http::Request::get("http://127.0.0.1:8080/stats").send()?;
//! ```

use std::fmt;
use std::time::Duration;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};

/// Responses larger than this are refused rather than buffered.
pub const MAX_BODY: usize = 16 << 20;

/// One request, built with the methods below and sent with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Limit on connecting and on waiting for the first byte and between bytes of the answer.
    pub timeout: Duration,
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpError {
    /// The URL cannot be sent (no scheme, not http(s)).
    BadUrl(String),
    /// The agent refused the origin: it is not in the plugin's `allow_http`.
    Denied,
    /// Connecting, or waiting for the answer, took longer than the request's timeout.
    Timeout,
    /// The connection failed or broke (refused, reset, closed early, DNS).
    Connection(String),
    /// The answer was larger than [`MAX_BODY`].
    TooLarge,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadUrl(why) => write!(f, "bad url: {why}"),
            HttpError::Denied => write!(f, "origin not granted to this plugin (allow_http)"),
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Connection(why) => write!(f, "connection failed: {why}"),
            HttpError::TooLarge => write!(f, "response larger than {} MiB", MAX_BODY >> 20),
        }
    }
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A JSON body, with its content type.
    pub fn json(mut self, body: &serde_json::Value) -> Request {
        self.body = Some(body.to_string().into_bytes());
        self.header("content-type", "application/json")
    }

    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Sends the request and reads the whole response, whatever its status.
    pub fn send(&self) -> Result<Response, HttpError> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| HttpError::BadUrl(format!("`{}` has no scheme", self.url)))?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(HttpError::BadUrl(format!("scheme `{other}` is not http(s)"))),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = |_| HttpError::BadUrl(format!("`{}` is not a valid URL", self.url));
        let mut fields: Vec<(String, Vec<u8>)> =
            self.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
        // Always a length, never chunked encoding: every server and proxy understands it.
        match &self.body {
            Some(body) => fields.push(("content-length".into(), body.len().to_string().into_bytes())),
            None if !matches!(self.method.as_str(), "GET" | "HEAD") => {
                fields.push(("content-length".into(), b"0".to_vec()))
            }
            None => {}
        }
        let headers = Fields::from_list(&fields).map_err(|e| HttpError::BadUrl(format!("header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.into()),
        };
        request.set_method(&method).map_err(bad)?;
        request.set_scheme(Some(&scheme)).map_err(bad)?;
        request.set_authority(Some(authority)).map_err(bad)?;
        request.set_path_with_query(Some(path)).map_err(bad)?;
        let body = request.body().map_err(|_| HttpError::Connection("request body taken twice".into()))?;
        let options = RequestOptions::new();
        let ns = self.timeout.as_nanos().min(u64::MAX as u128) as u64;
        // Optional in wasi:http; the agent honours all three.
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
        let pending = outgoing_handler::handle(request, Some(options)).map_err(map_error)?;
        if let Some(bytes) = &self.body {
            let stream = body.write().map_err(|_| HttpError::Connection("request body stream".into()))?;
            for chunk in bytes.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Connection(format!("{e:?}")))?;
            }
            drop(stream);
        }
        OutgoingBody::finish(body, None).map_err(map_error)?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| HttpError::Connection("no response".into()))?
            .map_err(|_| HttpError::Connection("response taken twice".into()))?
            .map_err(map_error)?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|_| HttpError::Connection("no body".into()))?;
        let stream = incoming.stream().map_err(|_| HttpError::Connection("no body stream".into()))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(wasip2::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(HttpError::Connection(format!("reading the body: {e:?}"))),
            }
            if bytes.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
        }
        Ok(Response { status, headers, body: bytes })
    }
}

fn map_error(e: ErrorCode) -> HttpError {
    match e {
        ErrorCode::HttpRequestDenied => HttpError::Denied,
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout => HttpError::Timeout,
        ErrorCode::HttpResponseTimeout => HttpError::Timeout,
        other => HttpError::Connection(format!("{other:?}")),
    }
}

/// Blocks for `d` without using the plugin's CPU budget (the wait happens in the agent).
pub fn sleep(d: Duration) {
    let ns = d.as_nanos().min(u64::MAX as u128) as u64;
    wasip2::clocks::monotonic_clock::subscribe_duration(ns).block();
}
