//! What AWS's query APIs answer when a call fails, turned into the contract's error variants,
//! and which failures are worth another attempt. Pure: unit-tested natively with the bodies the
//! services send (Auto Scaling and CloudWatch: `<ErrorResponse><Error>…`; EC2:
//! `<Response><Errors><Error>…`).

use crate::PluginError;

/// A call that did not succeed: the call (`autoscaling SetDesiredCapacity`), the HTTP status (0
/// when there was no response), AWS's error code and message. Never holds a key or a signature.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    pub call: String,
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// Codes AWS uses to say "slow down": retried with backoff, then `unavailable`.
const THROTTLING: [&str; 10] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Codes of a transient failure on AWS's side: retried.
const TRANSIENT: [&str; 5] =
    ["InternalFailure", "InternalError", "ServiceUnavailable", "Unavailable", "RequestTimeout"];

/// Codes that say the credentials are wrong, expired or missing.
const CREDENTIALS: [&str; 9] = [
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "AuthFailure",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
];

impl AwsError {
    pub fn throttled(&self) -> bool {
        self.status == 429 || THROTTLING.contains(&self.code.as_str())
    }

    /// The credentials were refused: temporary ones may be renewed and the call tried once more.
    pub fn credentials(&self) -> bool {
        CREDENTIALS.contains(&self.code.as_str())
    }

    /// Whether sending the same request again may succeed. Every query-protocol call we make is
    /// safe to repeat (setting a capacity, terminating a named instance, tagging, reading), so
    /// a broken connection is retried too.
    pub fn retryable(&self) -> bool {
        self.throttled()
            || TRANSIENT.contains(&self.code.as_str())
            || self.code == "ResourceContention"
            || (self.status == 0 && self.code.is_empty())
            || self.status >= 500
    }

    /// The contract's variant for this failure; the message names the call and the code.
    pub fn into_plugin_error(self) -> PluginError {
        let text = match (self.status, self.code.is_empty()) {
            (0, _) => format!("{}: {}", self.call, self.message),
            (s, true) => format!("{}: HTTP {s}: {}", self.call, self.message),
            (s, false) => format!("{}: HTTP {s} {}: {}", self.call, self.code, self.message),
        };
        let code = self.code.as_str();
        if self.retryable() {
            return PluginError::Unavailable(text);
        }
        if self.credentials() {
            return PluginError::BadConfig(format!(
                "{text} (check the access key and secret granted to the plugin, and the region)"
            ));
        }
        match code {
            // Not a call AWS answered: the grant or the configuration is missing.
            "Denied" | "BadUrl" | "MissingCredentials" => PluginError::BadConfig(text),
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
                PluginError::BadConfig(format!("{text} (the credentials lack permission for this call)"))
            }
            "ScalingActivityInProgress" | "IncorrectModificationState" | "IncorrectState" => {
                PluginError::Conflict(text)
            }
            "LimitExceeded" | "VolumeLimitExceeded" | "InstanceLimitExceeded" | "VcpuLimitExceeded" => {
                PluginError::QuotaExceeded(text)
            }
            _ if code.ends_with("LimitExceeded") => PluginError::QuotaExceeded(text),
            "ValidationError"
            | "InvalidParameterValue"
            | "InvalidParameterCombination"
            | "MissingParameter"
            | "InvalidAction" => PluginError::BadConfig(text),
            _ if code.ends_with(".NotFound") || code.ends_with(".Malformed") => PluginError::BadConfig(text),
            _ if (400..500).contains(&self.status) => PluginError::InvalidInput(text),
            _ => PluginError::Other(text),
        }
    }
}

impl From<AwsError> for PluginError {
    fn from(e: AwsError) -> PluginError {
        e.into_plugin_error()
    }
}

/// `(code, message)` from an error body of either shape; the start of the body when it is not
/// XML (a proxy's page).
pub fn parse_error(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    if let Ok(doc) = roxmltree::Document::parse(&text) {
        let find = |name: &str| {
            doc.descendants()
                .find(|n| n.tag_name().name() == name)
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
        };
        if let Some(code) = find("Code") {
            return (code, find("Message").unwrap_or_default());
        }
    }
    let text = text.trim();
    let start: String = text.chars().take(300).collect();
    (String::new(), if start.is_empty() { "(empty body)".into() } else { start })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, body: &str) -> AwsError {
        let (code, message) = parse_error(body.as_bytes());
        AwsError { call: "autoscaling SetDesiredCapacity".into(), status, code, message }
    }

    /// Bodies as the query APIs send them (the shapes of AWS's documentation and moto's).
    const VALIDATION: &str = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>New SetDesiredCapacity value 6 is above max value 5 for the AutoScalingGroup.</Message></Error><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ErrorResponse>"#;
    const EC2: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"#;

    #[test]
    fn both_error_shapes_give_their_code_and_message() {
        let e = error(400, VALIDATION);
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.starts_with("New SetDesiredCapacity value 6"));
        assert_eq!(error(503, EC2).code, "RequestLimitExceeded");
        assert_eq!(
            parse_error(b"<html>Bad Gateway</html>"),
            (String::new(), "<html>Bad Gateway</html>".into())
        );
        assert_eq!(parse_error(b"").1, "(empty body)");
    }

    #[test]
    fn codes_map_to_the_contract_variants() {
        assert!(
            matches!(error(400, VALIDATION).into_plugin_error(), PluginError::BadConfig(m) if m.contains("ValidationError") && m.contains("SetDesiredCapacity"))
        );
        let throttled = error(400, &VALIDATION.replace("ValidationError", "Throttling"));
        assert!(throttled.retryable());
        assert!(matches!(throttled.into_plugin_error(), PluginError::Unavailable(_)));
        assert!(error(503, EC2).retryable());
        let busy = error(400, &VALIDATION.replace("ValidationError", "ScalingActivityInProgress"));
        assert!(!busy.retryable());
        assert!(matches!(busy.into_plugin_error(), PluginError::Conflict(_)));
        let contention = error(500, &VALIDATION.replace("ValidationError", "ResourceContention"));
        assert!(contention.retryable());
        let quota = error(400, &VALIDATION.replace("ValidationError", "LimitExceeded"));
        assert!(matches!(quota.into_plugin_error(), PluginError::QuotaExceeded(_)));
        let key = error(403, &VALIDATION.replace("ValidationError", "InvalidClientTokenId"));
        assert!(key.credentials());
        assert!(matches!(key.into_plugin_error(), PluginError::BadConfig(m) if m.contains("access key")));
        let denied = error(403, &VALIDATION.replace("ValidationError", "AccessDenied"));
        assert!(matches!(denied.into_plugin_error(), PluginError::BadConfig(m) if m.contains("permission")));
        let broken = AwsError {
            call: "ec2 DescribeVolumes".into(),
            status: 0,
            code: String::new(),
            message: "connection refused".into(),
        };
        assert!(broken.retryable());
        assert!(matches!(broken.into_plugin_error(), PluginError::Unavailable(m) if !m.contains("HTTP")));
        let denied = AwsError {
            call: "ec2 DescribeVolumes".into(),
            status: 0,
            code: "Denied".into(),
            message: "not in allow_http".into(),
        };
        assert!(!denied.retryable());
        assert!(matches!(denied.into_plugin_error(), PluginError::BadConfig(_)));
    }
}
