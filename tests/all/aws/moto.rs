//! A real AWS API server on loopback: `moto` in server mode (PyPI `moto[server]`, pinned in
//! `.ci/run`), one per test, started here and killed on drop. The test talks to it as any AWS
//! client does: form-encoded query-protocol calls signed with SigV4 (the SDK's signer — moto
//! checks the signature once `enable_auth` turned its IAM checks on).

use crate::common::{free_port, root, skipped, wait_for};
use elastic_sdk::aws::client::{form_body, sign_form, Target};
use elastic_sdk::aws::sigv4;
use elastic_sdk::aws::{Service, AUTOSCALING, CLOUDWATCH, EC2};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub const REGION: &str = "us-east-1";
/// An Amazon Linux image moto knows.
pub const IMAGE: &str = "ami-12c6146b";

pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    /// The keys the test signs with: moto's defaults until `enable_auth`.
    keys: Mutex<(String, String)>,
}

/// `moto_server`: `$MOTO_SERVER`, the clone's `target/moto` (what `.ci/run` installs), or PATH.
fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Some(p.into());
    }
    let local = root().join("target/moto/bin/moto_server");
    if local.exists() {
        return Some(local);
    }
    let found = Command::new("sh").args(["-c", "command -v moto_server"]).output().ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    (found.status.success() && !path.is_empty()).then(|| path.into())
}

impl Moto {
    /// A fresh server; `None` after a loud SKIPPED line when moto is not installed.
    pub fn start_or_skip(test: &str) -> Option<Moto> {
        let Some(bin) = binary() else {
            skipped(&format!(
                "{test}: no moto_server here (python3 -m venv target/moto && target/moto/bin/pip install 'moto[server]==5.2.6')"
            ));
            return None;
        };
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let moto = Moto {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            keys: Mutex::new(("testing".into(), "testing".into())),
        };
        wait_for("moto_server to answer", Duration::from_secs(60), || {
            reqwest::blocking::get(format!("{}/moto-api/data.json", moto.url()))
                .ok()
                .filter(|r| r.status().is_success())
        });
        Some(moto)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls `action` of `service` (`autoscaling`, `ec2`, `monitoring`, `iam`), signed; the XML
    /// answer, or the status and body of a refusal.
    pub fn try_call(
        &self,
        service: &str,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<String, (u16, String)> {
        let api = match service {
            "autoscaling" => AUTOSCALING,
            "ec2" => EC2,
            "monitoring" => CLOUDWATCH,
            "iam" => Service { name: "iam", version: "2010-05-08" },
            "sts" => Service { name: "sts", version: "2011-06-15" },
            other => panic!("no API version for {other}"),
        };
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let body = form_body(&api, action, &params);
        let (key, secret) = self.keys.lock().unwrap().clone();
        let credentials =
            sigv4::Credentials { access_key_id: key, secret_access_key: secret, session_token: None };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let authority = self.addr.to_string();
        let target = Target { authority: &authority, path: "/" };
        let headers = sign_form(&credentials, REGION, service, &target, &body, now);
        let mut http = reqwest::blocking::Client::new().post(format!("{}/", self.url()));
        for (k, v) in &headers {
            http = http.header(k, v);
        }
        let r = http.body(body).send().map_err(|e| (0, e.to_string()))?;
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err((status, text))
        }
    }

    pub fn call(&self, service: &str, action: &str, params: &[(&str, String)]) -> String {
        self.try_call(service, action, params)
            .unwrap_or_else(|(s, b)| panic!("{service} {action}: HTTP {s}: {b}"))
    }

    /// A launch template and an Auto Scaling group `name` (MinSize 0, MaxSize 5) with `desired`
    /// instances.
    pub fn create_asg(&self, name: &str, desired: u32) {
        self.create_asg_within(name, desired, 5);
    }

    /// As [`Moto::create_asg`], with MaxSize `max`.
    pub fn create_asg_within(&self, name: &str, desired: u32, max: u32) {
        self.call(
            "ec2",
            "CreateLaunchTemplate",
            &[
                ("LaunchTemplateName", format!("{name}-lt")),
                ("LaunchTemplateData.ImageId", IMAGE.into()),
                ("LaunchTemplateData.InstanceType", "t3.micro".into()),
            ],
        );
        self.call(
            "autoscaling",
            "CreateAutoScalingGroup",
            &[
                ("AutoScalingGroupName", name.into()),
                ("LaunchTemplate.LaunchTemplateName", format!("{name}-lt")),
                ("MinSize", "0".into()),
                ("MaxSize", max.to_string()),
                ("DesiredCapacity", desired.to_string()),
                ("AvailabilityZones.member.1", format!("{REGION}a")),
            ],
        );
    }

    /// The group's desired capacity and its instances (id, lifecycle state).
    pub fn asg(&self, name: &str) -> (u32, Vec<(String, String)>) {
        let xml = self.call(
            "autoscaling",
            "DescribeAutoScalingGroups",
            &[("AutoScalingGroupNames.member.1", name.into())],
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let text = |n: roxmltree::Node, tag: &str| {
            n.children()
                .find(|c| c.tag_name().name() == tag)
                .and_then(|c| c.text())
                .unwrap_or_default()
                .to_string()
        };
        let group = doc.descendants().find(|n| n.tag_name().name() == "member").expect("the group");
        let desired = text(group, "DesiredCapacity").parse().unwrap();
        let instances = doc
            .descendants()
            .filter(|n| {
                n.tag_name().name() == "member"
                    && n.children().any(|c| c.tag_name().name() == "LifecycleState")
            })
            .map(|n| (text(n, "InstanceId"), text(n, "LifecycleState")))
            .collect();
        (desired, instances)
    }

    /// The tags of an EC2 resource (instance, volume): key → value.
    pub fn tags(&self, resource: &str) -> Vec<(String, String)> {
        let xml = self.call(
            "ec2",
            "DescribeTags",
            &[("Filter.1.Name", "resource-id".into()), ("Filter.1.Value.1", resource.into())],
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.tag_name().name() == "item")
            .map(|n| {
                let get = |t: &str| {
                    n.children()
                        .find(|c| c.tag_name().name() == t)
                        .and_then(|c| c.text())
                        .unwrap_or_default()
                        .to_string()
                };
                (get("key"), get("value"))
            })
            .collect()
    }

    /// Turns moto's IAM checks on (signatures verified from now on) for a new user allowed
    /// everything; returns its access key and secret, which the test then signs with.
    pub fn enable_auth(&self) -> (String, String) {
        self.call("iam", "CreateUser", &[("UserName", "elastic".into())]);
        let policy = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#;
        self.call(
            "iam",
            "PutUserPolicy",
            &[
                ("UserName", "elastic".into()),
                ("PolicyName", "all".into()),
                ("PolicyDocument", policy.into()),
            ],
        );
        // A role to assume for temporary credentials (`assume_role`), made while moto still
        // takes any key.
        let trust = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}"#;
        self.call(
            "iam",
            "CreateRole",
            &[("RoleName", "elastic".into()), ("AssumeRolePolicyDocument", trust.into())],
        );
        self.call(
            "iam",
            "PutRolePolicy",
            &[
                ("RoleName", "elastic".into()),
                ("PolicyName", "all".into()),
                ("PolicyDocument", policy.into()),
            ],
        );
        let xml = self.call("iam", "CreateAccessKey", &[("UserName", "elastic".into())]);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let get = |t: &str| {
            doc.descendants().find(|n| n.tag_name().name() == t).and_then(|n| n.text()).unwrap().to_string()
        };
        let keys = (get("AccessKeyId"), get("SecretAccessKey"));
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url()))
            .body("0")
            .send()
            .unwrap();
        assert!(r.status().is_success(), "reset-auth: {}", r.status());
        *self.keys.lock().unwrap() = keys.clone();
        keys
    }
}

impl Moto {
    /// Temporary credentials (key, secret, session token) from STS `AssumeRole`, after
    /// `enable_auth`: moto then checks the token of every request signed with them.
    pub fn assume_role(&self) -> (String, String, String) {
        let xml = self.call(
            "sts",
            "AssumeRole",
            &[
                ("RoleArn", "arn:aws:iam::123456789012:role/elastic".into()),
                ("RoleSessionName", "elastic-agent".into()),
            ],
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let get = |t: &str| {
            doc.descendants().find(|n| n.tag_name().name() == t).and_then(|n| n.text()).unwrap().to_string()
        };
        (get("AccessKeyId"), get("SecretAccessKey"), get("SessionToken"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
