//! The Prometheus alerting rules and the Grafana dashboard shipped for the agent
//! (`dist/prometheus/agent.rules.yml`, its unit tests `agent.rules.test.yml`,
//! `dist/grafana/agent-dashboard.json`; issue 36), checked with the real tools against real
//! agents: `promtool check rules` and `promtool test rules` pass and test every alert both ways;
//! the dashboard is dashboard JSON; every metric either reads is a family a real agent exports;
//! a real Prometheus evaluates every rule without error over two real agents — quiet over a
//! healthy one, pending over one in trouble for the alerts that trouble should raise — and
//! answers every dashboard query.
//!
//! `promtool` and `prometheus` are Debian's `prometheus` package. Without them the tests that
//! need them say loudly that they were skipped; under `REQUIRE_PROMETHEUS=1` (CI) that is a
//! failure.

use crate::common::{
    fixture, load_source, plugin, plugin_dir, root, signal, skipped, wait_for, Agent, JsonServer,
};
use crate::fleet::prometheus::Prometheus;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn rules_file() -> PathBuf {
    root().join("dist/prometheus/agent.rules.yml")
}

fn rules_tests_file() -> PathBuf {
    root().join("dist/prometheus/agent.rules.test.yml")
}

fn dashboard() -> Value {
    let path = root().join("dist/grafana/agent-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Families a single agent without `[cluster]`, whose plugins stay within their budgets, does
/// not export, so they cannot be checked on its page: the `[cluster]` ones, and the over-budget
/// counter (a family appears with a plugin's first event over a budget). These are checked
/// against the exporter's source text instead (host/src/api/prometheus.rs). The troubled agent
/// of the Prometheus test does export the over-budget counter, and raises the alert on it.
const ON_DEMAND: &[&str] = &[
    "agent_cluster_etcd_reachable",
    "agent_cluster_etcd_requests_total",
    "agent_cluster_group_role",
    "agent_plugin_over_budget_total",
];

/// Series Prometheus makes itself: the scrape's health, and its alerts.
const PROMETHEUS_MADE: &[&str] = &["up", "ALERTS"];

/// `promtool` is here; `false` (after a loud SKIPPED line) if not, a failure under
/// `REQUIRE_PROMETHEUS=1`.
fn have(tool: &str, test: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("REQUIRE_PROMETHEUS").is_err(),
        "{test}: REQUIRE_PROMETHEUS is set but there is no `{tool}` (apt-get install prometheus)"
    );
    skipped(&format!("{test}: no `{tool}` here (apt-get install prometheus to run it)"));
    false
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

// --- metric names in PromQL -------------------------------------------------------------------

/// PromQL's keywords, binary-operator words and modifiers: never metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
];

/// Aggregation operators: they may be followed by `by (…)`/`without (…)` before their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names an expression reads: identifiers followed by `{`, `[` or standing alone —
/// not functions or aggregations (followed by `(`), keywords, label names (inside `{…}` and in
/// the lists of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`), strings,
/// durations, numbers or Grafana's `$variables`. A Grafana variable query
/// `label_values(EXPR, label)` reads the names of `EXPR`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = expr.trim();
    if let Some(inner) = expr.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
        return match inner.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => BTreeSet::new(), // label_values(label): every series
        };
    }
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let next_non_space = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    // The index after the bracket closing the one at `open`, strings inside skipped.
    let skip_group = |open: usize, close: char| {
        let mut j = open + 1;
        let mut depth = 1;
        while j < c.len() && depth > 0 {
            match c[j] {
                '"' | '\'' | '`' => j = skip_string(&c, j) - 1,
                x if x == c[open] => depth += 1,
                x if x == close => depth -= 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            i = skip_string(&c, i);
        } else if ch == '{' {
            i = skip_group(i, '}');
        } else if ch == '[' {
            i = skip_group(i, ']');
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '$' {
            // A Grafana variable: `$name`, `${name}`, `${name:format}`.
            i += 1;
            if i < c.len() && c[i] == '{' {
                i = skip_group(i, '}');
            } else {
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            // A number or a duration (`5m`, `1h30m`, `0x1f`, `1e3`).
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.' || c[i] == '_') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let after = next_non_space(i);
            let call = after < c.len() && c[after] == '(';
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&lower.as_str()) {
                if call {
                    i = skip_group(after, ')'); // label names
                }
            } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&lower.as_str()) || call {
                // an operator, or a function's name
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index after the string literal opening at `open` (backslash escapes, except in raw `` ` ``).
fn skip_string(c: &[char], open: usize) -> usize {
    let quote = c[open];
    let mut j = open + 1;
    while j < c.len() && c[j] != quote {
        if c[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum without (replica) (increase(process_restarts{job=~".*agent.*", x="a{b}\"c"}[10m])) > 3"#
        ),
        ["process_restarts"]
    );
    assert_eq!(
        names(
            "count by (job, group) (agent_cluster_group_role == 1)\nunless\n\
             count by(job,group)(agent_cluster_group_role{role=\"leader\"} == 1)"
        ),
        ["agent_cluster_group_role"]
    );
    assert_eq!(
        names("(a_ready < b_capacity) unless on (instance, job, group) (c_role{role!=\"leader\"} == 1)"),
        ["a_ready", "b_capacity", "c_role"]
    );
    assert_eq!(
        names("rate(x_total{instance=~\"$instance\"}[$__rate_interval]) / rate(y_total[5m] offset 1h) * on(a) group_left(b) z"),
        ["x_total", "y_total", "z"]
    );
    assert_eq!(names("time() - ts_seconds{group=~\"${group:regex}\"} > 600"), ["ts_seconds"]);
    assert_eq!(names("count(up{job=~\".*agent.*\"} == 0) or vector(0)"), ["up"]);
    assert_eq!(names("max_over_time(q[5m:30s]) == bool 1e3"), ["q"]);
    assert_eq!(names("topk by (x) (3, m) and ignoring (y) n:recorded"), ["m", "n:recorded"]);
    assert_eq!(names("label_values(agent_group_max{instance=~\"$instance\"}, group)"), ["agent_group_max"]);
    assert_eq!(names("label_values(agent_uptime_seconds, instance)"), ["agent_uptime_seconds"]);
}

// --- the rules, with promtool -----------------------------------------------------------------

/// The alert names in the rules file (`- alert: NAME` lines).
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(rules_file()).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_string()).collect()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_cover_every_alert_both_ways() {
    const TEST: &str = "alerts promtool";
    if !have("promtool", TEST) {
        return;
    }
    let alerts = alert_names();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let (ok, said) = run(Command::new("promtool")
        .args(["check", "rules", "--lint=all", "--lint-fatal"])
        .arg(rules_file()));
    assert!(ok, "promtool check rules:\n{said}");
    assert!(said.contains(&format!("SUCCESS: {} rules found", alerts.len())), "{said}");

    let (ok, said) = run(Command::new("promtool").args(["test", "rules"]).arg(rules_tests_file()));
    assert!(ok, "promtool test rules:\n{said}");
    assert!(said.contains("SUCCESS") && !said.contains("FAILED"), "{said}");

    // Each alert has a case where it fires (expected alerts listed) and one where it does not
    // (`exp_alerts: []`): the file's own layout, `alertname:` then `exp_alerts:` on the next line.
    let tests = std::fs::read_to_string(rules_tests_file()).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut cases: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("alertname:") else { continue };
        let exp = lines.get(i + 1).copied().unwrap_or_default();
        let entry = cases.entry(name.trim()).or_default();
        match exp {
            "exp_alerts: []" => entry.1 += 1,
            "exp_alerts:" if lines.get(i + 2).is_some_and(|n| n.starts_with("- exp_labels:")) => entry.0 += 1,
            other => panic!("alertname {name}: unexpected line after it: {other}"),
        }
    }
    for a in &alerts {
        let (firing, quiet) = cases.get(a.as_str()).copied().unwrap_or_default();
        assert!(
            firing >= 1 && quiet >= 1,
            "{a}: {firing} firing and {quiet} quiet cases in agent.rules.test.yml"
        );
    }
    let unknown: Vec<_> = cases.keys().filter(|n| !alerts.iter().any(|a| a == *n)).collect();
    assert!(unknown.is_empty(), "tests for alerts the rules do not have: {unknown:?}");

    // The cases do hold promtool to something: the same tests over rules whose warnings say
    // `severity: page` fail, naming a warning.
    let dir = tempfile::tempdir().unwrap();
    let changed =
        std::fs::read_to_string(rules_file()).unwrap().replace("severity: warning", "severity: page");
    std::fs::write(dir.path().join("agent.rules.yml"), changed).unwrap();
    std::fs::write(dir.path().join("agent.rules.test.yml"), &tests).unwrap();
    let (ok, said) =
        run(Command::new("promtool").args(["test", "rules"]).arg(dir.path().join("agent.rules.test.yml")));
    assert!(!ok && said.contains("FAILED") && said.contains("AgentGroupAtMax"), "{said}");
}

// --- the dashboard ----------------------------------------------------------------------------

/// Every PromQL text of the dashboard: each panel target's `expr`, each query variable's query.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(String::from));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).expect("a query variable's query");
            out.push(q.to_string());
        }
    }
    out
}

/// The families on a `/metrics` page (`# TYPE name kind`).
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// The names that are neither on one of `pages` nor made by Prometheus, nor (for the listed
/// on-demand families) in the exporter's source.
fn not_exported(names: &BTreeSet<String>, pages: &[&str]) -> Vec<String> {
    let exported: BTreeSet<String> = pages.iter().flat_map(|p| families(p)).collect();
    let exporter = std::fs::read_to_string(root().join("host/src/api/prometheus.rs")).unwrap();
    names
        .iter()
        .filter(|n| !exported.contains(*n) && !PROMETHEUS_MADE.contains(&n.as_str()))
        .filter(|n| !(ON_DEMAND.contains(&n.as_str()) && exporter.contains(&format!("\"{n}\""))))
        .cloned()
        .collect()
}

/// An agent whose group, process and plugins are all well: the `web` group (http-json →
/// target-tracking → ledger) at 5 of at most 10 replicas, a supervised `sleep`.
fn healthy_config(app: &JsonServer) -> String {
    format!(
        r#"{source}
[[process]]
name = "sleeper"
command = "sleep"
args = ["600"]

[[group]]
name = "web"
interval = "300ms"
metrics = [{{ name = "app.load", window = "1s" }}]
policy = "target-tracking"
policy_config = {{ target = 10, per = "total" }}
backend = "ledger"
backend_config = {{ initial = 1 }}
min = 1
max = 10
"#,
        source = load_source(app)
    )
}

/// The healthy agent, and its plugins folder (kept while it runs).
fn healthy_agent(app: &JsonServer) -> (Agent, tempfile::TempDir) {
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    (Agent::start(dir.path(), &healthy_config(app)), dir)
}

/// `agent`'s `/metrics` once it has sampled a few times (process CPU needs two readings) and
/// evaluated its group.
fn settled_page(agent: &Agent, group: &str) -> String {
    wait_for("samples and an evaluation", LIMIT, || {
        let evaluated = agent.status()["groups"]
            .as_array()?
            .iter()
            .any(|g| g["name"] == group && g["last_ms"].is_number());
        let (_, page) = crate::common::http_get(agent.addr, "/metrics").ok()?;
        let sampled = page.lines().any(|l| l.starts_with("process_cpu_utilization_ratio{"))
            && page.lines().any(|l| l.starts_with("system_network_io_bytes_per_second{"));
        (evaluated && sampled).then_some(page)
    })
}

#[test]
fn the_dashboard_is_grafana_json_over_families_a_real_agent_exports() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40),
        "a uid Grafana takes: {}",
        d["uid"]
    );
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    // Variables: the data source (any Prometheus), the agents, referenced by every query.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var =
        |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let instance = var("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    assert_eq!(
        instance["query"]["query"].as_str().or(instance["query"].as_str()),
        Some("label_values(agent_uptime_seconds, instance)")
    );

    // Panels: unique ids, a place on the 24-column grid that no other panel takes, and every
    // panel that shows data reads the variable's data source with PromQL.
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    let mut rows = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_else(|| panic!("a panel without a title: {p}"));
        let kind = p["type"].as_str().unwrap_or_else(|| panic!("{title}: no type"));
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} is used twice");
        let g = &p["gridPos"];
        let [h, w, x, y] =
            ["h", "w", "x", "y"].map(|k| g[k].as_u64().unwrap_or_else(|| panic!("{title}: gridPos.{k}")));
        assert!(h >= 1 && w >= 1 && x + w <= 24, "{title}: gridPos {g}");
        for cy in y..y + h {
            for cx in x..x + w {
                if let Some(other) = cells.insert((cx, cy), title) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
        if kind == "row" {
            rows.push(title);
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
            assert!(!expr.trim().is_empty(), "{title}: an empty expr");
            assert!(refs.insert(t["refId"].as_str().unwrap_or_default()), "{title}: refIds repeat");
            assert!(
                expr.contains("$instance") || expr.starts_with("count(ALERTS"),
                "{title}: {expr} ignores $instance"
            );
        }
    }
    for section in ["Scaling groups", "Cluster", "Processes", "Plugins", "API", "Store", "Machine"] {
        assert!(rows.contains(&section), "no {section} row: {rows:?}");
    }

    // Every name a query reads is a family the agent exports.
    let names: BTreeSet<String> = dashboard_queries(&d).iter().flat_map(|q| metric_names(q)).collect();
    for must in [
        "agent_group_capacity",
        "agent_group_desired",
        "agent_group_max",
        "agent_cluster_group_role",
        "process_restarts",
        "agent_plugin_calls_total",
        "agent_api_connections_open",
        "agent_store_samples_dropped_total",
        "system_cpu_utilization_ratio",
        "system_disk_io_bytes_per_second",
    ] {
        assert!(names.contains(must), "the dashboard does not read {must}: {names:?}");
    }
    let app = JsonServer::start(r#"{"load": 45}"#);
    let (agent, _plugins) = healthy_agent(&app);
    let page = settled_page(&agent, "web");
    let missing = not_exported(&names, &[&page]);
    assert!(missing.is_empty(), "the dashboard reads what the agent does not export: {missing:?}\n{page}");
}

// --- the rules and the dashboard in a real Prometheus -----------------------------------------

/// What the test asks of a Prometheus server with the rules loaded (started with the job name
/// docs/fleet.md uses, `elastic-agents`).
trait Rules {
    fn addr(&self) -> SocketAddr;

    /// `GET /api/v1/PATH?query`'s `data`; panics unless the status is `success`.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("http://{}/api/v1/{path}", self.addr());
        let text = reqwest::blocking::Client::new()
            .get(&url)
            .query(query)
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("{url} {query:?}: {e}"));
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url} {query:?}: {e}: {text}"));
        assert_eq!(body["status"], "success", "{url} {query:?}: {body}");
        body["data"].clone()
    }

    /// Every alerting rule as Prometheus loaded it.
    fn rules(&self) -> Vec<Value> {
        let data = self.api("rules", &[("type", "alert")]);
        data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect()
    }

    /// The alerts pending or firing now.
    fn alerts(&self) -> Vec<Value> {
        self.api("alerts", &[])["alerts"].as_array().unwrap().clone()
    }
}

impl Rules for Prometheus {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// An agent in trouble: a group pinned at its ceiling (`pinned`: load 45 at 10 a replica wants
/// 5, max is 2), a group whose policy panics on every call (`faulty`: the plugin faults, is
/// quarantined, and the group fails evaluation after evaluation), a program that exits a second
/// after it starts (`crasher`), a source that sends new series beyond its budget of 3 — and,
/// beside them, a program that runs well (`sleeper`).
fn troubled_config(app: &JsonServer) -> String {
    format!(
        r#"{source}
[plugins.rogue-source]
interval = "300ms"
max_series = 3
[plugins.rogue-source.config]
mode = "flood-series"
count = 5

[[process]]
name = "sleeper"
command = "sleep"
args = ["600"]

[[process]]
name = "crasher"
command = "sh"
args = ["-c", "sleep 1; exit 3"]
[process.backoff]
initial = "200ms"
multiplier = 1.0
max = "200ms"
[process.start_limit]
count = 1000
interval = "5m"

[[group]]
name = "pinned"
interval = "300ms"
metrics = [{{ name = "app.load", window = "1s" }}]
policy = "target-tracking"
policy_config = {{ target = 10, per = "total" }}
backend = "ledger"
backend_config = {{ initial = 1 }}
min = 1
max = 2

[[group]]
name = "faulty"
interval = "300ms"
metrics = [{{ name = "app.load", window = "1s" }}]
policy = "rogue-policy"
policy_config = {{ mode = "panic" }}
backend = "ledger"
backend_config = {{ initial = 1 }}
min = 1
max = 10
"#,
        source = load_source(app)
    )
}

/// Whether `alert` has all the `labels` given.
fn has(alert: &Value, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| alert["labels"][*k] == *v)
}

#[test]
fn prometheus_evaluates_the_rules_and_the_dashboard_over_real_agents() {
    const TEST: &str = "alerts prometheus";
    if !have("prometheus", TEST) {
        return;
    }
    let app = JsonServer::start(r#"{"load": 45}"#);
    let (healthy, _plugins) = healthy_agent(&app);
    let dir = plugin_dir(&[
        &plugin("http-json"),
        &plugin("target-tracking"),
        &plugin("ledger"),
        &fixture("rogue-policy"),
        &fixture("rogue-source"),
    ]);
    let mut troubled = Agent::start(dir.path(), &troubled_config(&app));
    // A reload that is refused: the agent keeps its configuration and says so.
    let config = troubled.data.path().join("agent.toml");
    std::fs::write(&config, troubled_config(&app) + "\n[[group]\n").unwrap();
    signal(troubled.pid(), "HUP");
    wait_for("the refused reload on /metrics", LIMIT, || {
        let (_, page) = crate::common::http_get(troubled.addr, "/metrics").ok()?;
        page.lines().any(|l| l == "agent_config_last_reload_successful 0").then_some(())
    });
    let (h, t) = (healthy.addr.to_string(), troubled.addr.to_string());
    let pages = [settled_page(&healthy, "web"), settled_page(&troubled, "pinned")];

    let prometheus = Prometheus::start(&[healthy.addr, troubled.addr], "elastic-agents", Some(&rules_file()));

    // Every rule loaded, evaluated, and without error over real series (a vector matching that
    // real label sets break would be an error here, not in promtool's unit tests).
    let alerts = alert_names();
    let rules = wait_for("every rule evaluated", LIMIT, || {
        let rules = prometheus.rules();
        (rules.len() == alerts.len() && rules.iter().all(|r| r["health"] != "unknown")).then_some(rules)
    });
    for r in &rules {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["health"], "ok", "{name}: {r}");
        let severity = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["warning", "critical"].contains(&severity), "{name}: severity {severity:?}");
        assert!(r["duration"].as_f64().is_some_and(|d| d > 0.0), "{name}: no `for`");
        let (summary, description) = (
            r["annotations"]["summary"].as_str().unwrap_or_default(),
            r["annotations"]["description"].as_str().unwrap_or_default(),
        );
        assert!(!summary.is_empty() && !description.is_empty(), "{name}: {r}");
        // Where the alert is, in words: the agent, or for a fleet-wide alert the group and job.
        let fleet_wide =
            !r["query"].as_str().unwrap().contains("instance") && description.contains("$labels.job");
        assert!(description.contains("{{ $labels.instance }}") || fleet_wide, "{name}: {description}");
    }

    // Every name a rule reads is a family the agents export.
    let names: BTreeSet<String> =
        rules.iter().flat_map(|r| metric_names(r["query"].as_str().unwrap())).collect();
    for must in ["agent_group_capacity", "agent_group_failures_in_a_row", "process_restarts", "up"] {
        assert!(names.contains(must), "no rule reads {must}: {names:?}");
    }
    let missing = not_exported(&names, &[&pages[0], &pages[1]]);
    assert!(missing.is_empty(), "the rules read what the agent does not export: {missing:?}");

    // The troubled agent raises what its trouble should (pending: their `for` is minutes).
    let expected: &[(&str, &[(&str, &str)])] = &[
        ("AgentReloadFailed", &[]),
        ("AgentPluginQuarantined", &[("plugin", "rogue-policy"), ("kind", "policy")]),
        ("AgentPluginFaulting", &[("plugin", "rogue-policy"), ("kind", "policy")]),
        ("AgentPluginOverBudget", &[("plugin", "rogue-source"), ("budget", "series")]),
        ("AgentGroupAtMax", &[("group", "pinned")]),
        ("AgentGroupNoRecommendation", &[("group", "faulty")]),
        ("AgentRestartStorm", &[("process", "crasher")]),
    ];
    let raised = wait_for("the troubled agent's alerts", LIMIT, || {
        let now = prometheus.alerts();
        let all = expected.iter().all(|(name, labels)| {
            now.iter().any(|a| {
                a["labels"]["alertname"] == *name
                    && a["labels"]["instance"] == t.as_str()
                    && a["labels"]["job"] == "elastic-agents"
                    && has(a, labels)
            })
        });
        all.then_some(now)
    });
    // Nothing else about it: the healthy agent raises nothing (but what depends on this
    // machine's disks and memory), nor do the troubled agent's healthy parts.
    let unexpected: Vec<&Value> = raised
        .iter()
        .filter(|a| !a["labels"]["alertname"].as_str().unwrap().starts_with("AgentHost"))
        .filter(|a| {
            a["labels"]["instance"] == h.as_str()
                || has(a, &[("group", "web")])
                || has(a, &[("process", "sleeper")])
                || has(a, &[("plugin", "target-tracking")])
                || has(a, &[("plugin", "ledger")])
                || has(a, &[("plugin", "http-json")])
        })
        .collect();
    assert!(unexpected.is_empty(), "alerts about what is well: {unexpected:#?}");
    assert!(
        !raised.iter().any(|a| has(a, &[("alertname", "AgentGroupAtMax"), ("group", "faulty")])),
        "a group at 1 of 10 is not at its maximum"
    );

    // Every dashboard query is PromQL Prometheus answers, with data where the agents export what
    // it reads (the `[cluster]` families they do not).
    let d = dashboard();
    for q in dashboard_queries(&d) {
        let promql = q
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "15s")
            .replace("${instance}", ".*")
            .replace("$instance", ".*")
            .replace("$group", ".*");
        assert!(!promql.contains('$'), "a variable left in {promql}");
        if let Some(inner) = promql.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
            let (selector, label) = inner.rsplit_once(',').unwrap();
            let values =
                prometheus.api(&format!("label/{}/values", label.trim()), &[("match[]", selector.trim())]);
            assert!(!values.as_array().unwrap().is_empty(), "{q}: no values");
            continue;
        }
        let result = prometheus.api("query", &[("query", &promql)])["result"].clone();
        let cluster = metric_names(&q).iter().any(|n| n.starts_with("agent_cluster_"));
        if !cluster {
            assert!(result.as_array().is_some_and(|r| !r.is_empty()), "{q}: no data");
        }
    }

    // An agent that stops answering: AgentDown, for it alone.
    troubled.kill9();
    wait_for("AgentDown for the stopped agent", LIMIT, || {
        let now = prometheus.alerts();
        let down: Vec<_> = now.iter().filter(|a| a["labels"]["alertname"] == "AgentDown").collect();
        (down.len() == 1 && down[0]["labels"]["instance"] == t.as_str()).then_some(())
    });
}
