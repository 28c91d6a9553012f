//! A storage group against the real Cinder (`../shared/openstack` started with `OSL_CINDER=1`):
//! a volume attached to a Nova server, grown by the agent through the openstack plugin's
//! `volumes` interface as its fill crosses the target, never shrunk, held by the daily limit.

use super::cloud::{Cloud, Credentials};
use super::{cloud_or_skip, image, wait_journal};
use crate::common::{group_status, load_source, plugin, plugin_dir, wait_for, Agent, JsonServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// A 1 GiB volume attached to a server of its own, both deleted at the end.
struct Attached<'a> {
    cloud: &'a Cloud,
    volume: String,
    server: String,
    device: String,
}

impl<'a> Attached<'a> {
    fn create(cloud: &'a Cloud, name: &str) -> Attached<'a> {
        let (code, doc) =
            cloud.volume(Method::POST, "/volumes", Some(json!({"volume": {"size": 1, "name": name}})));
        assert_eq!(code, 202, "creating volume {name}: {doc}");
        let volume = doc["volume"]["id"].as_str().unwrap().to_string();
        let mut a = Attached { cloud, volume, server: String::new(), device: String::new() };
        a.wait_volume("available", 1);
        let server = json!({"server": {"name": name, "imageRef": a.image_id(), "flavorRef": a.flavor_id("m1.tiny"),
            "networks": "none", "metadata": {"elastic-group": name}}});
        let (code, doc) = cloud.compute(Method::POST, "/servers", Some(server));
        assert_eq!(code, 202, "creating server {name}: {doc}");
        a.server = doc["server"]["id"].as_str().unwrap().to_string();
        wait_for("the server ACTIVE", LIMIT, || {
            let (_, s) = cloud.compute(Method::GET, &format!("/servers/{}", a.server), None);
            assert_ne!(s["server"]["status"], "ERROR", "{s}");
            (s["server"]["status"] == "ACTIVE").then_some(())
        });
        let attach = json!({"volumeAttachment": {"volumeId": a.volume}});
        let (code, doc) = cloud.compute(
            Method::POST,
            &format!("/servers/{}/os-volume_attachments", a.server),
            Some(attach),
        );
        assert_eq!(code, 200, "attaching: {doc}");
        a.device = doc["volumeAttachment"]["device"].as_str().unwrap().to_string();
        a.wait_volume("in-use", 1);
        a
    }

    fn image_id(&self) -> String {
        let base = self.cloud.image.as_ref().expect("an image endpoint");
        let (code, doc) = self.cloud.get_url(&format!("{base}/v2/images?name={}", image()));
        assert_eq!(code, 200, "{doc}");
        doc["images"][0]["id"].as_str().expect("the test image").to_string()
    }

    fn flavor_id(&self, name: &str) -> String {
        let (_, doc) = self.cloud.compute(Method::GET, "/flavors", None);
        let found = doc["flavors"].as_array().unwrap().iter().find(|f| f["name"] == name).cloned();
        found.expect("flavor m1.tiny")["id"].as_str().unwrap().to_string()
    }

    fn show(&self) -> Value {
        let (code, doc) = self.cloud.volume(Method::GET, &format!("/volumes/{}", self.volume), None);
        assert_eq!(code, 200, "{doc}");
        doc["volume"].clone()
    }

    fn wait_volume(&self, status: &str, size: u64) -> Value {
        wait_for(&format!("volume {} {status} at {size} GiB", self.volume), LIMIT, || {
            let v = self.show();
            assert!(!v["status"].as_str().unwrap().starts_with("error"), "{v}");
            (v["status"] == status && v["size"] == size).then_some(v)
        })
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if !self.server.is_empty() {
            self.cloud.compute(Method::DELETE, &format!("/servers/{}", self.server), None);
            for _ in 0..120 {
                if self.cloud.compute(Method::GET, &format!("/servers/{}", self.server), None).0 == 404 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        for _ in 0..120 {
            if self.show()["status"] != "in-use" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        self.cloud.volume(Method::DELETE, &format!("/volumes/{}", self.volume), None);
    }
}

/// The cloud's Cinder, or `None` after a loud SKIPPED line (a failure under `REQUIRE_CLOUD=1`:
/// CI starts the cloud with Cinder).
fn cinder(creds: &Credentials, test: &str) -> Option<Cloud> {
    let cloud = Cloud::login(creds).unwrap_or_else(|e| panic!("logging in to {}: {e}", creds.auth_url));
    if cloud.volume.is_none() {
        crate::common::skipped(&format!(
            "{test}: the cloud has no block-storage endpoint; start ../shared/openstack with OSL_CINDER=1"
        ));
        assert!(
            !std::env::var("REQUIRE_CLOUD").is_ok_and(|v| v == "1"),
            "REQUIRE_CLOUD=1 but the cloud runs no Cinder"
        );
        return None;
    }
    Some(cloud)
}

fn guardrails(d: &Value) -> Vec<&str> {
    d["steps"].as_array().into_iter().flatten().filter_map(|s| s["guardrail"].as_str()).collect()
}

#[test]
fn a_storage_group_grows_an_attached_cinder_volume_1_2_3_never_shrinks_and_keeps_its_daily_limit() {
    const TEST: &str = "openstack::volumes::a_storage_group_grows_an_attached_cinder_volume";
    let Some((creds, _serial)) = cloud_or_skip(TEST) else { return };
    let Some(cloud) = cinder(&creds, TEST) else { return };
    let name = format!("os-vol-{}", std::process::id());
    let attached = Attached::create(&cloud, &name);
    // The fill, as a filesystem on the volume would report it: used / size, the size read from
    // Cinder every 200 ms (so a grown volume is less full, as it would be).
    let used_mib = AtomicU64::new(900);
    let app = JsonServer::start(r#"{"load": 0.9}"#);
    let group = format!(
        "[[group]]\nname = \"{name}\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"1s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 0.7 }}\nbackend = \"openstack\"\n\
         backend_config = {{ server = \"{name}\", device = \"{}\" }}\n\
         [group.storage]\nmin_size = \"1GiB\"\nmax_size = \"10GiB\"\nper_day = 2\ncooldown = \"10s\"\n",
        attached.device
    );
    let config = format!("{}{}\n{group}", load_source(&app), creds.plugin_toml(None, &[], ""));
    let dir = plugin_dir(&[&plugin("http-json"), &plugin("target-tracking"), &plugin("openstack")]);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Set on the way out, a failed assertion included: the scope then ends, not hangs.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&done);
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let size = attached.show()["size"].as_u64().unwrap_or(1).max(1);
                let fill = used_mib.load(Ordering::Relaxed) as f64 / (size * 1024) as f64;
                app.set_body(&format!(r#"{{"load": {fill}}}"#));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let agent = Agent::start(dir.path(), &config);
        let after = |t: i64| move |d: &Value| d["t_ms"].as_i64().unwrap() > t;

        // 0.9 full at 1 GiB → 1.29 GiB wanted → 2.
        let first = wait_journal(&agent, &name, "the first resize", |d| d["action"] == "scale");
        assert_eq!((first["current"].as_u64(), first["target"].as_u64()), (Some(1), Some(2)), "{first}");
        let outcome = first["outcome"].as_str().unwrap();
        let expected =
            format!("extended Cinder volume {} from 1 to 2 GiB (online, attached", attached.volume);
        assert!(outcome.starts_with(&expected), "{outcome}");
        attached.wait_volume("in-use", 2);
        crate::common::report(&format!(
            "openstack storage group: Cinder in-use extend 1 → 2 GiB, accepted → in-use at 2 GiB: {} ms in the backend call",
            first["backend_ms"]
        ));
        // At 2 GiB it is 45 % full: held, by the policy's own recommendation.
        let t1 = first["t_ms"].as_i64().unwrap();
        let held = wait_journal(&agent, &name, "a hold at 2 GiB", |d| {
            after(t1)(d) && d["current"] == 2 && d["recommendation"].as_f64().is_some_and(|r| r <= 2.0)
        });
        assert_eq!(held["action"], "hold", "{held}");
        assert!(guardrails(&held).iter().all(|g| *g == "never-shrink"), "the policy's own size: {held}");

        // It fills again: 1.8 GiB used → 2.57 wanted → 3, once the 10 s cooldown passed.
        used_mib.store(1800, Ordering::Relaxed);
        let second =
            wait_journal(&agent, &name, "the second resize", |d| after(t1)(d) && d["action"] == "scale");
        assert_eq!((second["current"].as_u64(), second["target"].as_u64()), (Some(2), Some(3)), "{second}");
        assert!(second["t_ms"].as_i64().unwrap() - t1 >= 10_000, "the cooldown held it: {second}");
        let t2 = second["t_ms"].as_i64().unwrap();
        let cooled = crate::common::decisions(&agent, &name).into_iter().any(|d| {
            after(t1)(&d) && d["t_ms"].as_i64().unwrap() < t2 && guardrails(&d).contains(&"cooldown")
        });
        assert!(cooled, "a hold by the cooldown between the two resizes");
        let volume = attached.wait_volume("in-use", 3);
        assert_eq!(volume["metadata"]["elastic-decision"], format!("{name}#{t2}"), "{volume}");

        // Full again: 4 GiB wanted, but two resizes in 24 h is this group's limit.
        used_mib.store(2700, Ordering::Relaxed);
        let limited = wait_journal(&agent, &name, "the daily limit", |d| {
            after(t2)(d) && guardrails(d).contains(&"per-day")
        });
        assert_eq!(
            (limited["action"].as_str(), limited["target"].as_u64()),
            (Some("hold"), Some(3)),
            "{limited}"
        );
        assert!(limited["recommendation"].as_f64().unwrap() > 3.0, "{limited}");

        // Emptied: 1 GiB is enough, and a volume never shrinks.
        used_mib.store(300, Ordering::Relaxed);
        let t3 = limited["t_ms"].as_i64().unwrap();
        // The window may still mix full and empty points (a recommendation of exactly 3 GiB, which
        // the guardrail notes as "what is recommended"): wait for one below the volume's size.
        let kept = wait_journal(&agent, &name, "never shrink", |d| {
            after(t3)(d)
                && guardrails(d).contains(&"never-shrink")
                && d["recommendation"].as_f64().is_some_and(|r| r < 3.0)
        });
        assert_eq!(
            (kept["action"].as_str(), kept["current"].as_u64(), kept["target"].as_u64()),
            (Some("hold"), Some(3), Some(3)),
            "{kept}"
        );
        assert!(kept["steps"][0]["why"].as_str().unwrap().contains("a volume never shrinks"), "{kept}");
        let status = group_status(&agent, &name);
        assert_eq!(status["storage"]["volume"], attached.volume.as_str(), "{status}");
        assert_eq!(
            (status["current"].as_u64(), status["storage"]["unit"].as_str()),
            (Some(3), Some("GiB")),
            "{status}"
        );
        drop(agent);
        assert_eq!(attached.show()["size"], 3, "nothing grew or shrank the volume after the limit");
    });
}
