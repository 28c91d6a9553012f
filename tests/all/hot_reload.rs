//! The running agent and its plugins folder: add, replace, break, remove — without a restart.
//! Also the compile cache across restarts, and /healthz and /status.

use crate::common::{fixture, new_version, plugin, plugin_dir, put, wait_for, Agent};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn plugins_are_added_swapped_kept_on_bad_replacement_and_removed_live() {
    let dir = plugin_dir(&[&plugin("target-tracking")]);
    let agent = Agent::start(dir.path(), "");
    let status = agent.status();
    assert_eq!(status["plugins"][0]["name"], "target-tracking");
    assert_eq!(status["plugins"][0]["state"], "ready");
    assert_eq!(status["plugins"][0]["kind"], "policy");
    let first_hash = status["plugins"][0]["sha256"].as_str().unwrap().to_string();

    // Added.
    put(&dir.path().join("ledger.wasm"), &std::fs::read(plugin("ledger")).unwrap());
    wait_for("ledger to load", LIMIT, || agent.plugin("ledger"));

    // A bad replacement: reported, and the running version keeps running.
    let tt = dir.path().join("target-tracking.wasm");
    put(&tt, b"\0asm\x0d\0\x01\0 not really");
    let failed = wait_for("the bad replacement to be reported", LIMIT, || {
        let s = agent.status();
        s["failed_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"].as_str().unwrap().ends_with("target-tracking.wasm"))
            .cloned()
    });
    assert!(failed["error"].as_str().unwrap().contains("keeps running"), "{failed}");
    let still = agent.plugin("target-tracking").unwrap();
    assert_eq!(
        (still["state"].as_str(), still["sha256"].as_str()),
        (Some("ready"), Some(first_hash.as_str()))
    );

    // A good replacement is swapped in.
    put(&tt, &new_version(&plugin("target-tracking"), "v2"));
    wait_for("the new version to be swapped in", LIMIT, || {
        agent.plugin("target-tracking").filter(|p| p["sha256"] != first_hash.as_str())
    });
    assert!(agent.status()["failed_files"].as_array().unwrap().is_empty());
    agent.wait_log("swapped plugin `target-tracking`");

    // Removed.
    std::fs::remove_file(dir.path().join("ledger.wasm")).unwrap();
    wait_for("ledger to unload", LIMIT, || agent.plugin("ledger").is_none().then_some(()));
    agent.wait_log("plugin `ledger` unloaded");
}

#[test]
fn a_restart_loads_compiled_plugins_from_the_cache_and_never_trusts_a_tampered_entry() {
    let dir = plugin_dir(&[&plugin("ledger")]);
    let agent = Agent::start(dir.path(), "");
    agent.wait_log("loaded backend `ledger` 0.1.0 (contract 0.1.4, compiled in");
    let data = agent.stop();

    let agent = Agent::start_in(dir.path(), "", data);
    agent.wait_log("loaded backend `ledger` 0.1.0 (contract 0.1.4, from cache in");
    let data = agent.stop();

    // Flip one byte of the cached native code: the agent must notice and recompile.
    let cache = data.path().join("cache");
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();

    let agent = Agent::start_in(dir.path(), "", data);
    agent.wait_log("cache entry was not written by this agent; recompiling");
    agent.wait_log("loaded backend `ledger` 0.1.0 (contract 0.1.4, compiled in");
    assert_eq!(agent.plugin("ledger").unwrap()["state"], "ready");
}

#[test]
fn status_shows_faults_and_quarantine_of_a_failing_source_while_the_agent_keeps_serving() {
    let dir = plugin_dir(&[&fixture("rogue-source"), &plugin("ledger")]);
    // The rogue source asks for a URL it was not granted: every collection is denied.
    let config = "[plugins.rogue-source]\ninterval = \"100ms\"\n[plugins.rogue-source.config]\nmode = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n";
    let agent = Agent::start(dir.path(), config);
    let source = wait_for("three failed collections", LIMIT, || {
        let s = agent.status();
        s["sources"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "rogue-source" && s["errors"].as_u64() >= Some(3))
            .cloned()
    });
    assert!(source["last_error"].as_str().unwrap().contains("HttpRequestDenied"), "{source}");
    agent.wait_log("outbound HTTP denied: http://127.0.0.1:9 is not in allow_http");
    // A plugin error is not a fault: the plugin stays ready.
    assert_eq!(agent.plugin("rogue-source").unwrap()["faults"], 0);
    assert_eq!(agent.plugin("ledger").unwrap()["state"], "ready");
}

#[test]
fn a_file_that_fails_to_load_is_listed_in_status_as_a_failed_plugin() {
    let dir = plugin_dir(&[&plugin("ledger")]);
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let agent = Agent::start(dir.path(), "");
    let status = agent.status();
    let broken =
        status["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "broken").expect("broken listed");
    assert_eq!(broken["state"], "failed");
    assert!(broken["error"].as_str().unwrap().contains("core WebAssembly module"));
    assert_eq!(agent.plugin("ledger").unwrap()["state"], "ready");
    assert_eq!(status["failed_files"].as_array().unwrap().len(), 1);
}
