//! docs/plugin-guide.md cannot rot: its shell blocks are run here, in order, as one script in
//! an empty folder, with the agent on the PATH — create, build, test, inspect, simulate, deploy
//! into a running agent, read the decisions.

use crate::common::{agent_bin, plugin, root};
use std::io::Write;
use std::process::Command;
use std::time::Instant;

/// The ```sh blocks of a Markdown file, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_command_of_the_plugin_guide_runs() {
    let guide = std::fs::read_to_string(root().join("docs/plugin-guide.md")).unwrap();
    let blocks = shell_blocks(&guide);
    assert!(blocks.len() >= 6, "the guide lost its commands: {} blocks", blocks.len());
    plugin("ledger"); // builds the plugins the guide copies (and fills the clone's npm cache)
                      // The guide builds and deploys a JavaScript policy beside the Rust one: without npm the
                      // whole script cannot run (CI has npm).
    if !crate::common::npm_or_skip(
        "guide::every_command_of_the_plugin_guide_runs (it builds a JavaScript policy too)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}", blocks.join("\n"));
    let path = std::env::var("PATH").unwrap_or_default();
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", format!("{}:{path}", agent_bin().parent().unwrap().display()))
        .env("AGENT_PLUGINS", root().join("target/plugins"))
        // The generated crate's dependencies build once for all tests.
        .env("CARGO_TARGET_DIR", root().join("target/scaffold"))
        // The JavaScript project's `npm ci` from the clone's cache: nothing kept elsewhere.
        .envs(crate::common::npm_env())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the guide's script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- agent.log\n{log}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "MEASURED plugin guide, every command (new project built from scratch in a warm target dir): {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for expected in [
        "policy my-policy 0.1.0",
        "policy my-js-policy 0.1.0",
        "accuracy",
        "my-policy.wasm",
        "vs target 0.5",
        "\"name\":\"my-policy\"",
    ] {
        assert!(stdout.contains(expected), "`{expected}` missing from the guide's output:\n{stdout}");
    }
    assert!(log.contains("loaded policy `my-policy`"), "{log}");
    assert!(log.contains("loaded policy `my-js-policy`"), "{log}");
}

#[test]
fn shell_blocks_are_found_in_order() {
    let md = "text\n```sh\na\nb\n```\n```toml\nx\n```\n```sh\nc\n```\n";
    assert_eq!(shell_blocks(md), ["a\nb\n", "c\n"]);
}

/// The Markdown and example files a user reads.
fn user_docs() -> Vec<(String, String)> {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "examples"] {
        let mut found: Vec<_> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md" || x == "toml"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap())).collect()
}

#[test]
fn the_docs_send_no_one_to_a_folder_a_clone_lacks() {
    let mut wrong = Vec::new();
    for (file, text) in user_docs() {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            // The project's own machines keep a cloud and traces beside the clone; a doc may say
            // so, as something outside the repository, never send a user there.
            let near = lines[n.saturating_sub(1)..(n + 2).min(lines.len())].join(" ");
            if line.contains("../shared") && !near.contains("outside the repository") {
                wrong.push(format!("{file}:{}: {line}", n + 1));
            }
            for word in line.split(|c: char| c.is_whitespace() || "`()[]\"',;".contains(c)) {
                let path = word.trim_end_matches(['.', ':']);
                let ours = ["tests/traces/", "examples/", "scripts/"].iter().any(|p| path.starts_with(p));
                if ours && !path.contains('*') && !root().join(path).exists() {
                    wrong.push(format!("{file}:{}: `{path}` is not in the repository", n + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_simulate_docs_command_runs_in_a_plain_clone() {
    let doc = std::fs::read_to_string(root().join("docs/simulate.md")).unwrap();
    let command = doc
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("agent simulate --config examples/simulate-hpa.toml"))
        .expect("docs/simulate.md shows the HPA replay");
    plugin("target-tracking");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = Command::new(agent_bin()).args(&args).current_dir(root()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("avg units") && stdout.contains("actions"), "{stdout}");
}
