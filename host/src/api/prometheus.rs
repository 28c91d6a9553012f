//! Prometheus text exposition (format 0.0.4) of the latest value of every series, and of the
//! agent's own figures. Metric names follow OpenTelemetry's Prometheus translation: dots become
//! underscores and the unit becomes a suffix (`system.memory.usage` in `By` →
//! `system_memory_usage_bytes`; a ratio `1` → `_ratio`).
//!
//! Whatever the sources send, the page is valid text format: metric and label names are
//! sanitised by the format's rules, `HELP` text and label values escaped, series that collide
//! after sanitising exposed once (the first in series order), and no source's series enters the
//! `agent_` namespace of the agent's own families (those are counted in
//! `agent_exposition_series_hidden`, and stay queryable with `agent metrics`).

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
    /// The configuration's reload state (`None` in tools that have no daemon).
    pub config: Option<&'a crate::reload::ConfigStatus>,
    /// `[cluster]`: etcd's reachability and this node's role per cluster group.
    pub cluster: Option<&'a crate::cluster::ClusterStatus>,
    /// The scaling groups as the scaler reports them.
    pub groups: &'a [crate::scaler::group::GroupStatus],
}

/// Each scaling group's capacity against its bounds in force (a schedule's when one is open),
/// what it last decided, and whether its backend keeps failing: what an alert on a group pinned
/// at its ceiling, or unable to scale, reads.
fn groups(
    groups: &[crate::scaler::group::GroupStatus],
    own: &mut impl FnMut(&str, &str, &'static str, &[(&str, &str)], f64),
) {
    for g in groups {
        let l = [("group", g.name.as_str())];
        let (min, max) = g.schedule.as_ref().map_or((g.min, g.max), |s| (s.min, s.max));
        let optional = [
            ("agent_group_capacity", "Units the group has now, as its backend reports them.", g.current),
            ("agent_group_ready", "Units of the group that are ready.", g.ready),
            ("agent_group_desired", "The capacity the group last decided.", g.desired),
        ];
        for (name, help, value) in optional {
            if let Some(v) = value {
                own(name, help, "gauge", &l, v as f64);
            }
        }
        own(
            "agent_group_min",
            "The group's lower bound in force (a schedule's when one is open).",
            "gauge",
            &l,
            min as f64,
        );
        own(
            "agent_group_max",
            "The group's upper bound in force (a schedule's when one is open).",
            "gauge",
            &l,
            max as f64,
        );
        own(
            "agent_group_failures_in_a_row",
            "Consecutive evaluations without a usable recommendation (what fallback.after counts).",
            "gauge",
            &l,
            g.failures_in_a_row as f64,
        );
        if let Some(ms) = g.last_ms {
            own(
                "agent_group_last_evaluation_timestamp_seconds",
                "When the group was last evaluated (Unix seconds).",
                "gauge",
                &l,
                ms as f64 / 1000.0,
            );
        }
    }
}

/// The namespace of the agent's own families.
const OWN_PREFIX: &str = "agent_";

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

/// A metric name by the format's rules, `[a-zA-Z_][a-zA-Z0-9_]*` (colons are for recording
/// rules): anything else becomes `_`, runs of `_` collapse, a leading digit gets a `_`.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// A label name by the format's rules (`__` prefixes are reserved: runs of `_` collapse).
fn label_name(key: &str) -> String {
    let mut out = sanitize(key);
    while out.starts_with("__") {
        out.remove(0);
    }
    out
}

/// A label value: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `HELP` text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `{k="v",…}`: label names sanitised; of two that become the same name, the first is kept.
fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut seen = std::collections::HashSet::new();
    let parts: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| (label_name(k), v))
        .filter(|(k, _)| seen.insert(k.clone()))
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
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

    let mut hidden = 0u64;
    let mut exposed = std::collections::HashSet::new();
    for l in inputs.latest {
        let name = prometheus_name(&l.key.name, unit_of(&l.key.name));
        let series = format!("{name}{}", labels(l.key.labels.iter()));
        if name.starts_with(OWN_PREFIX) || !exposed.insert(series.clone()) {
            hidden += 1;
            continue;
        }
        let help = format!("{} (latest sample)", l.key.name);
        add(name, &help, "gauge", format!("{series} {}", number(l.value)));
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
    if let Some(c) = inputs.config {
        let ok = c.last_reload.as_ref().is_none_or(|r| r.ok);
        own(
            "agent_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or was refused (0).",
            "gauge",
            &[],
            if ok { 1.0 } else { 0.0 },
        );
        own(
            "agent_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded (Unix seconds).",
            "gauge",
            &[],
            c.loaded_at_ms as f64 / 1000.0,
        );
    }
    own(
        "agent_exposition_series_hidden",
        "Series not on this page: in the agent_ namespace, or the same as another after sanitising.",
        "gauge",
        &[],
        hidden as f64,
    );
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
    let api = [
        ("agent_api_connections_open", "API connections open.", "gauge", &t.api_connections_open),
        (
            "agent_api_connections_evicted_total",
            "API connections closed to make room (they waited longest for a request).",
            "counter",
            &t.api_connections_evicted,
        ),
        (
            "agent_api_connections_refused_total",
            "API connections refused: every place was busy.",
            "counter",
            &t.api_connections_refused,
        ),
        (
            "agent_api_header_timeouts_total",
            "API connections closed for sending no request head within api.header_timeout.",
            "counter",
            &t.api_header_timeouts,
        ),
        (
            "agent_api_reads_refused_total",
            "Reads of /api/series and /api/decisions refused with 503: the read pool was full.",
            "counter",
            &t.api_reads_refused,
        ),
    ];
    for (name, help, kind, value) in api {
        own(name, help, kind, &[], value.load(Ordering::Relaxed) as f64);
    }
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
            "agent_store_series_refused_total",
            "Samples of new series refused: the store held [store] max_series live series.",
            "counter",
            &[],
            load(&w.series_refused) as f64,
        );
        own(
            "agent_store_live_series",
            "Series written within the raw retention.",
            "gauge",
            &[],
            w.live_series() as f64,
        );
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
    if let Some(c) = inputs.cluster {
        let reachable = if c.etcd_reachable { 1.0 } else { 0.0 };
        own(
            "agent_cluster_etcd_reachable",
            "1 while etcd answers; 0: cluster groups are frozen.",
            "gauge",
            &[],
            reachable,
        );
        own(
            "agent_cluster_etcd_requests_total",
            "Requests sent to etcd.",
            "counter",
            &[],
            c.etcd_requests as f64,
        );
        for (group, v) in &c.groups {
            let l = [("group", group.as_str()), ("role", v.role)];
            own(
                "agent_cluster_group_role",
                "1 for this node's role in a cluster group (leader, follower, frozen).",
                "gauge",
                &l,
                1.0,
            );
        }
    }
    groups(inputs.groups, &mut own);
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
        own(
            "agent_plugin_cpu_seconds_total",
            "CPU time a plugin's calls cost the agent: its own code and every host function it called.",
            "counter",
            &l,
            p.cpu_ns_total as f64 / 1e9,
        );
        let quarantined = if p.state == crate::plugins::worker::State::Quarantined { 1.0 } else { 0.0 };
        own("agent_plugin_quarantined", "1 while a plugin is quarantined.", "gauge", &l, quarantined);
        for (budget, n) in &p.over_budget {
            let l = [("plugin", p.name.as_str()), ("kind", p.kind.as_str()), ("budget", budget)];
            own(
                "agent_plugin_over_budget_total",
                "Events over a plugin's budget (series, sample-shape, sample-time, log-lines, state, http-*).",
                "counter",
                &l,
                *n as f64,
            );
        }
    }

    let mut out = String::new();
    for (name, f) in families {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&f.help));
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
    fn each_group_has_its_capacity_against_the_bounds_in_force() {
        use crate::scaler::group::GroupStatus;
        let telemetry = Telemetry::default();
        let plain = GroupStatus {
            name: "web".into(),
            current: Some(3),
            desired: Some(4),
            min: 1,
            max: 4,
            ..Default::default()
        };
        let scheduled = GroupStatus {
            name: "batch".into(),
            min: 0,
            max: 10,
            failures_in_a_row: 2,
            schedule: Some(crate::decide::schedule::Effective {
                min: 2,
                max: 6,
                open: vec!["nights".into()],
                desired: None,
                next_change: None,
            }),
            ..Default::default()
        };
        let groups = [plain, scheduled];
        let page = render(&Inputs {
            config: None,
            cluster: None,
            latest: &[],
            writer: None,
            telemetry: &telemetry,
            plugins: &[],
            uptime_s: 1.0,
            groups: &groups,
        });
        check_exposition(&page).unwrap();
        for line in [
            "agent_group_capacity{group=\"web\"} 3",
            "agent_group_desired{group=\"web\"} 4",
            "agent_group_max{group=\"web\"} 4",
            "agent_group_min{group=\"batch\"} 2",
            "agent_group_max{group=\"batch\"} 6",
            "agent_group_failures_in_a_row{group=\"batch\"} 2",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
        }
        assert!(
            !page.contains("agent_group_capacity{group=\"batch\"}"),
            "an unknown capacity is absent, not 0"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels([("a.b", "x\"y\\z\n")]), r#"{a_b="x\"y\\z\n"}"#);
    }

    #[test]
    fn label_names_follow_the_rules_and_collisions_keep_the_first() {
        assert_eq!(
            labels([("__name__", "x"), ("9", "y"), ("a:b", "1"), ("a_b", "2")]),
            r#"{_name_="x",_9="y",a_b="1"}"#
        );
    }

    /// Checks `page` against the text format's grammar strictly; returns the first problem.
    pub(crate) fn check_exposition(page: &str) -> Result<(), String> {
        let ident = |s: &str, label: bool| {
            let mut chars = s.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            first_ok
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !(label && s.starts_with("__"))
        };
        let (mut typed, mut series) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        let mut current = String::new();
        for (n, line) in page.lines().enumerate() {
            let bad = |why: &str| Err(format!("line {}: {why}: {line:?}", n + 1));
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !ident(name, false) {
                    return bad("HELP name");
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                if !ident(name, false)
                    || !["gauge", "counter"].contains(&kind)
                    || !typed.insert(name.to_string())
                {
                    return bad("TYPE");
                }
                current = name.to_string();
            } else {
                let (head, value) = line.rsplit_once(' ').ok_or("no value".to_string())?;
                if value.parse::<f64>().is_err() && !["NaN", "+Inf", "-Inf"].contains(&value) {
                    return bad("value");
                }
                let (name, rest) = head.split_once('{').map_or((head, None), |(n, r)| (n, Some(r)));
                if name != current || !series.insert(head.to_string()) {
                    return bad("sample outside its family, or a duplicate series");
                }
                if let Some(rest) = rest {
                    let mut rest = rest.strip_suffix('}').ok_or("no closing brace".to_string())?;
                    let mut names = std::collections::HashSet::new();
                    while !rest.is_empty() {
                        let (k, after) = rest.split_once("=\"").ok_or("no =\"".to_string())?;
                        if !ident(k, true) || !names.insert(k) {
                            return bad("label name");
                        }
                        let mut chars = after.char_indices();
                        let end = loop {
                            match chars.next() {
                                Some((_, '\\')) => match chars.next() {
                                    Some((_, '\\' | '"' | 'n')) => {}
                                    _ => return bad("escape"),
                                },
                                Some((i, '"')) => break i,
                                Some((_, '\n')) => return bad("raw line feed"),
                                Some(_) => {}
                                None => return bad("unterminated value"),
                            }
                        };
                        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
                    }
                }
            }
        }
        Ok(())
    }

    /// A property test: random hostile names, label keys and values never break the page.
    #[test]
    fn any_series_makes_a_valid_page() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<char> = "aZ_9:.-{}=\",\\\n\r\t #é\u{0}\u{7f}\u{2028}".chars().collect();
        let text = |next: &mut dyn FnMut() -> u64| -> String {
            let len = next() % 12;
            let mut s: String =
                (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            if next().is_multiple_of(5) {
                s = ["agent_uptime_seconds", "agent.plugin.calls", "__name__", "le", ""]
                    [(next() % 5) as usize]
                    .into();
            }
            s
        };
        let telemetry = Telemetry::default();
        for round in 0..200 {
            let mut latest = Vec::new();
            for _ in 0..20 {
                let mut l = crate::store::Labels::new();
                for _ in 0..next() % 4 {
                    l.insert(text(&mut next), text(&mut next));
                }
                let key = crate::store::SeriesKey::new(text(&mut next), l);
                latest.push(Latest { key: std::sync::Arc::new(key), t_ms: 0, value: (next() % 100) as f64 });
            }
            latest.sort_by(|a, b| a.key.cmp(&b.key));
            let page = render(&Inputs {
                config: None,
                cluster: None,
                latest: &latest,
                writer: None,
                telemetry: &telemetry,
                plugins: &[],
                uptime_s: 1.0,
                groups: &[],
            });
            if let Err(e) = check_exposition(&page) {
                panic!("round {round}: {e}\n{page}");
            }
            assert_eq!(page.matches("# TYPE agent_uptime_seconds ").count(), 1);
        }
    }

    #[test]
    fn the_checker_rejects_what_prometheus_rejects() {
        assert!(check_exposition("# TYPE a gauge\na{x=\"1\"} 2\n").is_ok());
        assert!(check_exposition("# TYPE a gauge\na{x=\"1\"} 2\na{x=\"1\"} 3\n").is_err(), "duplicate");
        assert!(check_exposition("# TYPE a gauge\na{__x=\"1\"} 2\n").is_err(), "reserved");
        assert!(check_exposition("# TYPE a gauge\na{x=\"1\\q\"} 2\n").is_err(), "escape");
        assert!(check_exposition("# TYPE a.b gauge\n").is_err(), "name");
        assert!(check_exposition("# TYPE a gauge\nb 1\n").is_err(), "outside family");
    }
}
