//! The operator's page (`GET /`): served from the binary with strict headers, read-only without
//! the token, and — in a real headless Chromium — showing a scale-up with its reason, a restart
//! of a process killed from outside, a quarantined plugin, and surviving an agent restart.

use crate::browser::Browser;
use crate::common::{fixture, plugin, plugin_dir, wait_for, Agent, Load};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn get(agent: &Agent, path: &str, host: Option<&str>) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new().get(format!("http://{}{path}", agent.addr));
    if let Some(h) = host {
        request = request.header("host", h);
    }
    request.send().unwrap()
}

fn post(agent: &Agent, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::blocking::Client::new().post(format!("http://{}{path}", agent.addr));
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let r = request.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn pid_of(agent: &Agent, name: &str, replica: u64) -> Option<u64> {
    let status = agent.status();
    let instance =
        status["processes"].as_array()?.iter().find(|p| p["name"] == name && p["replica"] == replica)?;
    instance["pid"].as_u64()
}

const SLEEPER: &str = "[[process]]\nname = \"app\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n";

#[test]
fn the_page_is_served_from_the_binary_with_strict_headers_and_changes_nothing_without_the_token() {
    let plugins = plugin_dir(&[]);
    let agent = Agent::start(plugins.path(), SLEEPER);
    let page = get(&agent, "/", None);
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for rule in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().unwrap();
    // Every file the page loads comes from the agent, with its type; together under 300 KiB.
    let mut weight = html.len();
    for (attr, kind) in [("src=\"", "text/javascript"), ("href=\"", "")] {
        for link in html.split(attr).skip(1).map(|rest| rest.split('"').next().unwrap()) {
            assert!(link.starts_with('/') || link.starts_with('#'), "an asset from elsewhere: {link}");
            if link.starts_with('#') {
                continue;
            }
            let asset = get(&agent, link, None);
            assert_eq!(asset.status(), 200, "{link}");
            let served = asset.headers()["content-type"].to_str().unwrap().to_string();
            assert!(served.starts_with(kind), "{link}: {served}");
            weight += asset.bytes().unwrap().len();
        }
    }
    assert!(weight < 300 * 1024, "the page weighs {weight} bytes");

    // Actions are POSTs with the token; without it nothing changes, and a GET is no action.
    let pid = wait_for("the app running", LIMIT, || pid_of(&agent, "app", 0));
    let (code, body) = post(&agent, "/processes/app/restart", None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = post(&agent, "/processes/app/restart", Some("not-the-token"));
    assert_eq!(code, 401);
    assert_eq!(get(&agent, "/processes/app/restart", None).status(), 405);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pid_of(&agent, "app", 0), Some(pid), "no restart without the token");
    let token = std::fs::read_to_string(agent.data.path().join("api.token")).unwrap();
    assert_eq!(post(&agent, "/processes/app/restart", Some(&token)).0, 200);
    wait_for("the app restarted", LIMIT, || pid_of(&agent, "app", 0).filter(|p| *p != pid));

    // Another site's name for this address (DNS rebinding) reads nothing.
    assert_eq!(get(&agent, "/status", Some("attacker.example:80")).status(), 421);
    assert_eq!(get(&agent, "/status", Some("localhost")).status(), 200);

    // The page's data: bounded windows, errors that name the field.
    let bad = get(&agent, "/api/series?name=system.cpu.utilization&window=forever", None);
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().starts_with("window:"));
    let series = wait_for("CPU samples through /api/series", LIMIT, || {
        let body: Value = serde_json::from_str(
            &get(&agent, "/api/series?name=system.cpu.utilization&window=5m", None).text().ok()?,
        )
        .ok()?;
        let series = body["series"].as_array()?.clone();
        series.iter().any(|s| !s["values"].as_array().unwrap().is_empty()).then_some(body)
    });
    assert_eq!(series["step_ms"], 1000);
}

#[test]
fn an_address_beyond_loopback_needs_a_token_the_operator_chose() {
    let plugins = plugin_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let run = |config: &str, token: Option<&str>| {
        std::fs::write(data.path().join("agent.toml"), config).unwrap();
        let mut cmd = std::process::Command::new(crate::common::agent_bin());
        cmd.args(["run", "--plugins", plugins.path().to_str().unwrap(), "--data-dir"])
            .arg(data.path())
            .args(["--listen", &format!("0.0.0.0:{port}"), "--config"])
            .arg(data.path().join("agent.toml"))
            .env("AGENT_LOG", "warn");
        if let Some(t) = token {
            cmd.env("PAGE_TOKEN", t);
        }
        cmd
    };
    let out = run("", None).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.listen: 0.0.0.0:") && err.contains("api_token"), "{err}");
    let with_token = "[agent]\napi_token = { env = \"PAGE_TOKEN\" }\n";
    let out = run(with_token, Some("short")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.api_token") && !err.contains("short"), "no secret in messages: {err}");

    let token = "3f9c2a7b1e8d4f6a0b5c9e2d7a1f4b8c";
    let mut child = run(with_token, Some(token)).spawn().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("the agent on 0.0.0.0", LIMIT, || {
        crate::common::http_get(addr, "/healthz").ok().filter(|r| r.0 == 200)
    });
    assert_eq!(std::fs::read_to_string(data.path().join("api.token")).unwrap(), token, "the CLI's copy");
    let reload = |t: &str| {
        reqwest::blocking::Client::new()
            .post(format!("http://{addr}/reload"))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(reload(token), 200);
    assert_eq!(reload("0123456789abcdef0123456789abcdef"), 401);
    // Not a loopback listener: any Host is answered (the token guards what matters).
    let (code, _) = crate::common::http_get(addr, "/status").unwrap();
    assert_eq!(code, 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// The page at `view`, rendered with data at least once since `after_ms` (a page time stamp).
fn open(browser: &Browser, agent: &Agent, view: &str) {
    browser.goto(&format!("http://{}/#{view}", agent.addr));
    browser.wait(
        "the page's first render with data",
        LIMIT,
        "return performance.getEntriesByName('rendered').length > 0",
    );
}

#[test]
fn in_a_browser_the_default_configuration_shows_a_scale_up_with_its_reason_and_a_restart() {
    let Some(browser) = Browser::start("the page in a browser (scale-up, restart, token)") else { return };
    let (text, addr, _) = crate::common::default_configuration();
    let plugins = crate::common::default_plugins();
    let agent = Agent::start(plugins.path(), &text);
    open(&browser, &agent, "groups");
    browser.wait(
        "the web group's card",
        LIMIT,
        "return !!document.querySelector('#group-web .chart canvas')",
    );

    // Under load the group scales up; the page shows it on the chart and in the timeline.
    let load = Load::start(addr, 4);
    let reason = browser.wait(
        "a scale-up in the web group's timeline",
        Duration::from_secs(180),
        "for (const row of document.querySelectorAll('#group-web tr.ev-scale')) {
           const [from, to] = row.cells[2].textContent.split('→').map(Number);
           if (to > from) return row.querySelector('.reason').textContent;
         }
         return null;",
    );
    let reason = reason.as_str().unwrap();
    assert!(reason.contains("process.cpu.utilization") && reason.contains("target 0.2"), "{reason}");
    let marks = browser.eval(
        "const u = S.charts.get('group:web');
         return u ? u.marks.filter(m => m.action === 'scale' && m.target > m.current).length : 0;",
    );
    assert!(marks.as_u64() >= Some(1), "the scale-up marked on the chart: {marks}");
    browser.screenshot("page-groups");
    assert_eq!(load.stop(), 0, "requests failed while the group scaled");

    // A replica killed from outside: the page shows the restart.
    browser.goto(&format!("http://{}/#processes", agent.addr));
    let pid = wait_for("web-0 running", LIMIT, || pid_of(&agent, "web", 0));
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    browser.wait(
        "web-0's restart on the page",
        LIMIT,
        "const c = document.querySelector('tr[data-instance=\"web-0\"] td.restarts');
         return c && Number(c.textContent) >= 1;",
    );
    browser.wait("sparklines drawn", LIMIT, "return document.querySelectorAll('.spark canvas').length >= 2");

    // An action without the token is refused and changes nothing.
    let before = wait_for("web-0 back", LIMIT, || pid_of(&agent, "web", 0));
    browser.click("[data-program=\"web\"] button");
    let refused = browser.wait(
        "the refusal",
        LIMIT,
        "const n = document.getElementById('notice'); return !n.hidden && n.textContent;",
    );
    assert!(refused.as_str().unwrap().contains("refused: a token is required"), "{refused}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pid_of(&agent, "web", 0), Some(before), "nothing restarted without the token");

    // With the token (entered once), the same click restarts, and the output can be read.
    let token = std::fs::read_to_string(agent.data.path().join("api.token")).unwrap();
    browser.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('token-save').click(); return true;",
        serde_json::json!(token)
    ));
    browser.click("[data-program=\"web\"] button");
    wait_for("web-0 restarted from the page", LIMIT, || pid_of(&agent, "web", 0).filter(|p| *p != before));
    browser.click("tr[data-instance=\"web-0\"] button");
    let output = browser.wait(
        "web-0's output",
        LIMIT,
        "const p = document.querySelector('#output-box pre'); return p && p.textContent;",
    );
    assert!(output.as_str().unwrap().contains("serving on"), "{output}");
    browser.screenshot("page-processes");
    assert_eq!(
        browser.eval("return sessionStorage.getItem('token')"),
        Value::String(token),
        "kept for the session"
    );
    no_problems(&browser);
}

/// Nothing the page did was blocked by its Content-Security-Policy, and no script failed.
fn no_problems(browser: &Browser) {
    assert_eq!(browser.eval("return problems"), serde_json::json!([]));
}

#[test]
fn in_a_browser_a_faulting_plugin_shows_quarantined_and_the_page_survives_an_agent_restart() {
    let Some(browser) = Browser::start("the page in a browser (quarantine, agent restart)") else { return };
    let plugins = plugin_dir(&[&fixture("rogue-policy"), &plugin("ledger")]);
    // A file whose name is markup: the page must show it as text, never run it.
    let hostile = "<img src=x onerror=window.pwned=1>.wasm";
    std::fs::write(plugins.path().join(hostile), b"not a component").unwrap();
    let config = "[[group]]\nname = \"faulty\"\ninterval = \"200ms\"\nmetrics = [{ name = \"system.cpu.utilization\", window = \"5s\" }]\n\
                  policy = \"rogue-policy\"\npolicy_config = { mode = \"trap\" }\nbackend = \"ledger\"\nmin = 1\nmax = 3\n\
                  [[group]]\nname = \"typo\"\npolicy = \"rogue-polcy\"\nbackend = \"ledger\"\nmin = 1\nmax = 3\n";
    let agent = Agent::start(plugins.path(), config);
    open(&browser, &agent, "plugins");
    let state = browser.wait(
        "rogue-policy quarantined on the page",
        LIMIT,
        "const c = document.querySelector('tr[data-plugin=\"rogue-policy\"] td.state');
         return c && c.textContent.includes('quarantined') && c.textContent;",
    );
    assert!(state.as_str().unwrap().contains("quarantined"));
    let attention = browser.eval("return document.getElementById('attention').textContent");
    assert!(attention.as_str().unwrap().contains("plugin rogue-policy is quarantined"), "{attention}");
    let shown = browser.wait(
        "the hostile file among the files that did not load",
        LIMIT,
        "const r = [...document.querySelectorAll('tr.plugin-file')].find(r => r.textContent.includes('onerror'));
         return r && r.cells[0].textContent;",
    );
    assert!(shown.as_str().unwrap().ends_with(hostile), "shown as text: {shown}");
    assert_eq!(browser.eval("return document.querySelectorAll('img').length + (window.pwned ? 100 : 0)"), 0);
    browser.screenshot("page-plugins");
    // A group's configuration problem is on its card.
    browser.goto(&format!("http://{}/#groups", agent.addr));
    let problem = browser.wait(
        "the typo on the group's card",
        LIMIT,
        "const e = document.querySelector('#group-typo .head .err'); return e && e.textContent;",
    );
    assert!(problem.as_str().unwrap().contains("did you mean `rogue-policy`"), "{problem}");
    browser.goto(&format!("http://{}/#machine", agent.addr));
    browser.wait(
        "the machine's charts",
        LIMIT,
        "return document.querySelectorAll('#view-machine canvas').length >= 5",
    );
    browser.screenshot("page-machine");
    // Another window redraws the same charts, it does not add charts.
    browser.eval("const w = document.getElementById('window'); w.value = '1h'; w.dispatchEvent(new Event('change')); return 1");
    browser.wait("the hour's data asked for", LIMIT, "return S.fetched.has('machine:CPU:1h')");
    std::thread::sleep(Duration::from_secs(2));
    let per_box = browser.eval(
        "return [...document.querySelectorAll('#view-machine .plot')].map(b => b.querySelectorAll('.uplot').length)",
    );
    assert!(
        per_box.as_array().unwrap().iter().all(|n| n.as_u64().is_some_and(|n| n <= 1)),
        "one chart per box: {per_box}"
    );

    // A flat line (a single sample, a value that never moves) gets a y range around it: over an
    // empty range the chart library steps its ticks forever and throws "Invalid array length" (seen
    // under load, on a group's chart whose y scale came out 1–1).
    let ranges = browser.eval(
        "return [spread(null, 1, 1), spread(null, 0.9999999237060547, 1), spread(null, 0, 0), spread(null, null, null), spread(null, 2, 5)]",
    );
    for r in ranges.as_array().unwrap() {
        let (lo, hi) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        assert!(
            lo < hi && hi - lo >= 0.01 * hi.abs().max(lo.abs()),
            "a y range wide enough to step through: {ranges}"
        );
    }
    assert!(
        ranges[1][0].as_f64().is_some_and(|lo| lo < 0.99)
            && ranges[1][1].as_f64().is_some_and(|hi| hi > 1.01),
        "{ranges}"
    );

    // The agent goes away: the page says so and keeps what it showed; it comes back: live again.
    let (addr, mut agent) = (agent.addr, agent);
    agent.kill9();
    let banner = browser.wait(
        "the page noticing",
        LIMIT,
        "const b = document.getElementById('banner'); return !b.hidden && b.textContent;",
    );
    assert!(banner.as_str().unwrap().contains("not answering"), "{banner}");
    let data = agent.stop();
    let _agent = Agent::spawn_at(plugins.path(), config, data, addr);
    browser.wait(
        "the page live again",
        Duration::from_secs(30),
        "return document.getElementById('banner').hidden",
    );
    let uptime = browser.eval("return S.status.uptime_s");
    assert!(uptime.as_u64().is_some_and(|s| s < 30), "the restarted agent's status: {uptime}");
    no_problems(&browser);
}
