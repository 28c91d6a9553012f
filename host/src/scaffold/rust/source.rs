//! {{name}}: a metric source. The agent calls `collect` every `interval` of its
//! `[plugins.{{name}}]` table and stores the samples, labelled `source={{name}}`. This one reads
//! a JSON document over HTTP (the URL's origin must be granted in `allow_http`) and reports the
//! number at `/value` as the metric `{{name}}.value`.

use elastic_sdk::http::Request;
use elastic_sdk::source::Guest;
use elastic_sdk::{key, Metadata, PluginError, Sample};
use serde::Deserialize;

/// `[plugins.{{name}}.config]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
}

/// The number in a JSON document at `/value`: free of the bindings, tested natively.
pub fn value_of(body: &[u8]) -> Result<f64, PluginError> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PluginError::InvalidInput(format!("not JSON: {e}")))?;
    doc.pointer("/value").and_then(|v| v.as_f64()).ok_or_else(|| PluginError::InvalidInput("no number at /value".into()))
}

struct Plugin;

impl Guest for Plugin {
    fn metadata() -> Metadata {
        Metadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Reports the number at /value of a JSON document.".into(),
            config_keys: vec![key("url", "the document's URL; its origin must be in allow_http", true)],
        }
    }

    fn collect() -> Result<Vec<Sample>, PluginError> {
        let config: Config = elastic_sdk::config()?;
        let r = Request::get(&config.url).send().map_err(|e| PluginError::Unavailable(format!("GET {}: {e}", config.url)))?;
        if r.status != 200 {
            return Err(PluginError::Unavailable(format!("GET {}: HTTP {}", config.url, r.status)));
        }
        let value = value_of(&r.body)?;
        Ok(vec![Sample { metric: "{{name}}.value".into(), labels: vec![], value, timestamp_ms: 0 }])
    }
}

elastic_sdk::export_source!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_number_and_refuses_anything_else() {
        assert_eq!(value_of(br#"{"value": 4.5}"#).unwrap(), 4.5);
        assert!(matches!(value_of(br#"{"other": 1}"#), Err(PluginError::InvalidInput(_))));
        assert!(matches!(value_of(b"<html>"), Err(PluginError::InvalidInput(_))));
    }
}
