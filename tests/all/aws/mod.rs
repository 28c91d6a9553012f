//! The `aws` backend and the `cloudwatch` source against a real AWS API server on loopback
//! (`moto` in server mode, one per test; see `moto.rs`): the real agent, the real plugin
//! components, our fault proxy in front of moto. Without moto each test prints a loud SKIPPED
//! line (a failure under CI=true, where `.ci/run` installs it).

mod moto;

use crate::common::{decisions, group_status, plugin, plugin_dir, report, wait_for, Agent, JsonServer};
use crate::fault_proxy::{Fault, FaultProxy};
use moto::Moto;
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// The `[plugins.aws]` table: the plugin reaches moto through `proxy`, signs with the keys in
/// the agent's environment (`TEST_AWS_KEY`, `TEST_AWS_SECRET`).
fn aws_plugin(proxy: &FaultProxy, extra: &str) -> String {
    format!(
        "[plugins.aws]\nallow_http = [\"http://{addr}\"]\n\
         secrets = {{ access_key_id = {{ env = \"TEST_AWS_KEY\" }}, secret_access_key = {{ env = \"TEST_AWS_SECRET\" }} }}\n\
         [plugins.aws.config]\nregion = \"{region}\"\nendpoint = \"http://{addr}\"\nrequest_timeout = \"2s\"\n{extra}",
        addr = proxy.addr,
        region = moto::REGION
    )
}

/// The application's load and, per instance, its work in flight.
fn app_source(app: &JsonServer) -> String {
    format!(
        "[plugins.http-json]\nallow_http = [\"http://{addr}\"]\ninterval = \"100ms\"\n[plugins.http-json.config]\n\
         url = \"http://{addr}/\"\nmetrics = {{ \"/load\" = \"app.load\" }}\n\
         each = {{ \"/busy\" = {{ metric = \"app.busy\", label = \"instance\" }} }}\n",
        addr = app.addr
    )
}

fn asg_group(name: &str, extra: &str) -> String {
    format!(
        "[[group]]\nname = \"{name}\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 1, per = \"total\" }}\nbackend = \"aws\"\n\
         min = 1\nmax = 5\ntolerance = 0.0\n{extra}[group.scale_down]\nstabilization = \"0s\"\n\
         [group.scale_in]\nunit_label = \"instance\"\nbusy = \"app.busy\"\n"
    )
}

/// The agent, signing with moto's default keys (its IAM checks off).
fn with_default_keys(plugins: &std::path::Path, config: &str) -> Agent {
    Agent::start_env(plugins, config, &[("TEST_AWS_KEY", "testing"), ("TEST_AWS_SECRET", "testing")])
}

fn plugins() -> tempfile::TempDir {
    plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("aws"), &plugin("cloudwatch")])
}

/// Waits for a journal entry of `group` matching `pred`; on timeout shows the journal's end.
fn wait_journal(agent: &Agent, group: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(what, LIMIT, || decisions(agent, group).into_iter().find(|d| pred(d)))
    }));
    found.unwrap_or_else(|_| {
        let all = decisions(agent, group);
        let tail: Vec<&Value> = all.iter().rev().take(8).collect();
        panic!("no journal entry: {what}; last entries: {tail:#?}\nlog:\n{}", agent.log())
    })
}

fn in_service(moto: &Moto, asg: &str, n: usize) -> Vec<String> {
    wait_for(&format!("{n} instances in service in {asg}"), LIMIT, || {
        let (desired, instances) = moto.asg(asg);
        let ids: Vec<String> =
            instances.iter().filter(|(_, s)| s == "InService").map(|(i, _)| i.clone()).collect();
        (desired as usize == n && ids.len() == n).then_some(ids)
    })
}

#[test]
fn a_group_scales_an_auto_scaling_group_1_3_2_tags_the_decision_and_never_terminates_the_busy_instance() {
    const TEST: &str = "aws::a_group_scales_an_auto_scaling_group_1_3_2";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    let asg = "web-asg";
    moto.create_asg(asg, 1);
    // From here moto checks every signature: the plugin's must be right.
    let (key, secret) = moto.enable_auth();
    let proxy = FaultProxy::start(moto.addr);
    let app = JsonServer::start(r#"{"load": 3, "busy": {}}"#);
    let group = asg_group("web", &format!("backend_config = {{ auto_scaling_group = \"{asg}\" }}\n"));
    let config = format!("{}{}\n{group}", app_source(&app), aws_plugin(&proxy, ""));
    let dir = plugins();
    let agent =
        Agent::start_env(dir.path(), &config, &[("TEST_AWS_KEY", &key), ("TEST_AWS_SECRET", &secret)]);

    // 1 → 3: the desired capacity set, the decision on the group and on the new instances.
    let ids = in_service(&moto, asg, 3);
    let up = wait_journal(&agent, "web", "the scale-out", |d| d["action"] == "scale" && d["target"] == 3);
    let decision = format!("web#{}", up["t_ms"]);
    let outcome = up["outcome"].as_str().unwrap();
    assert!(outcome.contains(&format!("desired capacity of {asg} 1 → 3")), "{outcome}");
    let tagged: Vec<&String> = ids
        .iter()
        .filter(|i| moto.tags(i).contains(&("elastic-decision".to_string(), decision.clone())))
        .collect();
    assert_eq!(
        tagged.len(),
        2,
        "the two launched instances carry {decision}: {:?}",
        ids.iter().map(|i| (i, moto.tags(i))).collect::<Vec<_>>()
    );
    report(&format!(
        "aws: decision → desired capacity set (the scale call: describe, tag the group, SetDesiredCapacity, describe, tag the new instances; signatures checked by moto): {} ms",
        up["backend_ms"]
    ));
    wait_for("the agent sees 3 ready", LIMIT, || (group_status(&agent, "web")["ready"] == 3).then_some(()));

    // Steady state: what an evaluation costs in AWS requests, over five evaluations counted as
    // they happen (the policy's calls).
    let evaluated = || crate::common::calls(&agent, "target-tracking");
    let (before, evaluations) = (proxy.log().len(), evaluated());
    wait_for("five more evaluations", LIMIT, || (evaluated() >= evaluations + 5).then_some(()));
    let (requests, evaluations) = (proxy.log().len() - before, evaluated() - evaluations);
    let per = requests as f64 / evaluations as f64;
    let log = proxy.log();
    // Counted apart, the two counters may straddle one evaluation.
    assert!(
        requests.abs_diff(evaluations as usize) <= 1,
        "{requests} requests for {evaluations} evaluations: {:?}",
        &log[before..]
    );
    assert!(
        log[before..].iter().all(|(_, p, _)| p.ends_with("DescribeAutoScalingGroups")),
        "{:?}",
        &log[before..]
    );
    report(&format!(
        "aws: requests per evaluation at rest: {per:.2} ({requests} for {evaluations}), all DescribeAutoScalingGroups"
    ));

    // 3 → 2 while the instance launched first reports work in flight: an idle one goes.
    let busy = &ids[0];
    let idle: Vec<&String> = ids.iter().skip(1).collect();
    app.set_body(&json!({"load": 2, "busy": {busy: 3, idle[0]: 0, idle[1]: 0}}).to_string());
    let left = in_service(&moto, asg, 2);
    assert!(left.contains(busy), "the busy instance {busy} was terminated: {left:?}");
    let down = wait_journal(&agent, "web", "the scale-in", |d| d["action"] == "scale" && d["target"] == 2);
    assert!(down["outcome"].as_str().unwrap().contains("terminated i-"), "{down}");

    // Down to 1 while both left are busy: held, and said why; nothing terminated.
    let other = left.iter().find(|i| *i != busy).unwrap();
    app.set_body(&json!({"load": 1, "busy": {busy: 3, other: 1}}).to_string());
    let held = wait_journal(&agent, "web", "a hold for the busy instances", |d| {
        d["outcome"].as_str().is_some_and(|o| o.contains("kept 1 busy"))
    });
    assert!(held["outcome"].as_str().unwrap().contains("in flight)"), "{held}");
    assert_eq!(moto.asg(asg).0, 2, "nothing was terminated while both were busy");
}

#[test]
fn throttling_validation_and_busy_faults_from_our_proxy_are_retried_or_reported_like_openstacks() {
    const TEST: &str = "aws::throttling_validation_and_busy_faults";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    let asg = "api-asg";
    moto.create_asg(asg, 1);
    let proxy = FaultProxy::start(moto.addr);
    let app = JsonServer::start(r#"{"load": 1, "busy": {}}"#);
    let group = asg_group("api", &format!("backend_config = {{ auto_scaling_group = \"{asg}\" }}\n"));
    let config = format!("{}{}\n{group}", app_source(&app), aws_plugin(&proxy, "retries = 4\n"));
    let dir = plugins();
    let agent = with_default_keys(dir.path(), &config);
    wait_for("the agent sees 1 ready", LIMIT, || (group_status(&agent, "api")["ready"] == 1).then_some(()));

    // 1. A burst of throttling on the describe: retried with backoff, nothing changes.
    let throttled = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"#;
    proxy.inject_action("DescribeAutoScalingGroups", Fault::Xml(400, throttled.into(), None), 3);
    wait_for("the throttling burst used", LIMIT, || proxy.spent().then_some(()));
    agent.wait_log("HTTP 400 Throttling: Rate exceeded; attempt 2 of 5");
    report("aws fault Throttling ×3 on DescribeAutoScalingGroups: retried (backoff with jitter), group unchanged");

    // 2. 503 with Retry-After on SetDesiredCapacity: waited as told, set once.
    let unavailable = throttled
        .replace("Throttling", "ServiceUnavailable")
        .replace("Rate exceeded", "Service is unavailable");
    let sets = || proxy.log().iter().filter(|(_, p, _)| p.ends_with("SetDesiredCapacity")).count();
    let before = sets();
    proxy.inject_action("SetDesiredCapacity", Fault::Xml(503, unavailable, Some(1)), 1);
    app.set_body(r#"{"load": 2, "busy": {}}"#);
    in_service(&moto, asg, 2);
    agent.wait_log("attempt 2 of 5 in 1.0 s");
    assert_eq!(sets() - before, 2, "the refused one and the one that set it: {:?}", proxy.log());
    report("aws fault 503 Retry-After: 1 on SetDesiredCapacity: waited 1.0 s, set once; 2 instances");

    // 3. A ValidationError (AWS refuses a desired capacity above the group's MaxSize — moto
    //    does not, so our proxy says it): one attempt, reported as a configuration fault that
    //    names the call, the code and what to change; no retry storm.
    let before = sets();
    let validation = throttled.replace("Throttling", "ValidationError").replace(
        "Rate exceeded",
        "New SetDesiredCapacity value 3 is above max value 2 for the AutoScalingGroup.",
    );
    proxy.inject_action("SetDesiredCapacity", Fault::Xml(400, validation, None), 1);
    app.set_body(r#"{"load": 3, "busy": {}}"#);
    let failed = wait_journal(&agent, "api", "the validation fault", |d| d["action"] == "scale-failed");
    let outcome = failed["outcome"].as_str().unwrap();
    assert!(outcome.contains("SetDesiredCapacity") && outcome.contains("ValidationError"), "{outcome}");
    assert!(outcome.contains("MaxSize"), "says what to change: {outcome}");
    assert_eq!(sets() - before, 1, "a validation error is not retried within the call");
    // The next evaluation, the fault gone, sets it.
    in_service(&moto, asg, 3);

    // 4. ScalingActivityInProgress: a conflict, the group holds and tries again next time.
    let busy = throttled
        .replace("Throttling", "ScalingActivityInProgress")
        .replace("Rate exceeded", "Scaling activity 1 is in progress and blocks this action.");
    proxy.inject_action("SetDesiredCapacity", Fault::Xml(400, busy, None), 1);
    app.set_body(r#"{"load": 4, "busy": {}}"#);
    let conflict = wait_journal(&agent, "api", "the conflict", |d| {
        d["action"] == "scale-failed"
            && d["outcome"].as_str().is_some_and(|o| o.contains("ScalingActivityInProgress"))
    });
    assert!(conflict["outcome"].as_str().unwrap().contains("conflict"), "{conflict}");
    in_service(&moto, asg, 4);
    report("aws faults ValidationError and ScalingActivityInProgress on SetDesiredCapacity: one attempt each, journaled (bad config / conflict), set on the next evaluation");
}

#[test]
fn a_wrong_secret_is_refused_by_motos_signature_check_and_reported_as_configuration() {
    const TEST: &str = "aws::a_wrong_secret_is_refused_by_motos_signature_check";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    moto.create_asg("db-asg", 1);
    let (key, _) = moto.enable_auth();
    let proxy = FaultProxy::start(moto.addr);
    let app = JsonServer::start(r#"{"load": 2, "busy": {}}"#);
    let group = asg_group("db", "backend_config = { auto_scaling_group = \"db-asg\" }\n");
    let config = format!("{}{}\n{group}", app_source(&app), aws_plugin(&proxy, ""));
    let dir = plugins();
    let wrong = "not-the-secret-0123456789";
    let started = std::time::Instant::now();
    let agent = Agent::start_env(dir.path(), &config, &[("TEST_AWS_KEY", &key), ("TEST_AWS_SECRET", wrong)]);
    let status = wait_for("the group's error", LIMIT, || {
        let s = group_status(&agent, "db");
        s.to_string().contains("SignatureDoesNotMatch").then_some(s)
    });
    let text = status.to_string();
    assert!(text.contains("access key") && text.contains("DescribeAutoScalingGroups"), "{status:#}");
    assert!(!agent.log().contains(wrong) && !text.contains(wrong), "the secret leaked");
    // Refused, not retried: one request per evaluation (one a second), no second attempt.
    let asks = proxy.log().len() as u64;
    assert!(asks <= started.elapsed().as_secs() + 2, "{asks} requests: {:?}", proxy.log());
    assert!(!agent.log().contains("attempt 2 of"), "a refused signature was retried:\n{}", agent.log());
    assert_eq!(moto.asg("db-asg").0, 1);
}

/// The Auto Scaling group's own MaxSize (2) is below the agent group's max (5): the backend
/// reports it (contract 0.1.4 `cloud-limits`) and the agent holds the target there, journaled,
/// instead of asking AWS for what it would refuse.
#[test]
fn the_auto_scaling_groups_own_max_size_holds_the_target_and_the_journal_says_so() {
    const TEST: &str = "aws::the_auto_scaling_groups_own_max_size_holds_the_target";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    moto.create_asg_within("small-asg", 1, 2);
    let proxy = FaultProxy::start(moto.addr);
    let app = JsonServer::start(r#"{"load": 4, "busy": {}}"#);
    let group = asg_group("small", "backend_config = { auto_scaling_group = \"small-asg\" }\n");
    let config = format!("{}{}\n{group}", app_source(&app), aws_plugin(&proxy, ""));
    let dir = plugins();
    let agent = with_default_keys(dir.path(), &config);
    let held = wait_journal(&agent, "small", "a decision held by the cloud's bounds", |d| {
        d["steps"].as_array().into_iter().flatten().any(|s| s["guardrail"] == "cloud-bounds")
    });
    assert_eq!(held["target"], 2, "{held}");
    let step = held["steps"].as_array().unwrap().iter().find(|s| s["guardrail"] == "cloud-bounds").unwrap();
    assert_eq!((step["before"].as_f64(), step["after"].as_f64()), (Some(4.0), Some(2.0)), "{held}");
    assert_eq!(step["why"], "the cloud holds the group to [0, 2]");
    in_service(&moto, "small-asg", 2);
    // Never above MaxSize: no desired capacity of 3 or 4 was ever asked (moto would grant it).
    crate::common::wait_calls(&agent, "target-tracking", 3);
    assert_eq!(moto.asg("small-asg").0, 2);
    let failed: Vec<Value> =
        decisions(&agent, "small").into_iter().filter(|d| d["action"] == "scale-failed").collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Temporary credentials: STS keys with their session token, granted as three secrets; moto
/// (IAM checks on) verifies the signature and the token of every request.
#[test]
fn temporary_keys_with_a_session_token_are_signed_and_checked() {
    const TEST: &str = "aws::temporary_keys_with_a_session_token_are_signed_and_checked";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    moto.create_asg("sts-asg", 1);
    moto.enable_auth();
    let (key, secret, token) = moto.assume_role();
    let proxy = FaultProxy::start(moto.addr);
    let app = JsonServer::start(r#"{"load": 2, "busy": {}}"#);
    let group = asg_group("sts", "backend_config = { auto_scaling_group = \"sts-asg\" }\n");
    let plugin = aws_plugin(&proxy, "").replace(
        "secret_access_key = { env = \"TEST_AWS_SECRET\" } }",
        "secret_access_key = { env = \"TEST_AWS_SECRET\" }, session_token = { env = \"TEST_AWS_TOKEN\" } }",
    );
    assert!(plugin.contains("session_token"), "{plugin}");
    let config = format!("{}{plugin}\n{group}", app_source(&app));
    let dir = plugins();
    let env = [
        ("TEST_AWS_KEY", key.as_str()),
        ("TEST_AWS_SECRET", secret.as_str()),
        ("TEST_AWS_TOKEN", token.as_str()),
    ];
    let agent = Agent::start_env(dir.path(), &config, &env);
    in_service(&moto, "sts-asg", 2);
    assert!(
        !agent.log().contains(&token) && !agent.log().contains(&secret),
        "a credential leaked into the log"
    );
}

#[test]
fn cloudwatch_metrics_put_through_the_api_feed_a_group_and_instance_credentials_come_from_imdsv2() {
    const TEST: &str = "aws::cloudwatch_metrics_put_through_the_api_feed_a_group";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    let asg = "queue-asg";
    moto.create_asg(asg, 1);
    let put = |value: f64| {
        moto.call(
            "monitoring",
            "PutMetricData",
            &[
                ("Namespace", "Custom/App".into()),
                ("MetricData.member.1.MetricName", "Load".into()),
                ("MetricData.member.1.Dimensions.member.1.Name", "AutoScalingGroupName".into()),
                ("MetricData.member.1.Dimensions.member.1.Value", asg.into()),
                ("MetricData.member.1.Value", value.to_string()),
            ],
        );
    };
    put(3.0);
    let proxy = FaultProxy::start(moto.addr);
    // The source signs with the instance's role, read through IMDSv2 (moto serves it).
    let source = format!(
        "[plugins.cloudwatch]\nallow_http = [\"http://{addr}\"]\ninterval = \"1s\"\n[plugins.cloudwatch.config]\n\
         region = \"us-east-1\"\nendpoint = \"http://{addr}\"\ncredentials = \"instance\"\nimds_endpoint = \"http://{addr}\"\n\
         queries = [\n  {{ metric = \"asg.load\", namespace = \"Custom/App\", name = \"Load\", dimensions = {{ AutoScalingGroupName = \"{asg}\" }}, stat = \"Maximum\" }},\n  \
         {{ metric = \"asg.missing\", namespace = \"Custom/App\", name = \"Missing\" }},\n]\n",
        addr = proxy.addr
    );
    let group = format!(
        "[[group]]\nname = \"queue\"\ninterval = \"1s\"\nmetrics = [{{ name = \"asg.load\", window = \"15m\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 1, per = \"total\" }}\nbackend = \"aws\"\n\
         backend_config = {{ auto_scaling_group = \"{asg}\" }}\nmin = 1\nmax = 5\ntolerance = 0.0\n"
    );
    let config = format!("{source}{}\n{group}", aws_plugin(&proxy, ""));
    let dir = plugins();
    let agent = with_default_keys(dir.path(), &config);
    in_service(&moto, asg, 3);
    let log = proxy.log();
    assert!(
        log.iter().any(|(m, p, _)| m == "PUT" && p == "/latest/api/token"),
        "IMDSv2 token first: {log:?}"
    );
    assert!(
        log.iter().any(|(m, p, _)| m == "GET" && p.ends_with("/security-credentials/default-role")),
        "{log:?}"
    );
    // The query without data stored nothing: no series, not a zero.
    let (code, out, err) = agent.cli(&["metrics", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("asg.load"), "{out}");
    assert!(!out.contains("asg.missing"), "an empty result stored something: {out}");
    report("aws: CloudWatch GetMetricData (credentials from IMDSv2) drove an ASG 1 → 3; an empty query stored nothing");
}

#[test]
fn a_storage_group_grows_an_ebs_volume_tags_the_decision_and_keeps_awss_four_a_day() {
    const TEST: &str = "aws::a_storage_group_grows_an_ebs_volume";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    moto.create_asg("data-asg", 1);
    let instance = moto.asg("data-asg").1[0].0.clone();
    let xml =
        moto.call("ec2", "CreateVolume", &[("Size", "1".into()), ("AvailabilityZone", "us-east-1a".into())]);
    let volume = xml.split("<volumeId>").nth(1).and_then(|r| r.split('<').next()).unwrap().to_string();
    moto.call(
        "ec2",
        "AttachVolume",
        &[("VolumeId", volume.clone()), ("InstanceId", instance.clone()), ("Device", "/dev/sdf".into())],
    );
    let proxy = FaultProxy::start(moto.addr);
    // Always full: the policy asks for more at every evaluation; the guardrails decide.
    let app = JsonServer::start(r#"{"load": 0.95, "busy": {}}"#);
    let group = format!(
        "[[group]]\nname = \"data\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 0.7 }}\nbackend = \"aws\"\n\
         backend_config = {{ instance = \"{instance}\", device = \"/dev/sdf\" }}\n\
         [group.storage]\nmin_size = \"1GiB\"\nmax_size = \"100GiB\"\ncooldown = \"1s\"\n"
    );
    let config = format!("{}{}\n{group}", app_source(&app), aws_plugin(&proxy, ""));
    let dir = plugins();
    let agent = with_default_keys(dir.path(), &config);
    // AWS allows 4 modifications of a volume in 24 h (the default per_day); moto allows any.
    let limited = wait_journal(&agent, "data", "the daily limit", |d| {
        d["steps"].as_array().into_iter().flatten().any(|s| s["guardrail"] == "per-day")
    });
    let resizes: Vec<Value> =
        decisions(&agent, "data").into_iter().filter(|d| d["action"] == "scale").collect();
    assert_eq!(resizes.len(), 4, "{resizes:#?}");
    let first = resizes.iter().min_by_key(|d| d["t_ms"].as_i64()).unwrap();
    assert!(
        first["outcome"]
            .as_str()
            .unwrap()
            .starts_with(&format!("modified EBS volume {volume} from 1 to 2 GiB")),
        "{first}"
    );
    let size = limited["current"].as_u64().unwrap();
    let xml = moto.call("ec2", "DescribeVolumes", &[("VolumeId.1", volume.clone())]);
    assert!(xml.contains(&format!("<size>{size}</size>")), "{xml}");
    let last = resizes.iter().max_by_key(|d| d["t_ms"].as_i64()).unwrap();
    let tag = ("elastic-decision".to_string(), format!("data#{}", last["t_ms"]));
    assert!(moto.tags(&volume).contains(&tag), "{:?}", moto.tags(&volume));
    assert_eq!(group_status(&agent, "data")["storage"]["volume"], volume.as_str());
    report(&format!("aws storage group: EBS volume 1 → {size} GiB in 4 ModifyVolume calls, the fifth held by the 4-in-24-h rule"));
}

/// Two agents coordinate a cluster group through a real etcd: the leader evaluates and calls
/// AWS (one request per evaluation at rest), the follower sends AWS nothing at all.
#[test]
fn in_a_fleet_only_the_leader_calls_aws_and_a_follower_sends_it_nothing() {
    const TEST: &str = "aws::in_a_fleet_only_the_leader_calls_aws";
    let Some(moto) = Moto::start_or_skip(TEST) else { return };
    let Some(etcd) = crate::fleet::etcd::EtcdCluster::start_or_skip(TEST, 1) else { return };
    moto.create_asg("fleet-asg", 1);
    let app = JsonServer::start(r#"{"load": 2, "busy": {}}"#);
    let proxies = [FaultProxy::start(moto.addr), FaultProxy::start(moto.addr)];
    let dir = plugins();
    let agents: Vec<Agent> = ["a", "b"]
        .iter()
        .zip(&proxies)
        .map(|(node, proxy)| {
            let config = format!(
                "{}{}\n[cluster]\netcd = {}\nnode = \"{node}\"\nlease_ttl = \"3s\"\nrenew_every = \"1s\"\nrequest_timeout = \"500ms\"\n{}",
                app_source(&app),
                aws_plugin(proxy, ""),
                etcd.endpoints_toml(),
                asg_group("fleet", "coordination = \"cluster\"\nbackend_config = { auto_scaling_group = \"fleet-asg\" }\n")
            );
            with_default_keys(dir.path(), &config)
        })
        .collect();
    in_service(&moto, "fleet-asg", 2);
    let leader = wait_for("one leader of `fleet`", LIMIT, || {
        let roles: Vec<bool> =
            agents.iter().map(|a| a.status()["cluster"]["groups"]["fleet"]["role"] == "leader").collect();
        (roles.iter().filter(|r| **r).count() == 1).then(|| roles.iter().position(|r| *r).unwrap())
    });
    let follower = 1 - leader;
    // The scale-out's call has returned (its last requests tag the new instance).
    wait_for("the leader sees 2 ready", LIMIT, || {
        (group_status(&agents[leader], "fleet")["ready"] == 2).then_some(())
    });
    let evaluated = || crate::common::calls(&agents[leader], "target-tracking");
    let (l0, f0, e0) = (proxies[leader].log().len(), proxies[follower].log().len(), evaluated());
    wait_for("five more evaluations", LIMIT, || (evaluated() >= e0 + 5).then_some(()));
    let (led, followed, evaluations) =
        (proxies[leader].log().len() - l0, proxies[follower].log().len() - f0, evaluated() - e0);
    assert_eq!(followed, 0, "the follower called AWS: {:?}", &proxies[follower].log()[f0..]);
    assert!(
        led.abs_diff(evaluations as usize) <= 1,
        "{led} leader requests for {evaluations} evaluations: {:?}",
        &proxies[leader].log()[l0..]
    );
    report(&format!(
        "aws in a fleet of 2: leader {:.2} requests per evaluation ({led} for {evaluations}), follower 0",
        led as f64 / evaluations as f64
    ));
}
