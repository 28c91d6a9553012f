//! A policy written in JavaScript (componentize-js, `plugins/js-target-tracking` on the JS SDK
//! `plugins/js-sdk`) is a plugin like any other: it loads, decides for a scaling group through
//! the same guardrails, reports its errors as the contract's variants, is hot-swapped in a
//! running agent, is parked while no group uses it, and is held to its memory budget. Without
//! node and npm, `scripts/build-plugins` cannot build it: the tests say so loudly (CI has both).

use crate::common::{
    decisions, load_source, new_version, plugin, plugin_dir, put, skipped, wait_for, Agent, JsonServer,
};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The JavaScript policy, or `None` after a loud skip when this machine could not build it.
fn js_policy(test: &str) -> Option<std::path::PathBuf> {
    let path = plugin("js-target-tracking");
    if path.exists() {
        return Some(path);
    }
    skipped(&format!(
        "{test}: no target/plugins/js-target-tracking.wasm (scripts/build-plugins needs node and npm)"
    ));
    None
}

fn group(name: &str, policy_config: &str) -> String {
    format!(
        "[[group]]\nname = \"{name}\"\ninterval = \"300ms\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"js-target-tracking\"\npolicy_config = {policy_config}\nbackend = \"ledger\"\n\
         backend_config = {{ initial = 1 }}\nmin = 1\nmax = 10\n"
    )
}

#[test]
fn a_javascript_policy_loads_decides_reports_errors_and_is_hot_swapped() {
    let Some(js) =
        js_policy("javascript::a_javascript_policy_loads_decides_reports_errors_and_is_hot_swapped")
    else {
        return;
    };
    let app = JsonServer::start(r#"{"load": 45}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &js, &plugin("ledger")]);
    let cfg = format!(
        "{}\n{}{}",
        load_source(&app),
        group("web", r#"{ target = 10, per = "total" }"#),
        group("broken", "{ target = 0 }")
    );
    let agent = Agent::start(dir.path(), &cfg);
    agent.wait_log("loaded policy `js-target-tracking` 0.1.0 (contract 0.1.4");

    let scaled = wait_for("the JavaScript policy's scale to 5", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 5)
    });
    let reason = scaled["reason"].as_str().unwrap();
    assert!(
        reason.contains("app.load mean 45.000 vs target 10: ceil(45.000 / 10) = 5 (javascript)"),
        "{reason}"
    );

    // A thrown SDK error is that contract error, not a crash: the plugin stays ready.
    let refused = wait_for("the bad config reported", LIMIT, || {
        decisions(&agent, "broken").into_iter().find(|d| d["action"] == "no-recommendation")
    });
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.contains("bad config: policy_config.target must be a positive number, not 0"), "{reason}");
    let status = agent.plugin("js-target-tracking").unwrap();
    assert_eq!((status["state"].as_str(), status["faults"].as_u64()), (Some("ready"), Some(0)), "{status}");
    // Its calls are metered like any plugin's: CPU time counted.
    assert!(status["cpu_ns_total"].as_u64().unwrap() > 0, "{status}");

    // Hot swap: a new build of the same plugin replaces the running one between calls.
    let file = dir.path().join("js-target-tracking.wasm");
    let before = status["sha256"].clone();
    put(&file, &new_version(&js, "v2"));
    wait_for("the new JavaScript build swapped in", LIMIT, || {
        agent.plugin("js-target-tracking").filter(|p| p["sha256"] != before)
    });
    agent.wait_log("swapped plugin `js-target-tracking`");
    app.set_body(r#"{"load": 80}"#);
    wait_for("the swapped policy deciding", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 8)
    });
}

#[test]
fn an_unused_javascript_policy_is_parked_and_held_to_its_memory_budget_when_used() {
    let Some(js) =
        js_policy("javascript::an_unused_javascript_policy_is_parked_and_held_to_its_memory_budget")
    else {
        return;
    };
    let app = JsonServer::start(r#"{"load": 45}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &js, &plugin("ledger")]);
    // No group uses it: it loads, and is parked (nothing linked or instantiated, no call).
    let agent = Agent::start(dir.path(), &load_source(&app));
    agent.wait_log("loaded policy `js-target-tracking`");
    assert_eq!(agent.plugin("js-target-tracking").unwrap()["calls"], 0);
    // A group starts using it, with 4 MiB of linear memory where the engine needs more: the
    // call fails as a fault of this plugin, named, and the agent goes on.
    let tight = format!(
        "{}\n[plugins.js-target-tracking]\nmemory_mib = 4\n{}",
        load_source(&app),
        group("web", r#"{ target = 10, per = "total" }"#)
    );
    std::fs::write(agent.data.path().join("agent.toml"), &tight).unwrap();
    agent.cli(&["reload"]);
    let failed = wait_for("the memory budget stopping it", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "no-recommendation")
    });
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("memory"), "{reason}");
    let linked = |l: &str| {
        l.contains("first call: linking it from the compile cache") && l.contains("js-target-tracking")
    };
    assert!(agent.log().lines().any(linked), "it was parked until then:\n{}", agent.log());
    // Its own budget lifted, it decides.
    let roomy = tight.replace("memory_mib = 4\n", "");
    std::fs::write(agent.data.path().join("agent.toml"), roomy).unwrap();
    agent.cli(&["reload"]);
    wait_for("the JavaScript policy deciding", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 5)
    });
    assert!(!agent.log().contains("panicked"));
}
