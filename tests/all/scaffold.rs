//! `agent plugins new`: every kind, in Rust, Python and JavaScript, builds as generated with its one
//! command, passes its own test, is what `agent plugins inspect` expects — and a generated
//! policy dropped into a running agent's folder starts deciding for a group.

use crate::common::{
    agent_cli, decisions, load_source, plugin, plugin_dir, put, root, wait_for, Agent, JsonServer,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new(dir: &Path, name: &str, kind: &str, lang: &str) -> std::path::PathBuf {
    let (code, out, err) =
        agent_cli(&["plugins", "new", name, "--kind", kind, "--lang", lang, "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("created {}", dir.join(name).display())), "{out}");
    dir.join(name)
}

fn inspect(wasm: &Path) -> serde_json::Value {
    let (code, out, err) = agent_cli(&["plugins", "inspect", wasm.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The project's own test passes, its build command builds it, and the agent sees what was asked.
fn test_build_inspect(project: &Path, name: &str, kind: &str, mut test: Command, mut build: Command) {
    run(&format!("{name}: test"), &mut test);
    run(&format!("{name}: build"), &mut build);
    let info = inspect(&project.join(format!("{name}.wasm")));
    assert_eq!((info["kind"].as_str(), info["name"].as_str()), (Some(kind), Some(name)), "{info}");
}

#[test]
fn generated_rust_projects_build_test_and_load_and_a_policy_is_hot_added() {
    let dir = tempfile::tempdir().unwrap();
    // One target folder for the generated projects: the dependencies build once.
    let target = root().join("target/scaffold");
    for kind in ["policy", "source", "backend"] {
        let name = format!("my-{kind}");
        let project = new(dir.path(), &name, kind, "rust");
        let mut test = Command::new("cargo");
        test.args(["test", "-q"]).current_dir(&project).env("CARGO_TARGET_DIR", &target);
        let mut build = Command::new(project.join("build.sh"));
        build.env("CARGO_TARGET_DIR", &target);
        test_build_inspect(&project, &name, kind, test, build);
    }

    // Into a running agent whose group names the policy before it exists: the group holds,
    // then decides once the file is copied in.
    let app = JsonServer::start(r#"{"load": 0.9}"#);
    let plugins = plugin_dir(&[&plugin("http-json"), &plugin("ledger")]);
    let config = format!(
        "{}\n[[group]]\nname = \"web\"\ninterval = \"300ms\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"my-policy\"\npolicy_config = {{ target = 0.3 }}\nbackend = \"ledger\"\nbackend_config = {{ initial = 2 }}\nmin = 1\nmax = 10\n",
        load_source(&app)
    );
    let agent = Agent::start(plugins.path(), &config);
    wait_for("the group waiting for its policy", Duration::from_secs(20), || {
        decisions(&agent, "web")
            .into_iter()
            .find(|d| d["reason"].as_str().unwrap().contains("`my-policy` is not loaded"))
    });
    let wasm = std::fs::read(dir.path().join("my-policy/my-policy.wasm")).unwrap();
    put(&plugins.path().join("my-policy.wasm"), &wasm);
    let scaled = wait_for("the generated policy scaling the group", Duration::from_secs(20), || {
        decisions(&agent, "web").into_iter().find(|d| d["action"] == "scale")
    });
    // 2 replicas × 0.9 / 0.3 = 6.
    assert_eq!(scaled["target"], 6, "{scaled}");
    assert!(scaled["reason"].as_str().unwrap().contains("app.load mean 0.900 vs target 0.3"), "{scaled}");
}

#[test]
fn generated_javascript_projects_install_test_build_and_load() {
    let test = "scaffold::generated_javascript_projects_install_test_build_and_load";
    if !crate::common::npm_or_skip(test) {
        return;
    }
    plugin("js-target-tracking"); // builds the plugins: npm's cache in target/npm-cache is filled
    let dir = tempfile::tempdir().unwrap();
    for kind in ["policy", "source", "backend"] {
        let name = format!("js-{kind}");
        let project = new(dir.path(), &name, kind, "js");
        // The project's own lockfile, installed as a user would (from the clone's npm cache).
        let npm = |args: &[&str]| {
            let mut c = Command::new("npm");
            c.args(args).current_dir(&project).envs(crate::common::npm_env());
            c
        };
        run(&format!("{name}: npm ci"), &mut npm(&["ci", "--no-audit", "--no-fund"]));
        test_build_inspect(&project, &name, kind, npm(&["test"]), npm(&["run", "build"]));
        let types = std::fs::read_to_string(project.join("types/plugin.d.ts")).unwrap();
        assert!(types.contains(&format!("declare module 'elastic:plugin/{kind}-plugin@0.1.4'")), "{types}");
    }
    // The three, as built, run together in an agent: the source's configured number is the
    // metric, the policy sizes on it, the backend keeps the size in its state and reads it back.
    let wasm = |n: &str| dir.path().join(n).join(format!("{n}.wasm"));
    let plugins = plugin_dir(&[&wasm("js-policy"), &wasm("js-source"), &wasm("js-backend")]);
    let config = "[plugins.js-source]\ninterval = \"200ms\"\n[plugins.js-source.config]\nvalue = 3\n\
        [[group]]\nname = \"g\"\ninterval = \"300ms\"\nmetrics = [{ name = \"js-source.value\", window = \"1s\" }]\n\
        policy = \"js-policy\"\npolicy_config = { target = 1 }\nbackend = \"js-backend\"\nmin = 1\nmax = 20\n";
    let agent = Agent::start(plugins.path(), config);
    let first = wait_for("the JavaScript group's first scale", Duration::from_secs(90), || {
        decisions(&agent, "g").into_iter().find(|d| d["action"] == "scale")
    });
    assert_eq!((first["current"].as_u64(), first["target"].as_u64()), (Some(1), Some(3)), "{first}");
    assert_eq!(first["outcome"], "recorded 1 → 3 replicas", "{first}");
    assert!(first["reason"].as_str().unwrap().starts_with("mean 3.000 vs target 1"), "{first}");
    // The backend's state, read back by its describe at the next evaluation.
    wait_for("the backend describing what it stored", Duration::from_secs(30), || {
        decisions(&agent, "g").into_iter().find(|d| d["current"] == 3)
    });
}

#[test]
fn generated_python_projects_test_build_and_load() {
    let dir = tempfile::tempdir().unwrap();
    // The componentize-py that scripts/build-plugins installed (the generated build.sh installs
    // its own into .venv when this is not set).
    let cpy = root().join("target/py-venv/bin/componentize-py");
    plugin("py-target-tracking"); // builds the plugins, and with them that venv
    for kind in ["policy", "source", "backend"] {
        let name = format!("py-{kind}");
        let project = new(dir.path(), &name, kind, "python");
        let mut test = Command::new("python3");
        test.args(["-m", "unittest"]).current_dir(&project);
        let mut build = Command::new(project.join("build.sh"));
        build.env("COMPONENTIZE_PY", &cpy);
        test_build_inspect(&project, &name, kind, test, build);
    }
}
