//! Who a plugin is: the operator's binding (a file, a digest, a signer), never the name a
//! component declares; the secrets granted to a plugin never leave through what it writes; and
//! what a plugin makes the host do is CPU it pays for. Hostile components of our own:
//! `tests/fixtures/impostor` (declares `rogue-policy` to take its grants) and the rogue
//! fixtures' `leak-secret`, `leak-error` and `host-burn` modes.

use crate::common::{
    agent_cli, decisions, fixture, http_get, new_version, plugin, plugin_dir, put, wait_for, Agent,
};
use crate::sandbox::{ctx, host};
use agent::plugins::worker::{CallError, Fault};
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const CANARY: &str = "canary-7f3a9c1e5b";

/// A file holding the canary secret, in `dir`.
fn canary_file(dir: &Path) -> String {
    let path = dir.join("canary");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    path.display().to_string()
}

/// The canary appears nowhere the agent writes or answers: its log, `/status`, `/metrics`,
/// `/api/decisions` of `groups`, and the journal as `agent decisions` prints it.
fn assert_no_canary(agent: &Agent, groups: &[&str]) {
    assert!(!agent.log().contains(CANARY), "the canary is in the log:\n{}", agent.log());
    let mut answers = vec![("/status".to_string(), agent.status().to_string())];
    for path in
        ["/metrics".to_string()].into_iter().chain(groups.iter().map(|g| format!("/api/decisions?group={g}")))
    {
        let (code, body) = http_get(agent.addr, &path).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        answers.push((path, body));
    }
    for g in groups {
        let (code, out, err) = agent.cli(&["decisions", "--group", g, "--since", "10m"]);
        assert_eq!(code, 0, "{err}");
        answers.push((format!("agent decisions --group {g}"), out));
    }
    for (what, text) in answers {
        assert!(!text.contains(CANARY), "the canary is in {what}:\n{text}");
    }
}

fn failed_error(agent: &Agent, file: &str) -> Option<String> {
    let status = agent.status();
    let failed = status["failed_files"].as_array()?;
    let entry =
        failed.iter().find(|f| f["file"].as_str().is_some_and(|p| p.ends_with(&format!("/{file}"))))?;
    entry["error"].as_str().map(String::from)
}

/// `count N` reasons of the real rogue-policy, in journal order.
/// The policy's count as each journal row says it (a folded run of holds says its last), and
/// the evaluations up to and including each row: equal when every answer was the real plugin's.
fn counts(agent: &Agent) -> (Vec<u64>, Vec<u64>) {
    let rows = decisions(agent, "g");
    let answered: Vec<(u64, u64)> = rows
        .iter()
        .filter_map(|d| {
            let said =
                d["reason"].as_str()?.strip_prefix("count ")?.split_whitespace().next()?.parse().ok()?;
            Some((said, crate::common::evaluations([d])))
        })
        .collect();
    let upto = answered.iter().scan(0, |n, (_, evaluations)| {
        *n += evaluations;
        Some(*n)
    });
    (answered.iter().map(|(said, _)| *said).collect(), upto.collect())
}

#[test]
fn an_impostor_of_a_bound_plugin_never_gets_its_secret_state_or_group_at_start_or_dropped_in() {
    let impostor = std::fs::read(fixture("impostor")).unwrap();
    let dir = plugin_dir(&[&fixture("rogue-policy"), &plugin("ledger")]);
    // Present at start, sorting before and after the real file.
    put(&dir.path().join("0-rogue-policy.wasm"), &impostor);
    put(&dir.path().join("zz-impostor.wasm"), &new_version(&fixture("impostor"), "other"));
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[plugins.rogue-policy]
secrets = {{ token = {{ file = "{canary}" }} }}

[[group]]
name = "g"
interval = "300ms"
metrics = [{{ name = "system.memory.utilization", window = "5s" }}]
policy = "rogue-policy"
policy_config = {{ mode = "count" }}
backend = "ledger"
min = 1
max = 100
"#,
        canary = canary_file(data.path())
    );
    let agent = Agent::start_in(dir.path(), &config, data);
    let bound = dir.path().join("rogue-policy.wasm").display().to_string();
    for file in ["0-rogue-policy.wasm", "zz-impostor.wasm"] {
        let error = wait_for(&format!("{file} refused"), LIMIT, || failed_error(&agent, file));
        assert!(
            error.contains("claims plugin name `rogue-policy`, which is bound to") && error.contains(&bound),
            "{file}: {error}"
        );
        assert!(agent.log().contains(&format!("/{file}: claims plugin name `rogue-policy`")));
    }
    let running = agent.plugin("rogue-policy").unwrap();
    assert!(running["file"].as_str().unwrap().ends_with("/rogue-policy.wasm"), "{running}");
    assert_eq!((running["version"].as_str(), running["binding"].as_str()), (Some("0.0.1"), Some("bound")));
    let evaluated = |agent: &Agent| counts(agent).1.last().copied().unwrap_or(0);
    wait_for("3 evaluations", LIMIT, || (evaluated(&agent) >= 3).then_some(()));

    // Dropped in while it runs, sorting before and after.
    put(&dir.path().join("00-rogue-policy.wasm"), &new_version(&fixture("impostor"), "early"));
    put(&dir.path().join("zzz-rogue-policy.wasm"), &new_version(&fixture("impostor"), "late"));
    for file in ["00-rogue-policy.wasm", "zzz-rogue-policy.wasm"] {
        let error = wait_for(&format!("{file} refused"), LIMIT, || failed_error(&agent, file));
        assert!(error.contains("which is bound to"), "{file}: {error}");
    }
    let before = evaluated(&agent);
    wait_for("3 more evaluations", LIMIT, || (evaluated(&agent) >= before + 3).then_some(()));

    // Every answer was the real plugin's, counting on in its own state from 1: the impostor
    // never answered and never wrote its state (it would have set the count to 1 000 000).
    let all = decisions(&agent, "g");
    assert!(all.iter().all(|d| !d.to_string().contains("IMPOSTOR")), "{all:?}");
    let (said, evaluations) = counts(&agent);
    assert_eq!(said, evaluations, "{all:?}");
    assert!(all.iter().all(|d| d["target"].as_u64().is_none_or(|t| t < 99)), "{all:?}");
    assert_eq!(agent.plugin("rogue-policy").unwrap()["sha256"], running["sha256"]);
    assert_no_canary(&agent, &["g"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_names_a_file_not_a_declared_name() {
    let (real, impostor) = (fixture("rogue-policy"), fixture("impostor"));
    let group = r#"
[[group]]
name = "g"
metrics = [{ name = "m", window = "5s" }]
policy = "rogue-policy"
backend = "ledger"
min = 1
max = 10
"#;
    // A group naming the policy binds the name to rogue-policy.wasm, with no [plugins] table.
    let h = host(&[&real], group).await;
    put(&h.dir.path().join("0-rogue-policy.wasm"), &std::fs::read(&impostor).unwrap());
    h.registry.reconcile().await;
    assert!(h.get("rogue-policy").status().file.ends_with("/rogue-policy.wasm"));
    let (_, failed) = h.registry.status();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].file.ends_with("/0-rogue-policy.wasm") && failed[0].error.contains("bound to"));

    // The operator may bind the name to another file: then that file is the plugin.
    let h = host(&[&real], &format!("[plugins.rogue-policy]\nfile = \"stranger.wasm\"\n{group}")).await;
    put(&h.dir.path().join("stranger.wasm"), &std::fs::read(&impostor).unwrap());
    h.registry.reconcile().await;
    let status = h.get("rogue-policy").status();
    assert!(status.file.ends_with("/stranger.wasm") && status.version == "6.6.6", "{status:?}");
    let (_, failed) = h.registry.status();
    assert!(failed.iter().any(|f| f.file.ends_with("/rogue-policy.wasm") && f.error.contains("bound to")));

    // A bound file that declares another name is refused: it runs only as its own plugin.
    let h = host(&[], "[plugins.rogue-source]\n").await;
    put(&h.dir.path().join("rogue-source.wasm"), &std::fs::read(&impostor).unwrap());
    h.registry.reconcile().await;
    let (running, failed) = h.registry.status();
    assert!(running.is_empty(), "{running:?}");
    assert!(failed[0]
        .error
        .contains("declares itself `rogue-policy`, but this file is bound to plugin `rogue-source`"));

    // Nobody refers to the name: the first to load keeps it, the other is refused.
    let h = host(&[&real], "").await;
    put(&h.dir.path().join("0-rogue-policy.wasm"), &std::fs::read(&impostor).unwrap());
    h.registry.reconcile().await;
    let (running, failed) = h.registry.status();
    assert_eq!((running.len(), running[0].binding), (1, "unbound"));
    assert!(running[0].file.ends_with("/rogue-policy.wasm"), "the first loaded keeps it");
    assert!(
        failed[0].error.contains("claims plugin name `rogue-policy`, which")
            && failed[0].error.contains("already has")
    );

    // A reload that binds the name takes it from a file that held it unbound.
    let h = host(&[], "").await;
    put(&h.dir.path().join("0-rogue-policy.wasm"), &std::fs::read(&impostor).unwrap());
    h.registry.reconcile().await;
    assert_eq!(h.get("rogue-policy").status().version, "6.6.6");
    put(&h.dir.path().join("rogue-policy.wasm"), &std::fs::read(&real).unwrap());
    h.registry.reconcile().await;
    let bound = agent::config::Config::parse(group, Path::new("agent.toml")).unwrap();
    h.registry.reconfigure(std::sync::Arc::new(bound)).await;
    let status = wait_for_async(|| {
        h.registry.get("rogue-policy").map(|p| p.status()).filter(|s| s.version == "0.0.1")
    })
    .await;
    assert!(status.file.ends_with("/rogue-policy.wasm") && status.binding == "bound", "{status:?}");
    let (_, failed) = h.registry.status();
    assert!(failed.iter().any(|f| f.file.ends_with("/0-rogue-policy.wasm") && f.error.contains("bound to")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_requires_signatures_unloads_what_is_not_signed() {
    let h = host(&[&fixture("rogue-policy")], "[plugins.rogue-policy]\nsecrets = {}\n").await;
    assert_eq!(h.get("rogue-policy").status().signer, None);
    let keys = tempfile::tempdir().unwrap();
    keygen(keys.path(), "k");
    let text = format!(
        "[trust]\ntrusted_keys = [\"{}\"]\nrequire_signature = true\n[plugins.rogue-policy]\nsecrets = {{}}\n",
        keys.path().join("k.pub").display()
    );
    let config = agent::config::Config::parse(&text, Path::new("agent.toml")).unwrap();
    h.registry.reconfigure(std::sync::Arc::new(config)).await;
    let failed = wait_for_async(|| {
        let (_, failed) = h.registry.status();
        failed.into_iter().find(|f| f.error.contains("require_signature"))
    })
    .await;
    assert!(failed.file.ends_with("/rogue-policy.wasm"), "{failed:?}");
    assert!(h.registry.get("rogue-policy").is_none(), "the unsigned plugin no longer runs");
}

/// Polls `check` every 50 ms for up to 30 s (the registry's loads run on their own tasks).
async fn wait_for_async<T>(check: impl Fn() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_plugin_replaced_by_other_content_keeps_its_pinned_version_running() {
    let real = fixture("rogue-policy");
    let digest = agent::plugins::cache::content_hash(&std::fs::read(&real).unwrap());
    let h =
        host(&[&real], &format!("[plugins.rogue-policy]\nsha256 = \"{}\"\n", digest.to_uppercase())).await;
    assert_eq!(h.get("rogue-policy").status().sha256, digest);
    put(&h.dir.path().join("rogue-policy.wasm"), &new_version(&real, "v2"));
    h.registry.reconcile().await;
    let (running, failed) = h.registry.status();
    assert_eq!(running[0].sha256, digest, "the pinned version runs");
    assert!(failed[0].error.contains("[plugins.rogue-policy] sha256 pins"), "{failed:?}");
    assert!(failed[0].error.contains("keeps running"), "{failed:?}");
    let reply = h.get("rogue-policy").evaluate(ctx(serde_json::json!({ "mode": "ok" }))).await.unwrap();
    assert_eq!(reply.reason, "fine");
}

/// `agent plugins keygen DIR/NAME`: the key's id.
pub(crate) fn keygen(dir: &Path, name: &str) -> String {
    let (code, out, err) = agent_cli(&["plugins", "keygen", dir.join(name).to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out.lines().next().unwrap().strip_prefix("key ").unwrap().to_string()
}

/// `agent plugins sign SRC --key KEY --out OUT`.
pub(crate) fn sign(src: &Path, key: &Path, out: &Path) {
    let (code, stdout, err) = agent_cli(&[
        "plugins",
        "sign",
        src.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.starts_with(&format!("signed {}", out.display())), "{stdout}");
}

#[test]
fn signatures_are_required_checked_against_trusted_keys_and_bound_to_a_signer() {
    let keys = tempfile::tempdir().unwrap();
    let (k1, k2) = (keygen(keys.path(), "k1"), keygen(keys.path(), "k2"));
    let mode = std::fs::metadata(keys.path().join("k1")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    let (code, _, err) = agent_cli(&["plugins", "keygen", keys.path().join("k1").to_str().unwrap()]);
    assert!(code != 0 && err.contains("must not exist yet"), "keygen never overwrites a key: {err}");

    let dir = tempfile::tempdir().unwrap();
    let policy = fixture("rogue-policy");
    sign(&policy, &keys.path().join("k1"), &dir.path().join("rogue-policy.wasm"));
    std::fs::copy(plugin("ledger"), dir.path().join("ledger.wasm")).unwrap(); // unsigned
    sign(&fixture("rogue-source"), &keys.path().join("k2"), &dir.path().join("rogue-source.wasm"));
    let tampered = {
        let mut bytes = std::fs::read(dir.path().join("rogue-policy.wasm")).unwrap();
        bytes[100] ^= 0x01;
        bytes
    };
    put(&dir.path().join("tampered.wasm"), &tampered);
    let config = format!(
        "[trust]\ntrusted_keys = [\"{}\"]\nrequire_signature = true\n",
        keys.path().join("k1.pub").display()
    );
    let agent = Agent::start(dir.path(), &config);
    let running = agent.plugin("rogue-policy").expect("signed by a trusted key: runs");
    assert_eq!(running["signer"], k1.as_str());
    let unsigned = failed_error(&agent, "ledger.wasm").unwrap();
    assert!(unsigned.contains("require_signature") && unsigned.contains("it is not signed"), "{unsigned}");
    let unknown = failed_error(&agent, "rogue-source.wasm").unwrap();
    assert!(
        unknown.contains(&format!("it is signed by {k2}, a key not in [trust] trusted_keys")),
        "{unknown}"
    );
    assert!(failed_error(&agent, "tampered.wasm").unwrap().contains("does not verify"));
    let ready =
        agent.status()["plugins"].as_array().unwrap().iter().filter(|p| p["state"] == "ready").count();
    assert_eq!(ready, 1, "only the file signed by a trusted key runs");
    drop(agent);

    // Both keys trusted, rogue-policy bound to k1: a swap to a build signed by k2 is refused
    // and the k1 version keeps running.
    let config = format!(
        "[trust]\ntrusted_keys = [\"{}\", \"{}\"]\n[plugins.rogue-policy]\nsigner = \"{k1}\"\n",
        keys.path().join("k1.pub").display(),
        keys.path().join("k2.pub").display()
    );
    let agent = Agent::start(dir.path(), &config);
    let before = agent.plugin("rogue-policy").unwrap()["sha256"].clone();
    let v2 = dir.path().join("v2.tmp");
    std::fs::write(&v2, new_version(&policy, "v2")).unwrap();
    sign(&v2, &keys.path().join("k2"), &dir.path().join("rogue-policy.wasm"));
    let error = wait_for("the swap refused", LIMIT, || failed_error(&agent, "rogue-policy.wasm"));
    assert!(
        error.contains(&format!("is not signed by key {k1}")) && error.contains(&format!("signed by {k2}"))
    );
    assert!(error.contains("keeps running"), "{error}");
    let still = agent.plugin("rogue-policy").unwrap();
    assert_eq!((&still["sha256"], still["signer"].as_str()), (&before, Some(k1.as_str())));
    // Signed by k1, the new build is swapped in.
    sign(&v2, &keys.path().join("k1"), &dir.path().join("rogue-policy.wasm"));
    wait_for("the k1 build swapped in", LIMIT, || {
        agent.plugin("rogue-policy").filter(|p| p["sha256"] != before)
    });

    // `plugins inspect` shows the signer and the binding.
    let (code, out, err) =
        agent.cli(&["plugins", "inspect", dir.path().join("rogue-policy.wasm").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("signed:    by {k1} (trusted)")), "{out}");
    assert!(out.contains("binding:   the file of plugin `rogue-policy`"), "{out}");
}

#[test]
fn a_signature_made_by_openssl_verifies() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        crate::common::skipped("signing with openssl: no openssl on this machine");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(work.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["genpkey", "-algorithm", "ed25519", "-out", "key.pem"]);
    run(&["pkey", "-in", "key.pem", "-pubout", "-out", "key.pub"]);
    std::fs::copy(fixture("rogue-policy"), work.path().join("unsigned.wasm")).unwrap();
    run(&["pkeyutl", "-sign", "-rawin", "-inkey", "key.pem", "-in", "unsigned.wasm", "-out", "sig.bin"]);
    let public = std::fs::read_to_string(work.path().join("key.pub")).unwrap();
    let id = agent::keys::key_id(&agent::keys::parse_public_pem(&public).unwrap());
    let payload = serde_json::json!({
        "v": 1, "alg": "ed25519", "key": id,
        "sig": base64_encode(&std::fs::read(work.path().join("sig.bin")).unwrap()),
    });
    let mut signed = std::fs::read(work.path().join("unsigned.wasm")).unwrap();
    signed.extend(agent::plugins::signature::custom_section(
        "elastic-signature",
        payload.to_string().as_bytes(),
    ));
    let file = work.path().join("rogue-policy.wasm");
    std::fs::write(&file, signed).unwrap();
    let config = work.path().join("agent.toml");
    std::fs::write(&config, "[trust]\ntrusted_keys = [\"key.pub\"]\nrequire_signature = true\n").unwrap();
    let (code, out, err) = agent_cli(&[
        "plugins",
        "inspect",
        "--json",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signer"], id.as_str(), "{v}");
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn a_plugin_that_writes_its_own_secret_shows_stars_everywhere() {
    let dir = plugin_dir(&[&fixture("rogue-policy"), &fixture("rogue-source"), &plugin("ledger")]);
    let data = tempfile::tempdir().unwrap();
    let canary = canary_file(data.path());
    let group = |name: &str, mode: &str| {
        format!(
            "[[group]]\nname = \"{name}\"\ninterval = \"300ms\"\nmetrics = [{{ name = \"rogue.leak\", window = \"5s\" }}]\n\
             policy = \"rogue-policy\"\npolicy_config = {{ mode = \"{mode}\" }}\nbackend = \"ledger\"\nmin = 1\nmax = 10\n"
        )
    };
    let config = format!(
        "[plugins.rogue-policy]\nsecrets = {{ token = {{ file = \"{canary}\" }} }}\n\
         [plugins.rogue-source]\ninterval = \"200ms\"\nsecrets = {{ token = {{ file = \"{canary}\" }} }}\n\
         [plugins.rogue-source.config]\nmode = \"leak-secret\"\n{}{}",
        group("leaky", "leak-secret"),
        group("failing", "leak-error")
    );
    let agent = Agent::start_in(dir.path(), &config, data);
    let reason = wait_for("the leaky group's decision", LIMIT, || {
        decisions(&agent, "leaky").into_iter().find_map(|d| d["reason"].as_str().map(String::from))
    });
    assert!(reason.contains("decided with token ***"), "{reason}");
    let error = wait_for("the failing group's error", LIMIT, || {
        decisions(&agent, "failing").into_iter().find_map(|d| d["reason"].as_str().map(String::from))
    });
    assert!(error.contains("login failed for password ***"), "{error}");
    wait_for("the source's label in /metrics", LIMIT, || {
        http_get(agent.addr, "/metrics").unwrap().1.contains("token=\"t=***\"").then_some(())
    });
    agent.wait_log("token is ***");
    agent.wait_log("using token ***");
    let (code, series) = http_get(agent.addr, "/api/series?name=rogue.leak").unwrap();
    assert_eq!(code, 200, "{series}");
    assert!(series.contains("t=***") && !series.contains(CANARY), "{series}");
    assert_no_canary(&agent, &["leaky", "failing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_burner_pays_for_the_host_calls_and_is_faulted() {
    // A million log calls, each refused by the log budget: almost no guest code, all host work.
    let h = host(&[&fixture("rogue-policy")], "[plugins.rogue-policy]\ncpu_limit = \"20ms\"\n").await;
    let p = h.get("rogue-policy");
    // The control: the same loop without the host calls fits its budget many times over, so
    // what stops the burner below is the host's work on its behalf.
    let control = p.evaluate(ctx(serde_json::json!({ "mode": "guest-loop" }))).await.unwrap();
    assert_eq!(control.reason, "looped");
    let burn = || ctx(serde_json::json!({ "mode": "host-burn" }));
    match p.evaluate(burn()).await {
        Err(CallError::Fault(Fault::CpuLimit(limit))) => assert_eq!(limit, Duration::from_millis(20)),
        other => panic!("the burner was not stopped at its CPU limit: {other:?}"),
    }
    let status = p.status();
    assert!(status.cpu_ns_total >= 20_000_000, "{status:?}");
    assert!(status.last_fault.unwrap().contains("CPU limit"));
    // It failed alone: the same plugin answers a fair call afterwards.
    let fine = p.evaluate(ctx(serde_json::json!({ "mode": "ok" }))).await.unwrap();
    assert_eq!(fine.reason, "fine");
    // Repeated, it is quarantined as any faulting plugin is.
    for _ in 0..3 {
        let _ = p.evaluate(burn()).await;
    }
    assert!(matches!(p.evaluate(burn()).await, Err(CallError::Quarantined(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_fifos_in_the_folder_are_refused_unread() {
    let h = host(&[&fixture("rogue-policy")], "").await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("shadow"), "root:secret-hash:19000").unwrap();
    std::os::unix::fs::symlink(outside.path().join("shadow"), h.dir.path().join("link.wasm")).unwrap();
    // Even a link to a real plugin: a plugin is a regular file in the folder.
    std::os::unix::fs::symlink(fixture("rogue-source"), h.dir.path().join("rogue-source.wasm")).unwrap();
    let fifo = h.dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A FIFO nobody writes would hang a plain open: the reconcile must come back.
    tokio::time::timeout(Duration::from_secs(60), h.registry.reconcile()).await.expect("the load hung");
    let (running, failed) = h.registry.status();
    assert_eq!(running.len(), 1, "only the regular file runs: {running:?}");
    let error = |file: &str| failed.iter().find(|f| f.file.ends_with(file)).unwrap().error.clone();
    assert!(error("/link.wasm").contains("is a symbolic link"), "{failed:?}");
    assert!(error("/rogue-source.wasm").contains("is a symbolic link"), "{failed:?}");
    assert!(error("/fifo.wasm").contains("not a regular file"), "{failed:?}");
    assert!(!format!("{failed:?}").contains("secret-hash"));
}
