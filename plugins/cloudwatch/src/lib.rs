//! Reads CloudWatch metrics with `GetMetricData`: one call per collection for every query, the
//! newest datapoint of each stored with its CloudWatch timestamp.
//!
//! ```toml
//! [plugins.cloudwatch]
//! allow_http = ["https://monitoring.eu-west-1.amazonaws.com"]
//! secrets = { access_key_id = { env = "AWS_ACCESS_KEY_ID" }, secret_access_key = { env = "AWS_SECRET_ACCESS_KEY" } }
//! interval = "60s"
//! [plugins.cloudwatch.config]
//! region = "eu-west-1"
//! queries = [
//!   { metric = "asg.cpu", namespace = "AWS/EC2", name = "CPUUtilization", dimensions = { AutoScalingGroupName = "web-asg" }, stat = "Average" },
//!   { metric = "alb.requests", namespace = "AWS/ApplicationELB", name = "RequestCount", dimensions = { LoadBalancer = "app/web/50dc6c495c0c9188" }, stat = "Sum" },
//!   { metric = "app.queue", expression = "SUM(METRICS())", period = "60s" },
//! ]
//! ```
//! An empty result, or NaN, is **unknown**: nothing is stored for that query (a group reading it
//! holds), never a zero — as the prometheus source does. Errors are AWS's, mapped by the SDK.

use elastic_sdk::aws::xml;
use elastic_sdk::aws::{Connection, CLOUDWATCH};
use elastic_sdk::source::Guest;
use elastic_sdk::{host, key, log, parse_json, Label, Metadata, PluginError, Sample};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub connection: Connection,
    pub queries: Vec<Query>,
    /// How far back each collection asks: CloudWatch publishes a period's datapoint after it.
    /// Default 10m.
    #[serde(default = "ten_minutes", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub lookback: Duration,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The name the samples are stored under.
    pub metric: String,
    /// A metric: its namespace (`AWS/EC2`, `Custom/App`), name, dimensions and statistic.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// `Average` (default), `Sum`, `Maximum`, `Minimum`, `SampleCount`, `p90`…
    #[serde(default = "average")]
    pub stat: String,
    /// Or a metric math expression (`SUM(METRICS())`) or Metrics Insights query.
    #[serde(default)]
    pub expression: Option<String>,
    /// The datapoints' period. Default 60s.
    #[serde(default = "sixty_seconds", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub period: Duration,
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn average() -> String {
    "Average".into()
}

impl Query {
    /// Its `MetricDataQueries.member.N.*` parameters, with id `q{n}`.
    fn params(&self, n: usize) -> Result<Vec<(String, String)>, PluginError> {
        let p = format!("MetricDataQueries.member.{n}");
        let mut out = vec![(format!("{p}.Id"), format!("q{n}")), (format!("{p}.ReturnData"), "true".into())];
        let period = self.period.as_secs().max(1).to_string();
        match (&self.expression, &self.namespace, &self.name) {
            (Some(e), None, None) => {
                out.push((format!("{p}.Expression"), e.clone()));
                out.push((format!("{p}.Period"), period));
            }
            (None, Some(ns), Some(name)) => {
                let m = format!("{p}.MetricStat");
                out.push((format!("{m}.Metric.Namespace"), ns.clone()));
                out.push((format!("{m}.Metric.MetricName"), name.clone()));
                for (i, (k, v)) in self.dimensions.iter().enumerate() {
                    out.push((format!("{m}.Metric.Dimensions.member.{}.Name", i + 1), k.clone()));
                    out.push((format!("{m}.Metric.Dimensions.member.{}.Value", i + 1), v.clone()));
                }
                out.push((format!("{m}.Period"), period));
                out.push((format!("{m}.Stat"), self.stat.clone()));
            }
            _ => {
                return Err(PluginError::BadConfig(format!(
                    "queries[{}] (`{}`): give `namespace` and `name`, or `expression`, not both",
                    n - 1,
                    self.metric
                )))
            }
        }
        Ok(out)
    }

    fn labels(&self) -> Vec<Label> {
        self.dimensions.iter().map(|(k, v)| Label { key: k.clone(), value: v.clone() }).collect()
    }
}

/// The connection with a source's own defaults: a collection must end within the source's call
/// limit (its `timeout`, 10 s by default), so unless the operator says otherwise each request
/// gets 3 s and one retry, not the backend's 10 s and four.
pub fn source_connection(config_json: &str, connection: &Connection) -> Connection {
    let given: serde_json::Value = serde_json::from_str(config_json).unwrap_or_default();
    let mut c = connection.clone();
    if given.get("request_timeout").is_none() {
        c.request_timeout = Duration::from_secs(3);
    }
    if given.get("retries").is_none() {
        c.retries = 1;
    }
    c
}

/// The newest finite datapoint of each query in a `GetMetricData` answer: (query index, ms, value).
pub fn newest(body: &str) -> Result<Vec<(usize, i64, f64)>, PluginError> {
    let doc = xml::parse(body, "monitoring GetMetricData")?;
    let Some(results) = xml::find(doc.root(), "GetMetricDataResult") else { return Ok(vec![]) };
    let mut out = Vec::new();
    for r in xml::list(results, "MetricDataResults") {
        let Some(n) = xml::text(r, "Id").and_then(|id| id.strip_prefix('q')?.parse::<usize>().ok()) else {
            continue;
        };
        let times =
            xml::list(r, "Timestamps").into_iter().map(|t| t.text().and_then(elastic_sdk::time::iso_to_ms));
        let values =
            xml::list(r, "Values").into_iter().map(|v| v.text().and_then(|t| t.trim().parse::<f64>().ok()));
        let best = times
            .zip(values)
            .filter_map(|(t, v)| Some((t?, v.filter(|v| v.is_finite())?)))
            .max_by_key(|(t, _)| *t);
        if let Some((t, v)) = best {
            out.push((n, t, v));
        }
    }
    Ok(out)
}

/// What one `GetMetricData` call takes.
const MAX_QUERIES: usize = 500;

struct CloudWatch;

impl Guest for CloudWatch {
    fn metadata() -> Metadata {
        Metadata {
            name: "cloudwatch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CloudWatch metrics through GetMetricData (ASG, ALB/ELB, custom metrics, metric math): the newest datapoint of each query.".into(),
            config_keys: [
                key("queries", "[{ metric, namespace, name, dimensions, stat, period } or { metric, expression, period }]", true),
                key("lookback", "how far back each collection asks; default 10m", false),
            ]
            .into_iter()
            .chain(elastic_sdk::aws::client::connection_keys())
            .collect(),
        }
    }

    fn collect() -> Result<Vec<Sample>, PluginError> {
        let source = host::config();
        let config: Config = parse_json(&source, "[plugins.cloudwatch.config]")?;
        if config.queries.is_empty() || config.queries.len() > MAX_QUERIES {
            return Err(PluginError::BadConfig(format!(
                "queries: {} given; one GetMetricData call takes 1 to {MAX_QUERIES}",
                config.queries.len()
            )));
        }
        let mut params = Vec::new();
        for (i, q) in config.queries.iter().enumerate() {
            params.extend(q.params(i + 1)?);
        }
        let now = host::now_ms();
        params.push((
            "StartTime".into(),
            elastic_sdk::time::ms_to_iso(now - config.lookback.as_millis() as i64),
        ));
        params.push(("EndTime".into(), elastic_sdk::time::ms_to_iso(now)));
        params.push(("ScanBy".into(), "TimestampDescending".into()));
        let connection = |json: &str| Ok(source_connection(json, &config.connection));
        let body = elastic_sdk::aws::client::with_client("collect", connection, |client| {
            Ok(client.call(&CLOUDWATCH, "GetMetricData", &params)?)
        })?;
        let mut samples = Vec::new();
        for (n, t_ms, value) in newest(&body)? {
            let Some(q) = config.queries.get(n - 1) else { continue };
            samples.push(Sample { metric: q.metric.clone(), labels: q.labels(), value, timestamp_ms: t_ms });
        }
        if samples.len() < config.queries.len() {
            log::debug(&format!(
                "{} of {} queries had no datapoint",
                config.queries.len() - samples.len(),
                config.queries.len()
            ));
        }
        Ok(samples)
    }
}

elastic_sdk::export_source!(CloudWatch);

#[cfg(test)]
mod tests {
    use super::*;

    /// moto's answer to a query with data, one without, and a third (newest first).
    const ANSWER: &str = r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults><member><Id>q1</Id><Label>Load Average</Label><Timestamps><member>2026-12-05T02:02:39Z</member><member>2026-12-05T02:01:39Z</member></Timestamps><Values><member>50.0</member><member>30.0</member></Values><StatusCode>Complete</StatusCode></member><member><Id>q2</Id><Label>Missing Average</Label><Timestamps/><Values/><StatusCode>Complete</StatusCode></member><member><Id>q3</Id><Timestamps><member>2026-12-05T02:01:39Z</member><member>2026-12-05T02:03:39.000Z</member></Timestamps><Values><member>1.0</member><member>NaN</member></Values></member></MetricDataResults></GetMetricDataResult></GetMetricDataResponse>"#;

    #[test]
    fn the_newest_finite_point_of_each_query_and_nothing_for_an_empty_one() {
        let got = newest(ANSWER).unwrap();
        let t = |s| elastic_sdk::time::iso_to_ms(s).unwrap();
        assert_eq!(got, vec![(1, t("2026-12-05T02:02:39Z"), 50.0), (3, t("2026-12-05T02:01:39Z"), 1.0)]);
    }

    #[test]
    fn a_source_asks_briefly_unless_told_otherwise() {
        let parse = |json: &str| {
            let c: Config = serde_json::from_str(json).unwrap();
            source_connection(json, &c.connection)
        };
        let quick = parse(r#"{"region": "eu-west-1", "queries": []}"#);
        assert_eq!((quick.request_timeout, quick.retries), (Duration::from_secs(3), 1));
        let told = parse(r#"{"region": "eu-west-1", "queries": [], "request_timeout": "8s", "retries": 0}"#);
        assert_eq!((told.request_timeout, told.retries), (Duration::from_secs(8), 0));
    }

    #[test]
    fn a_query_is_a_metric_or_an_expression() {
        let q: Query = serde_json::from_str(r#"{"metric": "asg.load", "namespace": "Custom/App", "name": "Load", "dimensions": {"AutoScalingGroupName": "web"}}"#).unwrap();
        let p = q.params(1).unwrap();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Value"),
            Some("web")
        );
        assert_eq!(get("MetricDataQueries.member.1.MetricStat.Stat"), Some("Average"));
        assert_eq!(get("MetricDataQueries.member.1.MetricStat.Period"), Some("60"));
        let both: Query = serde_json::from_str(
            r#"{"metric": "x", "namespace": "N", "name": "M", "expression": "SUM(METRICS())"}"#,
        )
        .unwrap();
        assert!(matches!(both.params(2), Err(PluginError::BadConfig(m)) if m.contains("queries[1]")));
    }
}
