//! The scaling loop, end to end: an application's load (a loopback JSON endpoint) is collected
//! by the http-json source into the store, read back as windows by the group, turned into a
//! recommendation by target-tracking, passed through the guardrails and applied by the ledger
//! backend — and every evaluation is journaled.

use crate::common::{
    agent_cli, decisions, group_status, load_source, plugin, plugin_dir, wait_for, Agent, JsonServer,
};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn config(app: &JsonServer) -> String {
    format!(
        r#"
{source}
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
[group.scale_down]
stabilization = "0s"

[[group]]
name = "rehearsal"
interval = "300ms"
dry_run = true
metrics = [{{ name = "app.load", window = "1s" }}]
policy = "target-tracking"
policy_config = {{ target = 10, per = "total" }}
backend = "ledger"
backend_config = {{ initial = 1 }}
min = 1
max = 10

[[group]]
name = "blind"
interval = "300ms"
metrics = [{{ name = "app.load", window = "1s" }}, {{ name = "app.missing", window = "1s" }}]
policy = "target-tracking"
policy_config = {{ target = 10, per = "total" }}
backend = "ledger"
backend_config = {{ initial = 3 }}
min = 1
max = 10
fallback = {{ after = 4, capacity = 2 }}
"#,
        source = load_source(app)
    )
}

#[test]
fn load_drives_the_group_up_and_down_through_policy_guardrails_and_backend() {
    let app = JsonServer::start(r#"{"load": 45}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let agent = Agent::start(dir.path(), &config(&app));

    // 45 / 10 per replica → 5; the HPA's default scale-up rule allows 1 → 5 (+4) at once.
    let scaled = wait_for("a scale to 5", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 5)
    });
    assert_eq!(scaled["current"], 1);
    assert_eq!(scaled["recommendation"], 5.0);
    assert!(scaled["reason"].as_str().unwrap().contains("app.load mean 45.000 vs target 10"), "{scaled}");
    assert!(scaled["outcome"].as_str().unwrap().starts_with("recorded 1 → 5 replicas"));
    assert!(scaled["inputs"].as_object().unwrap().keys().any(|k| k.starts_with("app.load")));
    wait_for("the group at 5", LIMIT, || (group_status(&agent, "web")["current"] == 5).then_some(()));

    // Within tolerance: 48 → 5 (ceil 4.8) holds. Waited for by what the group evaluated — a
    // whole window at 48 — not by a sleep that a loaded machine may end before it did.
    app.set_body(r#"{"load": 48}"#);
    let load_mean = |d: &serde_json::Value| -> Option<f64> {
        let inputs = d["inputs"].as_object()?;
        inputs.iter().find(|(k, _)| k.starts_with("app.load")).and_then(|(_, v)| v["mean"].as_f64())
    };
    let rows = wait_for("an evaluation of a whole window at 48", LIMIT, || {
        let rows = decisions(&agent, "web");
        (load_mean(rows.last()?) == Some(48.0)).then_some(rows)
    });
    let held = rows.last().unwrap();
    assert!(held["action"] == "hold" && held["target"] == 5, "{held}");
    let scaled_to_5 = rows.iter().position(|d| d["action"] == "scale" && d["target"] == 5).unwrap();
    assert!(rows[scaled_to_5 + 1..].iter().all(|d| d["action"] != "scale"), "no scale since: {rows:?}");
    assert_eq!(group_status(&agent, "web")["current"], 5);

    // No load: down to the minimum, not to zero (perhaps in steps, as the 1 s window drains).
    app.set_body(r#"{"load": 0}"#);
    wait_for("a scale down to 1", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 1)
    });
    let zero = wait_for("a recommendation of 0", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["recommendation"] == 0.0)
    });
    assert_eq!(zero["target"], 1);
    let guardrails: Vec<&str> =
        zero["steps"].as_array().unwrap().iter().map(|s| s["guardrail"].as_str().unwrap()).collect();
    assert_eq!(guardrails, ["bounds"], "0 was raised to min 1");

    // Dry run: journaled as "would scale", the backend never asked.
    let rehearsal = decisions(&agent, "rehearsal");
    let would = rehearsal.iter().find(|d| d["action"] == "would-scale").expect("a would-scale entry");
    assert!(would["outcome"].as_str().unwrap().starts_with("dry run: would scale 1 → 5"));
    assert!(rehearsal.iter().all(|d| d["current"] == 1), "the backend was never asked to scale");
    assert_eq!(group_status(&agent, "rehearsal")["dry_run"], true);

    // One metric missing: hold, never scale on part of the inputs — until the fallback: after 4
    // failures in a row, the configured fallback capacity.
    let fallback = wait_for("the fallback", LIMIT, || {
        decisions(&agent, "blind").into_iter().find(|d| d["action"] == "scale")
    });
    let blind = decisions(&agent, "blind");
    let before: Vec<_> = blind.iter().take_while(|d| d["action"] != "scale").collect();
    assert_eq!(crate::common::evaluations(before.iter().copied()), 3, "three holds first: {blind:?}");
    for d in before.iter().chain([&&fallback]) {
        assert!(d["reason"].as_str().unwrap().contains("app.missing in the window; holding"), "{d}");
    }
    assert!(before.iter().all(|d| d["action"] == "no-recommendation" && d["target"] == 3));
    assert_eq!((fallback["current"].as_u64(), fallback["target"].as_u64()), (Some(3), Some(2)));
    assert!(
        fallback["reason"].as_str().unwrap().contains("4 failures in a row: fallback to 2"),
        "{fallback}"
    );
    let status = group_status(&agent, "blind");
    assert!(status["failures_in_a_row"].as_u64().unwrap() >= 4);

    // The table view names the guardrails that changed a number.
    let (_, table, _) =
        agent_cli(&["decisions", "--group", "web", "--data-dir", agent.data.path().to_str().unwrap()]);
    assert!(table.lines().any(|l| l.contains("→ 1 [bounds]")), "{table}");
}

#[test]
fn a_restart_rebuilds_stabilization_from_the_journal_instead_of_acting_at_once() {
    let app = JsonServer::start(r#"{"load": 45}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    // Scale-down stabilization of 10 minutes: after scaling up, a drop in load must not scale
    // down, before or after a restart.
    let cfg = config(&app)
        .replace("[group.scale_down]\nstabilization = \"0s\"", "[group.scale_down]\nstabilization = \"10m\"");
    let agent = Agent::start(dir.path(), &cfg);
    wait_for("a scale to 5", LIMIT, || decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale"));
    app.set_body(r#"{"load": 0}"#);
    let data = agent.stop();
    let agent = Agent::start_in(dir.path(), &cfg, data);
    let held = wait_for("three evaluations after the restart", LIMIT, || {
        let after: Vec<_> =
            decisions(&agent, "web").into_iter().filter(|d| d["recommendation"] == 0.0).collect();
        (crate::common::evaluations(&after) >= 3).then_some(after)
    });
    for d in held {
        assert_eq!(d["target"], 5, "held by the stabilization window rebuilt from the journal: {d}");
        assert!(d["steps"].as_array().unwrap().iter().any(|s| s["guardrail"] == "stabilization"));
    }
}

fn local_config(app: &JsonServer, granted: &str) -> String {
    format!(
        r#"
{source}
[plugins.local-replicas]
processes = [{granted}]

[[process]]
name = "web"
command = "exec sleep 600"
shell = true

[[group]]
name = "web"
interval = "300ms"
metrics = [{{ name = "app.load", window = "1s" }}]
policy = "target-tracking"
policy_config = {{ target = 10, per = "total" }}
backend = "local-replicas"
backend_config = {{ process = "web" }}
min = 1
max = 4
[group.scale_down]
stabilization = "0s"
"#,
        source = load_source(app)
    )
}

#[test]
fn a_group_scales_a_supervised_process_through_the_local_replicas_backend() {
    let app = JsonServer::start(r#"{"load": 35}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("local-replicas")]);
    let agent = Agent::start(dir.path(), &local_config(&app, "\"web\""));
    let running = |n: usize| {
        let all = agent.status()["processes"].as_array().unwrap().clone();
        (all.len() == n && all.iter().all(|p| p["state"] == "ready")).then_some(all)
    };
    // 35 / 10 → 4 replicas of the supervised process.
    let four = wait_for("4 ready replicas", LIMIT, || running(4));
    let replicas: Vec<u64> = four.iter().map(|p| p["replica"].as_u64().unwrap()).collect();
    assert_eq!(replicas, [0, 1, 2, 3]);
    let scaled = decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale").unwrap();
    // New replicas are launched by the time `set` returns, not necessarily ready.
    assert!(scaled["outcome"].as_str().unwrap().starts_with("web: 1 → 4 replicas ("), "{scaled}");
    app.set_body(r#"{"load": 12}"#);
    wait_for("back to 2 replicas", LIMIT, || running(2));
}

#[test]
fn the_replica_capability_is_refused_for_processes_not_granted() {
    let app = JsonServer::start(r#"{"load": 35}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("local-replicas")]);
    let agent = Agent::start(dir.path(), &local_config(&app, ""));
    let refused = wait_for("a refused describe", LIMIT, || decisions(&agent, "web").into_iter().next());
    assert_eq!(refused["action"], "no-recommendation");
    assert!(
        refused["reason"].as_str().unwrap().contains("process `web` is not granted to this plugin"),
        "{refused}"
    );
    agent.wait_log("replica control of `web` denied");
    assert_eq!(agent.status()["processes"].as_array().unwrap().len(), 1, "nothing was scaled");
}

/// A per-minute trace CSV of `minutes` rows, `requests(minute)` each, in `dir`.
fn write_trace(dir: &std::path::Path, minutes: i64, requests: impl Fn(i64) -> u32) -> std::path::PathBuf {
    let mut csv = String::from("timestamp,requests\n");
    for minute in 0..minutes {
        csv.push_str(&format!("{},{}\n", 1_700_000_000 + minute * 60, requests(minute)));
    }
    let path = dir.join("trace.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn simulate_replays_a_trace_through_the_real_policy_and_guardrails_and_scores_it() {
    let dir = tempfile::tempdir().unwrap();
    // Two hours per minute: 100 requests/min, then a step to 400 for an hour.
    let trace = write_trace(dir.path(), 120, |minute| if minute < 60 { 100 } else { 400 });
    let plugins = plugin_dir(&[&plugin("target-tracking")]);
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nplugins = \"{}\"\n[[group]]\nname = \"g\"\ninterval = \"1m\"\nmetrics = [{{ name = \"utilization\", window = \"1m\" }}]\n\
             policy = \"target-tracking\"\npolicy_config = {{ target = 0.8 }}\nbackend = \"ledger\"\nmin = 1\nmax = 20\n",
            plugins.path().display()
        ),
    )
    .unwrap();
    let plot = dir.path().join("run.svg");
    let (code, out, err) = agent_cli(&[
        "simulate",
        "--config",
        config.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--capacity-per-unit",
        "50",
        "--provision-delay",
        "2m",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["score"];
    assert_eq!(v["trace_points"], 120);
    // Demand is 2 then 8 units: the policy scales up after the step, and the 2-minute
    // provisioning delay leaves a short stretch under-provisioned.
    assert!(s["actions"].as_u64().unwrap() >= 2, "{s}");
    let under = s["timeshare_u"].as_f64().unwrap();
    assert!(under > 0.0 && under < 0.2, "{s}");
    assert!(s["average_units"].as_f64().unwrap() > 4.0, "{s}");
    assert!((s["hours"].as_f64().unwrap() - 119.0 / 60.0).abs() < 1e-9);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.matches("<polyline").count() == 3
            && svg.trim_end().ends_with("</svg>")
    );

    // Bad input: one clear line each.
    let (code, _, err) = agent_cli(&[
        "simulate",
        "--config",
        config.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--group",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no [[group]] named `nope`"), "{err}");
    std::fs::write(&trace, "timestamp,requests\n1,many\n").unwrap();
    let (code, _, err) =
        agent_cli(&["simulate", "--config", config.to_str().unwrap(), "--trace", trace.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("trace.csv: line 2: `1,many` is not a timestamp and a number"), "{err}");
}

/// A simulation group on the ledger backend, evaluated every minute over a one-minute window.
fn sim_group(name: &str, metric: &str, policy: &str, params: &str) -> String {
    format!(
        "[[group]]\nname = \"{name}\"\ninterval = \"1m\"\nmetrics = [{{ name = \"{metric}\", window = \"1m\" }}]\n\
         policy = \"{policy}\"\npolicy_config = {params}\nbackend = \"ledger\"\nmin = 1\nmax = 20\ntolerance = 0.0\n\
         [group.scale_down]\nstabilization = \"0s\"\n"
    )
}

/// Writes `groups` with the plugins folder to `dir/sim.toml`.
fn sim_config(dir: &std::path::Path, plugins: &std::path::Path, groups: &[String]) -> std::path::PathBuf {
    let path = dir.join("sim.toml");
    std::fs::write(&path, format!("[agent]\nplugins = \"{}\"\n{}", plugins.display(), groups.concat()))
        .unwrap();
    path
}

/// `agent simulate --json` of `group`; returns the score.
fn sim_score(
    config: &std::path::Path,
    trace: &std::path::Path,
    group: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec!["simulate", "--config", config.to_str().unwrap(), "--trace", trace.to_str().unwrap()];
    args.extend_from_slice(&["--group", group, "--json"]);
    args.extend_from_slice(extra);
    let (code, out, err) = agent_cli(&args);
    assert_eq!(code, 0, "{group}: {err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["score"].clone()
}

#[test]
fn threshold_and_step_policies_follow_a_load_step_in_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), 90, |minute| if (30..60).contains(&minute) { 400 } else { 50 });
    let plugins = plugin_dir(&[&plugin("threshold"), &plugin("step")]);
    let config = sim_config(
        dir.path(),
        plugins.path(),
        &[
            sim_group("t", "utilization", "threshold", "{ high = 0.8, low = 0.4, up_after = 2, down_after = 3, step = 2 }"),
            sim_group(
                "s",
                "utilization",
                "step",
                "{ scale_out = { alarm = 0.8, steps = [{ from = 0.0, adjust = 3 }] }, scale_in = { alarm = 0.4, steps = [{ from = 0.0, adjust = -1 }] } }",
            ),
        ],
    );
    for g in ["t", "s"] {
        let s = sim_score(&config, &trace, g, &["--provision-delay", "1m"]);
        // Demand goes 1 → 8 → 1 units: both follow it up and back down.
        assert!(s["actions"].as_u64().unwrap() >= 4, "{g}: {s}");
        assert_eq!(s["failed_evaluations"], 0, "{g}: {s}");
        assert!(s["timeshare_u"].as_f64().unwrap() < 0.3, "{g}: {s}");
        assert!(s["average_units"].as_f64().unwrap() > 2.0, "{g}: {s}");
    }
}

#[test]
fn the_predictive_policy_provisions_ahead_of_a_seasonal_load_and_can_only_forecast() {
    let dir = tempfile::tempdir().unwrap();
    // Six hours of an hourly cycle between 50 and 450 requests a minute.
    let trace = write_trace(dir.path(), 360, |m| {
        (250.0 + 200.0 * (m as f64 / 60.0 * std::f64::consts::TAU).sin()) as u32
    });
    let plugins = plugin_dir(&[&plugin("predictive")]);
    // The default method (auto): untrained for its first 30 minutes, then learning.
    let params = |extra: &str| {
        format!("{{ capacity_per_unit = 50, horizon = \"3m\", season = \"1h\", period = \"1m\"{extra} }}")
    };
    let config = sim_config(
        dir.path(),
        plugins.path(),
        &[
            sim_group("ahead", "demand", "predictive", &params("")),
            sim_group("watch", "demand", "predictive", &params(", forecast_only = true")),
        ],
    );
    let extra = ["--metric", "demand", "--provision-delay", "2m"];
    let ahead = sim_score(&config, &trace, "ahead", &extra);
    assert_eq!(ahead["failed_evaluations"], 0, "{ahead}");
    assert!(ahead["actions"].as_u64().unwrap() > 20, "it follows the cycle: {ahead}");
    // Provisioning 3 minutes ahead keeps the group from lagging the rising edge for long.
    assert!(ahead["timeshare_u"].as_f64().unwrap() < 0.15, "{ahead}");
    let watch = sim_score(&config, &trace, "watch", &extra);
    assert_eq!(watch["actions"], 0, "forecast-only never acts: {watch}");
}

#[test]
fn a_schedule_raises_a_live_group_s_max_for_its_window_and_the_cap_returns_the_moment_it_closes() {
    // The load asks for 8 replicas; the group's own max is 3 (where it starts, so that the
    // scale-up rate limit allows 3 → 6 in one step); a window lets it have 6.
    let app = JsonServer::start(r#"{"load": 80}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let group = format!(
        "{source}[[group]]\nname = \"web\"\ninterval = \"200ms\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
         backend_config = {{ initial = 3 }}\nmin = 1\nmax = 3\n",
        source = load_source(&app)
    );
    let agent = Agent::start(dir.path(), &group);
    let current = || group_status(&agent, "web")["current"].as_u64();
    wait_for("the group at its own max", LIMIT, || (current() == Some(3)).then_some(()));
    // The window is added by a reload once the agent runs (however long its start took here).
    let now = agent::timefmt::now_ms();
    let (start, end) = (now + 5_000, now + 15_000);
    let window = format!(
        "[[group.schedule]]\nname = \"rush\"\nstart = \"{}\"\nend = \"{}\"\ntimezone = \"Europe/Berlin\"\nmax = 6\n",
        agent::timefmt::format(start),
        agent::timefmt::format(end)
    );
    std::fs::write(agent.data.path().join("agent.toml"), group + &window).unwrap();
    let (code, _, err) = agent.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    let before = wait_for("the schedule in /status", LIMIT, || {
        Some(group_status(&agent, "web")).filter(|g| !g["schedule"].is_null())
    });
    assert!(agent::timefmt::now_ms() < start, "checked before the window opens");
    assert_eq!(before["schedule"]["max"], 3);
    assert_eq!(before["schedule"]["next_change"]["what"], "`rush` opens");
    assert_eq!(before["schedule"]["next_change"]["at_ms"], start);

    // The window opens: the policy's 8 is now bounded at 6.
    wait_for("6 replicas inside the window", LIMIT, || (current() == Some(6)).then_some(()));
    assert!(agent::timefmt::now_ms() >= start, "not before the window opened");
    let during = group_status(&agent, "web");
    assert_eq!(during["schedule"]["open"], serde_json::json!(["rush"]));
    assert_eq!(during["schedule"]["next_change"]["at_ms"], end);

    // It closes while the policy still wants 8: back to 3 at once, whatever the 5-minute
    // scale-down stabilization window remembers.
    wait_for("3 replicas once the window closed", LIMIT, || (current() == Some(3)).then_some(()));
    let closed_at = agent::timefmt::now_ms();
    assert!(closed_at >= end);
    let last_scale = decisions(&agent, "web").into_iter().rev().find(|d| d["action"] == "scale").unwrap();
    let steps = last_scale["steps"].to_string();
    // The stabilization window held 6; the bounds in force cut it to 3.
    let held_then_cut = r#""after":6.0,"before":3.0,"guardrail":"stabilization""#;
    assert!(
        steps.contains(held_then_cut) && steps.ends_with(r#""guardrail":"bounds","why":"within [1, 3]"}]"#),
        "{steps}"
    );
    let (code, out, _) = agent.cli(&["decisions", "--group", "web", "--since", "1m"]);
    assert_eq!(code, 0);
    assert!(out.contains("group web: bounds now 1–3 (no window open); next: no change"), "{out}");
    // Without --config too: the running agent knows its schedules.
    let (addr, data) = (agent.addr.to_string(), agent.data.path().to_str().unwrap().to_string());
    let (code, out, _) =
        agent_cli(&["decisions", "--group", "web", "--since", "1m", "--listen", &addr, "--data-dir", &data]);
    assert_eq!(code, 0);
    assert!(out.contains("group web: bounds now 1–3 (no window open); next: no change"), "{out}");
}

#[test]
fn the_frontier_replays_every_group_and_the_quantile_method_buys_safety_on_bursty_demand() {
    let dir = tempfile::tempdir().unwrap();
    // Six hours of a calm 40 requests/min with a burst to 90 every 7 minutes.
    let trace = write_trace(dir.path(), 360, |minute| if minute % 7 == 0 { 90 } else { 40 });
    let plugins = plugin_dir(&[&plugin("target-tracking"), &plugin("predictive")]);
    let group = |name: &str, metric: &str, window: &str, policy: &str, params: &str| {
        format!(
            "[[group]]\nname = \"{name}\"\ninterval = \"1m\"\nmetrics = [{{ name = \"{metric}\", window = \"{window}\" }}]\n\
             policy = \"{policy}\"\npolicy_config = {params}\nbackend = \"ledger\"\nmin = 1\nmax = 20\ntolerance = 0.0\n\
             [group.scale_down]\nstabilization = \"0s\"\n"
        )
    };
    let config = dir.path().join("frontier.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nplugins = \"{}\"\n{}{}",
            plugins.path().display(),
            group("tt-80", "utilization", "1m", "target-tracking", "{ target = 0.8 }"),
            group("q-95", "demand", "45m", "predictive", "{ method = \"quantile\", capacity_per_unit = 50 }"),
        ),
    )
    .unwrap();
    let svg = dir.path().join("frontier.svg");
    let (code, out, err) = agent_cli(&[
        "simulate",
        "--config",
        config.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--frontier",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let under = |name: &str| -> f64 {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in:\n{out}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    // Target tracking follows the calm minutes and is caught by every burst; the quantile
    // method holds the head-room the bursts need once it has seen them.
    assert!(under("tt-80") > 10.0 && under("q-95") < 2.0, "{out}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(drawn.matches("<circle").count(), 2, "{drawn}");
}

#[test]
fn agent_decisions_joins_holds_that_decided_the_same_like_the_page_and_all_shows_every_row() {
    // 4.5 replicas' worth of load against max 3: a hold at 3 by the bounds, every 300 ms.
    let app = JsonServer::start(r#"{"load": 45}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let config = config(&app)
        .replacen("backend_config = { initial = 1 }", "backend_config = { initial = 3 }", 1)
        .replacen("max = 10", "max = 3", 1);
    let agent = Agent::start(dir.path(), &config);
    wait_for("a run of holds at 3", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "hold" && d["count"].as_u64() >= Some(2))
    });
    // More load rounds to another whole number: a new journal row, the same decision.
    app.set_body(r#"{"load": 65}"#);
    wait_for("a second journal row of holds", LIMIT, || {
        let rows = decisions(&agent, "web");
        let holds = rows.iter().filter(|d| d["action"] == "hold").count();
        (holds >= 2 && rows.last()?["recommendation"].as_f64()? > 6.0).then_some(())
    });
    let holds = |args: &[&str]| {
        let (code, out, err) =
            agent.cli(&[&["decisions", "--group", "web", "--since", "10m"], args].concat());
        assert_eq!(code, 0, "{err}");
        // The ACTION column: `hold` or `hold ×N` (a reason may say "holding").
        (out.lines().filter(|l| l.split_whitespace().nth(2) == Some("hold")).count(), out)
    };
    let (folded, table) = holds(&[]);
    assert_eq!(folded, 1, "one line for every hold at 3 → 3 [bounds], as the page shows: {table}");
    assert!(table.contains("hold ×") && table.contains("3 → 3") && table.contains("bounds"), "{table}");
    let (all, rows) = holds(&["--all"]);
    assert!(all >= 2, "--all shows each journal row: {rows}");
}

#[test]
fn a_run_of_identical_holds_is_one_journal_row_that_every_reader_counts_whole() {
    // 2.2 replicas' worth of load (target 10 each) rounds up to 3: a hold at 3, every 300 ms.
    let app = JsonServer::start(r#"{"load": 22}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let config = config(&app).replace("backend_config = { initial = 1 }", "backend_config = { initial = 3 }");
    let agent = Agent::start(dir.path(), &config);
    let held = wait_for("a run of 6 holds", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "hold" && d["count"].as_u64() >= Some(6))
    });
    assert!(held["first_ms"].as_i64() < held["t_ms"].as_i64(), "first and last evaluation: {held}");
    // The load moves within the same whole number: the same decision, still one row.
    app.set_body(r#"{"load": 27}"#);
    let rows = wait_for("the run continued past the change of load", LIMIT, || {
        let rows = decisions(&agent, "web");
        let last = rows.last()?.clone();
        (last["recommendation"].as_f64()? > 2.6).then_some(rows)
    });
    let runs: Vec<_> = rows.iter().filter(|d| d["action"] == "hold").collect();
    assert_eq!(runs.len(), 1, "one row for the whole run: {rows:?}");
    assert_eq!(runs[0]["first_ms"], held["first_ms"], "{rows:?}");
    // A different decision starts a row of its own, and the run after it another.
    app.set_body(r#"{"load": 45}"#);
    wait_for("a scale to 5, then a new run of holds", LIMIT, || {
        let rows = decisions(&agent, "web");
        let scaled = rows.iter().position(|d| d["action"] == "scale" && d["target"] == 5)?;
        rows[scaled + 1..]
            .iter()
            .any(|d| d["action"] == "hold" && d["count"].as_u64() >= Some(2))
            .then_some(())
    });

    // Every reader counts the evaluations a row stands for: the page's API …
    let rows = decisions(&agent, "web");
    let (_, body) = crate::common::http_get(agent.addr, "/api/decisions?group=web&window=15m").unwrap();
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = api["events"].as_array().unwrap();
    let counted: u64 = events.iter().map(|e| e["repeats"].as_u64().unwrap() + 1).sum();
    assert!(counted >= crate::common::evaluations(&rows), "{api}");
    assert!(api["evaluations"].as_u64() >= Some(crate::common::evaluations(&rows)), "{api}");
    let run = events.iter().find(|e| e["action"] == "hold").unwrap();
    assert_eq!(run["first_ms"], held["first_ms"], "the run is shown from its first evaluation: {api}");
    // … and `agent decisions`, which shows the run from its start with its count.
    let (code, table, _) = agent.cli(&["decisions", "--group", "web", "--since", "10m"]);
    assert_eq!(code, 0);
    let line = table.lines().find(|l| l.contains("hold ×")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("3 → 3") && line.contains("(until "), "{table}");
}
