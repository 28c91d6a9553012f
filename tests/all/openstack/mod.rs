//! The OpenStack backend against a real Keystone and Nova (`../shared/openstack`, or any cloud
//! in `OS_*`): the real agent, the real plugin component, our fault proxy in front of Nova.
//! Without a cloud each test prints a loud SKIPPED line (and fails under `REQUIRE_CLOUD=1`,
//! which CI sets). The tests share one project's quota, so they run one at a time.

mod cloud;
mod tls;
mod volumes;

use crate::common::{
    decisions, group_status, load_source, plugin, plugin_dir, report, wait_for, Agent, JsonServer,
};
use crate::fault_proxy::{Fault, FaultProxy};
use cloud::{summary, Cloud, Credentials};
use serde_json::{json, Value};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tls::{PrivateCa, TlsProxy};

const LIMIT: Duration = Duration::from_secs(90);
static SERIAL: Mutex<()> = Mutex::new(());

/// The cloud from `OS_*` and the lock that runs these tests one at a time; `None` (after a loud
/// SKIPPED line) without a cloud.
fn cloud_or_skip(test: &str) -> Option<(Credentials, MutexGuard<'static, ()>)> {
    let creds = Credentials::from_env(test)?;
    Some((creds, SERIAL.lock().unwrap_or_else(|p| p.into_inner())))
}

/// The cloud, a proxy in front of its Nova, and a group name no earlier run used.
struct Bench {
    creds: Credentials,
    cloud: Cloud,
    proxy: FaultProxy,
    group: String,
}

impl Bench {
    fn new(creds: Credentials, kind: &str) -> Bench {
        let cloud = Cloud::login(&creds).unwrap_or_else(|e| panic!("logging in to {}: {e}", creds.auth_url));
        let nova: SocketAddr =
            cloud.compute.split('/').nth(2).unwrap().parse().expect("compute endpoint host:port");
        let group = format!("os-{kind}-{}", std::process::id());
        cloud.clean_group(&group);
        Bench { creds, proxy: FaultProxy::start(nova), cloud, group }
    }

    /// The compute endpoint through the proxy (same path as the catalog's).
    fn proxied(&self) -> String {
        let path: String = self.cloud.compute.split('/').skip(3).collect::<Vec<_>>().join("/");
        format!("http://{}/{path}", self.proxy.addr)
    }

    fn config(&self, app: &JsonServer, plugin_extra: &str, extra_allow: &[String], group: &str) -> String {
        format!(
            "{}{}\n{group}",
            load_source(app),
            self.creds.plugin_toml(Some(&self.proxied()), extra_allow, plugin_extra)
        )
    }

    /// Creates `elastic-test-huge`, a flavor no fake host can hold (2 TB RAM), and lifts this
    /// project's RAM and core quotas so that the scheduler, not the quota, refuses it.
    fn unplaceable_flavor(&self) {
        self.cloud.ensure_flavor("elastic-test-huge", 2_000_000, 1, 1);
        self.cloud.set_quota(&self.cloud.project_id, json!({"ram": -1, "cores": -1}));
    }

    fn servers(&self) -> Vec<Value> {
        self.cloud.group_servers(&self.group)
    }

    /// Waits until Nova lists exactly `n` servers of the group, all ACTIVE (and on `flavor`).
    fn wait_servers(&self, n: usize, flavor: Option<&str>) -> Vec<Value> {
        wait_for(&format!("{n} ACTIVE servers of {} in Nova", self.group), LIMIT, || {
            let s = self.servers();
            let ok = s.len() == n
                && s.iter().all(|x| x["status"] == "ACTIVE" && x["OS-EXT-STS:task_state"].is_null())
                && flavor.is_none_or(|f| s.iter().all(|x| x["flavor"]["original_name"] == f));
            ok.then_some(s)
        })
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.cloud.clean_group(&self.group);
    }
}

/// The image servers boot from: the local cloud's `cirros-fake`, or `OS_TEST_IMAGE` (DevStack's
/// is named after its cirros version).
fn image() -> String {
    std::env::var("OS_TEST_IMAGE").unwrap_or_else(|_| "cirros-fake".into())
}

fn horizontal_group(name: &str, max: u32, extra: &str) -> String {
    let image = image();
    format!(
        "[[group]]\nname = \"{name}\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 1, per = \"total\" }}\nbackend = \"openstack\"\n\
         backend_config = {{ image = \"{image}\", flavor = \"m1.tiny\", networks = \"none\" {extra} }}\n\
         min = 0\nmax = {max}\ntolerance = 0.0\n[group.scale_down]\nstabilization = \"0s\"\n"
    )
}

fn plugins() -> tempfile::TempDir {
    plugin_dir(&[
        &plugin("http-json"),
        &plugin("target-tracking"),
        &plugin("threshold"),
        &plugin("openstack"),
    ])
}

/// Waits for a journal entry of `group` matching `pred`; on timeout shows the journal's end and
/// the agent's log.
fn wait_journal(agent: &Agent, group: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let entries = decisions(agent, group);
        if let Some(d) = entries.iter().find(|d| pred(d)) {
            return d.clone();
        }
        if started.elapsed() > LIMIT {
            let tail: Vec<String> = entries
                .iter()
                .rev()
                .take(8)
                .map(|d| {
                    format!(
                        "{} {}→{} tier {}→{}: {} — {}",
                        d["action"],
                        d["current"],
                        d["target"],
                        d["tier"],
                        d["target_tier"],
                        d["reason"],
                        d["outcome"]
                    )
                })
                .collect();
            let log = agent.log();
            let log_tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "timed out waiting for {what}; journal (newest first):\n{}\nlog (newest first):\n{}",
                tail.join("\n"),
                log_tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn scale_out_zero_to_three_and_in_to_one() {
    let Some((creds, _serial)) = cloud_or_skip("openstack::scale_out_zero_to_three_and_in_to_one") else {
        return;
    };
    let bench = Bench::new(creds, "h");
    // The load is there from the start, so the first window with data holds only 3s and the
    // group goes 0 → 3 in one decision (a step in the load would pass through 2 as the 1 s window
    // fills).
    let app = JsonServer::start(r#"{"load": 3}"#);
    let dir = plugins();
    let agent =
        Agent::start(dir.path(), &bench.config(&app, "", &[], &horizontal_group(&bench.group, 5, "")));
    let decided = wait_journal(&agent, &bench.group, "the first scale", |d| d["action"] == "scale");
    assert_eq!((decided["current"].as_u64(), decided["target"].as_u64()), (Some(0), Some(3)), "{decided}");
    assert!(decided["outcome"].as_str().unwrap().matches("created").count() == 3, "{decided}");
    let t0 = decided["t_ms"].as_i64().unwrap();
    let active = wait_for("3 ACTIVE in Nova", LIMIT, || {
        let s = bench.servers();
        (s.len() == 3 && s.iter().all(|x| x["status"] == "ACTIVE")).then(agent::timefmt::now_ms)
    });
    let ready = wait_for("the agent reporting 3 ready", LIMIT, || {
        (group_status(&agent, &bench.group)["ready"] == 3).then(agent::timefmt::now_ms)
    });
    report(&format!(
        "openstack scale-out 0→3: decision → all ACTIVE in Nova {:.1} s; → agent reports 3 ready {:.1} s (1 s evaluation interval)",
        (active - t0) as f64 / 1000.0,
        (ready - t0) as f64 / 1000.0
    ));
    let servers = bench.wait_servers(3, Some("m1.tiny"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    assert!(servers.iter().all(|s| s["metadata"]["elastic-agent"] == hostname.as_str()), "{servers:?}");
    let decision = format!("{}#{}", bench.group, t0);
    assert!(servers.iter().all(|s| s["metadata"]["elastic-decision"] == decision.as_str()), "{servers:?}");
    assert!(servers
        .iter()
        .all(|s| s["tags"].as_array().unwrap().contains(&json!(format!("elastic-group:{}", bench.group)))));
    agent.wait_log("ACTIVE");

    // Steady state: what an evaluation costs in API calls (Nova, through the proxy; the token is
    // cached), over five evaluations counted as they happen (the policy's calls) rather than
    // over a time a loaded machine may fill with fewer.
    let evaluated = || crate::common::calls(&agent, "target-tracking");
    let (requests, evaluations) = (bench.proxy.log().len(), evaluated());
    wait_for("five more evaluations", LIMIT, || (evaluated() >= evaluations + 5).then_some(()));
    let (requests, evaluations) = (bench.proxy.log().len() - requests, evaluated() - evaluations);
    let per = requests as f64 / evaluations as f64;
    report(&format!("openstack steady state: {requests} Nova requests in {evaluations} evaluations = {per:.2} per evaluation"));
    assert!(
        evaluations >= 3 && per <= 2.0,
        "{requests} requests in {evaluations} evaluations: {:?}",
        bench.proxy.log()
    );

    app.set_body(r#"{"load": 1}"#);
    let scaled_in =
        wait_journal(&agent, &bench.group, "a scale to 1", |d| d["action"] == "scale" && d["target"] == 1);
    assert!(scaled_in["outcome"].as_str().unwrap().contains("gone after"), "{scaled_in}");
    let left = bench.wait_servers(1, Some("m1.tiny"));
    wait_for("the agent reporting 1", LIMIT, || {
        (group_status(&agent, &bench.group)["ready"] == 1).then_some(())
    });
    // Deletion policy `newest`: the oldest server stays.
    let oldest = servers.iter().map(|s| s["created"].as_str().unwrap()).min().unwrap();
    let kept: Vec<_> = servers.iter().filter(|s| s["created"] == oldest).map(|s| s["id"].clone()).collect();
    assert!(kept.contains(&left[0]["id"]), "kept {} of {:?}", left[0]["name"], summary(&servers));
}

#[test]
fn resize_is_confirmed_reverted_on_a_failed_check_and_an_unschedulable_one_is_detected() {
    let Some((creds, _serial)) = cloud_or_skip(
        "openstack::resize_is_confirmed_reverted_on_a_failed_check_and_an_unschedulable_one_is_detected",
    ) else {
        return;
    };
    let bench = Bench::new(creds, "v");
    bench.unplaceable_flavor();
    let app = JsonServer::start(r#"{"load": 0}"#);
    let health = JsonServer::start(r#"{"ok": true}"#);
    health.set_status(500);
    let group = format!(
        "[[group]]\nname = \"{}\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"threshold\"\npolicy_config = {{ high = 0.5, low = -1.0, mode = \"tier\" }}\nbackend = \"openstack\"\n\
         backend_config = {{ image = \"{}\", flavors = [\"m1.tiny\", \"m1.small\", \"elastic-test-huge\"], \
         networks = \"none\", verify = {{ url = \"http://{}/health/{{name}}\", timeout = \"1s\" }} }}\n\
         min = 1\nmax = 1\nmax_tier = 2\ntier_cooldown = \"1s\"\n",
        bench.group,
        image(),
        health.addr
    );
    let dir = plugins();
    let agent =
        Agent::start(dir.path(), &bench.config(&app, "", &[format!("http://{}", health.addr)], &group));
    let first = bench.wait_servers(1, Some("m1.tiny"));

    // Up a tier while the server's health check fails: resized, checked, reverted.
    app.set_body(r#"{"load": 1}"#);
    let reverted = wait_journal(&agent, &bench.group, "a reverted resize", |d| {
        d["action"] == "scale-failed" && d["target_tier"] == 1
    });
    let outcome = reverted["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("m1.tiny → m1.small reverted: health check failed") && outcome.contains("HTTP 500"),
        "{outcome}"
    );
    assert!(health.hits() >= 1);

    // Healthy: resized and confirmed.
    health.set_status(200);
    let resized = wait_journal(&agent, &bench.group, "a confirmed resize", |d| {
        d["action"] == "scale" && d["target_tier"] == 1
    });
    let outcome = resized["outcome"].as_str().unwrap();
    assert!(outcome.contains("m1.tiny → m1.small (ACTIVE"), "{outcome}");
    report(&format!(
        "openstack resize m1.tiny → m1.small (request → VERIFY_RESIZE → health check → confirm → ACTIVE): {} ms in the backend call; {outcome}",
        resized["backend_ms"]
    ));

    // Up again, to a flavor no host can take: Nova puts the server back to ACTIVE with no
    // fault; only the instance action says it failed.
    let failed = wait_journal(&agent, &bench.group, "an unschedulable resize detected", |d| {
        d["action"] == "scale-failed" && d["target_tier"] == 2
    });
    let outcome = failed["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("m1.small → elastic-test-huge failed: Nova's resize action: Error"),
        "{outcome}"
    );
    report(&format!("openstack unschedulable resize: {outcome}"));
    app.set_body(r#"{"load": 0}"#);
    // Three more evaluations at no load: the same server, never replaced.
    crate::common::wait_calls(&agent, "threshold", 3);
    let now = bench.wait_servers(1, Some("m1.small"));
    assert_eq!(now[0]["id"], first[0]["id"], "the same server, resized, never replaced");
    assert_eq!(group_status(&agent, &bench.group)["tier_name"], "m1.small");
}

#[test]
fn quota_exceeded_as_the_non_admin_demo_user_then_converges() {
    let Some((admin, _serial)) =
        cloud_or_skip("openstack::quota_exceeded_as_the_non_admin_demo_user_then_converges")
    else {
        return;
    };
    let admin_cloud = Cloud::login(&admin).unwrap();
    let demo_project = admin_cloud.project_id(&admin.demo().project);
    admin_cloud.set_quota(&demo_project, json!({"instances": 2}));
    struct Restore<'a>(&'a Cloud, String);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.set_quota(&self.1, json!({"instances": 10}));
        }
    }
    let restore = Restore(&admin_cloud, demo_project.clone());
    let bench = Bench::new(admin.demo(), "q");
    let app = JsonServer::start(r#"{"load": 3}"#);
    let dir = plugins();
    let agent =
        Agent::start(dir.path(), &bench.config(&app, "", &[], &horizontal_group(&bench.group, 5, "")));
    let refused = wait_journal(&agent, &bench.group, "a quota refusal", |d| d["action"] == "scale-failed");
    let outcome = refused["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("quota exceeded") && outcome.contains("Quota exceeded for instances"),
        "{outcome}"
    );
    bench.wait_servers(2, None);

    drop(restore);
    bench.wait_servers(3, Some("m1.tiny"));
    wait_for("the agent reporting 3 ready", LIMIT, || {
        (group_status(&agent, &bench.group)["ready"] == 3).then_some(())
    });
}

#[test]
fn faults_between_plugin_and_cloud_end_without_duplicates_or_orphans() {
    let Some((creds, _serial)) =
        cloud_or_skip("openstack::faults_between_plugin_and_cloud_end_without_duplicates_or_orphans")
    else {
        return;
    };
    let bench = Bench::new(creds, "f");
    let app = JsonServer::start(r#"{"load": 2}"#);
    let dir = plugins();
    let config = bench.config(
        &app,
        "request_timeout = \"1s\"\nretries = 4\n",
        &[],
        &horizontal_group(&bench.group, 6, ""),
    );
    let mut agent = Agent::start(dir.path(), &config);
    bench.wait_servers(2, None);
    let converge = |agent: &Agent, n: u32| {
        bench.wait_servers(n as usize, None);
        wait_for(&format!("the agent at {n} ready"), LIMIT, || {
            (group_status(agent, &bench.group)["ready"] == n).then_some(())
        });
    };

    // 1. A burst of 503s on the list: retried with backoff, nothing changes.
    bench.proxy.inject("GET", "/servers/detail", Fault::Status(503, None), 3);
    wait_for("the 503 burst used", LIMIT, || bench.proxy.spent().then_some(()));
    agent.wait_log("HTTP 503 injected by the test proxy; attempt 2 of 5");
    converge(&agent, 2);
    report(
        "openstack fault 503 ×3 on GET /servers/detail: retried (backoff with jitter), group unchanged at 2",
    );

    // 2. 429 with Retry-After on create: waited as told, created once.
    bench.proxy.inject("POST", "/servers", Fault::Status(429, Some(1)), 1);
    app.set_body(r#"{"load": 3}"#);
    converge(&agent, 3);
    agent.wait_log("attempt 2 of 5 in 1.0 s");
    report("openstack fault 429 Retry-After: 1 on POST /servers: waited 1.0 s, created once; 3 servers");

    // 3. The connection drops after Nova created the server: the plugin must not create it
    //    again; the next evaluation finds it.
    bench.proxy.inject("POST", "/servers", Fault::DropAfterForward, 1);
    app.set_body(r#"{"load": 4}"#);
    let unknown = wait_journal(&agent, &bench.group, "the lost answer reported", |d| {
        d["action"] == "scale-failed" && d["target"] == 4
    });
    assert!(unknown["outcome"].as_str().unwrap().contains("unknown until the next evaluation"), "{unknown}");
    converge(&agent, 4);
    crate::common::wait_calls(&agent, "target-tracking", 3);
    assert_eq!(bench.servers().len(), 4, "a duplicate was created: {:?}", summary(&bench.servers()));
    report("openstack fault: connection dropped after POST /servers reached Nova: reported, reconciled, 4 servers (no duplicate)");

    // 4. A slow answer (3 s against a 1 s request timeout): timed out and retried.
    bench.proxy.inject("GET", "/servers/detail", Fault::Delay(Duration::from_secs(3)), 1);
    wait_for("the slow answer used", LIMIT, || bench.proxy.spent().then_some(()));
    agent.wait_log("timed out; attempt 2 of 5");
    converge(&agent, 4);
    report("openstack fault: 3 s delay vs 1 s request_timeout on GET /servers/detail: timed out, retried, unchanged");

    // 5. A connection dropped before Nova saw it, on a GET: retried.
    bench.proxy.inject("GET", "/servers/detail", Fault::Drop, 2);
    wait_for("the drops used", LIMIT, || bench.proxy.spent().then_some(()));
    converge(&agent, 4);

    // 6. The token expires: Nova says 401, the plugin logs in again and carries on.
    bench.proxy.expire_tokens();
    app.set_body(r#"{"load": 2}"#);
    agent.wait_log("token rejected (401); authenticating again");
    converge(&agent, 2);
    report("openstack fault: token expired (401): re-authenticated once, scaled 4 → 2");

    // 7. The agent is killed right after deciding to scale out; a new one on the same data
    //    folder reconciles from Nova instead of creating again.
    app.set_body(r#"{"load": 5}"#);
    wait_journal(&agent, &bench.group, "a scale to 5", |d| d["action"] == "scale" && d["target"] == 5);
    agent.kill9();
    let data = std::mem::replace(&mut agent.data, tempfile::tempdir().unwrap());
    drop(agent);
    let agent = Agent::start_in(dir.path(), &config, data);
    converge(&agent, 5);
    crate::common::wait_calls(&agent, "target-tracking", 3);
    assert_eq!(bench.servers().len(), 5, "{:?}", summary(&bench.servers()));
    report("openstack fault: agent SIGKILLed after a scale-out; restarted: 5 servers, no duplicate");

    // Nothing of ours outside the group either: every server in the project named like the
    // group carries its tag.
    let (_, all) = bench.cloud.compute(reqwest::Method::GET, "/servers/detail", None);
    let named: Vec<_> = all["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with(&format!("{}-", bench.group)))
        .collect();
    assert_eq!(named.len(), 5, "orphans: {:?}", named.iter().map(|s| &s["name"]).collect::<Vec<_>>());
}

#[test]
fn application_credentials_work_and_a_wrong_password_is_one_clear_line_without_the_secret() {
    let Some((admin, _serial)) = cloud_or_skip(
        "openstack::application_credentials_work_and_a_wrong_password_is_one_clear_line_without_the_secret",
    ) else {
        return;
    };
    let bench = Bench::new(admin.demo(), "a");
    let (id, secret) = bench.cloud.create_application_credential(&bench.group);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("app"), &secret).unwrap();
    let app = JsonServer::start(r#"{"load": 1}"#);
    let dir = plugins();
    // The plugin table, with application-credential auth instead of the password.
    let plugin = bench.creds.plugin_toml(Some(&bench.proxied()), &[], "").replace(
        "secrets = { password = { env = \"OS_PASSWORD\" } }",
        &format!(
            "secrets = {{ application_credential_secret = {{ file = \"{}\" }} }}",
            secrets.path().join("app").display()
        ),
    );
    let plugin = plugin.replace(
        "username = ",
        &format!(
            "auth_type = \"application_credential\"\napplication_credential_id = \"{id}\"\n#username = "
        ),
    );
    let config = format!("{}{plugin}\n{}", load_source(&app), horizontal_group(&bench.group, 2, ""));
    let agent = Agent::start(dir.path(), &config);
    bench.wait_servers(1, Some("m1.tiny"));
    assert!(!agent.log().contains(&secret), "the secret is in the log");
    drop(agent);
    bench.cloud.delete_application_credential(&id);

    // A wrong password: the group holds with one line naming Keystone and what to check.
    let wrong = "not-the-password-7f3a";
    std::fs::write(secrets.path().join("pw"), wrong).unwrap();
    let plugin = bench.creds.plugin_toml(Some(&bench.proxied()), &[], "").replace(
        "secrets = { password = { env = \"OS_PASSWORD\" } }",
        &format!("secrets = {{ password = {{ file = \"{}\" }} }}", secrets.path().join("pw").display()),
    );
    let config = format!("{}{plugin}\n{}", load_source(&app), horizontal_group(&bench.group, 2, ""));
    let agent = Agent::start(dir.path(), &config);
    let failed = wait_journal(&agent, &bench.group, "a failed describe", |d| {
        d["reason"].as_str().unwrap().contains("describe failed")
    });
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("Keystone") && reason.contains("401"), "{reason}");
    assert!(!reason.contains('\n'), "{reason}");
    let everything =
        format!("{}{}", agent.log(), serde_json::to_string(&decisions(&agent, &bench.group)).unwrap());
    assert!(!everything.contains(wrong), "the password leaked");
    assert_eq!(bench.servers().len(), 1, "nothing changed");
}

#[test]
fn an_older_cloud_without_tags_is_managed_through_metadata_and_names() {
    let Some((creds, _serial)) =
        cloud_or_skip("openstack::an_older_cloud_without_tags_is_managed_through_metadata_and_names")
    else {
        return;
    };
    let bench = Bench::new(creds, "m");
    // The proxy answers the version document as a cloud whose newest microversion is 2.25
    // (before server tags, `networks: none` and embedded flavors).
    let path: String = format!("/{}", bench.cloud.compute.split('/').skip(3).collect::<Vec<_>>().join("/"));
    let doc = r#"{"version": {"id": "v2.1", "status": "CURRENT", "version": "2.25", "min_version": "2.1"}}"#;
    bench.proxy.inject_exact("GET", &path, Fault::Reply(doc.into()), 100);
    let app = JsonServer::start(r#"{"load": 2}"#);
    let dir = plugins();
    let agent =
        Agent::start(dir.path(), &bench.config(&app, "", &[], &horizontal_group(&bench.group, 3, "")));
    agent.wait_log("cloud offers up to 2.25, using 2.25");
    let servers = bench.wait_servers(2, Some("m1.tiny"));
    assert!(servers.iter().all(|s| s["tags"].as_array().is_none_or(|t| t.is_empty())), "{servers:?}");
    wait_for("the agent at 2 ready", LIMIT, || {
        (group_status(&agent, &bench.group)["ready"] == 2).then_some(())
    });
    assert_eq!(group_status(&agent, &bench.group)["tier_name"], "m1.tiny", "flavor IDs are named");
    app.set_body(r#"{"load": 1}"#);
    bench.wait_servers(1, None);
    let paths: Vec<String> = bench.proxy.log().into_iter().map(|(_, p, _)| p).collect();
    assert!(
        paths.iter().any(|p| p.contains("name=%5E")) && !paths.iter().any(|p| p.contains("tags=")),
        "{paths:?}"
    );
}

#[test]
fn a_server_that_fails_to_build_is_reported_with_novas_fault_and_deleted() {
    let Some((creds, _serial)) =
        cloud_or_skip("openstack::a_server_that_fails_to_build_is_reported_with_novas_fault_and_deleted")
    else {
        return;
    };
    let bench = Bench::new(creds, "e");
    bench.unplaceable_flavor();
    let app = JsonServer::start(r#"{"load": 1}"#);
    let dir = plugins();
    let group = horizontal_group(&bench.group, 1, "")
        .replace("flavor = \"m1.tiny\"", "flavor = \"elastic-test-huge\"");
    let agent = Agent::start(dir.path(), &bench.config(&app, "", &[], &group));
    let noted = wait_journal(&agent, &bench.group, "the ERROR server reported", |d| {
        d["outcome"].as_str().unwrap().contains("went to ERROR")
    });
    let outcome = noted["outcome"].as_str().unwrap();
    assert!(outcome.contains("No valid host was found"), "{outcome}");
    // `NAME (ID) went to ERROR: …; deleted it`: that very server is gone from Nova.
    let failed = outcome.split(" went to ERROR").next().and_then(|s| s.rsplit_once('(')).map(|(_, id)| id);
    let failed =
        failed.and_then(|id| id.strip_suffix(')')).unwrap_or_else(|| panic!("no server id: {outcome}"));
    wait_for("the ERROR server deleted from Nova", LIMIT, || {
        (!bench.servers().iter().any(|s| s["id"] == failed)).then_some(())
    });
    agent.wait_log("went to ERROR: No valid host was found");
    report(&format!("openstack: server that cannot be placed: {outcome}"));
    // No create/delete storm: after the failure, creates back off (10 s, doubling).
    assert!(
        outcome.contains("holding creation") && outcome.contains("1 server(s) in a row failed to build"),
        "{outcome}"
    );
    // Three more evaluations (well inside the 10 s backoff at 1 s each): no other create.
    crate::common::wait_calls(&agent, "target-tracking", 3);
    let creates = bench.proxy.log().iter().filter(|(m, p, _)| m == "POST" && p.ends_with("/servers")).count();
    assert_eq!(creates, 1, "creates during the backoff: {:?}", bench.proxy.log());
    drop(agent);
    // Whatever the agent created last is at most one server: no pile of ERROR servers.
    assert!(bench.servers().len() <= 1, "{:?}", summary(&bench.servers()));
}

#[test]
fn scale_in_deletes_the_servers_measured_idle_and_never_one_that_reports_busy() {
    let Some((creds, _serial)) = cloud_or_skip(
        "openstack::scale_in_deletes_the_servers_measured_idle_and_never_one_that_reports_busy",
    ) else {
        return;
    };
    let bench = Bench::new(creds, "b");
    // The application reports its load and, per server, the work each has in flight.
    let app = JsonServer::start(r#"{"load": 3, "busy": {}}"#);
    let source = format!(
        "{}each = {{ \"/busy\" = {{ metric = \"app.busy\", label = \"server\" }} }}\n",
        load_source(&app)
    );
    let group = horizontal_group(&bench.group, 5, "")
        + "[group.scale_in]\nunit_label = \"server\"\nbusy = \"app.busy\"\n";
    let config = format!("{source}{}\n{group}", bench.creds.plugin_toml(Some(&bench.proxied()), &[], ""));
    let dir = plugins();
    let agent = Agent::start(dir.path(), &config);
    let mut servers = bench.wait_servers(3, Some("m1.tiny"));
    // The deletion policy's order (`newest`; Nova's times are whole seconds, ties by id).
    servers.sort_by(|a, b| {
        b["created"].as_str().cmp(&a["created"].as_str()).then(a["id"].as_str().cmp(&b["id"].as_str()))
    });
    let names: Vec<String> = servers.iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    let (newest, others) = (&names[0], &names[1..]);

    // Down to 1 while the server the policy would delete first is busy: the two idle ones go,
    // the busy one stays.
    app.set_body(&json!({"load": 1, "busy": {newest: 2, &others[0]: 0, &others[1]: 0}}).to_string());
    let left = bench.wait_servers(1, Some("m1.tiny"));
    assert_eq!(left[0]["name"].as_str(), Some(newest.as_str()));
    // In one step or two (the 1 s load window may pass through 2): the two idle ones, by the
    // agent's ranking.
    let outcomes = || -> Vec<String> {
        let all = decisions(&agent, &bench.group);
        all.iter().filter_map(|d| d["outcome"].as_str().map(String::from)).collect()
    };
    let deleted = |all: &[String], name: &str| all.iter().any(|o| o.contains("deleted") && o.contains(name));
    let all = wait_for("both deletions journaled", LIMIT, || {
        let all = outcomes();
        (deleted(&all, &others[0]) && deleted(&all, &others[1])).then_some(all)
    });
    assert!(!deleted(&all, newest), "{all:#?}");

    // Down to 0 while it is still busy: the group holds, and says why.
    app.set_body(&json!({"load": 0, "busy": {newest: 2}}).to_string());
    let held = wait_journal(&agent, &bench.group, "a hold for the busy server", |d| {
        d["action"] == "hold" && d["steps"].to_string().contains("busy units")
    });
    let expected = format!("kept 1 busy: {newest} (busy: 2 in flight)");
    assert!(held["outcome"].as_str().unwrap().contains(&expected), "{held}");
    assert_eq!(bench.servers().len(), 1);

    // Its work done, it goes.
    app.set_body(&json!({"load": 0, "busy": {newest: 0}}).to_string());
    wait_journal(&agent, &bench.group, "the last server deleted", |d| {
        d["outcome"].as_str().is_some_and(|o| o.contains(&format!("deleted {newest}")))
    });
    wait_for("no server left", LIMIT, || bench.servers().is_empty().then_some(()));
}

/// Keystone behind TLS with a private CA (a TLS proxy of ours in front of the real one, its
/// certificates made with `openssl`): with `ca_file` the plugin logs in over https and scales;
/// without it the handshake is refused, and the operator reads why — in the journal, `/status`
/// and one log line that names `ca_file` — within seconds, not at a timeout.
#[test]
fn keystone_behind_a_private_ca_is_trusted_through_ca_file_and_refused_clearly_without_it() {
    let Some((creds, _serial)) = cloud_or_skip(
        "openstack::keystone_behind_a_private_ca_is_trusted_through_ca_file_and_refused_clearly_without_it",
    ) else {
        return;
    };
    let bench = Bench::new(creds, "tls");
    let ca = PrivateCa::make();
    let keystone = tls::origin(&bench.creds.auth_url);
    // TLS goes in front of a plain-HTTP Keystone, as the local cloud's is.
    let upstream = keystone.strip_prefix("http://").and_then(|a| a.to_socket_addrs().ok()?.next());
    let proxy = TlsProxy::start(upstream.expect("OS_AUTH_URL is http://HOST:PORT/…"), &ca);
    let https = format!("https://{}", proxy.addr);
    let auth_url = bench.creds.auth_url.replacen(&keystone, &https, 1);
    let app = JsonServer::start(r#"{"load": 2}"#);
    // The plugin reaches Keystone over TLS only: it is granted the proxy's origin, not Keystone's.
    let config = |ca_file: Option<&std::path::Path>| {
        let table = bench.creds.plugin_toml(Some(&bench.proxied()), std::slice::from_ref(&https), "");
        let keystone_grant = format!("\"{keystone}\", ");
        assert!(table.contains(&keystone_grant), "{table}");
        let mut table = table.replacen(&keystone_grant, "", 1).replace(
            &format!("auth_url = \"{}\"", bench.creds.auth_url),
            &format!("auth_url = \"{auth_url}\""),
        );
        if let Some(f) = ca_file {
            let with = format!("[plugins.openstack]\nca_file = \"{}\"\n", f.display());
            table = table.replacen("[plugins.openstack]\n", &with, 1);
        }
        format!("{}{table}\n{}", load_source(&app), horizontal_group(&bench.group, 2, ""))
    };
    let dir = plugins();
    let agent = Agent::start(dir.path(), &config(Some(&ca.ca_file())));
    bench.wait_servers(2, Some("m1.tiny"));
    assert!(proxy.handshakes() >= 1, "Keystone was not reached through the TLS proxy");
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
    assert!(!agent.log().contains("TLS with"), "{}", agent.log());
    drop(agent);

    // The same without ca_file: the built-in roots do not know the private CA.
    let handshakes = proxy.handshakes();
    let started = std::time::Instant::now();
    let agent = Agent::start(dir.path(), &config(None));
    let failed = wait_journal(&agent, &bench.group, "a failed describe", |d| {
        d["reason"].as_str().unwrap().contains("describe failed")
    });
    let took = started.elapsed();
    // A certificate error, not a timeout: so not "at a timeout". How many seconds it took is
    // reported below (scripts/bench-openstack summarises it).
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("Keystone") && reason.contains("TlsCertificateError"), "{reason}");
    let status = group_status(&agent, &bench.group);
    assert!(status["last_reason"].as_str().unwrap_or_default().contains("TlsCertificateError"), "{status}");
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("TLS with")).collect();
    assert_eq!(lines.len(), 1, "one line per origin and episode:\n{log}");
    let line = lines[0];
    assert!(line.contains(&https) && line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains("give its PEM file as [plugins.openstack] ca_file"), "{line}");
    // The client refused the certificate: no handshake completed, Keystone heard nothing.
    assert_eq!(proxy.handshakes(), handshakes);
    assert!(proxy.refused().iter().all(|r| r.contains("UnknownCA")), "{:?}", proxy.refused());
    assert_eq!(bench.servers().len(), 2, "nothing changed");
    report(&format!(
        "openstack with Keystone behind a private CA, no ca_file: TLS failure in the journal after {:.1} s",
        took.as_secs_f64()
    ));
}

#[test]
fn a_scale_out_gives_each_new_server_the_cloud_init_that_makes_it_join_the_fleet() {
    use base64::Engine;
    let test = "openstack::a_scale_out_gives_each_new_server_the_cloud_init_that_makes_it_join_the_fleet";
    let Some((creds, _serial)) = cloud_or_skip(test) else { return };
    let bench = Bench::new(creds, "ci");
    let user_data =
        std::fs::read_to_string(crate::common::root().join("dist/cloud-init/agent-user-data.yaml")).unwrap();
    // A TOML basic string: JSON's escapes are TOML's.
    let extra = format!(", user_data = {}", serde_json::to_string(&user_data).unwrap());
    let app = JsonServer::start(r#"{"load": 1}"#);
    let dir = plugins();
    let agent =
        Agent::start(dir.path(), &bench.config(&app, "", &[], &horizontal_group(&bench.group, 1, &extra)));
    wait_journal(&agent, &bench.group, "the scale-out", |d| d["action"] == "scale" && d["target"] == 1);
    let server = bench.wait_servers(1, None).remove(0);
    // Nova keeps the user data as given (base64); an administrator reads it back (2.3+).
    let (code, doc) = bench.cloud.compute(
        reqwest::Method::GET,
        &format!("/servers/{}", server["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(code, 200, "{doc}");
    let stored =
        doc["server"]["OS-EXT-SRV-ATTR:user_data"].as_str().unwrap_or_else(|| panic!("no user_data: {doc}"));
    let stored = base64::engine::general_purpose::STANDARD.decode(stored).unwrap();
    assert_eq!(String::from_utf8(stored).unwrap(), user_data);
}
