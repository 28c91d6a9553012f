//! Where a plugin's AWS credentials come from: the secrets the operator granted it (static keys,
//! or temporary ones with their session token), or the instance's role through the instance
//! metadata service, IMDSv2 (a session token first, then the role's keys, renewed before they
//! expire).

use super::errors::AwsError;
use super::sigv4::Credentials;
use crate::host;
use crate::http::Request;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize, Clone, Copy, PartialEq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// Secrets `access_key_id`, `secret_access_key`, optional `session_token`.
    #[default]
    Secrets,
    /// The EC2 instance's role, through IMDSv2.
    Instance,
}

/// Instance credentials are renewed this long before they expire.
const RENEW_BEFORE_MS: i64 = 5 * 60_000;

pub struct Provider {
    source: CredentialSource,
    imds: String,
    timeout: Duration,
    cached: Option<(Credentials, i64)>,
}

impl Provider {
    pub fn new(source: CredentialSource, imds: &str, timeout: Duration) -> Provider {
        Provider { source, imds: imds.trim_end_matches('/').to_string(), timeout, cached: None }
    }

    /// Whether asking again may give other credentials.
    pub fn renewable(&self) -> bool {
        self.source == CredentialSource::Instance
    }

    pub fn forget(&mut self) {
        self.cached = None;
    }

    /// The credentials to sign with now.
    pub fn get(&mut self) -> Result<Credentials, AwsError> {
        match self.source {
            // Read on every call: a rotated secret file is used at once.
            CredentialSource::Secrets => from_secrets(),
            CredentialSource::Instance => {
                let now = host::now_ms();
                if let Some((c, expires)) = &self.cached {
                    if now < expires - RENEW_BEFORE_MS {
                        return Ok(c.clone());
                    }
                }
                let (c, expires) = self.fetch_from_imds()?;
                self.cached = Some((c.clone(), expires));
                Ok(c)
            }
        }
    }

    /// IMDSv2: `PUT /latest/api/token`, then the role's name and its keys with that token.
    fn fetch_from_imds(&self) -> Result<(Credentials, i64), AwsError> {
        let fail = |call: &str, status: u16, message: String| AwsError {
            call: format!("instance metadata {call}"),
            status,
            code: String::new(),
            message,
        };
        let token = Request::new("PUT", &format!("{}/latest/api/token", self.imds))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(self.timeout)
            .send()
            .map_err(|e| fail("PUT /latest/api/token", 0, e.to_string()))?;
        if token.status != 200 {
            return Err(fail("PUT /latest/api/token", token.status, token.text()));
        }
        let token = token.text();
        let get = |path: &str| {
            let r = Request::get(&format!("{}{path}", self.imds))
                .header("x-aws-ec2-metadata-token", token.trim())
                .timeout(self.timeout)
                .send()
                .map_err(|e| fail(&format!("GET {path}"), 0, e.to_string()))?;
            match r.status {
                200 => Ok(r.text()),
                s => Err(fail(&format!("GET {path}"), s, r.text().chars().take(200).collect())),
            }
        };
        let base = "/latest/meta-data/iam/security-credentials/";
        let roles = get(base)?;
        let role = roles.lines().next().map(str::trim).filter(|r| !r.is_empty()).ok_or_else(|| AwsError {
            call: format!("instance metadata GET {base}"),
            status: 200,
            code: "MissingCredentials".into(),
            message:
                "the instance has no IAM role: attach an instance profile, or use credentials = \"secrets\""
                    .into(),
        })?;
        parse_role(&get(&format!("{base}{role}"))?, host::now_ms()).ok_or_else(|| {
            fail(&format!("GET {base}{role}"), 200, "no AccessKeyId/SecretAccessKey in the answer".into())
        })
    }
}

/// The keys of a role document: `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`.
fn parse_role(text: &str, now_ms: i64) -> Option<(Credentials, i64)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let credentials = Credentials {
        access_key_id: v["AccessKeyId"].as_str()?.to_string(),
        secret_access_key: v["SecretAccessKey"].as_str()?.to_string(),
        session_token: v["Token"].as_str().map(String::from),
    };
    // Without an expiry, ask again in 10 minutes.
    let expires = v["Expiration"]
        .as_str()
        .and_then(crate::time::iso_to_ms)
        .unwrap_or(now_ms + 600_000 + RENEW_BEFORE_MS);
    Some((credentials, expires))
}

fn from_secrets() -> Result<Credentials, AwsError> {
    let missing = |name: &str| {
        AwsError {
        call: format!("secret {name}"),
        status: 0,
        code: "MissingCredentials".into(),
        message: format!(
            "no secret `{name}` granted: [plugins.NAME] secrets = {{ access_key_id = {{ env = \"AWS_ACCESS_KEY_ID\" }}, secret_access_key = {{ env = \"AWS_SECRET_ACCESS_KEY\" }} }}, or credentials = \"instance\""
        ),
    }
    };
    let access_key_id = host::secret("access_key_id").ok_or_else(|| missing("access_key_id"))?;
    let secret_access_key = host::secret("secret_access_key").ok_or_else(|| missing("secret_access_key"))?;
    let session_token = host::secret("session_token").filter(|t| !t.is_empty());
    Ok(Credentials {
        access_key_id: access_key_id.trim().into(),
        secret_access_key: secret_access_key.trim().into(),
        session_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_document_gives_keys_token_and_expiry() {
        let doc = r#"{"Code":"Success","LastUpdated":"2026-12-05T02:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret","Token":"token","Expiration":"2026-12-05T08:00:00Z"}"#;
        let (c, expires) = parse_role(doc, 0).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.session_token.as_deref()), ("ASIAEXAMPLE", Some("token")));
        assert_eq!(expires, crate::time::iso_to_ms("2026-12-05T08:00:00Z").unwrap());
        assert!(parse_role(r#"{"Code":"Success"}"#, 0).is_none());
        let no_expiry = r#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#;
        assert_eq!(parse_role(no_expiry, 1000).unwrap().1, 1000 + 600_000 + RENEW_BEFORE_MS);
    }
}
