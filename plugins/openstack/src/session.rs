//! A logged-in connection to the cloud: the Keystone token (cached until shortly before it
//! expires, renewed on a 401), the endpoints from the service catalog, the negotiated compute
//! microversion, and requests with retries. Lives as long as the plugin instance.

use crate::config::{parse_version, Cloud};
use crate::errors::{message_of, retryable, ApiError};
use elastic_sdk::http::{sleep, HttpError, Request, Response};
use elastic_sdk::retry::{backoff_seconds, retry_after, unit_random};
use elastic_sdk::time::iso_to_ms;
use elastic_sdk::{host, log, PluginError};
use serde_json::{json, Value};
use std::time::Duration;

/// A token is renewed this long before Keystone says it expires.
const RENEW_BEFORE_MS: i64 = 120_000;

pub struct Token {
    value: String,
    expires_ms: i64,
    compute: String,
    image: Option<String>,
    volume: Option<String>,
}

pub struct Session {
    pub cloud: Cloud,
    /// The JSON the cloud config came from: a changed config means a new session.
    pub source: String,
    token: Option<Token>,
    /// Negotiated `(2, N)`.
    microversion: Option<(u32, u32)>,
    /// Requests sent during the current plugin call (reset by the caller), for the logs and tests.
    pub requests: u32,
}

pub enum Service {
    Compute,
    Image,
    /// Cinder block-storage v3, always at microversion 3.42 (extending an attached volume).
    Volume,
}

/// The block-storage microversion every volume call carries: 3.42 is the first to extend an
/// `in-use` volume (Pike); a cloud without it answers 406 and the error says so.
pub const VOLUME_MICROVERSION: &str = "3.42";

impl Session {
    pub fn new(cloud: Cloud, source: String) -> Session {
        Session { cloud, source, token: None, microversion: None, requests: 0 }
    }

    /// The compute microversion in use, negotiated on first need.
    pub fn microversion(&mut self) -> Result<(u32, u32), PluginError> {
        if let Some(v) = self.microversion {
            return Ok(v);
        }
        let wanted = self.cloud.wanted()?;
        let base = self.endpoint(&Service::Compute)?;
        // The version document sits at the endpoint itself (`…/v2.1`), no token needed.
        let r = self.send_retrying("GET", &base, None, None).map_err(ApiError::into_plugin_error)?;
        let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let max = doc["version"]["version"].as_str().and_then(parse_version);
        let chosen = negotiate(wanted, max);
        log::info(&format!(
            "compute API {base}: cloud offers up to {}, using {}.{}",
            max.map(|(a, b)| format!("{a}.{b}")).unwrap_or_else(|| "2.1 (no microversions)".into()),
            chosen.0,
            chosen.1
        ));
        self.microversion = Some(chosen);
        Ok(chosen)
    }

    /// A compute or image API call: `path` is relative to the service's endpoint.
    pub fn call(
        &mut self,
        method: &str,
        service: Service,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response, ApiError> {
        let mut reauthed = false;
        loop {
            let token =
                self.token().map_err(|e| ApiError { call: "Keystone auth".into(), status: 0, message: e })?;
            let base = self.endpoint(&service).map_err(|e| ApiError {
                call: format!("{method} {path}"),
                status: 0,
                message: format!("{e:?}"),
            })?;
            let mut headers = vec![("x-auth-token".to_string(), token)];
            if let Service::Compute = service {
                let (a, b) = self.microversion.unwrap_or((2, 1));
                headers.push(("openstack-api-version".into(), format!("compute {a}.{b}")));
                headers.push(("x-openstack-nova-api-version".into(), format!("{a}.{b}")));
            }
            if let Service::Volume = service {
                headers.push(("openstack-api-version".into(), format!("volume {VOLUME_MICROVERSION}")));
            }
            let url = format!("{}{}", base.trim_end_matches('/'), path);
            match self.send_retrying(method, &url, Some(headers), body.clone()) {
                Err(e) if e.status == 401 && !reauthed => {
                    // The token expired or was revoked: log in again once.
                    log::info(&format!("{method} {path}: token rejected (401); authenticating again"));
                    self.token = None;
                    reauthed = true;
                }
                Err(mut e) => {
                    e.call = format!("{method} {path}");
                    return Err(e);
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    /// The cached token, or a new one when it is missing or about to expire.
    fn token(&mut self) -> Result<String, String> {
        let now = host::now_ms();
        if let Some(t) = &self.token {
            if now < t.expires_ms - RENEW_BEFORE_MS {
                return Ok(t.value.clone());
            }
        }
        let t = self.authenticate().map_err(|e| format!("{}: {}", e.status, e.message))?;
        let value = t.value.clone();
        self.token = Some(t);
        Ok(value)
    }

    /// The URL of `service`, from the override or the catalog; `bad-config` when it has none.
    pub fn endpoint(&mut self, service: &Service) -> Result<String, PluginError> {
        if let (Service::Compute, Some(url)) = (service, &self.cloud.compute_endpoint) {
            return Ok(url.clone());
        }
        self.token().map_err(|e| PluginError::Unavailable(format!("Keystone auth: {e}")))?;
        let t = self.token.as_ref().expect("token just set");
        match service {
            Service::Compute => Ok(t.compute.clone()),
            Service::Image => t.image.clone().ok_or_else(|| {
                PluginError::BadConfig(
                    "the service catalog has no image (glance) endpoint: give `image` as an ID".into(),
                )
            }),
            Service::Volume => t.volume.clone().ok_or_else(|| {
                PluginError::BadConfig(
                    "the service catalog has no block-storage (cinder, volumev3) endpoint: a storage group needs Cinder".into(),
                )
            }),
        }
    }

    fn authenticate(&mut self) -> Result<Token, ApiError> {
        let c = &self.cloud;
        let fail = |message: String| ApiError { call: "Keystone auth".into(), status: 0, message };
        let identity = match c.auth_type.as_str() {
            "password" => {
                let user = c
                    .username
                    .as_ref()
                    .ok_or_else(|| fail("config: `username` is required for auth_type password".into()))?;
                let project = c.project_name.as_ref().ok_or_else(|| {
                    fail("config: `project_name` is required for auth_type password".into())
                })?;
                let password = host::secret("password").ok_or_else(|| {
                    fail("no secret `password` granted: add secrets = { password = { env = \"OS_PASSWORD\" } } to [plugins.<name>]".into())
                })?;
                json!({
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": user, "domain": {"name": c.user_domain_name}, "password": password}}},
                    "scope": {"project": {"name": project, "domain": {"name": c.project_domain_name}}}
                })
            }
            "application_credential" => {
                let id = c.application_credential_id.as_ref().ok_or_else(|| {
                    fail("config: `application_credential_id` is required for auth_type application_credential".into())
                })?;
                let secret = host::secret("application_credential_secret").ok_or_else(|| {
                    fail("no secret `application_credential_secret` granted to this plugin".into())
                })?;
                json!({"identity": {"methods": ["application_credential"],
                    "application_credential": {"id": id, "secret": secret}}})
            }
            other => {
                return Err(fail(format!(
                    "config: auth_type `{other}`: use password or application_credential"
                )))
            }
        };
        let url = format!("{}/auth/tokens", c.auth_url.trim_end_matches('/'));
        let r =
            self.send_retrying("POST", &url, None, Some(json!({ "auth": identity }))).map_err(|mut e| {
                e.call = "Keystone POST /auth/tokens".into();
                e
            })?;
        let value = r
            .header("x-subject-token")
            .ok_or_else(|| fail("Keystone answered without X-Subject-Token".into()))?
            .to_string();
        let doc: Value =
            serde_json::from_slice(&r.body).map_err(|e| fail(format!("Keystone token body: {e}")))?;
        let token = &doc["token"];
        let expires_ms =
            token["expires_at"].as_str().and_then(iso_to_ms).unwrap_or(host::now_ms() + 3_600_000);
        let catalog = token["catalog"].as_array().cloned().unwrap_or_default();
        let (interface, region) = (&self.cloud.interface, self.cloud.region_name.as_deref());
        let compute = match &self.cloud.compute_endpoint {
            Some(url) => url.clone(),
            None => find_endpoint(&catalog, "compute", interface, region).ok_or_else(|| {
                fail(format!(
                    "no compute endpoint (interface {interface}, region {}) in the service catalog",
                    region.unwrap_or("any")
                ))
            })?,
        };
        let image = find_endpoint(&catalog, "image", interface, region);
        let volume = find_endpoint(&catalog, "block-storage", interface, region)
            .or_else(|| find_endpoint(&catalog, "volumev3", interface, region));
        log::debug(&format!("authenticated; token valid for {} s", (expires_ms - host::now_ms()) / 1000));
        Ok(Token { value, expires_ms, compute, image, volume })
    }

    /// One request, repeated on retryable failures with backoff and jitter.
    fn send_retrying(
        &mut self,
        method: &str,
        url: &str,
        headers: Option<Vec<(String, String)>>,
        body: Option<Value>,
    ) -> Result<Response, ApiError> {
        let mut request = Request::new(method, url)
            .timeout(self.cloud.request_timeout)
            .header("accept", "application/json");
        for (k, v) in headers.unwrap_or_default() {
            request = request.header(&k, &v);
        }
        if let Some(b) = &body {
            request = request.json(b);
        }
        let path = url.split_once("://").and_then(|(_, r)| r.find('/').map(|i| &r[i..])).unwrap_or("/");
        let call = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.requests += 1;
            let (err, wait) = match request.send() {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r),
                Ok(r) => {
                    let err = ApiError { call: call.clone(), status: r.status, message: message_of(&r.body) };
                    if !retryable(method, r.status) {
                        return Err(err);
                    }
                    (err, retry_after(r.header("retry-after")))
                }
                Err(HttpError::Denied) => {
                    return Err(ApiError {
                        call,
                        status: 0,
                        message: format!("{url}: origin not in this plugin's allow_http"),
                    })
                }
                Err(HttpError::BadUrl(why)) => return Err(ApiError { call, status: 0, message: why }),
                Err(e) => {
                    let err = ApiError { call: call.clone(), status: 0, message: e.to_string() };
                    // A POST whose connection broke may have been carried out: never repeated.
                    // The caller reconciles from what the cloud lists instead.
                    if method == "POST" {
                        return Err(err);
                    }
                    (err, None)
                }
            };
            if attempt > self.cloud.retries {
                return Err(err);
            }
            let seconds = backoff_seconds(attempt, wait, unit_random());
            log::warn(&format!(
                "{}: {}; attempt {} of {} in {:.1} s",
                err.call,
                if err.status == 0 {
                    err.message.clone()
                } else {
                    format!("HTTP {} {}", err.status, err.message)
                },
                attempt + 1,
                self.cloud.retries + 1,
                seconds
            ));
            sleep(Duration::from_secs_f64(seconds));
        }
    }
}

/// The microversion to use: what we want, lowered to the cloud's maximum; 2.1 when the cloud
/// does not say (a pre-microversion v2.1 endpoint).
pub fn negotiate(wanted: (u32, u32), max: Option<(u32, u32)>) -> (u32, u32) {
    match max {
        Some(max) if max < wanted => max,
        Some(_) => wanted,
        None => (2, 1),
    }
}

/// The URL of `kind` in a Keystone v3 catalog for `interface`, in `region` (any when `None`).
pub fn find_endpoint(catalog: &[Value], kind: &str, interface: &str, region: Option<&str>) -> Option<String> {
    catalog
        .iter()
        .filter(|s| s["type"] == kind)
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find_map(|e| {
            let region_ok = region.is_none_or(|r| e["region_id"] == r || e["region"] == r);
            (e["interface"] == interface && region_ok)
                .then(|| e["url"].as_str().map(str::to_string))
                .flatten()
        })
}

/// Eight random hex digits, for server names.
pub fn random_suffix() -> String {
    format!("{:08x}", wasip2::random::random::get_random_u64() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_lowers_to_the_cloud() {
        assert_eq!(negotiate((2, 96), Some((2, 104))), (2, 96));
        assert_eq!(negotiate((2, 96), Some((2, 60))), (2, 60));
        assert_eq!(negotiate((2, 96), None), (2, 1));
    }

    #[test]
    fn endpoints_by_interface_and_region() {
        let catalog: Vec<Value> = serde_json::from_str(
            r#"[{"type":"identity","endpoints":[{"interface":"public","region_id":"RegionOne","url":"http://k"}]},
                {"type":"compute","endpoints":[
                  {"interface":"internal","region_id":"RegionOne","url":"http://int"},
                  {"interface":"public","region_id":"RegionTwo","url":"http://two"},
                  {"interface":"public","region_id":"RegionOne","url":"http://one"}]}]"#,
        )
        .unwrap();
        assert_eq!(
            find_endpoint(&catalog, "compute", "public", Some("RegionOne")).as_deref(),
            Some("http://one")
        );
        assert_eq!(find_endpoint(&catalog, "compute", "public", None).as_deref(), Some("http://two"));
        assert_eq!(find_endpoint(&catalog, "compute", "internal", None).as_deref(), Some("http://int"));
        assert_eq!(find_endpoint(&catalog, "image", "public", None), None);
    }
}
