//! Commands that read the running agent's `/status`: `agent status` (the whole agent, for a
//! person) and `agent ps` (its supervised instances).

use super::operate::locate;
use super::{agent_url, http, runtime, unreachable, Exit, RunOptions};
use crate::text::table;
use anyhow::Context;
use serde_json::Value;

/// The running agent's `/status`.
fn fetch(options: RunOptions) -> anyhow::Result<Value> {
    fetch_from(&locate(options)?)
}

/// `/status` of the agent `config` describes.
pub fn fetch_from(config: &crate::config::Config) -> anyhow::Result<Value> {
    runtime()?.block_on(async {
        let url = agent_url(config, "/status");
        let response = http().get(url).send().await.map_err(|e| unreachable(config, e))?;
        let body = response.text().await.context("reading /status")?;
        serde_json::from_str(&body).context("/status is not JSON")
    })
}

/// `agent ps`: the running agent's supervised instances.
pub fn ps(options: RunOptions, as_json: bool) -> anyhow::Result<Exit> {
    let status = fetch(options)?;
    let processes = status["processes"].as_array().cloned().unwrap_or_default();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&processes)?);
    } else {
        print!("{}", processes_table(&processes));
        print!("{}", cluster_lines(&status));
    }
    Ok(Exit::Success)
}

/// One line per cluster group: this node's role, the leader, the fencing revision, the last
/// change of leader. Empty without `[cluster]`.
pub fn cluster_lines(status: &Value) -> String {
    let c = &status["cluster"];
    let Some(groups) = c["groups"].as_object() else { return String::new() };
    let node = text(c, "node");
    // Not reached covers every freeze (unreachable, refused credentials, denied keys): the
    // groups' reasons below say which.
    let reach = if c["etcd_reachable"] == true { "reachable" } else { "NOT USABLE: cluster groups frozen" };
    let mut out = format!("cluster: node {node}, etcd {reach}\n");
    for (group, v) in groups {
        let leader = v["leader"].as_str().unwrap_or("unknown");
        let fencing =
            v["fencing_revision"].as_i64().map(|r| format!(", fencing revision {r}")).unwrap_or_default();
        let failover = v["last_failover_ms"]
            .as_i64()
            .map(|t| format!(", leader since {}", crate::timefmt::format(t)))
            .unwrap_or_default();
        let reason = v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        out += &format!(
            "  group {group}: {} here, leader {leader}{fencing}{failover}{reason}\n",
            text(v, "role")
        );
    }
    out
}

/// `agent status`: what the agent runs, decides and loads, and what is wrong, on one screen.
/// Exit 1 when something needs the operator (a failed file or process, a configuration problem).
pub fn status(options: RunOptions, as_json: bool) -> anyhow::Result<Exit> {
    let status = fetch(options)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(Exit::Success);
    }
    let (text, healthy) = render(&status);
    print!("{text}");
    Ok(if healthy { Exit::Success } else { Exit::SomeFailed })
}

/// The summary, and whether nothing in it needs attention.
fn render(s: &Value) -> (String, bool) {
    let list = |k: &str| s[k].as_array().cloned().unwrap_or_default();
    let (processes, groups, plugins) = (list("processes"), list("groups"), list("plugins"));
    let mut out = header(s);
    let mut attention = Vec::new();
    if !processes.is_empty() {
        out += &format!("\n{}", processes_table(&processes));
    }
    attention.extend(
        processes
            .iter()
            .filter(|p| p["state"] == "failed")
            .map(|p| format!("process `{}` failed", text(p, "name"))),
    );
    if !groups.is_empty() {
        out += &format!("\n{}", groups_table(&groups));
    }
    out += &cluster_lines(s);
    if s["cluster"]["etcd_reachable"] == false {
        attention.push("etcd is unreachable: cluster groups are frozen".into());
    }
    if !plugins.is_empty() {
        out += &format!("\n{}", plugins_table(&plugins));
    }
    for p in plugins.iter().filter(|p| p["state"] == "failed") {
        attention.push(format!("{}: {}", text(p, "file"), text(p, "error")));
    }
    attention.extend(plugins.iter().filter_map(failed_collection));
    if let Some(error) = failed_reload(s) {
        attention.push(format!("configuration: reload refused, the previous one runs: {error}"));
    }
    for f in list("failed_files").iter().filter(|f| !f["kept_running"].is_null()) {
        attention.push(format!("{}: {}", text(f, "file"), text(f, "error")));
    }
    let problems = |k: &str| s["problems"][k].as_object().cloned().unwrap_or_default();
    for (group, found) in problems("groups") {
        for p in found.as_array().into_iter().flatten() {
            attention.push(format!("group `{group}`: {}", p.as_str().unwrap_or_default()));
        }
    }
    for (plugin, found) in problems("plugins") {
        for p in found.as_array().into_iter().flatten() {
            attention.push(format!("[plugins.{plugin}]: {}", p.as_str().unwrap_or_default()));
        }
    }
    if !attention.is_empty() {
        out += "\nneeds attention:\n";
        for line in &attention {
            out += &format!("  {line}\n");
        }
    }
    (out, attention.is_empty())
}

/// Why the last reload was refused, if it was.
fn failed_reload(s: &Value) -> Option<String> {
    let r = &s["config"]["last_reload"];
    (r["ok"] == false).then(|| text(r, "error"))
}

/// A source whose last collection failed: how often, and why the last time.
fn failed_collection(p: &Value) -> Option<String> {
    let c = &p["collection"];
    c["last_error"].as_str()?;
    let (errors, all) = (c["errors"].as_u64().unwrap_or(0), c["collections"].as_u64().unwrap_or(0));
    Some(format!(
        "source `{}`: {errors} of {all} collections failed; last: {}",
        text(p, "name"),
        text(c, "last_error")
    ))
}

/// The agent itself: version, uptime, configuration, process tree mode, plugin folder.
fn header(s: &Value) -> String {
    let uptime = s["uptime_s"].as_u64().map(human).unwrap_or_else(|| "-".into());
    let mut out = format!("agent {}, up {uptime}\n", text(s, "version"));
    let config = &s["config"];
    if !config.is_null() {
        let loaded = config["loaded_at_ms"].as_i64().map(crate::timefmt::format).unwrap_or_default();
        let reload = match &config["last_reload"] {
            Value::Null => String::new(),
            r if r["ok"] == true => "; last reload ok".into(),
            r => format!("; last reload FAILED: {}", text(r, "error")),
        };
        out += &format!("config:     {} (loaded {loaded}){reload}\n", text(config, "file"));
    }
    if let Some(mode) = s["supervisor"]["process_tree"].as_str() {
        out += &format!("processes:  process trees by {mode}\n");
    }
    if let Some(dir) = s["plugins_dir"].as_str() {
        let settled = if s["plugins_settled"] == true { "" } else { " (still loading)" };
        out += &format!("plugins:    {dir}{settled}\n");
    }
    out
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => crate::text::clean(s, 300),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn processes_table(processes: &[Value]) -> String {
    let rows: Vec<Vec<String>> = processes
        .iter()
        .map(|p| {
            let uptime = p["uptime_s"].as_f64().map(|u| format!("{u:.0}s")).unwrap_or_else(|| "-".into());
            let f = |k| text(p, k);
            vec![f("name"), f("replica"), f("pid"), f("state"), f("restarts"), uptime, f("last_exit")]
        })
        .collect();
    table(&["NAME", "REPLICA", "PID", "STATE", "RESTARTS", "UPTIME", "LAST EXIT"], &rows)
}

fn groups_table(groups: &[Value]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let size = format!("{} ({} ready)", text(g, "current"), text(g, "ready"));
            let when = g["last_ms"].as_i64().map(ago).unwrap_or_default();
            let dry = if g["dry_run"] == true { " (dry run)" } else { "" };
            let last = format!("{}{dry} {when}", text(g, "last_action"));
            vec![text(g, "name"), size, text(g, "desired"), last, text(g, "last_reason")]
        })
        .collect();
    table(&["GROUP", "REPLICAS", "DESIRED", "LAST DECISION", "REASON"], &rows)
}

fn plugins_table(plugins: &[Value]) -> String {
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let f = |k| text(p, k);
            let c = &p["collection"];
            let note = match p["state"].as_str() {
                Some("failed" | "disabled") => f("error"),
                Some("quarantined") => f("last_fault"),
                _ if c["not_collected"].is_string() => text(c, "not_collected"),
                _ if c["last_error"].is_string() => {
                    format!("{} failed collection(s); last: {}", text(c, "errors"), text(c, "last_error"))
                }
                _ => p["over_budget"]
                    .as_object()
                    .filter(|o| !o.is_empty())
                    .map(|o| format!("over budget: {}", o.keys().cloned().collect::<Vec<_>>().join(", ")))
                    .unwrap_or_default(),
            };
            vec![f("name"), f("kind"), f("version"), f("state"), f("calls"), f("faults"), note]
        })
        .collect();
    table(&["PLUGIN", "KIND", "VERSION", "STATE", "CALLS", "FAULTS", "NOTE"], &rows)
}

/// `12s ago`, from a time in Unix milliseconds.
fn ago(t_ms: i64) -> String {
    format!("{} ago", human(((crate::timefmt::now_ms() - t_ms).max(0) / 1000) as u64))
}

/// `2d 3h`, `1m 15s`, `12s`: the two largest units.
fn human(secs: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let Some(first) = UNITS.iter().position(|(_, size)| secs >= *size) else { return "0s".into() };
    let (unit, size) = UNITS[first];
    let mut out = format!("{}{unit}", secs / size);
    if let Some((next, next_size)) = UNITS.get(first + 1) {
        let rest = secs % size / next_size;
        if rest > 0 {
            out += &format!(" {rest}{next}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_shows_every_part_and_what_needs_attention() {
        let s = json!({
            "version": "0.1.0", "uptime_s": 75,
            "config": {"file": "agent.toml", "loaded_at_ms": 0, "last_reload": {"ok": false, "error": "bad"}},
            "supervisor": {"process_tree": "cgroup-v2"}, "plugins_dir": "plugins", "plugins_settled": true,
            "processes": [{"name": "web", "replica": 0, "pid": 7, "state": "running", "restarts": 0, "uptime_s": 70.2, "last_exit": null}],
            "groups": [{"name": "web", "current": 2, "ready": 2, "desired": 3, "last_action": "scale", "last_ms": crate::timefmt::now_ms(), "last_reason": "cpu high", "dry_run": false}],
            "plugins": [{"name": "tt", "kind": "policy", "version": "1", "state": "ready", "calls": 3, "faults": 0, "over_budget": {}},
                        {"name": "bad", "file": "bad.wasm", "kind": null, "version": null, "state": "failed", "faults": 0, "error": "is not a component"},
                        {"name": "prom", "kind": "source", "version": "1", "state": "ready", "calls": 5, "faults": 0,
                         "collection": {"collections": 5, "errors": 3, "last_error": "unavailable: refused"}},
                        {"name": "off", "file": "off.wasm", "kind": null, "version": null, "state": "disabled", "faults": 0, "error": "plugin `off` is disabled in the configuration"}],
            "failed_files": [],
            "problems": {"groups": {"web": ["policy `x` is not loaded"]}, "plugins": {}},
        });
        let (out, healthy) = render(&s);
        assert!(!healthy);
        assert_eq!(
            (human(0), human(59), human(3600), human(90_061)),
            ("0s".into(), "59s".into(), "1h".into(), "1d 1h".into())
        );
        for part in [
            "agent 0.1.0, up 1m 15s",
            "last reload FAILED: bad",
            "process trees by cgroup-v2",
            "web   0        7    running",
            "2 (2 ready)",
            "scale 0s ago",
            "bad.wasm: is not a component",
            "group `web`: policy `x` is not loaded",
            "  source `prom`: 3 of 5 collections failed; last: unavailable: refused\n",
            "  configuration: reload refused, the previous one runs: bad\n",
            "3 failed collection(s); last: unavailable: refused",
        ] {
            assert!(out.contains(part), "`{part}` missing from:\n{out}");
        }
        // A plugin the operator disabled is shown, and needs nothing.
        assert!(out.contains("is disabled in the configuration") && !out.contains("  off.wasm:"), "{out}");
    }
}
