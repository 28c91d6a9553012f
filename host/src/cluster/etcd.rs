//! A small etcd v3 client over its JSON gateway (`/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/kv/range`, `/v3/kv/txn`), as Patroni talks to etcd: plain HTTP, no gRPC stack. Keys and
//! values travel base64-encoded, 64-bit numbers as strings. Endpoints are tried in turn: a member
//! that does not answer is skipped for the next one.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EtcdError {
    /// No endpoint answered (or answered an error status): etcd is unreachable from here.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// An answer we cannot read.
    #[error("etcd answered {0}")]
    Malformed(String),
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
    http: reqwest::Client,
    /// Requests sent, for the benchmark and `/metrics`.
    pub requests: Arc<std::sync::atomic::AtomicU64>,
}

impl Etcd {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Etcd {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("a plain HTTP client builds");
        let endpoints = endpoints.into_iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        Etcd {
            endpoints: Arc::new(endpoints),
            current: Default::default(),
            http,
            requests: Default::default(),
        }
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let url = format!("{}{path}", self.endpoints[at]);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let request =
                self.http.post(&url).header("content-type", "application/json").body(body.to_string());
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    self.current.store(at, Ordering::Relaxed);
                    let bytes = r.bytes().await.map_err(|e| EtcdError::Unreachable(format!("{url}: {e}")))?;
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| EtcdError::Malformed(format!("{url}: {e}")));
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    // A member without a leader (or another in a minority) answers 503: try the next.
                    last = format!("POST {url}: HTTP {status}: {}", crate::text::clean(&text, 200));
                }
                Err(e) => last = format!("POST {url}: {e}"),
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    /// A lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", json!({"TTL": ttl.as_secs().max(1)})).await?;
        int(&v["ID"]).filter(|id| *id != 0).ok_or_else(|| EtcdError::Malformed(format!("lease grant: {v}")))
    }

    /// Renews a lease; `Ok(false)` when it has expired (etcd no longer knows it).
    pub async fn keepalive(&self, id: i64) -> Result<bool, EtcdError> {
        let v = self.call("/v3/lease/keepalive", json!({"ID": id.to_string()})).await?;
        // The gateway streams: one `result` per request, TTL 0 (omitted) once the lease is gone.
        let result = if v["result"].is_object() { &v["result"] } else { &v };
        Ok(int(&result["TTL"]).unwrap_or(0) > 0)
    }

    /// The key's current value, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", json!({"key": B64.encode(key)})).await?;
        Ok(v["kvs"].as_array().and_then(|kvs| kvs.first()).and_then(kv))
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
        let revision =
            int(&v["header"]["revision"]).ok_or_else(|| EtcdError::Malformed(format!("txn: {v}")))?;
        let gets = v["responses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("response_range"))
            .map(|r| r["kvs"].as_array().and_then(|kvs| kvs.first()).and_then(kv))
            .collect();
        Ok(TxnResult { succeeded: v["succeeded"].as_bool().unwrap_or(false), revision, gets })
    }
}

/// A 64-bit number as the gateway writes it (a string), or a plain number.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn kv(v: &Value) -> Option<Kv> {
    Some(Kv {
        value: v["value"].as_str().map_or(Ok(Vec::new()), |s| B64.decode(s)).ok()?,
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
    }
}
