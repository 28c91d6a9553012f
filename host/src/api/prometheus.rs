//! Prometheus text exposition (format 0.0.4) of the latest value of every series, and of the
//! agent's own figures. Metric names follow OpenTelemetry's Prometheus translation: dots become
//! underscores and the unit becomes a suffix (`system.memory.usage` in `By` →
//! `system_memory_usage_bytes`; a ratio `1` → `_ratio`).

use crate::plugins::worker::Status;
use crate::sampler::catalog::unit_of;
use crate::store::{Latest, WriterStats};
use crate::telemetry::Telemetry;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// What `/metrics` shows.
pub struct Inputs<'a> {
    pub latest: &'a [Latest],
    pub writer: Option<&'a WriterStats>,
    pub telemetry: &'a Telemetry,
    pub plugins: &'a [Status],
    pub uptime_s: f64,
}

/// The Prometheus name of a metric with an OpenTelemetry name and unit.
pub fn prometheus_name(name: &str, unit: Option<&str>) -> String {
    let mut out = sanitize(name);
    let suffix = match unit {
        Some("1") => "ratio",
        Some("By") => "bytes",
        Some("By/s") => "bytes_per_second",
        Some("s") => "seconds",
        Some(u) if u.ends_with("/s") => "per_second",
        _ => "",
    };
    if !suffix.is_empty() && !out.ends_with(suffix) {
        out.push('_');
        out.push_str(suffix);
    }
    out
}

fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let c = if ok { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let parts: Vec<String> =
        pairs.into_iter().map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape(v))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// A family: `# HELP`, `# TYPE`, then its samples.
struct Family {
    help: String,
    kind: &'static str,
    lines: Vec<String>,
}

pub fn render(inputs: &Inputs) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut add = |name: String, help: &str, kind: &'static str, line: String| {
        families
            .entry(name)
            .or_insert_with(|| Family { help: help.to_string(), kind, lines: Vec::new() })
            .lines
            .push(line);
    };

    for l in inputs.latest {
        let name = prometheus_name(&l.key.name, unit_of(&l.key.name));
        let help = format!("{} (latest sample)", l.key.name);
        let line = format!("{name}{} {}", labels(l.key.labels.iter()), number(l.value));
        add(name, &help, "gauge", line);
    }

    let t = inputs.telemetry;
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut own = |name: &str, help: &str, kind: &'static str, label_pairs: &[(&str, &str)], value: f64| {
        add(
            name.to_string(),
            help,
            kind,
            format!("{name}{} {}", labels(label_pairs.iter().copied()), number(value)),
        );
    };
    own("agent_uptime_seconds", "Seconds since the agent started.", "gauge", &[], inputs.uptime_s);
    own(
        "agent_sampler_ticks_total",
        "Sampling ticks done.",
        "counter",
        &[],
        t.sampler_ticks.load(Ordering::Relaxed) as f64,
    );
    own(
        "agent_sampler_tick_seconds_total",
        "Time spent in sampling ticks.",
        "counter",
        &[],
        secs(t.sampler_tick_ns_total.load(Ordering::Relaxed)),
    );
    own(
        "agent_sampler_tick_last_seconds",
        "Duration of the last sampling tick.",
        "gauge",
        &[],
        secs(t.sampler_tick_ns_last.load(Ordering::Relaxed)),
    );
    own(
        "agent_source_samples_total",
        "Samples from source plugins that were stored.",
        "counter",
        &[],
        t.source_samples.load(Ordering::Relaxed) as f64,
    );
    own(
        "agent_source_errors_total",
        "Source plugin collections that failed.",
        "counter",
        &[],
        t.source_errors.load(Ordering::Relaxed) as f64,
    );
    own(
        "agent_source_nonfinite_dropped_total",
        "NaN or infinite values from sources, dropped.",
        "counter",
        &[],
        t.source_nonfinite.load(Ordering::Relaxed) as f64,
    );
    if let Some(w) = inputs.writer {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        own(
            "agent_store_samples_written_total",
            "Samples written to the database.",
            "counter",
            &[],
            load(&w.written) as f64,
        );
        own(
            "agent_store_samples_dropped_total",
            "Samples dropped: writer queue full or write failed.",
            "counter",
            &[],
            load(&w.dropped) as f64,
        );
        own(
            "agent_store_write_errors_total",
            "Batches that failed to write.",
            "counter",
            &[],
            load(&w.errors) as f64,
        );
        own("agent_store_batches_total", "Batches committed.", "counter", &[], load(&w.batches) as f64);
        own(
            "agent_store_write_seconds_total",
            "Time spent committing batches.",
            "counter",
            &[],
            secs(load(&w.write_ns_total)),
        );
        own(
            "agent_store_write_last_seconds",
            "Time the last batch took to commit.",
            "gauge",
            &[],
            secs(load(&w.write_ns_last)),
        );
    }
    for p in inputs.plugins {
        let l = [("plugin", p.name.as_str()), ("kind", p.kind.as_str())];
        own("agent_plugin_calls_total", "Calls made to a plugin.", "counter", &l, p.calls as f64);
        own(
            "agent_plugin_faults_total",
            "Calls that faulted (trap, limit, timeout, bad return).",
            "counter",
            &l,
            p.faults as f64,
        );
        own(
            "agent_plugin_call_seconds_total",
            "Time spent in calls to a plugin.",
            "counter",
            &l,
            p.call_ns_total as f64 / 1e9,
        );
        let quarantined = if p.state == crate::plugins::worker::State::Quarantined { 1.0 } else { 0.0 };
        own("agent_plugin_quarantined", "1 while a plugin is quarantined.", "gauge", &l, quarantined);
    }

    let mut out = String::new();
    for (name, f) in families {
        let _ = writeln!(out, "# HELP {name} {}", escape(&f.help));
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for line in f.lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_opentelemetry_translation() {
        assert_eq!(prometheus_name("system.cpu.utilization", Some("1")), "system_cpu_utilization_ratio");
        assert_eq!(prometheus_name("system.memory.usage", Some("By")), "system_memory_usage_bytes");
        assert_eq!(prometheus_name("system.network.io", Some("By/s")), "system_network_io_bytes_per_second");
        assert_eq!(
            prometheus_name("system.network.packets", Some("{packet}/s")),
            "system_network_packets_per_second"
        );
        assert_eq!(
            prometheus_name("system.cpu.load_average.1m", Some("{thread}")),
            "system_cpu_load_average_1m"
        );
        assert_eq!(prometheus_name("app.queue-depth", None), "app_queue_depth");
        assert_eq!(prometheus_name("9lives", None), "_9lives");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels([("a.b", "x\"y\\z\n")]), r#"{a_b="x\"y\\z\n"}"#);
    }
}
