//! A new user's first hour: mistakes inside a group are caught when the plugins are known
//! (with a "did you mean"), shown in `/status`, `agent status` and `plugins list`, and cleared by
//! a reload; one-shot commands compile a plugin once, into the data folder's cache.

use crate::common::{agent_cli, group_status, plugin, plugin_dir, wait_for, Agent};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn group(policy: &str, policy_config: &str, backend_config: &str) -> String {
    format!(
        "[[group]]\nname = \"web\"\ninterval = \"200ms\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"{policy}\"\npolicy_config = {policy_config}\nbackend = \"ledger\"\nbackend_config = {backend_config}\nmin = 1\nmax = 5\n"
    )
}

#[test]
fn mistakes_inside_a_group_are_warned_once_with_a_hint_and_cleared_by_a_reload() {
    let dir = plugin_dir(&[&plugin("target-tracking"), &plugin("threshold"), &plugin("ledger")]);
    let wrong =
        group("target-trackin", "{ target = 1 }", "{ initial = 2, intial = 3 }") + "[plugins.treshold]\n";
    let agent = Agent::start(dir.path(), &wrong);

    let typo = "group `web`: policy `target-trackin` is not loaded; did you mean `target-tracking`?";
    let key = "group `web`: backend_config has `intial` (did you mean `initial`?), which `ledger` does not read (it reads: initial, tiers)";
    let table = "[plugins.treshold]: no plugin `treshold` is loaded; did you mean `threshold`?";
    let problems = wait_for("the group's problems in /status", LIMIT, || {
        let p = group_status(&agent, "web")["problems"].as_array()?.clone();
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(agent.status()["problems"]["plugins"]["treshold"].as_array().unwrap().len(), 1);
    // Many evaluations later (each asks the backend first), each problem has been logged once,
    // as a WARN.
    crate::common::wait_calls(&agent, "ledger", 5);
    let log = agent.log();
    for line in [typo, key, table] {
        let found: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
        assert_eq!(found.len(), 1, "`{line}` logged once:\n{log}");
        assert!(found[0].contains("WARN"), "{}", found[0]);
    }

    // The CLI says it too, and exits 1.
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("needs attention:") && out.contains(typo) && out.contains(table), "{out}");
    let config = agent.data.path().join("agent.toml");
    let (code, out, _) = agent_cli(&[
        "plugins",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--plugins",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    for line in [typo, key, table] {
        assert!(out.contains(&format!("problem: {line}")), "`{line}` in:\n{out}");
    }

    // Fixed and reloaded: the problems go, and the group decides.
    std::fs::write(&config, group("target-tracking", "{ target = 1 }", "{ initial = 2 }")).unwrap();
    let (code, _, err) = agent.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    wait_for("no problems left", LIMIT, || {
        let s = agent.status();
        (s["problems"]["groups"].as_object()?.is_empty() && s["problems"]["plugins"].as_object()?.is_empty())
            .then_some(())
    });
    assert!(agent.log().contains(&format!("resolved: {typo}")), "{}", agent.log());
    assert!(group_status(&agent, "web")["problems"].as_array().unwrap().is_empty());
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("needs attention"), "{out}");
}

#[test]
fn a_required_key_missing_and_a_plugin_of_the_wrong_kind_are_problems() {
    let dir = plugin_dir(&[&plugin("target-tracking"), &plugin("ledger")]);
    let config = group("target-tracking", "{ metric = \"app.load\" }", "{}")
        .replace("backend = \"ledger\"", "backend = \"target-tracking\"");
    let agent = Agent::start(dir.path(), &config);
    let problems = wait_for("problems", LIMIT, || {
        let p = group_status(&agent, "web")["problems"].as_array()?.clone();
        (!p.is_empty()).then_some(p)
    });
    let text: Vec<&str> = problems.iter().map(|p| p.as_str().unwrap()).collect();
    assert!(text[0].starts_with("`target-tracking` requires `target`"), "{text:?}");
    assert_eq!(text[1], "`target-tracking` is a policy, not a backend");
}

#[test]
fn one_shot_commands_compile_a_plugin_once_into_the_data_folders_cache() {
    let data = tempfile::tempdir().unwrap();
    let wasm = plugin("threshold");
    let args = ["plugins", "inspect", wasm.to_str().unwrap(), "--data-dir", data.path().to_str().unwrap()];
    let (code, out, err) = agent_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("policy threshold"), "{out}");
    let cache = data.path().join("cache");
    let entries = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .count()
    };
    assert_eq!(entries(), 1, "the artifact was cached");
    let (code, out2, _) = agent_cli(&args);
    assert_eq!((code, &out2), (0, &out));
    assert_eq!(entries(), 1);
    // The daemon finds it there: no compile at start.
    let dir = plugin_dir(&[&wasm]);
    let agent = Agent::start_in(dir.path(), "", data);
    agent.wait_log("loaded policy `threshold`");
    assert!(agent.log().contains("from cache"), "{}", agent.log());
    // A command whose data folder does not exist creates none.
    let nowhere = std::env::temp_dir().join(format!("agent-no-data-{}", std::process::id()));
    let (code, _, err) =
        agent_cli(&["plugins", "inspect", wasm.to_str().unwrap(), "--data-dir", nowhere.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!nowhere.exists());
}

#[test]
fn what_a_hostile_plugin_declares_reaches_the_log_and_status_short_and_escaped() {
    // rogue-policy declares 255 keys, 252 of them required, each with terminal escapes and
    // newlines for a description.
    let dir = plugin_dir(&[&crate::common::fixture("rogue-policy"), &plugin("ledger")]);
    let agent = Agent::start(dir.path(), &group("rogue-policy", "{ mode = \"ok\", bogus = 1 }", "{}"));
    let problems = wait_for("problems", LIMIT, || {
        let p = group_status(&agent, "web")["problems"].as_array()?.clone();
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(problems.len(), 2, "one problem per kind, however many keys: {problems:?}");
    for p in &problems {
        let p = p.as_str().unwrap();
        assert!(p.len() < 1500 && p.contains("more"), "short, listing a few names: {p}");
        assert!(!p.contains('\u{1b}') && !p.contains('\n'), "{p:?}");
    }
    crate::common::wait_calls(&agent, "ledger", 3); // three evaluations later
    let log = agent.log();
    let warned: Vec<&str> =
        log.lines().filter(|l| l.contains("WARN") && l.contains("rogue-policy")).collect();
    assert_eq!(warned.len(), 2, "{log}");
    assert!(!log.contains('\u{1b}') && !log.contains("FORGED\n"), "no escape reached the log");
    let (_, out, _) = agent.cli(&["status"]);
    assert!(!out.contains('\u{1b}'), "{out}");
}

#[test]
fn a_reload_prints_what_it_caused_and_exits_by_how_it_went_and_a_refused_one_needs_attention() {
    let dir = plugin_dir(&[&plugin("target-tracking"), &plugin("ledger")]);
    let good = group("target-tracking", "{ target = 1 }", "{ initial = 2 }");
    let agent = Agent::start(dir.path(), &good);
    let config = agent.data.path().join("agent.toml");

    // Applied, but a policy misspelt: exit 1, and the did-you-mean on the command's output.
    std::fs::write(&config, group("target-trackin", "{ target = 1 }", "{ initial = 2 }")).unwrap();
    let (code, out, err) = agent.cli(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("reloaded: groups: ~web"), "{out}");
    let typo = "problem: group `web`: policy `target-trackin` is not loaded; did you mean `target-tracking`?";
    assert!(out.contains(typo), "{out}");

    // Refused (an inline table left open): exit 2, pointing at the `{`; `agent status` exits 1.
    let broken = good.replace("policy_config = { target = 1 }", "policy_config = { target = 1");
    std::fs::write(&config, &broken).unwrap();
    let line = broken.lines().position(|l| l.starts_with("policy_config")).unwrap() + 1;
    let (code, _, err) = agent.cli(&["reload"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("agent.toml:{line}:17: this `{{` is not closed on its line")), "{err}");
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("needs attention:\n") && out.contains("configuration: reload refused"), "{out}");

    // A plugin copied in just before the reload that names it (misspelt): the answer waits for
    // its load, so the hint names it.
    let copy = dir.path().join(".threshold.tmp");
    std::fs::copy(plugin("threshold"), &copy).unwrap();
    std::fs::rename(&copy, dir.path().join("threshold.wasm")).unwrap();
    std::fs::write(&config, group("treshold", "{ high = 1, low = 0 }", "{ initial = 2 }")).unwrap();
    let (code, out, err) = agent.cli(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    let hint = "problem: group `web`: policy `treshold` is not loaded; did you mean `threshold`?";
    assert!(out.contains(hint), "{out}");

    // Fixed: exit 0, and nothing needs attention.
    std::fs::write(&config, &good).unwrap();
    let (code, out, err) = agent.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("problem:"), "{out}");
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_source_without_a_required_key_is_not_collected_and_says_so_once_where_the_operator_looks() {
    let dir = plugin_dir(&[&plugin("http-json")]);
    let agent = Agent::start(dir.path(), "[plugins.http-json]\ninterval = \"100ms\"\n");
    let problem = "[plugins.http-json]: not collected: source `http-json` requires `url`";
    let status = wait_for("the problem in /status", LIMIT, || {
        let s = agent.status();
        s["problems"]["plugins"]["http-json"].as_array().filter(|p| !p.is_empty()).map(|_| s.clone())
    });
    let entry = status["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "http-json").unwrap();
    assert!(entry["collection"]["not_collected"].as_str().unwrap().contains("requires `url`"), "{entry}");
    assert_eq!(entry["collection"]["collections"], 0, "never called: {entry}");
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("  {problem}")), "in needs attention: {out}");
    // Once in the log, as a configuration problem (not a failed collection every tick): three
    // of the agent's 1 s sampling ticks later, in which it was due for collection ten times.
    crate::common::wait_ticks(&agent, 3);
    let log = agent.log();
    assert_eq!(log.lines().filter(|l| l.contains("requires `url`")).count(), 1, "{log}");
    assert!(!log.contains("collect failed"), "{log}");

    // Configured wrongly: collected, failing, named, and in need of attention.
    let config = agent.data.path().join("agent.toml");
    std::fs::write(
        &config,
        "[plugins.http-json]\ninterval = \"100ms\"\n[plugins.http-json.config]\nurl = 5\n",
    )
    .unwrap();
    assert_eq!(agent.cli(&["reload"]).0, 0);
    let (code, out) = wait_for("a failed collection in `agent status`", LIMIT, || {
        let (code, out, _) = agent.cli(&["status"]);
        out.contains("source `http-json`: ").then_some((code, out))
    });
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("collections failed; last: bad config: [plugins.http-json.config]"), "{out}");
    assert!(!out.contains("<name>"), "{out}");
}

#[test]
fn the_shipped_configuration_on_the_whole_plugins_folder_is_quiet_and_needs_nothing() {
    // As the README runs it: every plugin `scripts/build-plugins` puts in the folder.
    // The demo's http-json source reads the agent's own /status: the agent listens where it reads.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", crate::common::free_port()).parse().unwrap();
    let config = crate::common::default_configuration().0.replace("127.0.0.1:9820", &addr.to_string());
    let all: Vec<_> = std::fs::read_dir(plugin("ledger").parent().unwrap())
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()).filter(|p| p.extension().is_some_and(|x| x == "wasm")))
        .collect();
    assert!(all.len() >= 9, "the whole folder: {all:?}");
    let dir = plugin_dir(&all.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    let agent = Agent::spawn_at(dir.path(), &config, tempfile::tempdir().unwrap(), addr);
    wait_for(
        "every file tried, two collections of http-json, a decision of web",
        Duration::from_secs(120),
        || {
            let s = agent.status();
            let sources = s["sources"].as_array()?;
            let collected =
                sources.iter().any(|c| c["name"] == "http-json" && c["collections"].as_u64() >= Some(2));
            let decided = group_status(&agent, "web")["last_action"].is_string();
            (s["plugins_settled"] == true && collected && decided).then_some(())
        },
    );
    let log = agent.log();
    let loud: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(loud.is_empty(), "no WARN or ERROR on the default configuration: {loud:#?}\n{log}");
    assert_eq!(agent.plugin("prometheus").unwrap()["state"], "disabled");
    assert_eq!(agent.plugin("cloudwatch").unwrap()["state"], "disabled");
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("needs attention"), "{out}");
}
