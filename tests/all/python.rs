//! A policy written in Python (componentize-py, `plugins/py-target-tracking`) is a plugin like
//! any other: it loads, decides for a scaling group through the same guardrails, reports its
//! errors as the contract's variants, and is hot-swapped in a running agent.

use crate::common::{
    decisions, load_source, new_version, plugin, plugin_dir, put, wait_for, Agent, JsonServer,
};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn config(app: &JsonServer, group: &str, policy_config: &str) -> String {
    format!(
        "{}\n[[group]]\nname = \"{group}\"\ninterval = \"300ms\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"py-target-tracking\"\npolicy_config = {policy_config}\nbackend = \"ledger\"\n\
         backend_config = {{ initial = 1 }}\nmin = 1\nmax = 10\n",
        load_source(app)
    )
}

#[test]
fn a_python_policy_loads_decides_reports_errors_and_is_hot_swapped() {
    let app = JsonServer::start(r#"{"load": 45}"#);
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("py-target-tracking"), &plugin("ledger")]);
    let mut cfg = config(&app, "web", r#"{ target = 10, per = "total" }"#);
    cfg.push_str(
        &config(&app, "broken", "{ target = 0 }")
            .split("[[group]]")
            .nth(1)
            .map(|g| format!("[[group]]{g}"))
            .unwrap(),
    );
    let agent = Agent::start(dir.path(), &cfg);
    agent.wait_log("loaded policy `py-target-tracking` 0.1.0 (contract 0.1.4");

    let scaled = wait_for("the Python policy's scale to 5", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 5)
    });
    let reason = scaled["reason"].as_str().unwrap();
    assert!(reason.contains("app.load mean 45.000 vs target 10: ceil(45.000 / 10) = 5 (python)"), "{reason}");

    // A Python exception carrying a contract error is that error, not a crash.
    let refused = wait_for("the bad config reported", LIMIT, || {
        decisions(&agent, "broken").into_iter().find(|d| {
            d["action"] == "no-recommendation" && d["reason"].as_str().unwrap().contains("policy_config")
        })
    });
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.contains("policy_config.target must be a positive number"), "{reason}");
    assert_eq!(agent.plugin("py-target-tracking").unwrap()["state"], "ready");

    // Hot swap: a new build of the same plugin replaces the running one between calls.
    let file = dir.path().join("py-target-tracking.wasm");
    let before = agent.plugin("py-target-tracking").unwrap()["sha256"].clone();
    put(&file, &new_version(&plugin("py-target-tracking"), "v2"));
    wait_for("the new Python build swapped in", LIMIT, || {
        agent.plugin("py-target-tracking").filter(|p| p["sha256"] != before)
    });
    agent.wait_log("swapped plugin `py-target-tracking`");
    app.set_body(r#"{"load": 80}"#);
    wait_for("the swapped policy deciding", LIMIT, || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale" && d["target"] == 8)
    });
}
