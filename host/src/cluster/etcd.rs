//! A small etcd v3 client over its JSON gateway (`/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/timetolive`, `/v3/kv/range`, `/v3/kv/txn`, `/v3/auth/authenticate`), as Patroni
//! talks to etcd: HTTP(S), no gRPC stack. Keys and values travel base64-encoded, 64-bit numbers
//! as strings. Endpoints are tried in turn: a member that does not answer is skipped for the
//! next one.
//!
//! TLS: `[cluster] ca_file` replaces the built-in web roots, `cert_file`/`key_file` present a
//! client certificate. Authentication: with `[cluster] username`, a token from
//! `/v3/auth/authenticate` goes in `Authorization` on every request; when etcd says it is invalid
//! (a member restarted, the token expired) the agent authenticates again once and retries. The
//! password and the token never reach a log, an error or `/status`.
//!
//! Nothing etcd answers is trusted to be small or well-formed: an answer is read up to
//! [`MAX_ANSWER_BYTES`], lists up to [`MAX_LIST`], and a key that is not the one asked for is a
//! malformed answer.

use crate::config::ClusterSpec;
use crate::config::SecretSource;
use crate::text::chain;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest answer read from a member: the agents' keys are small (a state is bounded far
/// below this), so more is a member or a proxy gone wrong, not data.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The most entries of a list (`kvs` of a range, `responses` of a transaction) accepted: the
/// agent reads single keys and sends transactions of one or two operations.
pub const MAX_LIST: usize = 64;
/// After etcd refused the user, the first wait before asking again (doubling up to
/// [`AUTH_BACKOFF_MAX`]): each authentication costs etcd a bcrypt check, and a fleet of agents
/// with a wrong password must not keep its members busy.
const AUTH_BACKOFF_MIN: Duration = Duration::from_secs(5);
const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A token longer than this is not one etcd issues (simple tokens are ~20 bytes, JWTs < 1 KiB).
const MAX_TOKEN_BYTES: usize = 4096;

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
    /// Requests sent, for the benchmark and `/metrics`.
    pub requests: Arc<AtomicU64>,
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
            requests: Default::default(),
        }
    }

    /// POSTs `body` to `path` with the current token; once more with a new token when etcd says
    /// the token is stale.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let (token, generation) = self.token().await?;
        let first = self.send(path, &body, token.as_deref()).await;
        let Err(Fail::Unauthenticated(why)) = first else { return first.map_err(|f| self.error(f)) };
        let Some(auth) = &self.auth else {
            return Err(EtcdError::Refused(format!(
                "etcd requires authentication ({why}): set cluster.username and cluster.password"
            )));
        };
        tracing::info!(user = %auth.user, "etcd no longer takes the agent's token ({why}); authenticating again");
        self.forget(auth, generation).await;
        let (token, _) = self.token().await?;
        match self.send(path, &body, token.as_deref()).await {
            Err(Fail::Unauthenticated(why)) => Err(EtcdError::Refused(format!(
                "etcd refused the token it had just issued to user `{}`: {why}",
                auth.user
            ))),
            other => other.map_err(|f| self.error(f)),
        }
    }

    fn error(&self, fail: Fail) -> EtcdError {
        match fail {
            Fail::Error(e) => e,
            Fail::Unauthenticated(why) | Fail::AuthFailed(why) => EtcdError::Refused(why),
            Fail::NotEnabled => EtcdError::Malformed("that authentication is not enabled".into()),
        }
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    async fn send(&self, path: &str, body: &str, token: Option<&str>) -> Result<Value, Fail> {
        let http = self.http.as_ref().map_err(|e| Fail::Error(EtcdError::Unreachable(e.clone())))?;
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let url = format!("{}{path}", self.endpoints[at]);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut request =
                http.post(&url).header("content-type", "application/json").body(body.to_string());
            if let Some(token) = token {
                // Checked when it was issued; sensitive: kept out of any debug output of the request.
                let mut value = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                    Fail::Error(EtcdError::Malformed("a token that is not a header value".into()))
                })?;
                value.set_sensitive(true);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let response = match request.send().await {
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
                Class::Unauthenticated(why) => return Err(Fail::Unauthenticated(why)),
                Class::AuthFailed(why) => return Err(Fail::AuthFailed(why)),
                Class::NotEnabled => return Err(Fail::NotEnabled),
                Class::Refused(why) => {
                    return Err(Fail::Error(EtcdError::Refused(format!("POST {url}: {why}"))))
                }
                Class::Denied(why) => {
                    let who =
                        self.auth.as_ref().map_or("the agent".to_string(), |a| format!("user `{}`", a.user));
                    return Err(Fail::Error(EtcdError::Refused(format!(
                        "etcd denied {who} {path}: {why} (give its role readwrite on the agents' prefix)"
                    ))));
                }
                // A member without a leader (or another in a minority) answers 503: try the next.
                Class::Retry(why) => last = format!("POST {url}: HTTP {status}: {why}"),
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
