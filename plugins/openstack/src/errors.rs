//! Turning what Nova and Keystone answer into the contract's error variants, and deciding
//! which failures are worth another attempt. Pure functions: unit-tested natively with bodies
//! captured from the real services.

use elastic_sdk::PluginError;

/// A request that did not succeed: the call (`POST /servers`), the HTTP status (0 when there was
/// no response) and the service's own message. Never holds a token or a password.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub call: String,
    pub status: u16,
    pub message: String,
}

impl ApiError {
    /// The contract's variant for this failure. The message names the call.
    pub fn into_plugin_error(self) -> PluginError {
        let text = if self.status == 0 {
            format!("{}: {}", self.call, self.message)
        } else {
            format!("{}: HTTP {}: {}", self.call, self.status, self.message)
        };
        let lower = self.message.to_ascii_lowercase();
        match self.status {
            0 | 429 | 500..=599 => PluginError::Unavailable(text),
            401 => PluginError::BadConfig(format!("{text} (check the credentials and their secret grant)")),
            403 | 413 if lower.contains("quota") => PluginError::QuotaExceeded(text),
            403 => PluginError::BadConfig(format!("{text} (the user lacks permission for this)")),
            409 => PluginError::Conflict(text),
            400 | 404 => PluginError::BadConfig(text),
            _ => PluginError::Other(text),
        }
    }
}

/// The message inside an OpenStack error body: Nova wraps it as `{"badRequest": {"message": ..}}`
/// (any key), Keystone as `{"error": {"message": ..}}`. Falls back to the start of the body.
pub fn message_of(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        for v in map.values() {
            if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
                return m.to_string();
            }
        }
        if let Some(m) = map.get("message").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    text.chars().take(300).collect()
}

/// Whether a request may be sent again after this answer. `POST` creates and acts: it is only
/// repeated when the service said it did nothing (429, 503) or the connection never opened.
pub fn retryable(method: &str, status: u16) -> bool {
    let idempotent = method != "POST";
    match status {
        429 | 503 => true,
        500 | 502 | 504 => idempotent,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_and_keystone_bodies_give_their_message() {
        // Bodies as the local Nova 34 / Keystone 30 send them.
        let quota = br#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"}}"#;
        assert!(message_of(quota).starts_with("Quota exceeded for instances"));
        let ks = br#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#;
        assert_eq!(message_of(ks), "The request you have made requires authentication.");
        assert_eq!(message_of(b"<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
        assert_eq!(message_of(b""), "(empty body)");
    }

    #[test]
    fn statuses_map_to_the_contract_variants() {
        let e = |status, message: &str| {
            ApiError { call: "POST /servers".into(), status, message: message.into() }.into_plugin_error()
        };
        assert!(
            matches!(e(403, "Quota exceeded for cores"), PluginError::QuotaExceeded(m) if m.contains("POST /servers"))
        );
        assert!(
            matches!(e(403, "Policy doesn't allow"), PluginError::BadConfig(m) if m.contains("permission"))
        );
        assert!(matches!(
            e(409, "Cannot 'resize' instance while it is in task_state resize_prep"),
            PluginError::Conflict(_)
        ));
        assert!(matches!(e(503, "busy"), PluginError::Unavailable(_)));
        assert!(matches!(e(0, "connection refused"), PluginError::Unavailable(m) if !m.contains("HTTP")));
        assert!(matches!(e(401, "x"), PluginError::BadConfig(m) if m.contains("credentials")));
    }

    #[test]
    fn posts_are_repeated_only_when_nothing_was_done() {
        assert!(retryable("GET", 500) && retryable("DELETE", 502));
        assert!(!retryable("POST", 500), "a 500 on create may have created the server");
        assert!(retryable("POST", 503) && retryable("POST", 429));
        assert!(!retryable("GET", 404) && !retryable("GET", 409));
    }
}
