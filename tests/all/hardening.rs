//! The agent keeps its own secrets and runs programs as who they should be: a clean
//! environment for programs, their health checks and hooks; `user`, `umask` and credentials in a
//! private folder; private data files; and one validation for `check-config`, `run` and reload.

use crate::common::{agent_cli, wait_for, Agent};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "token-canary-0123456789abcdef0123456789";
const PASSWORD: &str = "password-canary-4c1d";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `Uid:` (real) and `Umask:` of a process, from /proc.
fn uid_and_umask(pid: u32) -> (u32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_string();
    (field("Uid:").split_whitespace().next().unwrap().parse().unwrap(), field("Umask:"))
}

#[test]
fn a_program_and_its_health_check_run_as_their_user_with_none_of_the_agents_secrets() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        crate::common::skipped("running a program as another user: the tests are not root");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("db.pass"), "db-credential-9f8e\n").unwrap();
    let o = out.path().display();
    let config = format!(
        r#"
[agent]
api_token = {{ env = "TEST_AGENT_TOKEN" }}

[plugins.openstack]
secrets = {{ password = {{ env = "TEST_CLOUD_PASSWORD" }} }}

[[process]]
name = "app"
shell = true
command = "env > {o}/program.env; cat \"$CREDENTIALS_DIRECTORY/db\" > {o}/credential; exec sleep 1000"
user = "nobody"
umask = "077"
pass_env = ["TEST_PASSED_ON"]
credentials = {{ db = {{ file = "{db}" }} }}
env = {{ OWN = "mine" }}

[process.health]
command = ["sh", "-c", "env > {o}/health.env; id -u > {o}/health.uid"]
interval = "200ms"
"#,
        db = secrets.path().join("db.pass").display()
    );
    let plugins = tempfile::tempdir().unwrap();
    let env = [("TEST_AGENT_TOKEN", TOKEN), ("TEST_CLOUD_PASSWORD", PASSWORD), ("TEST_PASSED_ON", "yes")];
    let agent = Agent::start_env(plugins.path(), &config, &env);
    let read = |f: &str| std::fs::read_to_string(out.path().join(f)).ok().filter(|t| !t.is_empty());
    let program = wait_for("the program's environment", LIMIT, || read("program.env"));
    let health = wait_for("the health check's environment", LIMIT, || read("health.env"));
    for (what, env) in [("program", &program), ("health check", &health)] {
        assert!(!env.contains(TOKEN) && !env.contains(PASSWORD), "the {what} saw a secret:\n{env}");
        assert!(!env.contains("TEST_AGENT_TOKEN") && !env.contains("TEST_CLOUD_PASSWORD"), "{env}");
        assert!(env.contains("OWN=mine") && env.contains("TEST_PASSED_ON=yes"), "{what}:\n{env}");
        assert!(env.contains("USER=nobody") && env.contains("PATH="), "{what}:\n{env}");
    }
    assert!(program.contains("REPLICA=0") && program.contains("CREDENTIALS_DIRECTORY="), "{program}");
    assert_eq!(read("credential").as_deref(), Some("db-credential-9f8e"));
    assert_eq!(wait_for("the health check's uid", LIMIT, || read("health.uid")).trim(), "65534");

    let pid = wait_for("the program's pid", LIMIT, || {
        let status = agent.status();
        let app = status["processes"].as_array()?.iter().find(|p| p["name"] == "app")?.clone();
        app["pid"].as_u64().map(|p| p as u32)
    });
    assert_eq!(uid_and_umask(pid), (65534, "0077".to_string()));
    // Its credentials folder: its own, readable by it alone.
    let dir = program.lines().find_map(|l| l.strip_prefix("CREDENTIALS_DIRECTORY=")).unwrap();
    assert_eq!(mode(Path::new(dir)), 0o500);
    assert_eq!(mode(&Path::new(dir).join("db")), 0o400);
    assert_eq!(std::fs::metadata(dir).unwrap().uid(), 65534);

    // A restart writes its credentials again over what the last start left.
    std::fs::remove_file(out.path().join("credential")).unwrap();
    let (code, _, err) = agent.cli(&["restart", "app"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        wait_for("the credential after a restart", LIMIT, || read("credential")),
        "db-credential-9f8e"
    );

    // The agent's own files are its alone.
    let data = agent.data.path();
    assert_eq!(mode(data), 0o700);
    for f in ["agent.db", "api.token"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert!(!agent.log().contains(TOKEN) && !agent.log().contains(PASSWORD));
}

/// `agent check-config` and `agent run` on the same file: the exit code and the message.
fn both(text: &str) -> [(i32, String); 2] {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    [
        agent_cli(&["check-config", "--config", f]),
        agent_cli(&["run", "--config", f, "--data-dir", d, "--plugins", dir.path().to_str().unwrap()]),
    ]
    .map(|(code, _, err)| (code, err.trim().to_string()))
}

#[test]
fn check_config_and_run_refuse_the_same_files_with_exit_2_and_never_echo_a_secret() {
    let cases = [
        ("[[process]]\nname = \"p\"\ncommand = \"true\"\n[process.health]\ncommand = [\"true\"]\ninterval = \"0s\"\n", "process[p].health.interval: must be at least 10ms"),
        ("[agent]\nsample_interval = \"200000000000000d\"\n", "agent.sample_interval: must be at most 3650d"),
        ("[agent]\ncompile_memory_mib = 18014398509481984\n", "agent.compile_memory_mib:"),
        ("[agent]\nlisten = \"0.0.0.0:9820\"\n", "is reachable from other machines and no [agent] api_token is set"),
        ("[agent]\napi_token = \"literal-token-0123456789abcdef0123456789\"\n", "does not belong in the configuration file"),
        ("[plugins.p]\nsecrets = { password = \"literal-password-value\" }\n", "does not belong in the configuration file"),
        ("[[process]]\nname = \"p\"\ncommand = \"true\"\nuser = \"no-such-user-anywhere\"\n", "process[p].user: no user"),
    ];
    for (text, expected) in cases {
        let [check, run] = both(text);
        assert_eq!(check.0, 2, "check-config: {text}\n{}", check.1);
        assert_eq!(run.0, 2, "run: {text}\n{}", run.1);
        assert!(check.1.contains(expected) && run.1.contains(expected), "{text}\n{check:?}\n{run:?}");
        for said in [&check.1, &run.1] {
            assert!(!said.contains("literal-"), "a literal secret was echoed: {said}");
        }
    }
}

#[test]
fn a_plugins_folder_others_may_write_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.path().join("agent.toml");
    let data = dir.path().join("data");
    let run = |config: &str| {
        std::fs::write(&file, config).unwrap();
        let args = ["run", "--config", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
        let mut a = args.to_vec();
        a.extend(["--plugins", plugins.to_str().unwrap(), "--listen", "127.0.0.1:1"]);
        agent_cli(&a)
    };
    let (code, _, err) = run("");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the plugins folder is writable by its group or by everyone (mode 777)"), "{err}");
    assert!(err.contains("chmod go-w"), "{err}");
}
