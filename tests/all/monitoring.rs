//! Monitoring: the sampler and source plugins feed the store; the CLI reads it while the agent
//! runs; `/metrics` is valid Prometheus text; a `kill -9` loses at most the last interval.

use crate::common::{
    agent_cli, fixture, http_get, plugin, plugin_dir, sampler_ticks, wait_for, Agent, JsonServer,
};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(15);

use crate::common::metrics_query as query_json;

#[test]
fn system_and_plugin_metrics_are_stored_and_queryable_while_the_agent_runs() {
    let app = JsonServer::start(r#"{"requests": 42, "queue": {"depth": 3}}"#);
    let config = format!(
        "[agent]\nsample_interval = \"100ms\"\n[plugins.http-json]\nallow_http = [\"http://{0}\"]\ninterval = \"200ms\"\n\
         [plugins.http-json.config]\nurl = \"http://{0}/\"\nmetrics = {{ \"/requests\" = \"app.requests\", \"/queue/depth\" = \"app.queue.depth\" }}\n",
        app.addr
    );
    let dir = plugin_dir(&[&plugin("http-json")]);
    let agent = Agent::start(dir.path(), &config);
    let data = agent.data.path().to_path_buf();

    // Ten ticks at 100 ms.
    let cpu = wait_for("ten CPU samples", LIMIT, || {
        let v = query_json(&data, &["system.cpu.utilization", "--label", "cpu=0", "--since", "1m"]);
        (v[0]["values"].as_array()?.len() >= 10).then_some(v)
    });
    // One sample a tick, in order: how close to 100 ms apart they come is the timing bench's
    // (tests/benches/timing.rs, "sampler").
    let times: Vec<i64> =
        cpu[0]["timestamps_ms"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "one sample per tick, in order: {times:?}");
    for v in cpu[0]["values"].as_array().unwrap() {
        assert!((0.0..=1.0).contains(&v.as_f64().unwrap()));
    }

    let (code, list, _) = agent_cli(&["metrics", "list", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    for name in [
        "system.cpu.utilization",
        "system.cpu.load_average.1m",
        "system.memory.usage{state=\"used\"}",
        "system.memory.utilization",
        "system.paging.usage",
        "system.network.io{device=\"lo\", direction=\"receive\"}",
        "system.network.packets",
        "system.filesystem.utilization",
        "app.queue.depth{source=\"http-json\"}",
    ] {
        assert!(list.contains(name), "{name} missing from `agent metrics list`:\n{list}");
    }
    let requests = query_json(&data, &["app.requests", "--label", "source=http-json", "--since", "1m"]);
    assert!(requests[0]["values"].as_array().unwrap().iter().all(|v| v == 42.0));

    // Steps average into buckets; CSV has a header and one row per bucket.
    let (code, csv, _) = agent_cli(&[
        "metrics",
        "query",
        "system.memory.limit",
        "--since",
        "1m",
        "--step",
        "30s",
        "--format",
        "csv",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("time,name,labels,value"));
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "not one bucket:\n{csv}");
    assert!(rows.iter().all(|l| l.contains(",system.memory.limit,,")), "{csv}");
    let times: Vec<&str> = rows.iter().map(|l| l.split(',').next().unwrap_or("")).collect();
    let mut buckets = times.clone();
    buckets.dedup();
    assert_eq!(buckets, times, "one row per bucket:\n{csv}");
    assert!(rows.len() <= 3, "a minute in 30 s buckets is at most 3 rows:\n{csv}");
}

#[test]
fn metrics_endpoint_is_valid_prometheus_text_with_system_plugin_and_agent_metrics() {
    let dir = plugin_dir(&[&fixture("rogue-source")]);
    let config = "[agent]\nsample_interval = \"100ms\"\n[plugins.rogue-source]\ninterval = \"100ms\"\n[plugins.rogue-source.config]\nmode = \"nan\"\n";
    let agent = Agent::start(dir.path(), config);
    let body = wait_for("plugin samples in /metrics", LIMIT, || {
        let (_, body) = http_get(agent.addr, "/metrics").ok()?;
        (body.contains("rogue_good") && body.contains("system_network_io_bytes_per_second")).then_some(body)
    });
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus parser accepts /metrics");
    let find = |name: &str| scrape.samples.iter().find(|s| s.metric == name);
    for name in [
        "system_cpu_utilization_ratio",
        "system_memory_usage_bytes",
        "system_memory_limit_bytes",
        "system_network_io_bytes_per_second",
        "system_filesystem_utilization_ratio",
        "agent_sampler_ticks_total",
        "agent_store_samples_written_total",
        "agent_plugin_calls_total",
        "agent_uptime_seconds",
    ] {
        assert!(find(name).is_some(), "{name} missing from /metrics");
    }
    let good = find("rogue_good").unwrap();
    assert_eq!(good.labels.get("source"), Some("rogue-source"));
    assert!(matches!(good.value, prometheus_parse::Value::Gauge(v) if v == 7.0));
    // NaN and infinity were dropped and counted, never stored.
    assert!(find("rogue_bad").is_none() && find("rogue_inf").is_none());
    let dropped = find("agent_source_nonfinite_dropped_total").unwrap();
    assert!(matches!(dropped.value, prometheus_parse::Value::Counter(v) if v >= 2.0));
    assert!(body.contains("# TYPE system_cpu_utilization_ratio gauge"));
}

#[test]
fn a_failing_source_stores_nothing_for_that_tick_never_a_zero() {
    let dir = plugin_dir(&[&fixture("rogue-source")]);
    // Not granted: every collection fails.
    let config = "[plugins.rogue-source]\ninterval = \"100ms\"\n[plugins.rogue-source.config]\nmode = \"http\"\nurl = \"http://127.0.0.1:9/\"\n";
    let agent = Agent::start(dir.path(), config);
    wait_for("failed collections", LIMIT, || {
        let s = agent.status();
        (s["sources"][0]["errors"].as_u64()? >= 3).then_some(())
    });
    let (_, list, _) = agent_cli(&["metrics", "list", "--data-dir", agent.data.path().to_str().unwrap()]);
    assert!(!list.contains("rogue"), "no series from a source that never succeeded:\n{list}");
    let (_, body) = http_get(agent.addr, "/metrics").unwrap();
    let errors = body.lines().find(|l| l.starts_with("agent_source_errors_total")).unwrap();
    assert!(errors.split(' ').nth(1).unwrap().parse::<f64>().unwrap() >= 3.0, "{errors}");
}

#[test]
fn after_kill_9_the_database_opens_cleanly_and_at_most_the_last_interval_is_missing() {
    let dir = plugin_dir(&[]);
    let config = "[agent]\nsample_interval = \"200ms\"\n";
    let mut agent = Agent::start(dir.path(), config);
    let data = agent.data.path().to_path_buf();
    wait_for("some samples", LIMIT, || {
        let v = query_json(&data, &["system.memory.limit", "--since", "1m"]);
        (v[0]["values"].as_array()?.len() >= 10).then_some(())
    });
    // The agent's own count of its ticks (one system.memory.limit sample each), read just before
    // the kill: all of them but the last are in the database after it. Counted in ticks, not
    // milliseconds, so a sampler running late on a loaded machine loses nothing here; how many
    // milliseconds a kill costs is the timing bench's (tests/benches/timing.rs, "kill -9").
    // A few ticks after the first samples showed, so that the kill does not come right after a
    // commit by chance (a writer that batched many ticks would pass then).
    crate::common::wait_ticks(&agent, 5);
    let ticks = sampler_ticks(&agent).expect("agent_sampler_ticks_total in /metrics");
    let killed_at = agent.kill9();

    let v = query_json(&data, &["system.memory.limit", "--since", "5m"]);
    let stored = v[0]["values"].as_array().unwrap().len() as u64;
    assert!(
        stored + 1 >= ticks,
        "{stored} samples stored of {ticks} ticks before the kill: more than the last one lost"
    );

    // The same data folder serves a new agent, which carries on.
    let agent = Agent::start_in(dir.path(), config, agent.stop());
    wait_for("new samples after the restart", LIMIT, || {
        let v = query_json(agent.data.path(), &["system.memory.limit", "--since", "5m"]);
        let newest = v[0]["timestamps_ms"].as_array()?.last()?.as_i64()?;
        (newest > killed_at).then_some(())
    });
}

#[test]
fn supervised_processes_are_sampled_with_their_name_and_replica() {
    let dir = plugin_dir(&[]);
    let config = "[agent]\nsample_interval = \"100ms\"\n[[process]]\nname = \"busy\"\ncommand = \"while :; do :; done\"\nshell = true\nreplicas = 2\n";
    let agent = Agent::start(dir.path(), config);
    let data = agent.data.path().to_path_buf();
    // A busy loop measured busy: a reading above zero, however little of a core the other tests
    // leave it (what share it gets, against /proc's own count, is the timing bench's).
    let values = wait_for("a busy CPU sample of replica 1", Duration::from_secs(60), || {
        let v = query_json(
            &data,
            &["process.cpu.utilization", "--label", "process=busy", "--label", "replica=1", "--since", "1m"],
        );
        let values: Vec<f64> = serde_json::from_value(v[0]["values"].clone()).ok()?;
        (values.len() >= 3 && values.iter().any(|v| *v > 0.0)).then_some(values)
    });
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "a share of the machine: {values:?}");
    let rss = query_json(&data, &["process.memory.usage", "--label", "process=busy", "--since", "1m"]);
    assert_eq!(rss.as_array().unwrap().len(), 2, "one series per replica");
    let restarts = query_json(&data, &["process.restarts", "--label", "replica=0", "--since", "1m"]);
    assert!(restarts[0]["values"].as_array().unwrap().iter().all(|v| v == 0.0));
}
