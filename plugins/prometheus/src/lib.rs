//! Reads numbers from a Prometheus server with PromQL: one sample per result series of each
//! query, instant (the value now) or over a range (every point of the last `range`, at `step`).
//!
//! ```toml
//! [plugins.prometheus]
//! allow_http = ["http://10.0.0.2:9090"]       # the agent denies every other origin
//! interval = "15s"
//! [plugins.prometheus.config]
//! url = "http://10.0.0.2:9090"
//! queries = [
//!   { metric = "fleet.cpu", query = "avg(system_cpu_utilization_ratio{cpu=\"\"})" },
//!   { metric = "fleet.requests", query = "sum(rate(app_requests[1m]))", range = "5m", step = "30s" },
//! ]
//! ```
//! An empty result, or NaN, is **unknown**: nothing is stored for that query (a group reading it
//! holds), never a zero — a Prometheus outage must not scale a group to its minimum. Prometheus'
//! error envelope maps to the contract's errors: `bad_data` (the query is wrong) →
//! `bad-config`, `execution` → `invalid-input`, `timeout`/`canceled`/`unavailable` and any 5xx →
//! `unavailable`, the rest → `other`, each naming the query.

use elastic_sdk::source::Guest;
use elastic_sdk::{key, Label, Metadata, PluginError, Sample};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    pub queries: Vec<Query>,
    /// How long one request may take. Default 10s.
    #[serde(default = "ten_seconds", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The name the samples are stored under.
    pub metric: String,
    /// PromQL.
    pub query: String,
    /// A range query over the last `range` (with `step`): every point, not only the last.
    #[serde(default, deserialize_with = "optional_duration")]
    pub range: Option<Duration>,
    /// The range query's resolution. Default 15s.
    #[serde(default, deserialize_with = "optional_duration")]
    pub step: Option<Duration>,
    /// Labels of each result series to keep (default all but `__name__`).
    pub labels: Option<Vec<String>>,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    elastic_sdk::duration::deserialize(d).map(Some)
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, String)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// The samples in a Prometheus API answer to `q` (`status` its HTTP status, `body` its body).
pub fn samples(q: &Query, status: u16, body: &[u8]) -> Result<Vec<Sample>, PluginError> {
    let named = |what: String| format!("query `{}` ({}): {what}", q.metric, q.query);
    let doc: serde_json::Value = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(_) if status >= 500 => return Err(PluginError::Unavailable(named(format!("HTTP {status}")))),
        Err(e) => {
            return Err(PluginError::Other(named(format!("HTTP {status}, not the Prometheus API: {e}"))))
        }
    };
    if doc["status"] != "success" {
        let (kind, error) = (doc["errorType"].as_str().unwrap_or(""), doc["error"].as_str().unwrap_or(""));
        let why = named(format!("{kind}: {error}"));
        return Err(match kind {
            "bad_data" => PluginError::BadConfig(why),
            "execution" => PluginError::InvalidInput(why),
            "timeout" | "canceled" | "unavailable" => PluginError::Unavailable(why),
            _ if status >= 500 => PluginError::Unavailable(why),
            _ => PluginError::Other(why),
        });
    }
    let data = &doc["data"];
    let mut out = Vec::new();
    let mut push = |labels: &serde_json::Value, point: &serde_json::Value| {
        if let Some((t_ms, value)) = point_of(point) {
            out.push(Sample {
                metric: q.metric.clone(),
                labels: keep(labels, q.labels.as_deref()),
                value,
                timestamp_ms: t_ms,
            });
        }
    };
    let none = serde_json::Value::Null;
    match data["resultType"].as_str() {
        Some("scalar") => push(&none, &data["result"]),
        Some("vector") => {
            data["result"].as_array().into_iter().flatten().for_each(|s| push(&s["metric"], &s["value"]))
        }
        Some("matrix") => {
            for s in data["result"].as_array().into_iter().flatten() {
                s["values"].as_array().into_iter().flatten().for_each(|p| push(&s["metric"], p));
            }
        }
        other => {
            return Err(PluginError::InvalidInput(named(format!(
                "a {} result is not a number",
                other.unwrap_or("missing")
            ))))
        }
    }
    Ok(out)
}

/// `[1700000000.123, "0.5"]` → (ms, value); NaN and infinities are unknown, not numbers.
fn point_of(p: &serde_json::Value) -> Option<(i64, f64)> {
    let t = p.get(0)?.as_f64()?;
    let v: f64 = p.get(1)?.as_str()?.parse().ok()?;
    v.is_finite().then_some(((t * 1000.0).round() as i64, v))
}

fn keep(metric: &serde_json::Value, only: Option<&[String]>) -> Vec<Label> {
    let Some(map) = metric.as_object() else { return Vec::new() };
    map.iter()
        .filter(|(k, _)| *k != "__name__" && only.is_none_or(|o| o.iter().any(|x| x == *k)))
        .filter_map(|(k, v)| Some(Label { key: k.clone(), value: v.as_str()?.to_string() }))
        .collect()
}

/// One query against the server.
fn run(config: &Config, q: &Query) -> Result<Vec<Sample>, PluginError> {
    use elastic_sdk::http::{HttpError, Request};
    let now = elastic_sdk::host::now_ms() as f64 / 1000.0;
    let (path, params) = match q.range {
        None => ("query", vec![("query", q.query.clone())]),
        Some(range) => {
            let step = q.step.unwrap_or(Duration::from_secs(15)).as_secs_f64().max(0.001);
            let start = now - range.as_secs_f64();
            let params = vec![
                ("query", q.query.clone()),
                ("start", format!("{start:.3}")),
                ("end", format!("{now:.3}")),
                ("step", format!("{step}")),
            ];
            ("query_range", params)
        }
    };
    let url = format!("{}/api/v1/{path}", config.url.trim_end_matches('/'));
    let mut request = Request::new("POST", &url)
        .header("content-type", "application/x-www-form-urlencoded")
        .timeout(config.timeout);
    request.body = Some(form(&params).into_bytes());
    let response = request.send().map_err(|e| match e {
        HttpError::BadUrl(why) => PluginError::BadConfig(format!("url: {why}")),
        e => PluginError::Unavailable(format!("POST {url}: {e}")),
    })?;
    samples(q, response.status, &response.body)
}

struct Prometheus;

impl Guest for Prometheus {
    fn metadata() -> Metadata {
        Metadata {
            name: "prometheus".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "PromQL queries against a Prometheus server (instant or range); an empty result or NaN stores nothing.".into(),
            config_keys: vec![
                key("url", "the Prometheus server; its origin must be in allow_http", true),
                key("queries", "list of { metric, query, range, step, labels }: the sample name, PromQL, optional range and step, labels to keep", true),
                key("timeout", "longest wait for one query; default 10s", false),
            ],
        }
    }

    fn collect() -> Result<Vec<Sample>, PluginError> {
        let config: Config = elastic_sdk::config()?;
        if config.queries.is_empty() {
            return Err(PluginError::BadConfig("queries: give at least one { metric, query }".into()));
        }
        let mut all = Vec::new();
        let mut errors = Vec::new();
        for q in &config.queries {
            match run(&config, q) {
                Ok(s) if s.is_empty() => {
                    elastic_sdk::debug!("query `{}`: empty result or NaN: unknown, nothing stored", q.metric)
                }
                Ok(s) => all.extend(s),
                Err(e) => errors.push(e),
            }
        }
        // One failing query does not hide the others' data; all failing is an error.
        match errors.into_iter().next() {
            Some(e) if all.is_empty() => Err(e),
            Some(e) => {
                elastic_sdk::warn!("{e:?}");
                Ok(all)
            }
            None => Ok(all),
        }
    }
}

elastic_sdk::export_source!(Prometheus);

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Query {
        Query {
            metric: "fleet.load".into(),
            query: "sum(app_load)".into(),
            range: None,
            step: None,
            labels: None,
        }
    }

    #[test]
    fn vectors_scalars_and_matrices_become_samples() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"app_load","instance":"a:1"},"value":[1700000000.5,"12.5"]},
            {"metric":{"instance":"b:1"},"value":[1700000000.5,"NaN"]}]}}"#;
        let s = samples(&q(), 200, v).unwrap();
        assert_eq!(s.len(), 1, "NaN is unknown, not a sample");
        assert_eq!((s[0].value, s[0].timestamp_ms), (12.5, 1_700_000_000_500));
        assert_eq!((s[0].labels[0].key.as_str(), s[0].labels[0].value.as_str()), ("instance", "a:1"));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(samples(&q(), 200, scalar).unwrap()[0].value, 3.0);
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#;
        assert_eq!(samples(&q(), 200, m).unwrap().iter().map(|s| s.value).collect::<Vec<_>>(), [1.0, 2.0]);
    }

    #[test]
    fn an_empty_result_is_no_sample_never_a_zero() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(samples(&q(), 200, empty).unwrap().is_empty());
    }

    #[test]
    fn the_error_envelope_maps_to_the_contract_s_errors() {
        let e = |status, body: &[u8]| samples(&q(), status, body).unwrap_err();
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert!(
            matches!(e(400, bad), PluginError::BadConfig(m) if m.contains("query `fleet.load` (sum(app_load)): bad_data: parse error"))
        );
        let exec = br#"{"status":"error","errorType":"execution","error":"many-to-many matching"}"#;
        assert!(matches!(e(422, exec), PluginError::InvalidInput(_)));
        let timeout = br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#;
        assert!(matches!(e(503, timeout), PluginError::Unavailable(_)));
        assert!(
            matches!(e(502, b"<html>bad gateway</html>"), PluginError::Unavailable(m) if m.contains("HTTP 502"))
        );
        assert!(matches!(e(200, b"hello"), PluginError::Other(_)));
        let string = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(matches!(e(200, string), PluginError::InvalidInput(_)));
    }

    #[test]
    fn queries_are_form_encoded() {
        assert_eq!(
            form(&[("query", "sum(rate(x{a=\"b c\"}[1m]))".into())]),
            "query=sum%28rate%28x%7Ba%3D%22b+c%22%7D%5B1m%5D%29%29"
        );
    }
}
