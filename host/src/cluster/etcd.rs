//! A small etcd v3 client over its JSON gateway (`/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/timetolive`, `/v3/kv/range`, `/v3/kv/txn`, `/v3/auth/authenticate`, and the
//! streamed `/v3/watch`), as Patroni talks to etcd: HTTP(S), no gRPC stack. Keys and values
//! travel base64-encoded, 64-bit numbers as strings. Endpoints are tried in turn: a member that
//! does not answer is skipped for the next one.
//!
//! TLS: `[cluster] ca_file` replaces the built-in web roots, `cert_file`/`key_file` present a
//! client certificate. Authentication: with `[cluster] username`, a token from
//! `/v3/auth/authenticate` goes in `Authorization` on every request; when etcd says it is invalid
//! (a member restarted, the token expired) the agent authenticates again once and retries. The
//! password and the token never reach a log, an error or `/status`.
//!
//! Nothing etcd answers is trusted to be small or well-formed: an answer is read up to
//! [`MAX_ANSWER_BYTES`], lists up to [`MAX_LIST`], and a key that is not the one asked for is a
//! malformed answer. A watch's stream is cut into messages by their JSON structure, whatever
//! the chunks, each message bounded by [`MAX_ANSWER_BYTES`] too.

use crate::config::ClusterSpec;
use crate::config::SecretSource;
use crate::text::chain;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest answer read from a member: the agents' keys are small (a state is bounded far
/// below this), so more is a member or a proxy gone wrong, not data.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The most entries of a list (`kvs` of a range, `responses` of a transaction) accepted: the
/// agent reads single keys and sends transactions of one or two operations.
pub const MAX_LIST: usize = 64;
/// Keys per page of a keys-only listing.
pub const KEYS_PAGE: usize = 1000;
/// After etcd refused the user, the first wait before asking again (doubling up to
/// [`AUTH_BACKOFF_MAX`]): each authentication costs etcd a bcrypt check, and a fleet of agents
/// with a wrong password must not keep its members busy.
const AUTH_BACKOFF_MIN: Duration = Duration::from_secs(5);
const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A token longer than this is not one etcd issues (simple tokens are ~20 bytes, JWTs < 1 KiB).
const MAX_TOKEN_BYTES: usize = 4096;
/// How long one watch request may live: it replaces the client's total timeout (one request's,
/// far too short for a stream). A stream this old is reopened where it stopped — one request
/// per this time — so a connection that died without a word is not followed forever.
pub const WATCH_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EtcdError {
    /// No endpoint answered (or answered an error status): etcd is unreachable from here.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// An answer we cannot read.
    #[error("etcd answered {0}")]
    Malformed(String),
    /// etcd answered and said no — authentication or permission. Every member would say the
    /// same: the operator must act (the message says how).
    #[error("{0}")]
    Refused(String),
}

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A comparison of a transaction.
pub enum Compare<'a> {
    /// The key's creation revision (0: the key does not exist).
    CreateRevision(&'a str, i64),
    /// The key's last modification revision: the key is exactly as it was read.
    ModRevision(&'a str, i64),
    Value(&'a str, &'a [u8]),
}

/// A request of a transaction's branch.
pub enum Op<'a> {
    Put { key: &'a str, value: &'a [u8], lease: i64 },
    Get(&'a str),
    Delete(&'a str),
}

/// One message of a watch's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// The watch exists; the store's revision when it was created (a watch from now sees the
    /// changes after it).
    Created { revision: i64 },
    /// Changes, in revision order; an event that cannot be read is `Err` with why.
    Events(Vec<Result<Event, String>>),
    /// etcd ended the watch: `compact_revision` when the revision asked for is compacted away.
    Canceled { compact_revision: Option<i64>, reason: String },
}

/// One change of a watched key: its new value (`kv`), or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub key: Vec<u8>,
    pub mod_revision: i64,
    pub kv: Option<Kv>,
}

/// What a transaction did: whether the comparisons held, the revision after it, and the keys
/// its `Get`s read (in order, `None` for a missing key).
#[derive(Debug, Clone, PartialEq)]
pub struct TxnResult {
    pub succeeded: bool,
    pub revision: i64,
    pub gets: Vec<Option<Kv>>,
}

#[derive(Clone)]
pub struct Etcd {
    endpoints: Arc<Vec<String>>,
    /// The endpoint that answered last: tried first next time.
    current: Arc<AtomicUsize>,
    /// The HTTP client, or why it could not be built: then every request fails with that reason
    /// (the cluster groups freeze and say why; the agent does not stop).
    http: Result<reqwest::Client, String>,
    auth: Option<Arc<Auth>>,
    /// How long one request may take: a watch's first message must come within it too.
    request_timeout: Duration,
    /// Requests sent, for the benchmark and `/metrics`.
    pub requests: Arc<AtomicU64>,
}

/// An open watch: its messages as they come.
pub struct WatchStream {
    response: reqwest::Response,
    split: Splitter,
    /// Messages already cut from the stream, not yet read.
    ready: VecDeque<Vec<u8>>,
    url: String,
    /// The index of the member it is open on.
    pub endpoint: usize,
    /// For the wording of a refusal in the stream.
    etcd: Etcd,
}

/// Cuts a stream of JSON objects into messages by their structure (braces outside strings),
/// whatever the chunks it comes in — the gateway ends each with a newline today, which is not
/// relied on. A message longer than its limit is refused before it is buffered whole.
#[derive(Debug, Default)]
struct Splitter {
    message: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// The etcd user and its current token.
struct Auth {
    user: String,
    password: SecretSource,
    state: tokio::sync::Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    token: Token,
    /// Counts tokens obtained, so that a request failing with an old token does not discard a
    /// newer one another request has just obtained.
    generation: u64,
}

#[derive(Default)]
enum Token {
    #[default]
    Unknown,
    Bearer(String),
    /// etcd has authentication disabled: requests go without a token (until one is refused).
    NotNeeded,
    /// etcd refused the user: the same error until `until`, then a new try.
    Refused {
        error: EtcdError,
        until: Instant,
        backoff: Duration,
    },
}

/// What one request came to, before the retry on a stale token.
#[derive(Debug, PartialEq)]
enum Fail {
    /// The token is missing, invalid or expired (HTTP 401, gRPC code 16, or "user name is empty"
    /// when authentication was enabled after the agent started).
    Unauthenticated(String),
    /// `/v3/auth/authenticate` refused the name and password.
    AuthFailed(String),
    /// `/v3/auth/authenticate` with authentication disabled in etcd.
    NotEnabled,
    Error(EtcdError),
}

impl From<Fail> for EtcdError {
    fn from(fail: Fail) -> EtcdError {
        match fail {
            Fail::Error(e) => e,
            Fail::Unauthenticated(why) | Fail::AuthFailed(why) => EtcdError::Refused(why),
            Fail::NotEnabled => EtcdError::Malformed("that authentication is not enabled".into()),
        }
    }
}

/// How an answer is classified.
#[derive(Debug, PartialEq)]
enum Class {
    Ok,
    Unauthenticated(String),
    AuthFailed(String),
    NotEnabled,
    Denied(String),
    /// A refusal every member would repeat, already worded for the operator.
    Refused(String),
    /// Another member may do better (no leader, overloaded, …).
    Retry(String),
}

pub use crate::pki::https_client as client;

impl Etcd {
    pub fn new(spec: &ClusterSpec) -> Etcd {
        let http = client(
            spec.request_timeout,
            spec.ca.as_ref().map(|p| p.bytes.as_slice()),
            spec.identity.as_ref().map(|p| p.bytes.as_slice()),
        )
        .map_err(|e| format!("cannot set up TLS for etcd ([cluster] ca_file, cert_file, key_file): {e}"));
        let endpoints = spec.etcd.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        let auth = spec.user.as_ref().map(|u| {
            Arc::new(Auth { user: u.name.clone(), password: u.password.clone(), state: Default::default() })
        });
        Etcd {
            endpoints: Arc::new(endpoints),
            current: Default::default(),
            http,
            auth,
            request_timeout: spec.request_timeout,
            requests: Default::default(),
        }
    }

    /// The index of the member that answered last (tried first next time).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// POSTs `body` to `path` with the current token; once more with a new token when etcd says
    /// the token is stale.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let body = &body;
        self.authed(|token| async move { self.send(path, body, token.as_deref()).await }).await
    }

    /// Runs `attempt` with the current token; once more with a new token when etcd says the
    /// token is stale.
    async fn authed<T, F, Fut>(&self, attempt: F) -> Result<T, EtcdError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let (token, generation) = self.token().await?;
        let first = attempt(token).await;
        let Err(Fail::Unauthenticated(why)) = first else { return first.map_err(|f| self.error(f)) };
        let Some(auth) = &self.auth else {
            return Err(EtcdError::Refused(format!(
                "etcd requires authentication ({why}): set cluster.username and cluster.password"
            )));
        };
        tracing::info!(user = %auth.user, "etcd no longer takes the agent's token ({why}); authenticating again");
        self.forget(auth, generation).await;
        let (token, _) = self.token().await?;
        match attempt(token).await {
            Err(Fail::Unauthenticated(why)) => Err(EtcdError::Refused(format!(
                "etcd refused the token it had just issued to user `{}`: {why}",
                auth.user
            ))),
            other => other.map_err(|f| self.error(f)),
        }
    }

    fn error(&self, fail: Fail) -> EtcdError {
        fail.into()
    }

    /// A POST of `body` to `url`, with `token` (kept out of any debug output of the request).
    fn post(
        &self,
        http: &reqwest::Client,
        url: &str,
        body: &str,
        token: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, Fail> {
        let request = http.post(url).header("content-type", "application/json").body(body.to_string());
        let Some(token) = token else { return Ok(request) };
        // Checked when it was issued; sensitive: kept out of any debug output of the request.
        let mut value = reqwest::header::HeaderValue::from_str(token)
            .map_err(|_| Fail::Error(EtcdError::Malformed("a token that is not a header value".into())))?;
        value.set_sensitive(true);
        Ok(request.header(reqwest::header::AUTHORIZATION, value))
    }

    /// The failure an answer classified as a refusal comes to (`Retry`, which the callers handle
    /// by trying the next member, reads as unreachable).
    fn refusal(&self, class: Class, path: &str, url: &str) -> Fail {
        match class {
            Class::Unauthenticated(why) => Fail::Unauthenticated(why),
            Class::AuthFailed(why) => Fail::AuthFailed(why),
            Class::NotEnabled => Fail::NotEnabled,
            Class::Refused(why) => Fail::Error(EtcdError::Refused(format!("POST {url}: {why}"))),
            Class::Denied(why) => {
                let who =
                    self.auth.as_ref().map_or("the agent".to_string(), |a| format!("user `{}`", a.user));
                Fail::Error(EtcdError::Refused(format!(
                    "etcd denied {who} {path}: {why} (give its role readwrite on the agents' prefix)"
                )))
            }
            Class::Retry(why) => Fail::Error(EtcdError::Unreachable(format!("POST {url}: {why}"))),
            Class::Ok => Fail::Error(EtcdError::Malformed(format!("{url}: an answer taken for a refusal"))),
        }
    }

    /// The HTTP client, or why there is none (its TLS files did not load).
    fn client(&self) -> Result<&reqwest::Client, Fail> {
        self.http.as_ref().map_err(|e| Fail::Error(EtcdError::Unreachable(e.clone())))
    }

    /// The members to try for `path`, the current one first: each one's index and URL, counted
    /// as a request when taken.
    fn attempts<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (usize, String)> + 'a {
        let (n, first) = (self.endpoints.len(), self.current.load(Ordering::Relaxed));
        (0..n).map(move |i| {
            let at = (first + i) % n;
            self.requests.fetch_add(1, Ordering::Relaxed);
            (at, format!("{}{path}", self.endpoints[at]))
        })
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    async fn send(&self, path: &str, body: &str, token: Option<&str>) -> Result<Value, Fail> {
        let http = self.client()?;
        let mut last = String::new();
        for (at, url) in self.attempts(path) {
            let response = match self.post(http, &url, body, token)?.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("POST {url}: {}", tls_hint(&chain(&e)));
                    continue;
                }
            };
            let status = response.status();
            let bytes = match read_limited(response, MAX_ANSWER_BYTES).await {
                Ok(b) => b,
                Err(why) if status.is_success() => {
                    return Err(Fail::Error(EtcdError::Malformed(format!("{url}: {why}"))))
                }
                Err(why) => {
                    last = format!("POST {url}: HTTP {status}: {why}");
                    continue;
                }
            };
            let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
            let text = String::from_utf8_lossy(&bytes);
            match classify(status.as_u16(), answer.as_ref(), &text) {
                Class::Ok => {
                    self.current.store(at, Ordering::Relaxed);
                    return answer.ok_or_else(|| {
                        let text = crate::text::clean(&String::from_utf8_lossy(&bytes), 200);
                        Fail::Error(EtcdError::Malformed(format!("{url}: not JSON: {text}")))
                    });
                }
                // A member without a leader (or another in a minority) answers 503: try the next.
                Class::Retry(why) => last = format!("POST {url}: HTTP {status}: {why}"),
                class => return Err(self.refusal(class, path, &url)),
            }
        }
        Err(Fail::Error(EtcdError::Unreachable(last)))
    }

    /// The token to send (none without a user, or with authentication disabled in etcd) and its
    /// generation; authenticates when there is none. One authentication at a time: the
    /// others wait for its token.
    async fn token(&self) -> Result<(Option<String>, u64), EtcdError> {
        let Some(auth) = &self.auth else { return Ok((None, 0)) };
        let mut state = auth.state.lock().await;
        let backoff = match &state.token {
            Token::Bearer(t) => return Ok((Some(t.clone()), state.generation)),
            Token::NotNeeded => return Ok((None, state.generation)),
            Token::Refused { error, until, .. } if Instant::now() < *until => return Err(error.clone()),
            Token::Refused { backoff, .. } => (*backoff * 2).min(AUTH_BACKOFF_MAX),
            Token::Unknown => AUTH_BACKOFF_MIN,
        };
        match self.authenticate(auth).await {
            Ok(token) => {
                state.generation += 1;
                state.token = match &token {
                    Some(t) => Token::Bearer(t.clone()),
                    None => {
                        tracing::warn!(user = %auth.user, "etcd has authentication disabled: the agent talks to it without a token (cluster.username is not checked)");
                        Token::NotNeeded
                    }
                };
                Ok((token, state.generation))
            }
            Err(error @ EtcdError::Refused(_)) => {
                tracing::warn!("{error}; trying again in {}", crate::duration::format(backoff));
                state.token =
                    Token::Refused { error: error.clone(), until: Instant::now() + backoff, backoff };
                Err(error)
            }
            Err(e) => Err(e),
        }
    }

    /// Drops the token of `generation` (etcd called it stale), unless a newer one replaced it.
    async fn forget(&self, auth: &Auth, generation: u64) {
        let mut state = auth.state.lock().await;
        if state.generation == generation && matches!(state.token, Token::Bearer(_) | Token::NotNeeded) {
            state.token = Token::Unknown;
        }
    }

    /// `/v3/auth/authenticate`: a token, or `None` when etcd has authentication disabled.
    async fn authenticate(&self, auth: &Auth) -> Result<Option<String>, EtcdError> {
        // Read at each authentication: a rotated password file is picked up.
        let Some(password) = auth.password.read() else {
            return Err(EtcdError::Refused(format!(
                "cluster.password: {:?} cannot be read any more; etcd user `{}` cannot authenticate",
                auth.password, auth.user
            )));
        };
        let body = json!({"name": auth.user, "password": password}).to_string();
        drop(password);
        let v = match self.send("/v3/auth/authenticate", &body, None).await {
            Ok(v) => v,
            Err(Fail::NotEnabled) => return Ok(None),
            Err(Fail::AuthFailed(_)) => {
                return Err(EtcdError::Refused(format!(
                "etcd refused user `{}`: authentication failed (check cluster.username and cluster.password)",
                auth.user
            )))
            }
            Err(f) => return Err(self.error(f)),
        };
        match v["token"].as_str() {
            Some(t)
                if !t.is_empty() && t.len() <= MAX_TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(t.to_string()))
            }
            // The answer is not echoed: it would hold a token, if a strange one.
            _ => Err(EtcdError::Malformed(format!(
                "/v3/auth/authenticate for user `{}` without a usable token",
                auth.user
            ))),
        }
    }

    /// A lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", json!({"TTL": ttl.as_secs().max(1)})).await?;
        int(&v["ID"])
            .filter(|id| *id != 0)
            .ok_or_else(|| EtcdError::Malformed(format!("lease grant: {}", brief(&v))))
    }

    /// Renews a lease; `Ok(false)` when it has expired (etcd no longer knows it).
    pub async fn keepalive(&self, id: i64) -> Result<bool, EtcdError> {
        let v = self.call("/v3/lease/keepalive", json!({"ID": id.to_string()})).await?;
        // The gateway streams: one `result` per request, TTL 0 (omitted) once the lease is gone.
        let result = if v["result"].is_object() { &v["result"] } else { &v };
        Ok(int(&result["TTL"]).unwrap_or(0) > 0)
    }

    /// Ends lease `id` now: etcd deletes every key attached to it.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({"ID": id.to_string()})).await.map(|_| ())
    }

    /// The seconds lease `id` has left: -1 (or 0) when etcd no longer knows it.
    pub async fn time_to_live(&self, id: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/timetolive", json!({"ID": id.to_string()})).await?;
        Ok(int(&v["TTL"]).unwrap_or(0))
    }

    /// The key's current value, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", json!({"key": B64.encode(key)})).await?;
        first_kv(&v, key).map_err(|why| EtcdError::Malformed(format!("range of `{key}`: {why}")))
    }

    /// The keys from `key` to `range_end` (excluded), without their values, at most `limit`;
    /// and the store's revision they were read at. Read in pages of [`KEYS_PAGE`], every page
    /// at the first one's revision (one answer of ten thousand keys would pass the answer bound).
    pub async fn keys(
        &self,
        key: &str,
        range_end: &str,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, i64), EtcdError> {
        let (mut keys, mut from, mut at) = (Vec::new(), key.as_bytes().to_vec(), None::<i64>);
        loop {
            let mut body = json!({"key": B64.encode(&from), "range_end": B64.encode(range_end), "keys_only": true, "limit": KEYS_PAGE});
            if let Some(rev) = at {
                body["revision"] = json!(rev.to_string());
            }
            let v = self.call("/v3/kv/range", body).await?;
            let revision = int(&v["header"]["revision"]).ok_or_else(|| {
                EtcdError::Malformed(format!("range of `{key}`: no revision: {}", brief(&v)))
            })?;
            let at = *at.get_or_insert(revision);
            let kvs = v["kvs"].as_array().map(Vec::as_slice).unwrap_or_default();
            let page: Vec<Vec<u8>> =
                kvs.iter().filter_map(|kv| kv["key"].as_str().and_then(|k| B64.decode(k).ok())).collect();
            let more = v["more"].as_bool().unwrap_or(false);
            // The next page starts just after this one's last key.
            match page.last() {
                Some(last) if more && keys.len() + page.len() < limit => {
                    from = last.iter().copied().chain([0]).collect();
                    keys.extend(page);
                }
                _ => {
                    keys.extend(page);
                    keys.truncate(limit);
                    return Ok((keys, at));
                }
            }
        }
    }

    /// An atomic if-then-else.
    pub async fn txn(
        &self,
        compare: &[Compare<'_>],
        success: &[Op<'_>],
        failure: &[Op<'_>],
    ) -> Result<TxnResult, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::CreateRevision(key, rev) => json!({"key": B64.encode(key), "result": "EQUAL", "target": "CREATE", "create_revision": rev.to_string()}),
                Compare::ModRevision(key, rev) => json!({"key": B64.encode(key), "result": "EQUAL", "target": "MOD", "mod_revision": rev.to_string()}),
                Compare::Value(key, value) => json!({"key": B64.encode(key), "result": "EQUAL", "target": "VALUE", "value": B64.encode(value)}),
            })
            .collect();
        let ops = |ops: &[Op]| -> Vec<Value> {
            ops.iter()
                .map(|o| match o {
                    Op::Put { key, value, lease } => json!({"request_put": {"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()}}),
                    Op::Get(key) => json!({"request_range": {"key": B64.encode(key)}}),
                    Op::Delete(key) => json!({"request_delete_range": {"key": B64.encode(key)}}),
                })
                .collect()
        };
        let body = json!({"compare": compare, "success": ops(success), "failure": ops(failure)});
        let v = self.call("/v3/kv/txn", body).await?;
        let succeeded = v["succeeded"].as_bool().unwrap_or(false);
        let branch = if succeeded { success } else { failure };
        txn_result(&v, succeeded, branch).map_err(|why| EtcdError::Malformed(format!("txn: {why}")))
    }
}

impl Etcd {
    /// Watches the keys from `key` to `range_end` (excluded) from `start_revision` (etcd replays
    /// the changes since; `None`: from now): the stream, and the store's revision when the watch
    /// was created. Counted as one request per member tried; the token as for any request.
    pub async fn watch(
        &self,
        key: &str,
        range_end: &str,
        start_revision: Option<i64>,
    ) -> Result<(WatchStream, i64), EtcdError> {
        let mut create = json!({"key": B64.encode(key), "range_end": B64.encode(range_end)});
        if let Some(revision) = start_revision {
            create["start_revision"] = json!(revision.to_string());
        }
        let body = json!({ "create_request": create }).to_string();
        let body = &body;
        self.authed(|token| async move { self.open_watch(body, token.as_deref()).await }).await
    }

    /// Opens the watch `body` asks for on the first member that creates it.
    async fn open_watch(&self, body: &str, token: Option<&str>) -> Result<(WatchStream, i64), Fail> {
        let http = self.client()?;
        let mut last = String::new();
        for (at, url) in self.attempts("/v3/watch") {
            // The client's total timeout is one request's: a stream needs a long one (the
            // connect timeout stays). `hasleader` makes a member that loses its etcd leader end
            // the stream (it would otherwise stay open and silent while the others go on).
            let request = self
                .post(http, &url, body, token)?
                .timeout(WATCH_LIFETIME)
                .header("grpc-metadata-hasleader", "true");
            match tokio::time::timeout(self.request_timeout, self.created(request, &url, at)).await {
                Ok(Ok(opened)) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(opened);
                }
                Ok(Err(Fail::Error(EtcdError::Unreachable(why)))) => last = why,
                Ok(Err(fail)) => return Err(fail),
                Err(_) => {
                    let within = crate::duration::format(self.request_timeout);
                    last = format!("POST {url}: the watch was not created within {within}");
                }
            }
        }
        Err(Fail::Error(EtcdError::Unreachable(last)))
    }

    /// Sends the watch request and reads its first message, which must say the watch exists. A
    /// refusal comes as HTTP 200 with a canceled watch whose reason is a gRPC error in words.
    async fn created(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        at: usize,
    ) -> Result<(WatchStream, i64), Fail> {
        let unreachable = |why: String| Fail::Error(EtcdError::Unreachable(format!("POST {url}: {why}")));
        let response = request.send().await.map_err(|e| unreachable(tls_hint(&chain(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = read_limited(response, MAX_ANSWER_BYTES)
                .await
                .map_err(|why| unreachable(format!("HTTP {status}: {why}")))?;
            let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
            let class = classify(status.as_u16(), answer.as_ref(), &String::from_utf8_lossy(&bytes));
            return Err(self.refusal(class, "/v3/watch", url));
        }
        let (split, ready) = (Splitter::default(), VecDeque::new());
        let etcd = self.clone();
        let mut stream = WatchStream { response, split, ready, url: url.to_string(), endpoint: at, etcd };
        match stream.message().await? {
            Some(WatchMessage::Created { revision }) => Ok((stream, revision)),
            Some(WatchMessage::Canceled { reason, .. }) => {
                Err(self.refusal(classify_cancel(&reason), "/v3/watch", url))
            }
            Some(WatchMessage::Events(_)) => {
                Err(Fail::Error(EtcdError::Malformed(format!("{url}: changes before the watch was created"))))
            }
            None => Err(unreachable("the stream ended before the watch was created".into())),
        }
    }

    /// One message of a watch's stream, read as untrusted: etcd's error inside the stream is
    /// classified as any answer's.
    fn watch_message(&self, bytes: &[u8], url: &str) -> Result<WatchMessage, Fail> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            Fail::Error(EtcdError::Malformed(format!("{url}: a watch message that is not JSON ({e})")))
        })?;
        match classify(200, Some(&v), "") {
            Class::Ok => {}
            class => return Err(self.refusal(class, "/v3/watch", url)),
        }
        watch_message(&v).map_err(|why| Fail::Error(EtcdError::Malformed(format!("{url}: {why}"))))
    }
}

impl WatchStream {
    /// The next message; `Ok(None)` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, EtcdError> {
        self.message().await.map_err(EtcdError::from)
    }

    async fn message(&mut self) -> Result<Option<WatchMessage>, Fail> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return self.etcd.watch_message(&bytes, &self.url).map(Some);
            }
            let chunk = self.response.chunk().await.map_err(|e| {
                Fail::Error(EtcdError::Unreachable(format!("watch {}: {}", self.url, tls_hint(&chain(&e)))))
            })?;
            let Some(chunk) = chunk else { return Ok(None) };
            let messages = self
                .split
                .feed(&chunk, MAX_ANSWER_BYTES)
                .map_err(|why| Fail::Error(EtcdError::Malformed(format!("watch {}: {why}", self.url))))?;
            self.ready.extend(messages);
        }
    }
}

impl Splitter {
    /// Takes `chunk`; the messages it completes. Refused: bytes between messages that start no
    /// JSON object, a message longer than `limit`.
    fn feed(&mut self, chunk: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut done = Vec::new();
        for &b in chunk {
            if self.depth == 0 {
                if b.is_ascii_whitespace() {
                    continue;
                }
                if b != b'{' {
                    return Err(format!("a byte that starts no message ({:?}) between messages", b as char));
                }
            }
            if self.message.len() >= limit {
                return Err(format!("a message of more than {} KiB", limit >> 10));
            }
            self.message.push(b);
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        done.push(std::mem::take(&mut self.message));
                    }
                }
                _ => {}
            }
        }
        Ok(done)
    }
}

/// A watch message's `result`: created, canceled (compacted or refused), or changes.
fn watch_message(v: &Value) -> Result<WatchMessage, String> {
    let r = &v["result"];
    if !r.is_object() {
        return Err(format!("a watch message without a result: {}", brief(v)));
    }
    if r["canceled"] == true {
        let compact_revision = int(&r["compact_revision"]).filter(|c| *c > 0);
        let reason = crate::text::clean(r["cancel_reason"].as_str().unwrap_or_default(), 200);
        return Ok(WatchMessage::Canceled { compact_revision, reason });
    }
    if r["created"] == true {
        let revision = int(&r["header"]["revision"])
            .ok_or_else(|| format!("a watch created without a revision: {}", brief(v)))?;
        return Ok(WatchMessage::Created { revision });
    }
    let events = r["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(WatchMessage::Events(events.iter().map(event).collect()))
}

/// One event of a watch: a PUT (enum 0, so the gateway leaves `type` out) or a DELETE.
fn event(v: &Value) -> Result<Event, String> {
    let key = v["kv"]["key"]
        .as_str()
        .and_then(|k| B64.decode(k).ok())
        .ok_or_else(|| format!("an event without a readable key: {}", brief(v)))?;
    let named = || crate::text::clean(&String::from_utf8_lossy(&key), 128);
    let mod_revision = int(&v["kv"]["mod_revision"])
        .filter(|r| *r > 0)
        .ok_or_else(|| format!("an event of `{}` without a modification revision", named()))?;
    let kv = match &v["type"] {
        Value::Null => Some(kv(&v["kv"]).map_err(|why| format!("an event of `{}` with {why}", named()))?),
        t if t == "PUT" || t == 0 => {
            Some(kv(&v["kv"]).map_err(|why| format!("an event of `{}` with {why}", named()))?)
        }
        t if t == "DELETE" || t == 1 => None,
        t => return Err(format!("an event of `{}` of an unknown type {}", named(), brief(t))),
    };
    Ok(Event { key, mod_revision, kv })
}

/// The class of a watch etcd refused to create: its `cancel_reason` is a gRPC error in words,
/// "rpc error: code = PermissionDenied desc = etcdserver: permission denied".
fn classify_cancel(reason: &str) -> Class {
    let (code, desc) = reason
        .strip_prefix("rpc error: code = ")
        .and_then(|r| r.split_once(" desc = "))
        .unwrap_or(("", reason));
    let status = match code {
        "Unauthenticated" => 401,
        "PermissionDenied" => 403,
        _ => 400,
    };
    classify(status, None, desc)
}

/// Reads a transaction's answer: its revision and, for each `Get` of the branch that ran, the
/// key it read (checked to be that key).
fn txn_result(v: &Value, succeeded: bool, branch: &[Op]) -> Result<TxnResult, String> {
    let revision = int(&v["header"]["revision"]).ok_or_else(|| format!("no revision: {}", brief(v)))?;
    let responses = v["responses"].as_array().map(Vec::as_slice).unwrap_or_default();
    if responses.len() > MAX_LIST || responses.len() > branch.len() {
        return Err(format!("{} responses to {} requests", responses.len(), branch.len()));
    }
    let mut gets = Vec::new();
    for (op, response) in branch.iter().zip(responses) {
        if let Op::Get(key) = op {
            let range = response.get("response_range").ok_or_else(|| format!("no range for `{key}`"))?;
            gets.push(first_kv(range, key)?);
        }
    }
    Ok(TxnResult { succeeded, revision, gets })
}

/// The first of a range's `kvs`, which must be `key`.
fn first_kv(range: &Value, key: &str) -> Result<Option<Kv>, String> {
    let kvs = range["kvs"].as_array().map(Vec::as_slice).unwrap_or_default();
    if kvs.len() > MAX_LIST {
        return Err(format!("{} keys for one", kvs.len()));
    }
    let Some(first) = kvs.first() else { return Ok(None) };
    let found = first["key"].as_str().and_then(|k| B64.decode(k).ok()).unwrap_or_default();
    if found != key.as_bytes() {
        let found = crate::text::clean(&String::from_utf8_lossy(&found), 128);
        return Err(format!("another key (`{found}`) than the one asked for"));
    }
    kv(first).map(Some)
}

/// What an answer says: the HTTP status and etcd's error (`{"error","code","message"}`, or in a
/// streamed answer `{"error":{"grpc_code","message"}}`; else the body's `text`).
fn classify(status: u16, answer: Option<&Value>, text: &str) -> Class {
    let null = Value::Null;
    let v = answer.unwrap_or(&null);
    let error = &v["error"];
    let code = int(&v["code"]).or_else(|| int(&error["grpc_code"]));
    let message = v["message"].as_str().or_else(|| error["message"].as_str()).or_else(|| error.as_str());
    if (200..300).contains(&status) && error.is_null() {
        return Class::Ok;
    }
    let message = match (message, answer) {
        (Some(m), _) => crate::text::clean(m, 200),
        (None, None) => crate::text::clean(text.trim(), 200),
        (None, Some(_)) => String::new(),
    };
    // etcd 3.4+ with authentication on refuses gateway requests whose client certificate has a
    // Common Name (the gateway could not pass it on as the user, CVE-2020-15136's fix).
    if message.contains("CommonName of client sending a request against gateway") {
        return Class::Refused(format!(
            "HTTP {status}: {message} (with etcd users enabled, etcd refuses JSON-gateway requests whose client certificate has a Common Name: issue cluster.cert_file without a CN, e.g. subject O=elastic-agents)"
        ));
    }
    if message.contains("authentication is not enabled") {
        return Class::NotEnabled;
    }
    if message.contains("authentication failed") {
        return Class::AuthFailed(message);
    }
    if status == 401
        || code == Some(16)
        || message.contains("invalid auth token")
        || message.contains("user name is empty")
    {
        return Class::Unauthenticated(message);
    }
    if status == 403 || code == Some(7) {
        return Class::Denied(message);
    }
    if message.is_empty() {
        return Class::Retry(answer.map_or_else(|| "an empty answer".into(), brief));
    }
    Class::Retry(message)
}

/// The body of `response`, at most `limit` bytes: read chunk by chunk, stopping past the limit
/// (a member cannot make the agent buffer what it likes).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let too_big = || format!("an answer of more than {} KiB", limit >> 10);
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A TLS failure with what the operator can do about it.
fn tls_hint(text: &str) -> String {
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        " (the member's certificate does not chain to a CA this agent trusts: cluster.ca_file)"
    } else if text.contains("NotValidForName") {
        " (the member's certificate does not name the address in cluster.etcd)"
    } else if text.contains("CertificateRequired")
        || text.contains("BadCertificate")
        || text.contains("fatal alert")
    {
        " (the member refused this agent's TLS handshake: does it need a client certificate, cluster.cert_file and key_file, signed by a CA it trusts?)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// An answer in a message: cleaned and short.
fn brief(v: &Value) -> String {
    crate::text::clean(&v.to_string(), 200)
}

/// A 64-bit number as the gateway writes it (a string), or a plain number.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn kv(v: &Value) -> Result<Kv, String> {
    let value = match v["value"].as_str() {
        Some(s) => B64.decode(s).map_err(|e| format!("a value that is not base64: {e}"))?,
        None => Vec::new(),
    };
    Ok(Kv {
        value,
        create_revision: int(&v["create_revision"]).unwrap_or(0),
        mod_revision: int(&v["mod_revision"]).unwrap_or(0),
        lease: int(&v["lease"]).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_the_gateways_json() {
        let v = json!({"key": "YQ==", "value": "bm9kZS0x", "create_revision": "12", "mod_revision": "15", "lease": "7587"});
        let k = kv(&v).unwrap();
        assert_eq!(k, Kv { value: b"node-1".to_vec(), create_revision: 12, mod_revision: 15, lease: 7587 });
        assert_eq!(int(&json!("9223372036854775807")), Some(i64::MAX));
        assert_eq!(int(&json!(3)), Some(3));
        assert_eq!(int(&json!(null)), None);
        assert!(kv(&json!({"value": "not base64!"})).unwrap_err().contains("not base64"));
    }

    #[test]
    fn a_range_must_answer_the_key_asked_for_within_the_list_bound() {
        let range =
            json!({"kvs": [{"key": B64.encode("/e/groups/g/leader"), "value": "YQ==", "lease": "0"}]});
        assert_eq!(first_kv(&range, "/e/groups/g/leader").unwrap().unwrap().value, b"a");
        let e = first_kv(&range, "/e/groups/h/leader").unwrap_err();
        assert!(e.contains("another key (`/e/groups/g/leader`) than the one asked for"), "{e}");
        assert_eq!(first_kv(&json!({"count": "0"}), "/k").unwrap(), None);
        let many = json!({"kvs": vec![json!({"key": B64.encode("/k")}); MAX_LIST + 1]});
        assert!(first_kv(&many, "/k").unwrap_err().contains("65 keys for one"));
    }

    #[test]
    fn a_transaction_answer_is_bounded_by_what_was_asked() {
        let key = "/e/groups/g/leader";
        let ok = json!({"header": {"revision": "9"}, "succeeded": false,
            "responses": [{"response_range": {"kvs": [{"key": B64.encode(key), "value": "Yg==", "create_revision": "4", "mod_revision": "4", "lease": "77"}]}}]});
        let r = txn_result(&ok, false, &[Op::Get(key)]).unwrap();
        assert_eq!((r.revision, r.gets[0].as_ref().unwrap().lease), (9, 77));
        let extra = json!({"header": {"revision": "9"}, "responses": [{}, {}]});
        assert!(txn_result(&extra, false, &[Op::Get(key)])
            .unwrap_err()
            .contains("2 responses to 1 requests"));
        assert!(txn_result(&json!({}), true, &[]).unwrap_err().contains("no revision"));
    }

    #[test]
    fn etcd_errors_are_classified_from_status_code_and_message() {
        let err = |code: i64, m: &str| json!({"error": m, "message": m, "code": code});
        let stale = err(16, "etcdserver: invalid auth token");
        let classify = |status, answer: Option<&Value>| classify(status, answer, "");
        assert!(
            matches!(classify(401, Some(&stale)), Class::Unauthenticated(m) if m.contains("invalid auth token"))
        );
        // A token refused inside a streamed answer (HTTP 200).
        let streamed = json!({"error": {"grpc_code": 16, "http_code": 401, "message": "etcdserver: invalid auth token"}});
        assert!(matches!(classify(200, Some(&streamed)), Class::Unauthenticated(_)));
        // Authentication enabled after the agent found it disabled.
        assert!(matches!(
            classify(400, Some(&err(3, "etcdserver: user name is empty"))),
            Class::Unauthenticated(_)
        ));
        let wrong = err(3, "etcdserver: authentication failed, invalid user ID or password");
        assert!(matches!(classify(400, Some(&wrong)), Class::AuthFailed(_)));
        assert_eq!(
            classify(412, Some(&err(9, "etcdserver: authentication is not enabled"))),
            Class::NotEnabled
        );
        assert!(matches!(classify(403, Some(&err(7, "etcdserver: permission denied"))), Class::Denied(_)));
        assert!(
            matches!(classify(503, Some(&err(14, "etcdserver: no leader"))), Class::Retry(m) if m == "etcdserver: no leader")
        );
        assert!(matches!(classify(502, None), Class::Retry(m) if m == "an empty answer"));
        assert!(matches!(super::classify(502, None, "Bad Gateway\n"), Class::Retry(m) if m == "Bad Gateway"));
        let cn = "CommonName of client sending a request against gateway will be ignored and not used as expected\n";
        assert!(
            matches!(super::classify(400, None, cn), Class::Refused(m) if m.contains("issue cluster.cert_file without a CN"))
        );
        assert_eq!(classify(200, Some(&json!({"header": {}}))), Class::Ok);
    }

    /// A watch's stream as etcd 3.4.23's gateway wrote it (`curl -N` on `/v3/watch` over
    /// `/elastic/groups/`): created, a leased PUT of a leader key (no `type`: PUT is enum 0), a
    /// state PUT, the leader key's DELETE.
    const CAPTURED: &str = concat!(
        r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"1","raft_term":"2"},"created":true}}"#,
        "\n",
        r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"events":[{"kv":{"key":"L2VsYXN0aWMvZ3JvdXBzL3dlYi9sZWFkZXI=","create_revision":"2","mod_revision":"2","version":"1","value":"YQ==","lease":"2324035800269752069"}}]}}"#,
        "\n",
        r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"3","raft_term":"2"},"events":[{"kv":{"key":"L2VsYXN0aWMvZ3JvdXBzL3dlYi9zdGF0ZQ==","create_revision":"3","mod_revision":"3","version":"1","value":"e30="}}]}}"#,
        "\n",
        r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"events":[{"type":"DELETE","kv":{"key":"L2VsYXN0aWMvZ3JvdXBzL3dlYi9sZWFkZXI=","mod_revision":"4"}}]}}"#,
        "\n",
    );
    /// Captured too: a watch from a compacted revision (created, then canceled), one refused for
    /// a stale token and one outside the user's role (HTTP 200 both), and the stream's end on a
    /// member that lost its etcd leader (with `hasleader`).
    const COMPACTED: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","raft_term":"2"},"canceled":true,"compact_revision":"4"}}"#;
    const STALE_TOKEN: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"5","raft_term":"2"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#;
    const DENIED: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"5","raft_term":"2"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}}"#;
    const NO_LEADER: &str = r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;

    fn split_all(chunks: &[&[u8]], limit: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut split = Splitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(split.feed(chunk, limit)?);
        }
        Ok(out)
    }

    #[test]
    fn a_watch_stream_is_cut_into_messages_whatever_the_chunks() {
        let whole = split_all(&[CAPTURED.as_bytes()], MAX_ANSWER_BYTES).unwrap();
        assert_eq!(whole.len(), 4);
        assert!(whole.iter().zip(CAPTURED.lines()).all(|(m, line)| m == line.as_bytes()));
        // Byte by byte, and cut inside strings, keys and between messages: the same messages.
        let bytes: Vec<&[u8]> = CAPTURED.as_bytes().chunks(1).collect();
        assert_eq!(split_all(&bytes, MAX_ANSWER_BYTES).unwrap(), whole);
        for cut in [1, 7, 131, 132, 133, 200, CAPTURED.len() - 1] {
            let (a, b) = CAPTURED.as_bytes().split_at(cut);
            assert_eq!(split_all(&[a, b], MAX_ANSWER_BYTES).unwrap(), whole, "cut at {cut}");
        }
        // Without newlines, and with braces and escaped quotes inside strings.
        let tricky = r#"{"result":{"cancel_reason":"a \"}\" {[ b\\"}}{"result":{}}"#;
        let m = split_all(&[tricky.as_bytes()], MAX_ANSWER_BYTES).unwrap();
        assert_eq!(m.len(), 2);
        let first: Value = serde_json::from_slice(&m[0]).unwrap();
        assert_eq!(first["result"]["cancel_reason"], "a \"}\" {[ b\\");
    }

    #[test]
    fn an_oversize_message_or_garbage_between_messages_is_refused() {
        let big = format!(r#"{{"result":{{"pad":"{}"}}}}"#, "x".repeat(2000));
        let e = split_all(&[big.as_bytes()], 1024).unwrap_err();
        assert_eq!(e, "a message of more than 1 KiB");
        // Refused as it grows, across chunks, before it is complete.
        let (a, b) = big.as_bytes().split_at(1500);
        assert!(split_all(&[a, b], 1024).is_err());
        assert_eq!(split_all(&[b"{}  \n{}"], 2).unwrap().len(), 2, "a message of exactly the limit");
        let e = split_all(&[b"{}\nHTTP/1.1 502"], 1024).unwrap_err();
        assert!(e.contains("starts no message ('H')"), "{e}");
    }

    #[test]
    fn watch_messages_are_read_as_the_gateway_writes_them() {
        let messages: Vec<WatchMessage> =
            CAPTURED.lines().map(|l| watch_message(&serde_json::from_str(l).unwrap()).unwrap()).collect();
        assert_eq!(messages[0], WatchMessage::Created { revision: 1 });
        let leader = b"/elastic/groups/web/leader".to_vec();
        let put =
            Kv { value: b"a".to_vec(), create_revision: 2, mod_revision: 2, lease: 2324035800269752069 };
        let put = Event { key: leader.clone(), mod_revision: 2, kv: Some(put) };
        assert_eq!(messages[1], WatchMessage::Events(vec![Ok(put)]));
        let WatchMessage::Events(state) = &messages[2] else { panic!("{:?}", messages[2]) };
        assert_eq!(state[0].as_ref().unwrap().key, b"/elastic/groups/web/state");
        let deleted = Event { key: leader, mod_revision: 4, kv: None };
        assert_eq!(messages[3], WatchMessage::Events(vec![Ok(deleted)]));

        let read = |s: &str| watch_message(&serde_json::from_str(s).unwrap());
        assert_eq!(
            read(COMPACTED).unwrap(),
            WatchMessage::Canceled { compact_revision: Some(4), reason: String::new() }
        );
        let Ok(WatchMessage::Canceled { compact_revision: None, reason }) = read(STALE_TOKEN) else {
            panic!("{STALE_TOKEN}")
        };
        assert!(
            matches!(classify_cancel(&reason), Class::Unauthenticated(m) if m == "etcdserver: invalid auth token")
        );
        let Ok(WatchMessage::Canceled { reason, .. }) = read(DENIED) else { panic!("{DENIED}") };
        assert!(matches!(classify_cancel(&reason), Class::Denied(m) if m == "etcdserver: permission denied"));
        let empty = "rpc error: code = InvalidArgument desc = etcdserver: user name is empty";
        assert!(matches!(classify_cancel(empty), Class::Unauthenticated(_)));
        // An error inside the stream is classified as any answer's: another member may do better.
        let no_leader: Value = serde_json::from_str(NO_LEADER).unwrap();
        assert_eq!(classify(200, Some(&no_leader), ""), Class::Retry("etcdserver: no leader".into()));

        // Hostile or broken events are refused one by one, with why.
        let bad = |event: Value| event_error(&json!({"result": {"events": [event]}}));
        assert!(bad(json!({"kv": {"key": "!!", "mod_revision": "5"}})).contains("without a readable key"));
        let key = B64.encode("/elastic/groups/web/leader");
        assert!(bad(json!({"kv": {"key": key}})).contains("without a modification revision"));
        assert!(bad(json!({"kv": {"key": key, "mod_revision": "5", "value": "%%"}})).contains("not base64"));
        assert!(
            bad(json!({"type": "EXPIRE", "kv": {"key": key, "mod_revision": "5"}})).contains("unknown type")
        );
        assert!(watch_message(&json!({"header": {}})).unwrap_err().contains("without a result"));
    }

    fn event_error(v: &Value) -> String {
        let Ok(WatchMessage::Events(events)) = watch_message(v) else { panic!("{v}") };
        events.into_iter().next().unwrap().unwrap_err()
    }

    fn spec(endpoints: Vec<String>, timeout: Duration) -> ClusterSpec {
        ClusterSpec {
            etcd: endpoints,
            node: "a".into(),
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            request_timeout: timeout,
            prefix: "/elastic".into(),
            ca: None,
            identity: None,
            user: None,
        }
    }

    /// A gateway on loopback for one request: answers it with each of `parts` as an HTTP chunk,
    /// each after its pause; the request it got (head and body).
    async fn gateway(parts: Vec<(u64, String)>) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            while !String::from_utf8_lossy(&request).contains("}}") {
                let n = conn.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            conn.write_all(head.as_bytes()).await.unwrap();
            for (pause_ms, part) in parts {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                let chunk = format!("{:x}\r\n{part}\r\n", part.len());
                conn.write_all(chunk.as_bytes()).await.unwrap();
            }
            conn.write_all(b"0\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, served)
    }

    #[tokio::test]
    async fn a_watch_reads_messages_split_across_chunks_beyond_the_request_timeout() {
        // Cut inside the created message and inside the PUT; the last parts come long after the
        // client's request timeout (200 ms), which a watch must not inherit once created.
        let (a, b) = CAPTURED.split_at(60);
        let (b, c) = b.split_at(200);
        let (c, d) = c.split_at(150);
        let parts = vec![(0, a.into()), (20, b.into()), (300, c.into()), (300, d.into())];
        let (gateway, served) = gateway(parts).await;
        // The first member refuses connections: the next is tried, each try counted.
        let closed = format!("http://127.0.0.1:{}", {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        let etcd = Etcd::new(&spec(vec![closed, gateway], Duration::from_millis(200)));
        let (mut stream, revision) =
            etcd.watch("/elastic/groups/", "/elastic/groups0", Some(7)).await.unwrap();
        assert_eq!((revision, stream.endpoint, etcd.current()), (1, 1, 1));
        assert_eq!(etcd.requests.load(Ordering::Relaxed), 2);
        let mut kinds = Vec::new();
        while let Some(m) = stream.next().await.unwrap() {
            let WatchMessage::Events(events) = m else { panic!("{m:?}") };
            kinds.push(events[0].as_ref().map(|e| e.kv.is_some()).unwrap());
        }
        assert_eq!(kinds, [true, true, false], "two PUTs and a DELETE, then the end");
        let request = served.await.unwrap();
        assert!(request.to_lowercase().contains("grpc-metadata-hasleader: true"), "{request}");
        let body = r#"{"create_request":{"key":"L2VsYXN0aWMvZ3JvdXBzLw==","range_end":"L2VsYXN0aWMvZ3JvdXBzMA==","start_revision":"7"}}"#;
        assert!(request.ends_with(body), "{request}");
    }

    #[tokio::test]
    async fn a_refused_watch_says_why() {
        let etcd_of = |url: String| Etcd::new(&spec(vec![url], Duration::from_secs(2)));
        let (url, _served) = gateway(vec![(0, DENIED.into())]).await;
        let Err(e) = etcd_of(url).watch("/elastic/groups/", "/elastic/groups0", None).await else {
            panic!("created")
        };
        assert!(
            e.to_string().contains("etcd denied the agent /v3/watch: etcdserver: permission denied"),
            "{e}"
        );
        let (url, _served) = gateway(vec![(0, STALE_TOKEN.into())]).await;
        let Err(e) = etcd_of(url).watch("/elastic/groups/", "/elastic/groups0", None).await else {
            panic!("created")
        };
        assert!(e.to_string().contains("etcd requires authentication"), "{e}");
        // A message larger than an answer may be, as the first one: malformed, not followed.
        let big = format!(r#"{{"result":{{"pad":"{}"}}}}"#, "x".repeat(MAX_ANSWER_BYTES));
        let (url, _served) = gateway(vec![(0, big)]).await;
        let Err(e) = etcd_of(url).watch("/elastic/groups/", "/elastic/groups0", None).await else {
            panic!("created")
        };
        assert!(
            matches!(&e, EtcdError::Malformed(m) if m.contains("a message of more than 1024 KiB")),
            "{e}"
        );
    }

    #[test]
    fn tls_failures_say_which_setting_to_look_at() {
        assert!(tls_hint("invalid peer certificate: UnknownIssuer").contains("cluster.ca_file"));
        assert!(tls_hint("received fatal alert: CertificateRequired").contains("cluster.cert_file"));
        assert_eq!(tls_hint("connection refused"), "connection refused");
    }

    #[test]
    fn a_ca_file_that_is_not_a_certificate_does_not_build_a_client() {
        assert!(client(Duration::from_secs(1), Some(b"not pem"), None).is_err());
        let fake = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(client(Duration::from_secs(1), Some(fake), None).is_err());
        assert!(client(
            Duration::from_secs(1),
            None,
            Some(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        )
        .is_err());
        assert!(client(Duration::from_secs(1), None, None).is_ok());
    }
}
