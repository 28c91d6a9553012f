//! The operator's page in headless Chromium, against the release agent on its default
//! configuration: what it weighs, how soon it shows something and its data, and what keeping it
//! open costs the agent. `cargo bench -p e2e --bench page` (needs chromium and chromium-driver).
//!
//! Each load is a fresh navigation; the figures come from the browser's own Performance API
//! (first-contentful-paint, the page's `rendered` mark set after its first render with data,
//! and the bytes of every response).

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../all/browser.rs"]
mod browser;

use common::{Agent, Load};
use serde_json::Value;
use std::time::{Duration, Instant};

const LOADS: usize = 10;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no tests here
    }
    common::use_release_agent();
    let Some(browser) = browser::Browser::start("the page benchmark") else { return };

    let (text, addr, _) = common::default_configuration();
    let plugins = common::default_plugins();
    let agent = Agent::start(plugins.path(), &text);
    // Some history to draw: a minute under load (the group scales up), then quiet.
    let load = Load::start(addr, 4);
    std::thread::sleep(Duration::from_secs(60));
    load.stop();

    println!(
        "page on the default configuration (release agent, headless Chromium, {LOADS} fresh loads per view)"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>11}",
        "view", "FCP p50", "FCP max", "data p50", "data max", "requests", "bytes"
    );
    for view in ["groups", "processes", "plugins", "machine"] {
        let mut fcp = Vec::new();
        let mut data = Vec::new();
        let mut last = Value::Null;
        for _ in 0..LOADS {
            browser.goto("about:blank");
            browser.goto(&format!("http://{}/#{view}", agent.addr));
            last = browser.wait(
                "the first render with data",
                Duration::from_secs(20),
                "const r = performance.getEntriesByName('rendered')[0];
                 const p = performance.getEntriesByName('first-contentful-paint')[0];
                 if (!r || !p) return null;
                 const all = [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')];
                 return { fcp: p.startTime, data: r.startTime, requests: all.length,
                          bytes: all.reduce((n, e) => n + e.transferSize, 0) };",
            );
            fcp.push(last["fcp"].as_f64().unwrap());
            data.push(last["data"].as_f64().unwrap());
        }
        println!(
            "{view:<10} {:>9.0} ms {:>9.0} ms {:>9.0} ms {:>9.0} ms {:>10} {:>11}",
            median(&mut fcp),
            max(&fcp),
            median(&mut data),
            max(&data),
            last["requests"],
            last["bytes"]
        );
    }
    // The README's picture: the groups view after the load.
    browser.goto(&format!("http://{}/#groups", agent.addr));
    browser.wait(
        "the group's chart",
        Duration::from_secs(20),
        "return !!document.querySelector('#group-web canvas')",
    );
    std::thread::sleep(Duration::from_secs(2));
    browser.screenshot("bench-groups");
    let weight = browser.eval(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/') || e.name.includes('favicon'))
           .reduce((n, e) => n + e.decodedBodySize, performance.getEntriesByType('navigation')[0].decodedBodySize)",
    );
    println!("page weight (HTML + script + styles + chart library, uncompressed): {weight} bytes");

    // Staying open: bytes the page reads per minute, and the agent's CPU, against no page.
    let cpu = common::cpu_seconds;
    let window = Duration::from_secs(30);
    for view in ["groups", "machine"] {
        browser.goto(&format!("http://{}/#{view}", agent.addr));
        std::thread::sleep(Duration::from_secs(3));
        browser.eval(
            "performance.clearResourceTimings(); performance.setResourceTimingBufferSize(100000); return 1",
        );
        let (t0, c0) = (Instant::now(), cpu(agent.pid()));
        std::thread::sleep(window);
        let used = cpu(agent.pid()) - c0;
        let bytes = browser
            .eval("return performance.getEntriesByType('resource').reduce((n, e) => n + e.transferSize, 0)");
        let requests = browser.eval("return performance.getEntriesByType('resource').length");
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "open on {view:<9}: {:.0} requests/min, {:.0} KiB/min read, agent CPU {:.2} % of one core",
            requests.as_f64().unwrap() * 60.0 / secs,
            bytes.as_f64().unwrap() / 1024.0 * 60.0 / secs,
            used / secs * 100.0
        );
    }
    browser.goto("about:blank");
    std::thread::sleep(Duration::from_secs(2));
    let (t0, c0) = (Instant::now(), cpu(agent.pid()));
    std::thread::sleep(window);
    println!(
        "no page open      : agent CPU {:.2} % of one core (the demo workload's health checks and sampling)",
        (cpu(agent.pid()) - c0) / t0.elapsed().as_secs_f64() * 100.0
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MIN, f64::max)
}
