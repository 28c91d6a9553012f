//! A real headless browser for the page's tests: Debian's `chromium` driven through
//! `chromedriver` (W3C WebDriver: JSON over loopback HTTP). Without them the tests say loudly
//! that they were skipped; `.ci/run` installs both and sets `REQUIRE_BROWSER=1` (missing: fail).

use crate::common::{free_port, skipped, wait_for};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

const CHROMIUM: &str = "/usr/bin/chromium";

impl Browser {
    /// A fresh headless Chromium, or `None` (said loudly) when it or chromedriver is missing.
    pub fn start(test: &str) -> Option<Browser> {
        let driver_bin = which("chromedriver");
        if driver_bin.is_none() || !Path::new(CHROMIUM).exists() {
            assert!(
                std::env::var_os("REQUIRE_BROWSER").is_none(),
                "{test}: REQUIRE_BROWSER is set but chromium or chromedriver is missing"
            );
            skipped(&format!(
                "{test}: needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
            ));
            return None;
        }
        let port = free_port();
        let driver = Command::new(driver_bin.unwrap())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to answer", Duration::from_secs(20), || {
            http.get(format!("{base}/status")).send().ok().filter(|r| r.status().is_success())
        });
        let mut browser = Browser { driver, base, session: String::new(), http };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--hide-scrollbars"],
            },
        }}});
        let created = browser.call("POST", "/session", caps);
        browser.session = created["sessionId"].as_str().expect("a WebDriver session").to_string();
        Some(browser)
    }

    /// One WebDriver command; its `value`. Panics with the driver's message on an error.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).header("content-type", "application/json").body(body.to_string()),
        };
        let text = request.send().and_then(|r| r.text()).unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let reply: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("WebDriver {path}: {e}: {text}"));
        let value = reply["value"].clone();
        if let Some(error) = value.get("error") {
            panic!("WebDriver {path}: {error}: {}", value["message"]);
        }
        value
    }

    fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.session("POST", "/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Polls `script` until it returns something other than null, false or "": that value.
    pub fn wait(&self, what: &str, limit: Duration, script: &str) -> Value {
        wait_for(what, limit, || {
            let v = self.eval(script);
            (!(v.is_null() || v == json!(false) || v == json!(""))).then_some(v)
        })
    }

    /// Clicks the first element `selector` matches (through the page, as a user's click would
    /// end up: the element's own handler).
    pub fn click(&self, selector: &str) {
        let found = self.eval(&format!(
            "const e = document.querySelector({}); if (!e) return false; e.click(); return true;",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "nothing matches `{selector}` to click");
    }

    /// Resizes the window (as a user would: the page sees a `resize` event).
    pub fn resize(&self, width: u32, height: u32) {
        self.session("POST", "/window/rect", json!({ "width": width, "height": height }));
    }

    /// A PNG of the window, written to `target/screenshots/NAME.png`.
    pub fn screenshot(&self, name: &str) {
        let png = decode_base64(self.session("GET", "/screenshot", Value::Null).as_str().unwrap());
        let dir = crate::common::root().join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Standard base64 (screenshots), without a dependency for one use.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> =
        text.bytes().filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, c)| n | (value(*c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGVsbG8h"), b"hello!");
    assert_eq!(decode_base64("aGk="), b"hi");
}
