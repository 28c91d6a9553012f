//! Reads an application's JSON stats endpoint and turns chosen numbers into samples.
//!
//! ```toml
//! [plugins.http-json]
//! allow_http = ["http://127.0.0.1:8080"]     # the agent denies every other origin
//! interval = "5s"
//! [plugins.http-json.config]
//! url = "http://127.0.0.1:8080/stats"
//! metrics = { "/requests/total" = "app.requests", "/queue/depth" = "app.queue.depth" }
//! labels = { app = "shop" }
//! ```
//! Keys of `metrics` are JSON pointers (RFC 6901). A pointer that is missing or not a number is
//! reported as an error, never as a zero.
//!
//! `each` reads an object of numbers, one series per key, the key in a label: with
//! `each = { "/busy" = { metric = "app.busy", label = "server" } }`, `{"busy": {"web-1": 2}}`
//! becomes `app.busy{server="web-1"} 2` (e.g. per-server numbers for `[group.scale_in]`).

use elastic_sdk::source::Guest;
use elastic_sdk::{key, Label, Metadata, PluginError, Sample};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// JSON pointer to an object → one series per key.
    #[serde(default)]
    pub each: BTreeMap<String, Each>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Each {
    pub metric: String,
    /// The label whose value is the object's key.
    pub label: String,
}

/// Most series one `each` object may produce (the agent's series budget applies as well).
const MAX_EACH: usize = 1000;

/// Picks the configured numbers out of a JSON document.
pub fn extract(config: &Config, body: &[u8]) -> Result<Vec<Sample>, PluginError> {
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PluginError::InvalidInput(format!("{} did not return JSON: {e}", config.url)))?;
    let labels: Vec<Label> =
        config.labels.iter().map(|(k, v)| Label { key: k.clone(), value: v.clone() }).collect();
    let mut samples = Vec::with_capacity(config.metrics.len());
    let mut missing = Vec::new();
    for (pointer, metric) in &config.metrics {
        match doc.pointer(pointer).and_then(value_of) {
            Some(value) => samples.push(Sample {
                metric: metric.clone(),
                labels: labels.clone(),
                value,
                timestamp_ms: 0,
            }),
            None => missing.push(pointer.as_str()),
        }
    }
    for (pointer, each) in &config.each {
        let Some(object) = doc.pointer(pointer).and_then(|v| v.as_object()) else {
            missing.push(pointer.as_str());
            continue;
        };
        for (key, value) in object.iter().take(MAX_EACH) {
            let Some(value) = value_of(value) else { continue };
            let mut labels = labels.clone();
            labels.push(Label { key: each.label.clone(), value: key.clone() });
            samples.push(Sample { metric: each.metric.clone(), labels, value, timestamp_ms: 0 });
        }
    }
    if !missing.is_empty() {
        return Err(PluginError::InvalidInput(format!(
            "{}: no number at {}",
            config.url,
            missing.join(", ")
        )));
    }
    Ok(samples)
}

fn value_of(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// GET `url`; the agent's grant decides whether it may leave.
fn get(url: &str) -> Result<Vec<u8>, PluginError> {
    use elastic_sdk::http::{HttpError, Request};
    let response =
        Request::get(url).timeout(std::time::Duration::from_secs(5)).send().map_err(|e| match e {
            HttpError::BadUrl(why) => PluginError::BadConfig(format!("url: {why}")),
            HttpError::TooLarge => PluginError::InvalidInput(format!("GET {url}: {e}")),
            e => PluginError::Unavailable(format!("GET {url}: {e}")),
        })?;
    if !(200..300).contains(&response.status) {
        return Err(PluginError::Unavailable(format!("GET {url}: HTTP {}", response.status)));
    }
    Ok(response.body)
}

struct HttpJson;

impl Guest for HttpJson {
    fn metadata() -> Metadata {
        Metadata {
            name: "http-json".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Reads numbers from an application's JSON stats endpoint over HTTP.".into(),
            config_keys: vec![
                key("url", "the stats endpoint; its origin must be in allow_http", true),
                key(
                    "metrics",
                    "table of JSON pointer → metric name, e.g. { \"/requests\" = \"app.requests\" } (this or each)",
                    false,
                ),
                key("labels", "table of labels added to every sample", false),
                key(
                    "each",
                    "table of JSON pointer to an object → { metric, label }: one series per key, the key in the label",
                    false,
                ),
            ],
        }
    }

    fn collect() -> Result<Vec<Sample>, PluginError> {
        let config: Config = elastic_sdk::config()?;
        if config.metrics.is_empty() && config.each.is_empty() {
            return Err(PluginError::BadConfig("give metrics or each (or both)".into()));
        }
        extract(&config, &get(&config.url)?)
    }
}

elastic_sdk::export_source!(HttpJson);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            url: "http://app/stats".into(),
            metrics: [("/a/b".to_string(), "app.b".to_string()), ("/s".to_string(), "app.s".to_string())]
                .into(),
            labels: [("app".to_string(), "shop".to_string())].into(),
            each: Default::default(),
        }
    }

    #[test]
    fn each_key_of_an_object_becomes_a_series_labelled_with_it() {
        let mut c = config();
        c.metrics.clear();
        c.each.insert("/busy".into(), Each { metric: "app.busy".into(), label: "server".into() });
        let s = extract(&c, br#"{"busy":{"web-1":2,"web-2":false,"web-3":"n/a"}}"#).unwrap();
        let got: Vec<(String, f64)> = s.iter().map(|x| (x.labels[1].value.clone(), x.value)).collect();
        assert_eq!(got, [("web-1".to_string(), 2.0), ("web-2".to_string(), 0.0)], "a non-number is skipped");
        assert_eq!((s[0].labels[0].key.as_str(), s[0].labels[1].key.as_str()), ("app", "server"));
        let e = extract(&c, br#"{"busy":3}"#).unwrap_err();
        assert!(matches!(e, PluginError::InvalidInput(m) if m.contains("/busy")), "not an object");
    }

    #[test]
    fn pointers_become_labelled_samples() {
        let s = extract(&config(), br#"{"a":{"b":12.5},"s":"3"}"#).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].metric.as_str(), s[0].value), ("app.b", 12.5));
        assert_eq!((s[1].metric.as_str(), s[1].value), ("app.s", 3.0));
        assert_eq!(s[0].labels[0].value, "shop");
    }

    #[test]
    fn a_missing_number_is_an_error_not_a_zero() {
        let e = extract(&config(), br#"{"a":{"b":null}}"#).unwrap_err();
        assert!(matches!(e, PluginError::InvalidInput(m) if m.contains("/a/b") && m.contains("/s")));
        assert!(extract(&config(), b"<html>").is_err());
    }
}
