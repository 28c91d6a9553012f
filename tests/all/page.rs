//! The operator's page (`GET /`): served from the binary with strict headers, read-only without
//! the token, and — in a real headless Chromium — showing a scale-up with its reason, a restart
//! of a process killed from outside, a quarantined plugin, and surviving an agent restart; a
//! group's chart with its target line, a colour per line and per action (shared with the
//! timeline), marker labels that never overlap, and the latest values in its legend.

use crate::browser::Browser;
use crate::common::{fixture, group_status, plugin, plugin_dir, wait_for, Agent, JsonServer, Load};
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
    // Three of the agent's sampling ticks later (a restart would be at once), the same process.
    crate::common::wait_ticks(&agent, 3);
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
    let text = crate::common::halve_the_target(&text);
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
    assert!(reason.contains("process.cpu.utilization") && reason.contains("target 0.1"), "{reason}");
    let marks = browser.eval(
        "const u = S.charts.get('group:web');
         return u ? u.marks.filter(m => m.action === 'scale' && m.target > m.current).length : 0;",
    );
    assert!(marks.as_u64() >= Some(1), "the scale-up marked on the chart: {marks}");
    let target = browser.eval(
        "const u = S.charts.get('group:web'); const i = u.series.findIndex(s => s.label === 'target');
         return i < 0 ? null : u.data[i].filter(v => v != null);",
    );
    let at_target = target.as_array().is_some_and(|v| v.len() >= 2 && v.iter().all(|x| x == 0.1));
    assert!(at_target, "the policy's target (0.1) drawn across the chart: {target}");
    // The legend, no cursor over the chart: the latest values, a count of replicas as a count.
    let legend = browser.eval(
        "return [...document.querySelectorAll('#group-web .u-legend tr.u-series')]
           .map(r => [r.querySelector('.u-label').textContent, r.querySelector('.u-value').textContent]);",
    );
    let value = |label: &str| {
        let row = legend.as_array().unwrap().iter().find(|r| r[0] == label);
        row.and_then(|r| r[1].as_str()).unwrap_or_default().to_string()
    };
    assert_eq!(value("target"), "10%", "{legend}");
    assert!(value("replicas").parse::<u32>().is_ok_and(|n| n >= 1), "replicas, a count: {legend}");
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
    crate::common::wait_ticks(&agent, 3);
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

/// A group's chart, read in the page: every line's label, legend value (what it shows without a
/// cursor over the chart) and legend colour; the target line's values and the y axis' range; the
/// markers' labels (box, text, how many decisions each holds) and lines (decision and colour); the
/// timeline's scale badges' colours. `null` until the chart is drawn.
const READ_CHART: &str = "const u = S.charts.get('group:web');
  if (!u || !u.marks) return null;
  const colour = (e, p) => (e ? getComputedStyle(e)[p] : null);
  const legend = [...u.root.querySelectorAll('.u-legend tr.u-series')].map(r => ({
    label: r.querySelector('.u-label').textContent,
    value: r.querySelector('.u-value').textContent,
    colour: colour(r.querySelector('.u-marker'), 'borderTopColor'),
  }));
  const t = u.series.findIndex(s => s.label === 'target');
  const labels = [...u.root.querySelectorAll('.mark')].map(l => {
    const r = l.getBoundingClientRect();
    return { text: l.textContent, count: Number(l.dataset.count), colour: colour(l, 'color'),
             left: r.left, right: r.right, top: r.top, bottom: r.bottom };
  });
  const lines = [...u.root.querySelectorAll('.mark-line')].map(l => ({
    action: l.dataset.action, from: Number(l.dataset.from), to: Number(l.dataset.to), colour: colour(l, 'borderLeftColor'),
  }));
  const badges = [...document.querySelectorAll('#group-web tr.ev-scale')].map(r => {
    const [from, to] = r.cells[2].textContent.split('→').map(Number);
    return { from, to, colour: colour(r.cells[1].querySelector('.badge'), 'color') };
  });
  return { legend, labels, lines, badges, scale_decisions: u.marks.filter(m => m.action === 'scale').length,
           target: t < 0 ? null : { values: u.data[t].filter(v => v != null), scale: u.series[t].scale },
           y: [u.scales.y.min, u.scales.y.max] };";

#[test]
fn in_a_browser_a_groups_chart_has_its_target_distinct_colours_markers_apart_and_latest_values() {
    let Some(browser) = Browser::start("the page in a browser (the chart: target, colours, markers, legend)")
    else {
        return;
    };
    // Two metrics (two lines drawing from the palette that ready, desired and target use), a
    // group quick to scale both ways: decisions a second or so apart.
    let app = JsonServer::start(r#"{"load": 45, "queue": 3}"#);
    let config = format!(
        "[plugins.http-json]\nallow_http = [\"http://{addr}\"]\ninterval = \"100ms\"\n\
         [plugins.http-json.config]\nurl = \"http://{addr}/\"\nmetrics = {{ \"/load\" = \"app.load\", \"/queue\" = \"app.queue\" }}\n\
         [[group]]\nname = \"web\"\ninterval = \"300ms\"\n\
         metrics = [{{ name = \"app.load\", window = \"1s\" }}, {{ name = \"app.queue\", window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 10, per = \"total\" }}\n\
         backend = \"ledger\"\nbackend_config = {{ initial = 1 }}\nmin = 1\nmax = 10\n\
         [group.scale_down]\nstabilization = \"0s\"\n",
        addr = app.addr
    );
    let plugins = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("ledger")]);
    let agent = Agent::start(plugins.path(), &config);
    assert_eq!(group_status(&agent, "web")["target"], 10.0, "the policy's target, for the page");
    open(&browser, &agent, "groups");
    // Up (45 / 10 → 5), in (no load → 1), up again (25 → 3), and there it stays.
    let at = |n: u64| (group_status(&agent, "web")["current"] == n).then_some(());
    wait_for("the group at 5", LIMIT, || at(5));
    app.set_body(r#"{"load": 0, "queue": 2}"#);
    wait_for("the group back at 1", LIMIT, || at(1));
    app.set_body(r#"{"load": 25, "queue": 4}"#);
    wait_for("the group at 3", LIMIT, || at(3));
    let chart = browser.wait(
        "the chart with the three scalings and the group's 3 replicas",
        LIMIT,
        &format!(
            "const c = (() => {{ {READ_CHART} }})();
             const u = S.charts.get('group:web'), r = u && u.series.findIndex(s => s.label === 'replicas');
             return c && c.scale_decisions >= 3 && c.lines.length === c.scale_decisions
               && u.data[r].filter(v => v != null).pop() === 3 && c;"
        ),
    );
    browser.screenshot("page-chart");
    let list = |key: &str| chart[key].as_array().unwrap().clone();
    let text = |v: &Value| v.as_str().unwrap().to_string();

    // The target line: the policy's 10 across the chart, on the metrics' axis, within its range.
    let target = &chart["target"];
    assert!(!target.is_null(), "a target line: {chart}");
    let values = target["values"].as_array().unwrap();
    assert!(values.len() >= 2 && values.iter().all(|v| v == 10.0), "{target}");
    assert_eq!(target["scale"], "y");
    let (lo, hi) = (chart["y"][0].as_f64().unwrap(), chart["y"][1].as_f64().unwrap());
    assert!(lo <= 10.0 && 10.0 <= hi, "the target within the axis: {lo}–{hi}");

    // The legend without a cursor over the chart: every line's latest value, none `–`.
    let legend = list("legend");
    assert!(legend.len() >= 7, "time, 2 metrics, target, replicas, ready, desired: {legend:?}");
    for l in &legend {
        let value = text(&l["value"]);
        assert!(
            !value.is_empty() && value != "–" && value != "--",
            "{} reads `{value}`: {legend:?}",
            l["label"]
        );
    }
    let value_of = |label: &str| {
        let named = |l: &&Value| l["label"].as_str().is_some_and(|n| n.split(' ').next() == Some(label));
        legend.iter().find(named).map(|l| text(&l["value"]))
    };
    assert_eq!(value_of("target").as_deref(), Some("10"));
    assert_eq!(value_of("replicas").as_deref(), Some("3"), "the group's replicas now: {legend:?}");
    assert_eq!(value_of("app.load").as_deref(), Some("25"), "the latest load: {legend:?}");

    // Every line of the chart its own colour.
    let colours: Vec<String> = legend.iter().skip(1).map(|l| text(&l["colour"])).collect();
    let distinct: std::collections::BTreeSet<&String> = colours.iter().collect();
    assert_eq!(distinct.len(), colours.len(), "a colour used twice: {legend:?}");

    // Markers: labels never overlap, and every decision keeps its line.
    let lines = list("lines");
    markers_apart(&chart);
    // One colour per action: a scale-in's line and its timeline badge alike, and not a scale-up's;
    // and no line of the chart in an action's colour.
    let colour = |items: &[Value], down: bool| {
        let item = items.iter().find(|i| {
            i.get("action").is_none_or(|a| a == "scale")
                && (i["to"].as_u64() < i["from"].as_u64()) == down
                && i["to"] != i["from"]
        });
        text(
            &item.unwrap_or_else(|| panic!("no scale-{} among {items:?}", if down { "in" } else { "up" }))
                ["colour"],
        )
    };
    let badges = list("badges");
    let (line_in, badge_in) = (colour(&lines, true), colour(&badges, true));
    let (line_up, badge_up) = (colour(&lines, false), colour(&badges, false));
    assert_eq!(line_in, badge_in, "the scale-in's colour on the chart and in the timeline");
    assert_eq!(line_up, badge_up, "the scale-up's colour on the chart and in the timeline");
    assert_ne!(line_in, line_up);
    assert!(
        !colours.contains(&line_in) && !colours.contains(&line_up),
        "a line in an action's colour: {colours:?}"
    );

    // On a narrow screen the same decisions are a few pixels apart: their labels merge rather
    // than overlap.
    browser.resize(480, 1000);
    let narrow = browser.wait(
        "the chart redrawn narrow",
        LIMIT,
        &format!(
            "const c = (() => {{ {READ_CHART} }})(); return S.charts.get('group:web').width < 480 && c;"
        ),
    );
    browser.screenshot("page-chart-narrow");
    assert!(markers_apart(&narrow) >= 1, "decisions pixels apart share a label: {}", narrow["labels"]);

    // A reload refused: "Needs attention" says so, with the reason.
    std::fs::write(agent.data.path().join("agent.toml"), "[[group]\n").unwrap();
    let token = std::fs::read_to_string(agent.data.path().join("api.token")).unwrap();
    let (code, body) = post(&agent, "/reload", Some(&token));
    assert_ne!(code, 200, "{body}");
    let error = agent.status()["config"]["last_reload"]["error"].as_str().unwrap().to_string();
    let attention = browser.wait(
        "the refused reload in Needs attention",
        LIMIT,
        "const a = document.getElementById('attention'); return !a.hidden && a.textContent.includes('configuration:') && a.textContent;",
    );
    assert!(
        attention.as_str().unwrap().contains(&format!("configuration: reload refused: {error}")),
        "{attention}"
    );
    no_problems(&browser);
}

/// Asserts that no two marker labels of `chart` (as [`READ_CHART`] reads it) overlap, that each
/// decision is in exactly one label, and that a label holding several says how many and the net
/// change (`1→3 ×4`); returns how many labels hold several.
fn markers_apart(chart: &Value) -> usize {
    let labels = chart["labels"].as_array().unwrap();
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    for (i, a) in labels.iter().enumerate() {
        assert!(f(a, "right") > f(a, "left"), "a label with no width: {a}");
        for b in &labels[i + 1..] {
            let apart = f(a, "right") <= f(b, "left")
                || f(b, "right") <= f(a, "left")
                || f(a, "bottom") <= f(b, "top")
                || f(b, "bottom") <= f(a, "top");
            assert!(apart, "overlapping markers {a} and {b}");
        }
    }
    let held: u64 = labels.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    let lines = chart["lines"].as_array().unwrap().len();
    assert_eq!(held as usize, lines, "every decision in one label: {labels:?}");
    let merged: Vec<_> = labels.iter().filter(|l| l["count"].as_u64() > Some(1)).collect();
    for l in &merged {
        let text = l["text"].as_str().unwrap();
        let net = text.split(' ').next().unwrap().split('→').filter(|n| n.parse::<u32>().is_ok()).count();
        assert!(net == 2 && text.ends_with(&format!(" ×{}", l["count"])), "{text}");
    }
    merged.len()
}

/// Nothing the page did was blocked by its Content-Security-Policy, and no script failed.
fn no_problems(browser: &Browser) {
    assert_eq!(browser.eval("return problems"), serde_json::json!([]));
}

#[test]
fn in_a_browser_a_faulting_plugin_shows_quarantined_and_the_page_survives_an_agent_restart() {
    let Some(browser) = Browser::start("the page in a browser (quarantine, agent restart)") else { return };
    let plugins = plugin_dir(&[
        &fixture("rogue-policy"),
        &plugin("ledger"),
        &fixture("rogue-source"),
        &plugin("http-json"),
    ]);
    // A file whose name is markup: the page must show it as text, never run it.
    let hostile = "<img src=x onerror=window.pwned=1>.wasm";
    std::fs::write(plugins.path().join(hostile), b"not a component").unwrap();
    // A source whose collections fail (a URL it was not granted), one never collected (no `url`).
    let config = "[plugins.rogue-source]\ninterval = \"100ms\"\n[plugins.rogue-source.config]\nmode = \"http\"\nurl = \"http://127.0.0.1:9/x\"\n\
                  [[group]]\nname = \"faulty\"\ninterval = \"200ms\"\nmetrics = [{ name = \"system.cpu.utilization\", window = \"5s\" }]\n\
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
    let sources = browser.wait(
        "both sources' problems in Needs attention and the Plugins view",
        LIMIT,
        "const a = document.getElementById('attention').textContent;
         const notes = [...document.querySelectorAll('tr.plugin .collection')].map(e => e.textContent);
         return a.includes('source rogue-source: ') && a.includes('plugin http-json: not collected') && notes.length == 2 && [a, notes];",
    );
    let text = sources.to_string();
    assert!(text.contains("collections failed; last: ") && text.contains("requires `url`"), "{text}");
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
