//! A connection to AWS's query-protocol APIs (Auto Scaling, EC2, CloudWatch): each call a
//! form-encoded POST signed with SigV4, its XML answer returned, its failures retried with
//! backoff when AWS says they may be (throttling, 5xx, a broken connection) and mapped to the
//! contract's errors when not.

use super::credentials::{CredentialSource, Provider};
use super::errors::{parse_error, AwsError};
use super::sigv4::{self, Credentials, Scope};
use crate::http::{sleep, HttpError, Request};
use crate::retry::{backoff_seconds, retry_after, unit_random};
use crate::{host, log};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One AWS API: its signing name, the first label of its regional endpoint, its version.
pub struct Service {
    pub name: &'static str,
    pub version: &'static str,
}

pub const AUTOSCALING: Service = Service { name: "autoscaling", version: "2011-01-01" };
pub const EC2: Service = Service { name: "ec2", version: "2016-11-15" };
/// CloudWatch signs and is reached as `monitoring`.
pub const CLOUDWATCH: Service = Service { name: "monitoring", version: "2010-08-01" };

/// How a plugin reaches AWS: the keys shared by the `aws` and `cloudwatch` plugins'
/// `[plugins.NAME.config]` tables (see docs/aws.md).
#[derive(Deserialize, Clone, PartialEq, Debug)]
pub struct Connection {
    /// `us-east-1`.
    pub region: String,
    /// One endpoint for every service (a test server, a VPC endpoint, a proxy); default
    /// `https://SERVICE.REGION.amazonaws.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Per service (`autoscaling`, `ec2`, `monitoring`): wins over `endpoint`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// `secrets` (default: the granted secrets `access_key_id`, `secret_access_key` and, for
    /// temporary keys, `session_token`) or `instance` (the instance role, through IMDSv2).
    #[serde(default)]
    pub credentials: CredentialSource,
    /// The instance metadata service, for `credentials = "instance"`.
    #[serde(default = "imds")]
    pub imds_endpoint: String,
    /// Limit on each HTTP request. Default 10s.
    #[serde(default = "ten_seconds", deserialize_with = "crate::duration::deserialize")]
    pub request_timeout: Duration,
    /// Extra attempts for a call AWS says may be retried (throttling, 5xx). Default 4.
    #[serde(default = "four")]
    pub retries: u32,
}

fn imds() -> String {
    "http://169.254.169.254".into()
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn four() -> u32 {
    4
}

/// The keys of [`Connection`], for a plugin's `metadata().config_keys`.
pub fn connection_keys() -> Vec<crate::ConfigKey> {
    use crate::key;
    vec![
        key("region", "the AWS region, e.g. eu-west-1", true),
        key("endpoint", "one endpoint for every service (a test server, a proxy); default https://SERVICE.REGION.amazonaws.com", false),
        key("endpoints", "per service: { autoscaling = URL, ec2 = URL, monitoring = URL }, wins over endpoint", false),
        key("credentials", "secrets (default: secrets access_key_id, secret_access_key, optional session_token) or instance (the instance role, IMDSv2)", false),
        key("imds_endpoint", "the instance metadata service for credentials = instance; default http://169.254.169.254", false),
        key("request_timeout", "limit on each HTTP request; default 10s", false),
        key("retries", "extra attempts for a call AWS says may be retried (throttling, 5xx); default 4", false),
    ]
}

impl Connection {
    /// The URL of `service`.
    pub fn endpoint(&self, service: &Service) -> String {
        if let Some(url) = self.endpoints.get(service.name).or(self.endpoint.as_ref()) {
            return url.trim_end_matches('/').to_string();
        }
        format!("https://{}.{}.amazonaws.com", service.name, self.region)
    }
}

thread_local! {
    /// This plugin instance's client and the config text it was made from.
    static CLIENT: std::cell::RefCell<Option<(String, Client)>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this plugin instance's client — made anew when the plugin's config (`host.config`)
/// changed, `connection` reading it from that JSON; otherwise kept, with the instance
/// credentials it cached — and logs how many requests `what` took.
pub fn with_client<T>(
    what: &str,
    connection: impl FnOnce(&str) -> Result<Connection, crate::PluginError>,
    f: impl FnOnce(&mut Client) -> Result<T, crate::PluginError>,
) -> Result<T, crate::PluginError> {
    let source = host::config();
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(s, _)| *s != source) {
            let made = Client::new(connection(&source)?);
            *slot = Some((source, made));
        }
        let (_, client) = slot.as_mut().expect("just set");
        client.requests = 0;
        let result = f(client);
        log::debug(&format!("{what}: {} AWS requests", client.requests));
        result
    })
}

/// A connection with its credentials, kept as long as the plugin instance.
pub struct Client {
    pub connection: Connection,
    provider: Provider,
    /// Requests sent since the caller last reset it, for the logs and the tests.
    pub requests: u32,
}

impl Client {
    pub fn new(connection: Connection) -> Client {
        let provider =
            Provider::new(connection.credentials, &connection.imds_endpoint, connection.request_timeout);
        Client { connection, provider, requests: 0 }
    }

    /// Calls `action` of `service` with `params` (already flattened: `Tags.member.1.Key`),
    /// and returns the XML answer. Retries what may be retried; the error names the call. For
    /// calls that set, tag or read: sending one twice does no harm.
    pub fn call(
        &mut self,
        service: &Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        self.call_with(service, action, params, true)
    }

    /// As [`Client::call`], for a call that must not be carried out twice (terminating with a
    /// decrement, modifying a volume): only a throttled answer — AWS did nothing — is retried.
    /// A 5xx or a broken connection is returned at once, saying the call may have been carried
    /// out: the caller's next describe tells.
    pub fn call_once(
        &mut self,
        service: &Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        self.call_with(service, action, params, false)
    }

    fn call_with(
        &mut self,
        service: &Service,
        action: &str,
        params: &[(String, String)],
        repeatable: bool,
    ) -> Result<String, AwsError> {
        let call = format!("{} {action}", service.name);
        let url = self.connection.endpoint(service);
        let body = form_body(service, action, params);
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            self.requests += 1;
            let err = match self.send(service, &url, &body, &call) {
                Ok(xml) => return Ok(xml),
                Err(e) => e,
            };
            let (err, hint) = err;
            if err.credentials() && !renewed && self.provider.renewable() {
                // Temporary credentials expired or were rotated: fetch them again, once.
                log::info(&format!("{call}: {} — fetching the instance's credentials again", err.code));
                self.provider.forget();
                renewed = true;
                continue;
            }
            if !repeatable && err.retryable() && !err.throttled() {
                let mut err = err;
                err.message
                    .push_str(" (it may have been carried out: not sent again; the next describe tells)");
                return Err(err);
            }
            if !err.retryable() || attempt > self.connection.retries {
                return Err(err);
            }
            let seconds = backoff_seconds(attempt, hint, unit_random());
            log::warn(&format!(
                "{call}: {}; attempt {} of {} in {seconds:.1} s",
                describe(&err),
                attempt + 1,
                self.connection.retries + 1
            ));
            sleep(Duration::from_secs_f64(seconds));
        }
    }

    /// One attempt; on failure the error and the server's `Retry-After`, if any.
    fn send(
        &mut self,
        service: &Service,
        url: &str,
        body: &str,
        call: &str,
    ) -> Result<String, (AwsError, Option<f64>)> {
        let fail = |status, code: &str, message: String| {
            (AwsError { call: call.to_string(), status, code: code.into(), message }, None)
        };
        let credentials = self.provider.get().map_err(|e| {
            let mut e = e;
            e.call = format!("{call} (credentials: {})", e.call);
            (e, None)
        })?;
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (authority, path) =
            rest.split_once('/').map_or((rest, String::new()), |(a, p)| (a, format!("/{p}")));
        let target = Target { authority, path: &format!("{path}/") };
        let headers =
            sign_form(&credentials, &self.connection.region, service.name, &target, body, host::now_ms());
        let mut http = Request::new("POST", &format!("{url}/")).timeout(self.connection.request_timeout);
        for (k, v) in &headers {
            http = http.header(k, v);
        }
        http.body = Some(body.as_bytes().to_vec());
        match http.send() {
            Ok(r) if (200..300).contains(&r.status) => Ok(r.text()),
            Ok(r) => {
                let (code, message) = parse_error(&r.body);
                let hint = retry_after(r.header("retry-after"));
                Err((AwsError { call: call.into(), status: r.status, code, message }, hint))
            }
            Err(HttpError::Denied) => {
                Err(fail(0, "Denied", format!("{url}: origin not in this plugin's allow_http")))
            }
            Err(HttpError::BadUrl(why)) => Err(fail(0, "BadUrl", why)),
            Err(e) => Err(fail(0, "", e.to_string())),
        }
    }
}

/// The content type of every query-protocol call.
pub const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Where a form is posted: `host[:port]` as in the URL, and the path (`/`).
pub struct Target<'a> {
    pub authority: &'a str,
    pub path: &'a str,
}

/// The body of a query-protocol call: `Action`, `Version`, then `params`, encoded.
pub fn form_body(service: &Service, action: &str, params: &[(String, String)]) -> String {
    let mut body = format!("Action={action}&Version={}", service.version);
    for (k, v) in params {
        body.push_str(&format!("&{}={}", sigv4::encode(k, true), sigv4::encode(v, true)));
    }
    body
}

/// The headers of a form-encoded `POST` of `body` to `target`, signed for `service` in
/// `region` at `now_ms`: the content type, `x-amz-date`, the session token if any, and
/// `authorization`. (`host` is signed, and sent by the HTTP client from the URL.)
pub fn sign_form(
    credentials: &Credentials,
    region: &str,
    service: &str,
    target: &Target,
    body: &str,
    now_ms: i64,
) -> Vec<(String, String)> {
    let signed_headers =
        [("host".to_string(), target.authority.to_string()), ("content-type".to_string(), FORM.to_string())];
    let amz_date = crate::time::amz_date(now_ms);
    let scope = Scope {
        region,
        service,
        amz_date: &amz_date,
        normalize: true,
        sign_body: false,
        omit_session_token: false,
    };
    let request = sigv4::Request {
        method: "POST",
        path: target.path,
        query: "",
        headers: &signed_headers,
        body: body.as_bytes(),
    };
    let mut headers = vec![("content-type".to_string(), FORM.to_string())];
    headers.extend(sigv4::sign(&request, credentials, &scope).headers);
    headers
}

fn describe(e: &AwsError) -> String {
    match (e.status, e.code.is_empty()) {
        (0, _) => e.message.clone(),
        (s, true) => format!("HTTP {s} {}", e.message),
        (s, false) => format!("HTTP {s} {}: {}", e.code, e.message),
    }
}

/// `Prefix.1.Key=…` style parameters: a list of strings under `prefix` (`InstanceIds.member`).
pub fn list_params(prefix: &str, values: &[String]) -> Vec<(String, String)> {
    values.iter().enumerate().map(|(i, v)| (format!("{prefix}.{}", i + 1), v.clone())).collect()
}
