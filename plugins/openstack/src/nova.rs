//! The Nova calls the backend makes, and the server as it reads it.

use crate::errors::ApiError;
use crate::session::{Service, Session};
use elastic_sdk::time::iso_to_ms;
use elastic_sdk::PluginError;
use serde_json::{json, Value};

/// The metadata key (and tag prefix) that marks a server as a member of a group.
pub const GROUP_KEY: &str = "elastic-group";

/// A server as the plugin needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: String,
    /// Nova's `OS-EXT-STS:task_state`: `None` when no operation is running.
    pub task_state: Option<String>,
    pub created_ms: i64,
    /// The flavor's name (microversion ≥ 2.47) or ID (older).
    pub flavor: String,
    /// Nova's fault message for a server in ERROR.
    pub fault: Option<String>,
    /// First IP address, if Neutron gave one.
    pub address: Option<String>,
}

impl Server {
    pub fn from_json(v: &Value) -> Server {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let flavor =
            v["flavor"]["original_name"].as_str().or_else(|| v["flavor"]["id"].as_str()).unwrap_or_default();
        let address = v["addresses"]
            .as_object()
            .and_then(|nets| {
                nets.values()
                    .flat_map(|a| a.as_array().into_iter().flatten())
                    .find_map(|a| a["addr"].as_str())
            })
            .map(str::to_string);
        Server {
            id: s("id"),
            name: s("name"),
            status: s("status"),
            task_state: v["OS-EXT-STS:task_state"].as_str().map(str::to_string),
            created_ms: v["created"].as_str().and_then(iso_to_ms).unwrap_or(0),
            flavor: flavor.to_string(),
            fault: v["fault"]["message"].as_str().map(str::to_string),
            address,
        }
    }

    /// Being deleted or gone: no longer part of the group's capacity.
    pub fn leaving(&self) -> bool {
        self.task_state.as_deref() == Some("deleting")
            || matches!(self.status.as_str(), "DELETED" | "SOFT_DELETED")
    }

    /// ACTIVE with nothing in progress: serving capacity.
    pub fn ready(&self) -> bool {
        self.status == "ACTIVE" && self.task_state.is_none()
    }
}

/// What the cloud offers that the plugin needs to look up by name.
pub struct Flavor {
    pub id: String,
    pub name: String,
}

pub fn group_tag(group: &str) -> String {
    format!("{GROUP_KEY}:{group}")
}

/// The group's servers. With tags (≥ 2.26) Nova filters; before, by name prefix, and the
/// metadata decides.
pub fn list_group(s: &mut Session, group: &str, prefix: &str) -> Result<Vec<Server>, ApiError> {
    let mv = s.microversion().map_err(|e| ApiError {
        call: "GET /".into(),
        status: 0,
        message: format!("{e:?}"),
    })?;
    let path = if mv >= (2, 26) {
        format!("/servers/detail?tags={}", encode(&group_tag(group)))
    } else {
        format!("/servers/detail?name={}", encode(&format!("^{prefix}-")))
    };
    let r = s.call("GET", Service::Compute, &path, None)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok(doc["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["metadata"][GROUP_KEY] == group)
        .map(Server::from_json)
        .collect())
}

/// The id of the one server named exactly `name` (Nova's filter is a regular expression:
/// anchored and escaped here); `None` when there is none, an error when there are several.
pub fn server_id_by_name(s: &mut Session, name: &str) -> Result<Option<String>, PluginError> {
    let escaped: String = name
        .chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { vec![c] } else { vec!['\\', c] })
        .collect();
    let path = format!("/servers?name={}", encode(&format!("^{escaped}$")));
    let r = s.call("GET", Service::Compute, &path, None).map_err(ApiError::into_plugin_error)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let ids: Vec<String> = doc["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == name)
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    match ids.len() {
        0 | 1 => Ok(ids.into_iter().next()),
        n => Err(PluginError::BadConfig(format!(
            "{n} servers are named `{name}`; give the id of one in backend_config.server"
        ))),
    }
}

pub fn get(s: &mut Session, id: &str) -> Result<Option<Server>, ApiError> {
    match s.call("GET", Service::Compute, &format!("/servers/{id}"), None) {
        Ok(r) => {
            let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            Ok(Some(Server::from_json(&doc["server"])))
        }
        Err(e) if e.status == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// `POST /servers`. Never repeated on a broken connection (see `Session`).
pub fn create(s: &mut Session, server: Value, hints: Option<Value>) -> Result<String, ApiError> {
    let mut body = json!({ "server": server });
    if let Some(h) = hints {
        body["os:scheduler_hints"] = h;
    }
    let r = s.call("POST", Service::Compute, "/servers", Some(body))?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok(doc["server"]["id"].as_str().unwrap_or_default().to_string())
}

/// `DELETE /servers/{id}`; a server already gone is fine.
pub fn delete(s: &mut Session, id: &str) -> Result<(), ApiError> {
    match s.call("DELETE", Service::Compute, &format!("/servers/{id}"), None) {
        Err(e) if e.status != 404 => Err(e),
        _ => Ok(()),
    }
}

/// `POST /servers/{id}/action` with `{name: arg}`.
pub fn action(s: &mut Session, id: &str, name: &str, arg: Value) -> Result<(), ApiError> {
    s.call("POST", Service::Compute, &format!("/servers/{id}/action"), Some(json!({ name: arg }))).map(|_| ())
}

/// What Nova recorded of the newest `action` (e.g. `resize`) on a server: its message and the
/// events that did not succeed. The only account of a resize the scheduler could not place.
pub fn last_action(s: &mut Session, id: &str, action: &str) -> Result<Option<String>, ApiError> {
    let r = s.call("GET", Service::Compute, &format!("/servers/{id}/os-instance-actions"), None)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let Some(newest) =
        doc["instanceActions"].as_array().into_iter().flatten().find(|a| a["action"] == action)
    else {
        return Ok(None);
    };
    let request = newest["request_id"].as_str().unwrap_or_default();
    let r = s.call("GET", Service::Compute, &format!("/servers/{id}/os-instance-actions/{request}"), None)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok(Some(describe_action(&doc["instanceAction"])))
}

/// `message` of an instance action and its failed events, e.g. `Error (conductor_migrate_server: Error)`.
pub fn describe_action(a: &Value) -> String {
    let message = a["message"].as_str().unwrap_or("no message");
    let failed: Vec<String> = a["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["result"].as_str().is_some_and(|r| r != "Success"))
        .map(|e| format!("{}: {}", e["event"].as_str().unwrap_or("?"), e["result"].as_str().unwrap_or("?")))
        .collect();
    if failed.is_empty() {
        message.to_string()
    } else {
        format!("{message} ({})", failed.join(", "))
    }
}

pub fn flavors(s: &mut Session) -> Result<Vec<Flavor>, ApiError> {
    let r = s.call("GET", Service::Compute, "/flavors", None)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok(doc["flavors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| Flavor {
            id: f["id"].as_str().unwrap_or_default().into(),
            name: f["name"].as_str().unwrap_or_default().into(),
        })
        .collect())
}

/// An image's ID from its name (Glance v2); a UUID is taken as the ID.
pub fn image_id(s: &mut Session, name_or_id: &str) -> Result<Option<String>, ApiError> {
    if looks_like_uuid(name_or_id) {
        return Ok(Some(name_or_id.to_string()));
    }
    let r = s.call("GET", Service::Image, &format!("/v2/images?name={}", encode(name_or_id)), None)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok(doc["images"].as_array().and_then(|a| a.first()).and_then(|i| i["id"].as_str()).map(str::to_string))
}

pub fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Base64 (standard alphabet, padded), for `user_data`.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_from_nova_json() {
        // Shape of GET /servers/detail at 2.96 from the local Nova 34.
        let v: Value = serde_json::from_str(
            r#"{"id":"6f0c","name":"web-1a2b3c4d","status":"ERROR","OS-EXT-STS:task_state":null,
                "created":"2026-11-27T12:30:05Z","flavor":{"original_name":"m1.tiny","vcpus":1},
                "fault":{"code":500,"message":"No valid host was found. "},
                "addresses":{"private":[{"addr":"10.0.0.5","version":4}]},"metadata":{"elastic-group":"web"}}"#,
        )
        .unwrap();
        let s = Server::from_json(&v);
        assert_eq!((s.status.as_str(), s.flavor.as_str()), ("ERROR", "m1.tiny"));
        assert_eq!(s.fault.as_deref(), Some("No valid host was found. "));
        assert_eq!(s.address.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.created_ms, 1_795_782_605_000);
        assert!(!s.ready() && !s.leaving());
        let deleting = Server { task_state: Some("deleting".into()), ..s };
        assert!(deleting.leaving());
    }

    #[test]
    fn failed_instance_action_events_are_named() {
        let a: Value = serde_json::from_str(
            r#"{"action":"resize","message":"Error","events":[
                {"event":"conductor_migrate_server","result":"Error"},{"event":"x","result":"Success"}]}"#,
        )
        .unwrap();
        assert_eq!(describe_action(&a), "Error (conductor_migrate_server: Error)");
    }

    #[test]
    fn encodings() {
        assert_eq!(encode("elastic-group:web"), "elastic-group%3Aweb");
        assert_eq!(base64(b"#!/bin/sh\n"), "IyEvYmluL3NoCg==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert!(looks_like_uuid("3cb9bc59-5699-4588-a4b1-b87f96708bc6") && !looks_like_uuid("cirros-fake"));
    }
}
