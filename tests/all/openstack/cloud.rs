//! The test's own view of the cloud, straight through the APIs (not through the plugin): which
//! servers a group has, quotas, flavors. Read from the standard `OS_*` variables, as OpenStack's
//! own client functional tests do.

use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Credentials {
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project: String,
    pub user_domain: String,
    pub project_domain: String,
}

impl Credentials {
    /// The cloud in `OS_*`, or `None` — and then a loud SKIPPED line on the real stderr (which
    /// the test harness does not capture), so a run without a cloud never looks like a pass.
    pub fn from_env(test: &str) -> Option<Credentials> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("OS_AUTH_URL"), var("OS_PASSWORD")) {
            (Some(auth_url), Some(password)) => Some(Credentials {
                auth_url,
                password,
                username: var("OS_USERNAME").unwrap_or_else(|| "admin".into()),
                project: var("OS_PROJECT_NAME").unwrap_or_else(|| "admin".into()),
                user_domain: var("OS_USER_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
                project_domain: var("OS_PROJECT_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
            }),
            _ => {
                crate::common::skipped(&format!(
                    "{test}: no OpenStack cloud configured (OS_AUTH_URL/OS_PASSWORD unset). \
                     To run it, source an admin openrc of a test cloud with a `demo` user and \
                     project, e.g. DevStack with VIRT_DRIVER=fake (docs/openstack.md, \"Tested \
                     against a real cloud\")."
                ));
                if std::env::var("REQUIRE_CLOUD").is_ok_and(|v| v == "1") {
                    panic!("REQUIRE_CLOUD=1 but no cloud is configured");
                }
                None
            }
        }
    }

    /// The same cloud as the non-admin `demo` user in project `demo` (the local cloud's member).
    pub fn demo(&self) -> Credentials {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
        Credentials {
            username: var("OS_DEMO_USERNAME", "demo"),
            project: var("OS_DEMO_PROJECT_NAME", "demo"),
            ..self.clone()
        }
    }

    /// The `[plugins.openstack]` table for these credentials (the password from `OS_PASSWORD`,
    /// which the local cloud's users share).
    pub fn plugin_toml(&self, compute_endpoint: Option<&str>, extra_allow: &[String], extra: &str) -> String {
        let origin = |url: &str| url.split('/').take(3).collect::<Vec<_>>().join("/");
        let compute = compute_endpoint.map(|c| format!("compute_endpoint = \"{c}\"\n")).unwrap_or_default();
        let mut allow = vec![format!("\"{}\"", origin(&self.auth_url))];
        // The catalog's compute and image endpoints (the local cloud's ports), and an override.
        if let Ok(c) = Cloud::login(self) {
            allow.push(format!("\"{}\"", origin(&c.compute)));
            for other in [&c.image, &c.volume].into_iter().flatten() {
                allow.push(format!("\"{}\"", origin(other)));
            }
        }
        if let Some(c) = compute_endpoint {
            allow.push(format!("\"{}\"", origin(c)));
        }
        allow.extend(extra_allow.iter().map(|o| format!("\"{o}\"")));
        format!(
            "[plugins.openstack]\nallow_http = [{}]\nsecrets = {{ password = {{ env = \"OS_PASSWORD\" }} }}\n\
             [plugins.openstack.config]\nauth_url = \"{}\"\nusername = \"{}\"\nproject_name = \"{}\"\n\
             user_domain_name = \"{}\"\nproject_domain_name = \"{}\"\n{compute}{extra}",
            allow.join(", "),
            self.auth_url,
            self.username,
            self.project,
            self.user_domain,
            self.project_domain
        )
    }
}

pub struct Cloud {
    http: reqwest::blocking::Client,
    token: String,
    pub compute: String,
    pub image: Option<String>,
    /// Cinder's block-storage v3 endpoint, when the cloud runs Cinder (`OSL_CINDER=1`).
    pub volume: Option<String>,
    pub project_id: String,
    pub user_id: String,
    identity: String,
}

impl Cloud {
    pub fn login(c: &Credentials) -> Result<Cloud, String> {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain}, "password": c.password}}},
            "scope": {"project": {"name": c.project, "domain": {"name": c.project_domain}}}}});
        let r = http
            .post(format!("{}/auth/tokens", c.auth_url.trim_end_matches('/')))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .map_err(|e| e.to_string())?;
        let token = r.headers().get("x-subject-token").ok_or("no token")?.to_str().unwrap().to_string();
        let doc: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
        let find = |kind: &str| {
            doc["token"]["catalog"].as_array().unwrap().iter().filter(|s| s["type"] == kind).find_map(|s| {
                s["endpoints"].as_array().unwrap().iter().find(|e| e["interface"] == "public")?["url"]
                    .as_str()
                    .map(String::from)
            })
        };
        Ok(Cloud {
            http,
            token,
            compute: find("compute").ok_or("no compute endpoint")?,
            image: find("image"),
            volume: find("block-storage").or_else(|| find("volumev3")),
            project_id: doc["token"]["project"]["id"].as_str().unwrap().to_string(),
            user_id: doc["token"]["user"]["id"].as_str().unwrap().to_string(),
            identity: c.auth_url.trim_end_matches('/').to_string(),
        })
    }

    fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(method, url, body, "compute 2.96")
    }

    fn send_as(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
        version: &str,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, url)
            .header("x-auth-token", &self.token)
            .header("openstack-api-version", version);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let r = r.send().unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn compute(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(method, &format!("{}{path}", self.compute), body)
    }

    /// A GET of a full URL (e.g. the image service's), with the token.
    pub fn get_url(&self, url: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, url, None)
    }

    /// A Cinder call at block-storage microversion 3.42 (panics without Cinder).
    pub fn volume(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let base = self.volume.as_ref().expect("the cloud runs Cinder");
        self.send_as(method, &format!("{base}{path}"), body, "volume 3.42")
    }

    /// Every server of `group` in this project, as Nova lists it (ERROR and deleting ones too).
    pub fn group_servers(&self, group: &str) -> Vec<Value> {
        let (code, doc) = self.compute(reqwest::Method::GET, "/servers/detail", None);
        assert_eq!(code, 200, "{doc}");
        doc["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["metadata"]["elastic-group"] == group)
            .cloned()
            .collect()
    }

    /// Deletes every server of `group` and waits until Nova no longer lists them.
    pub fn clean_group(&self, group: &str) {
        for s in self.group_servers(group) {
            self.compute(reqwest::Method::DELETE, &format!("/servers/{}", s["id"].as_str().unwrap()), None);
        }
        for _ in 0..120 {
            if self.group_servers(group).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("servers of {group} are still listed 30 s after deleting them");
    }

    /// The ID of project `name` (admin).
    pub fn project_id(&self, name: &str) -> String {
        let (code, doc) =
            self.send(reqwest::Method::GET, &format!("{}/projects?name={name}", self.identity), None);
        assert_eq!(code, 200, "{doc}");
        doc["projects"][0]["id"].as_str().unwrap().to_string()
    }

    /// Creates an application credential of this user and project: (id, secret).
    pub fn create_application_credential(&self, name: &str) -> (String, String) {
        let (code, doc) = self.send(
            reqwest::Method::POST,
            &format!("{}/users/{}/application_credentials", self.identity, self.user_id),
            Some(json!({"application_credential": {"name": name}})),
        );
        assert_eq!(code, 201, "{doc}");
        let c = &doc["application_credential"];
        (c["id"].as_str().unwrap().into(), c["secret"].as_str().unwrap().into())
    }

    pub fn delete_application_credential(&self, id: &str) {
        self.send(
            reqwest::Method::DELETE,
            &format!("{}/users/{}/application_credentials/{id}", self.identity, self.user_id),
            None,
        );
    }

    /// Sets Nova quotas of a project (admin), e.g. `{"instances": 2}`; -1 is unlimited.
    pub fn set_quota(&self, project_id: &str, quota: Value) {
        let (code, doc) = self.compute(
            reqwest::Method::PUT,
            &format!("/os-quota-sets/{project_id}"),
            Some(json!({ "quota_set": quota })),
        );
        assert_eq!(code, 200, "{doc}");
    }

    /// Creates a public flavor unless it exists (admin).
    pub fn ensure_flavor(&self, name: &str, ram_mb: u64, vcpus: u32, disk_gb: u32) {
        let (code, doc) = self.compute(
            reqwest::Method::POST,
            "/flavors",
            Some(json!({"flavor": {"name": name, "ram": ram_mb, "vcpus": vcpus, "disk": disk_gb}})),
        );
        assert!(code == 200 || code == 409, "creating flavor {name}: {code} {doc}");
    }
}

/// A group's servers as (name, status, flavor) — for messages.
pub fn summary(servers: &[Value]) -> Vec<(String, String, String)> {
    servers
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
                s["flavor"]["original_name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
