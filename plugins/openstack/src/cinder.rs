//! A storage group's volume in Cinder (block-storage v3): found by id or name, or by the server
//! and device it is attached at; extended online (`os-extend` at microversion 3.42, which an
//! `in-use` volume needs; Cinder then tells Nova, which tells the guest), waited for, and tagged
//! with the decision that grew it.
//!
//! ```toml
//! [[group]]
//! name = "data"
//! backend = "openstack"
//! backend_config = { server = "db-1", device = "/dev/vdb" }   # or { volume = "<id or name>" }
//! [group.storage]
//! min_size = "10GiB"
//! max_size = "500GiB"
//! mount = "/srv/data"
//! ```

use crate::errors::ApiError;
use crate::session::{Service, Session, VOLUME_MICROVERSION};
use elastic_sdk::http::sleep;
use elastic_sdk::PluginError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// A storage group's `backend_config`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct VolumeParams {
    /// The volume's id or (unique) name.
    pub volume: Option<String>,
    /// Or: the server (name or id) it is attached to…
    pub server: Option<String>,
    /// …at this device (`/dev/vdb`), as Nova lists the attachment.
    pub device: Option<String>,
    /// How long `resize` waits for Cinder to report the new size. Default 2m.
    #[serde(default = "two_minutes", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub extend_timeout: Duration,
}

/// Half the agent's default limit on a backend call, so a slow extend is reported, not killed.
const MAX_EXTEND_TIMEOUT: Duration = Duration::from_secs(300);

fn two_minutes() -> Duration {
    Duration::from_secs(120)
}

/// Statuses in which Cinder is still busy with the volume: no extend meanwhile.
const BUSY: [&str; 9] = [
    "creating",
    "extending",
    "attaching",
    "detaching",
    "downloading",
    "uploading",
    "retyping",
    "backing-up",
    "restoring-backup",
];

/// A volume as Cinder shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CinderVolume {
    pub id: String,
    pub size_gib: u64,
    pub status: String,
    /// `server <id> at <device>`, for each attachment.
    pub attachment: String,
}

impl CinderVolume {
    pub fn from_json(v: &Value) -> CinderVolume {
        let attachments: Vec<String> = v["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "server {} at {}",
                    a["server_id"].as_str().unwrap_or("?"),
                    a["device"].as_str().unwrap_or("?")
                )
            })
            .collect();
        CinderVolume {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            size_gib: v["size"].as_u64().unwrap_or(0),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            attachment: attachments.join(", "),
        }
    }

    /// Why no extend may start now, if one may not: Cinder is busy with it, or the last extend
    /// failed (`error_extending`, which only an operator clears; retrying would fail the same
    /// way, so the group holds and says what to do).
    pub fn pending(&self) -> Option<String> {
        let s = self.status.as_str();
        if BUSY.contains(&s) {
            return Some(format!("volume {} is {s}", self.id));
        }
        if s.starts_with("error") {
            return Some(format!(
                "volume {} is {s}: Cinder could not finish an operation on it; check its driver's log, then `openstack volume set --state {} {}`",
                self.id,
                if self.attachment.is_empty() { "available" } else { "in-use" },
                self.id
            ));
        }
        None
    }
}

/// Reads the group's parameters; exactly one way to name the volume.
pub fn params(group: &str, json: &str) -> Result<VolumeParams, PluginError> {
    let p: VolumeParams = elastic_sdk::parse_json(json, &format!("group[{group}].backend_config"))?;
    if p.extend_timeout > MAX_EXTEND_TIMEOUT {
        return Err(PluginError::BadConfig(format!(
            "group[{group}].backend_config.extend_timeout: at most 5m (a backend call is stopped at 10m)"
        )));
    }
    match (&p.volume, &p.server, &p.device) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(p),
        _ => Err(PluginError::BadConfig(format!(
            "group[{group}].backend_config: a storage group names its volume with `volume` (id or name), or with `server` and `device`"
        ))),
    }
}

/// The group's volume now.
pub fn find(s: &mut Session, p: &VolumeParams) -> Result<CinderVolume, PluginError> {
    s.endpoint(&Service::Volume)?; // a cloud without Cinder is the configuration's problem
    let id = match (&p.volume, &p.server, &p.device) {
        (Some(v), _, _) => volume_id(s, v)?,
        (None, Some(server), Some(device)) => attached_at(s, server, device)?,
        _ => unreachable!("checked by params()"),
    };
    get(s, &id).map_err(ApiError::into_plugin_error)?.ok_or_else(|| {
        PluginError::BadConfig(format!(
            "no volume {id} in Cinder (deleted?); correct the group's backend_config"
        ))
    })
}

/// Grows the volume to `size_gib` for `decision`; waits for Cinder to report it.
pub fn extend(
    s: &mut Session,
    p: &VolumeParams,
    size_gib: u64,
    decision: Option<String>,
) -> Result<(CinderVolume, String), PluginError> {
    let before = find(s, p)?;
    if size_gib <= before.size_gib {
        return Err(PluginError::InvalidInput(format!(
            "{size_gib} GiB: volume {} has {} GiB, and a volume never shrinks",
            before.id, before.size_gib
        )));
    }
    if let Some(why) = before.pending() {
        return Err(PluginError::Conflict(why));
    }
    let path = format!("/volumes/{}/action", before.id);
    s.call("POST", Service::Volume, &path, Some(json!({"os-extend": {"new_size": size_gib}})))
        .map_err(|e| extend_error(e, &before))?;
    // Tagged as soon as Cinder accepted, so the volume shows which decision grew it. Best effort:
    // the extend happened either way, and a failure here must not read as a failed resize.
    let tag = match &decision {
        Some(id) => {
            let metadata = json!({"metadata": {"elastic-decision": id}});
            let path = format!("/volumes/{}/metadata", before.id);
            match s.call("POST", Service::Volume, &path, Some(metadata)) {
                Ok(_) => format!("; tagged {id}"),
                Err(e) => {
                    elastic_sdk::log::warn(&format!(
                        "tagging volume {} with {id}: {}: {}",
                        before.id, e.call, e.message
                    ));
                    format!("; tagging it with {id} failed: HTTP {} {}", e.status, e.message)
                }
            }
        }
        None => String::new(),
    };
    let after = wait(s, &before.id, size_gib, p.extend_timeout)?;
    let how = if before.status == "in-use" { "online, attached" } else { "detached" };
    let detail = match after.size_gib >= size_gib {
        true => format!(
            "extended Cinder volume {} from {} to {} GiB ({how}, block-storage {VOLUME_MICROVERSION}){tag}",
            before.id, before.size_gib, after.size_gib
        ),
        false => format!(
            "Cinder accepted extending volume {} from {} to {size_gib} GiB ({how}); still {} at {} GiB after {}{tag}",
            before.id,
            before.size_gib,
            after.status,
            after.size_gib,
            elastic_sdk::duration::format(p.extend_timeout)
        ),
    };
    Ok((after, detail))
}

/// Polls until the volume has `size_gib` and is no longer busy, fails on an error status, and
/// returns it still extending when `limit` passes (the agent waits for it before another).
fn wait(s: &mut Session, id: &str, size_gib: u64, limit: Duration) -> Result<CinderVolume, PluginError> {
    let started = elastic_sdk::host::now_ms();
    loop {
        let v = get(s, id).map_err(ApiError::into_plugin_error)?.ok_or_else(|| {
            PluginError::Other(format!("volume {id} disappeared while it was being extended"))
        })?;
        if v.status.starts_with("error") {
            return Err(PluginError::Other(format!(
                "Cinder could not extend volume {id} to {size_gib} GiB: it is {}; {}",
                v.status,
                v.pending().unwrap_or_default()
            )));
        }
        let done = v.size_gib >= size_gib && !BUSY.contains(&v.status.as_str());
        if done || elastic_sdk::host::now_ms() - started > limit.as_millis() as i64 {
            return Ok(v);
        }
        sleep(Duration::from_secs(1));
    }
}

/// What a refused extend means, in the words an operator acts on.
fn extend_error(e: ApiError, v: &CinderVolume) -> PluginError {
    let lower = e.message.to_ascii_lowercase();
    if e.status == 406 || lower.contains("version") && lower.contains("not supported") {
        return PluginError::BadConfig(format!(
            "{}: HTTP {}: {} (this Cinder does not offer block-storage microversion {VOLUME_MICROVERSION}, needed to extend an attached volume)",
            e.call, e.status, e.message
        ));
    }
    if e.status == 400 && lower.contains("status must be") {
        return PluginError::Conflict(format!("{}: volume {} is {}: {}", e.call, v.id, v.status, e.message));
    }
    e.into_plugin_error()
}

/// `GET /volumes/{id}`; `None` when Cinder has no such volume.
pub fn get(s: &mut Session, id: &str) -> Result<Option<CinderVolume>, ApiError> {
    match s.call("GET", Service::Volume, &format!("/volumes/{}", crate::nova::encode(id)), None) {
        Ok(r) => {
            let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if !doc["volume"]["size"].is_u64() {
                // Not a volume: a proxy's page, a truncated answer. Unavailable, retried later.
                let message = "the answer holds no volume with a size".to_string();
                return Err(ApiError { call: format!("GET /volumes/{id}"), status: 0, message });
            }
            Ok(Some(CinderVolume::from_json(&doc["volume"])))
        }
        Err(e) if e.status == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A volume id from an id or a unique name.
fn volume_id(s: &mut Session, name_or_id: &str) -> Result<String, PluginError> {
    if crate::nova::looks_like_uuid(name_or_id) {
        return Ok(name_or_id.to_string());
    }
    let path = format!("/volumes?name={}", crate::nova::encode(name_or_id));
    let r = s.call("GET", Service::Volume, &path, None).map_err(ApiError::into_plugin_error)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let ids: Vec<&str> =
        doc["volumes"].as_array().into_iter().flatten().filter_map(|v| v["id"].as_str()).collect();
    match ids.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(PluginError::BadConfig(format!("no Cinder volume named `{name_or_id}`; give its id"))),
        many => Err(PluginError::BadConfig(format!(
            "{} Cinder volumes are named `{name_or_id}`; give the id of one",
            many.len()
        ))),
    }
}

/// The id of the volume attached to `server` (name or id) at `device`.
fn attached_at(s: &mut Session, server: &str, device: &str) -> Result<String, PluginError> {
    let server_id = match crate::nova::looks_like_uuid(server) {
        true => server.to_string(),
        false => crate::nova::server_id_by_name(s, server)?.ok_or_else(|| {
            PluginError::BadConfig(format!("no server named `{server}` (backend_config.server); give its id"))
        })?,
    };
    let path = format!("/servers/{server_id}/os-volume_attachments");
    let r = s.call("GET", Service::Compute, &path, None).map_err(ApiError::into_plugin_error)?;
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let attachments = doc["volumeAttachments"].as_array().cloned().unwrap_or_default();
    let found = attachments.iter().find(|a| a["device"].as_str() == Some(device));
    match found.and_then(|a| a["volumeId"].as_str()) {
        Some(id) => Ok(id.to_string()),
        None => {
            let devices: Vec<&str> = attachments.iter().filter_map(|a| a["device"].as_str()).collect();
            Err(PluginError::BadConfig(format!(
                "server {server} has no volume at {device} (it has: {}); correct backend_config.device",
                if devices.is_empty() { "none".to_string() } else { devices.join(", ") }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_reads_from_cinder_json_and_says_when_it_is_busy() {
        let v = CinderVolume::from_json(
            &json!({"volume": {
            "id": "v1", "size": 2, "status": "in-use",
            "attachments": [{"server_id": "s1", "device": "/dev/vdb"}]}})["volume"],
        );
        assert_eq!(
            v,
            CinderVolume {
                id: "v1".into(),
                size_gib: 2,
                status: "in-use".into(),
                attachment: "server s1 at /dev/vdb".into()
            }
        );
        assert_eq!(v.pending(), None);
        let extending = CinderVolume { status: "extending".into(), ..v.clone() };
        assert_eq!(extending.pending().as_deref(), Some("volume v1 is extending"));
        let failed = CinderVolume { status: "error_extending".into(), ..v };
        let why = failed.pending().unwrap();
        assert!(
            why.contains("error_extending") && why.contains("openstack volume set --state in-use v1"),
            "{why}"
        );
    }

    #[test]
    fn a_storage_group_names_its_volume_one_way() {
        assert!(params("data", r#"{"volume": "v1"}"#).is_ok());
        assert!(params("data", r#"{"server": "db-1", "device": "/dev/vdb"}"#).is_ok());
        for bad in
            [r#"{}"#, r#"{"server": "db-1"}"#, r#"{"volume": "v1", "server": "db-1", "device": "/dev/vdb"}"#]
        {
            let e = params("data", bad).unwrap_err();
            assert!(
                matches!(&e, PluginError::BadConfig(m) if m.contains("group[data].backend_config")),
                "{bad}: {e:?}"
            );
        }
        let e = params("data", r#"{"volume": "v1", "extend_timeout": "6m"}"#).unwrap_err();
        assert!(matches!(&e, PluginError::BadConfig(m) if m.contains("extend_timeout: at most 5m")), "{e:?}");
        let e = params("data", r#"{"image": "cirros"}"#).unwrap_err();
        assert!(matches!(&e, PluginError::BadConfig(m) if m.contains("image")), "{e:?}");
    }

    #[test]
    fn refusals_map_to_what_an_operator_does() {
        let v =
            CinderVolume { id: "v1".into(), size_gib: 1, status: "in-use".into(), attachment: String::new() };
        let e = |status, message: &str| ApiError {
            call: "POST /volumes/v1/action".into(),
            status,
            message: message.into(),
        };
        let old = extend_error(e(406, "Version 3.42 is not supported by the API."), &v);
        assert!(matches!(&old, PluginError::BadConfig(m) if m.contains("microversion 3.42")), "{old:?}");
        let busy = extend_error(e(400, "Volume status must be available or in-use."), &v);
        assert!(matches!(busy, PluginError::Conflict(_)), "{busy:?}");
        let quota = extend_error(e(413, "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota."), &v);
        assert!(matches!(quota, PluginError::QuotaExceeded(_)), "{quota:?}");
    }
}
