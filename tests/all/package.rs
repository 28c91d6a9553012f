//! Deployed like a fleet (issue 36): the Debian package installs, upgrades keeping the
//! operator's configuration and data, and its removal stops everything the agent started; the
//! cloud-init example's configuration is one the agent accepts.
//!
//! The package test installs into this machine's /usr, /etc and /var/lib (as root), so it runs
//! only when asked: `AGENT_TEST_PACKAGE=1` (CI sets it, on a throwaway machine).

use crate::common::{agent_bin, free_port, http_get, root, skipped, wait_for};
use crate::pki::Pki;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{text}", out.status);
    text
}

/// Builds the package from the debug build with `version`; its path.
fn package(version: &str, out: &Path) -> PathBuf {
    let built = Command::new(root().join("scripts/package-deb"))
        .args(["--debug", "--version", version, "--out"])
        .arg(out)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(built.status.success(), "package-deb: {}", String::from_utf8_lossy(&built.stderr));
    // The script prints the package's path, alone, on stdout.
    PathBuf::from(String::from_utf8_lossy(&built.stdout).trim())
}

fn mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).permissions().mode() & 0o7777
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

fn should_run(test: &str) -> bool {
    let asked = std::env::var("AGENT_TEST_PACKAGE").is_ok_and(|v| v == "1");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    let root_user = euid == Some("0");
    let tools = ["dpkg", "dpkg-deb", "start-stop-daemon"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    });
    if !(asked && root_user && tools) {
        skipped(&format!(
            "{test}: installs a .deb system-wide; needs AGENT_TEST_PACKAGE=1, root and dpkg (CI provides them)"
        ));
        return false;
    }
    true
}

#[test]
fn the_package_installs_upgrades_keeping_config_and_data_and_its_removal_stops_everything() {
    if !should_run("the Debian package") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (first, second) = (package("0.1.0~test1", out.path()), package("0.1.0~test2", out.path()));
    let _ = Command::new("dpkg").args(["--purge", "agent"]).output();
    run(Command::new("dpkg").arg("-i").arg(&first));
    let version = run(Command::new("/usr/bin/agent").arg("--version"));
    assert!(version.starts_with("agent "), "{version}");
    run(Command::new("/usr/bin/agent").args(["check-config", "--config", "/etc/agent/agent.toml"]));
    assert_eq!(mode("/var/lib/agent"), 0o700);
    assert_eq!(mode("/etc/agent/secrets.env"), 0o600);
    assert!(Path::new("/lib/systemd/system/agent.service").exists());
    let unit = std::fs::read_to_string("/lib/systemd/system/agent.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/agent run --config /etc/agent/agent.toml"), "{unit}");
    assert!(Path::new("/usr/lib/agent/plugins/target-tracking.wasm").exists());

    // The operator's configuration: the package's, plus a supervised program.
    let mut config = std::fs::read_to_string("/etc/agent/agent.toml").unwrap();
    config.push_str("\n[[process]]\nname = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"600\"]\n");
    std::fs::write("/etc/agent/agent.toml", &config).unwrap();
    // No systemd here: start it as an init would.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut agent = Command::new("/usr/bin/agent")
        .args(["run", "--config", "/etc/agent/agent.toml", "--listen", &addr])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = addr.parse().unwrap();
    let sleeper = wait_for("the agent's program to run", Duration::from_secs(60), || {
        let (_, body) = http_get(addr, "/status").ok()?;
        let status: serde_json::Value = serde_json::from_str(&body).ok()?;
        status["processes"][0]["pid"].as_u64().map(|p| p as u32)
    });
    assert!(Path::new("/var/lib/agent/agent.db").exists());

    // Upgrade: the configuration and the data stay.
    run(Command::new("dpkg").args(["-i", "--force-confold"]).arg(&second));
    assert_eq!(std::fs::read_to_string("/etc/agent/agent.toml").unwrap(), config);
    assert!(Path::new("/var/lib/agent/agent.db").exists());
    let listed = run(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "agent"]));
    assert_eq!(listed, "0.1.0~test2");

    // Removal stops the agent (found through its data folder's lock: the upgrade replaced the
    // binary it runs), which stops its program first.
    run(Command::new("dpkg").args(["-r", "agent"]));
    let status = agent.wait().unwrap();
    assert!(status.success(), "the agent stopped on SIGTERM, cleanly: {status}");
    assert!(!alive(sleeper), "the agent's program outlived the package");
    assert!(!Path::new("/usr/bin/agent").exists());
    assert!(Path::new("/etc/agent/agent.toml").exists(), "removal keeps the configuration");
    run(Command::new("dpkg").args(["--purge", "agent"]));
    assert!(
        !Path::new("/etc/agent").exists() && !Path::new("/var/lib/agent").exists(),
        "purge leaves nothing"
    );
}

/// The example's files, as cloud-init would write them, under `base`; its `agent.toml` made
/// checkable here (paths under `base`, a real CA, a user that exists).
fn write_example(base: &Path, pki: &Pki) -> PathBuf {
    let example = root().join("dist/cloud-init/agent-user-data.yaml");
    let script = r##"
import json, sys, yaml
text = open(sys.argv[1]).read()
assert text.startswith("#cloud-config\n"), "the first line must be #cloud-config"
doc = yaml.safe_load(text)
print(json.dumps(doc))
"##;
    let json = run(Command::new("python3").args(["-c", script]).arg(&example));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let runcmd: Vec<&str> = doc["runcmd"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
    assert!(runcmd.iter().any(|c| c.contains("--force-confold") && c.contains("agent.deb")), "{runcmd:?}");
    assert!(runcmd.iter().any(|c| c.contains("systemctl enable --now agent")), "{runcmd:?}");
    let base_text = base.to_str().unwrap();
    for file in doc["write_files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let mut content = file["content"].as_str().unwrap().to_string();
        if path.ends_with("agent.toml") {
            assert!(content.contains("[cluster]"), "{content}");
            content = content
                .replace("/etc/agent/", &format!("{base_text}/etc/agent/"))
                .replace("user = \"web\"", "user = \"nobody\"");
        }
        if path.ends_with("etcd-ca.pem") {
            content = std::fs::read_to_string(pki.path("ca.pem")).unwrap();
        }
        let target = base.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, content).unwrap();
    }
    base.join("etc/agent/agent.toml")
}

#[test]
fn the_cloud_init_example_writes_a_configuration_the_agent_accepts() {
    let python_yaml =
        Command::new("python3").args(["-c", "import yaml"]).output().is_ok_and(|o| o.status.success());
    let openssl = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !(python_yaml && openssl) {
        skipped("the cloud-init example's check: needs python3 with PyYAML (python3-yaml) and openssl");
        return;
    }
    let pki = Pki::new();
    pki.ca("ca", "cloud-init-example-ca");
    let base = tempfile::tempdir().unwrap();
    let config = write_example(base.path(), &pki);
    let out = Command::new(agent_bin()).args(["check-config", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok (processes: 1"), "{text}");
}
