//! The command line: configuration errors, exit codes, a data folder already in use.

use crate::common::{agent_bin, agent_cli, plugin, plugin_dir, Agent};

#[test]
fn a_bad_configuration_names_file_line_column_and_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[plugins.http-json]\nallow_http = [\"http://example.com/path\"]\n").unwrap();
    let (code, _, err) = agent_cli(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let expected = format!("error: {}:2:15: plugins.http-json.allow_http: ", config.display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("origin only"));
}

#[test]
fn a_missing_plugins_folder_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let (code, _, err) = agent_cli(&[
        "--plugins",
        "/nonexistent/plugins",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/plugins: the plugins folder does not exist"), "{err}");
}

#[test]
fn two_agents_cannot_share_a_data_folder() {
    let dir = plugin_dir(&[&plugin("ledger")]);
    let first = Agent::start(dir.path(), "");
    let out = std::process::Command::new(agent_bin())
        .args(["--plugins", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(first.data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let holder = format!("another agent (pid {}) is using this data folder", first.pid());
    assert!(err.contains(&holder), "{err}");
    // The lock file is the holder's PID file (what the package's removal stops without systemd).
    let pid = std::fs::read_to_string(first.data.path().join("agent.lock")).unwrap();
    assert_eq!(pid.trim(), first.pid().to_string());
    // The first one is unaffected.
    assert_eq!(first.plugin("ledger").unwrap()["state"], "ready");
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_line_definition() {
    let (code, bash, _) = agent_cli(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(bash.contains("complete -F _agent") && bash.contains("check-config"), "{bash}");
    let (code, fish, _) = agent_cli(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c agent") && fish.contains("reload"), "{fish}");
    let (code, zsh, _) = agent_cli(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef agent"), "{zsh}");
    let (code, man, _) = agent_cli(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH agent 1") && man.contains("logs"), "{man}");
    let (code, _, err) = agent_cli(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn check_config_validates_without_running_and_exits_2_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[[process]]\nname = \"a\"\ncommand = \"true\"\nmemory_max = \"lots\"\n")
        .unwrap();
    let (code, out, err) = agent_cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("agent.toml:4:14: process[a].memory_max: `lots` is not a size"), "{err}");
    std::fs::write(&config, "[[process]]\nname = \"a\"\ncommand = \"true\"\nmemory_max = \"64MiB\"\n")
        .unwrap();
    let (code, out, err) = agent_cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with(": ok (processes: 1, groups: 0, plugin tables: 0)\n"), "{out}");
    assert!(!dir.path().join("data").exists(), "nothing was run or created");
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = agent_cli(&["--help"]);
    assert_eq!(code, 0);
    for word in ["run", "plugins", "--plugins", "--config", "--data-dir", "--listen"] {
        assert!(out.contains(word), "{word} missing from --help:\n{out}");
    }
}

#[test]
fn a_corrupt_database_stops_the_agent_with_a_clear_error_and_is_left_untouched() {
    let data = tempfile::tempdir().unwrap();
    let garbage = b"definitely not SQLite, but long enough to have a header of sorts ......".repeat(20);
    std::fs::write(data.path().join("agent.db"), &garbage).unwrap();
    let (code, _, err) = agent_cli(&["--data-dir", data.path().to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("agent.db: not an agent database or corrupt") && err.contains("move it aside"),
        "{err}"
    );
    assert_eq!(std::fs::read(data.path().join("agent.db")).unwrap(), garbage);
    let (code, _, err) = agent_cli(&["metrics", "list", "--data-dir", data.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not an agent database or corrupt"), "{err}");
}

/// The README's run command (`cargo run -p agent`) after its test command compiles nothing:
/// both build the one set of dependencies (the features the tests' dependencies enable are
/// enabled in host/Cargo.toml too). It runs inside the test command's `cargo test`, after its
/// build; under another selection of packages (`cargo test -p e2e`) features differ by design.
#[test]
fn the_run_command_reuses_every_dependency_the_test_command_built() {
    if std::env::var_os("AGENT_TEST_COMMAND").is_none() {
        return crate::common::skipped("cli::the_run_command_reuses_every_dependency_the_test_command_built: only under scripts/test, whose build it checks");
    }
    let out = crate::common::cargo()
        .args(["build", "-p", "agent", "--offline", "--message-format=json"])
        .current_dir(crate::common::root())
        .output()
        .expect("running cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rebuilt: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["fresh"] == false)
        .map(|m| m["target"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rebuilt.is_empty(), "`cargo build -p agent` rebuilt what the tests had built: {rebuilt:?}");
}
