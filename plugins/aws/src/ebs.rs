//! A storage group's EBS volume: described with its latest modification (a volume being
//! modified or optimized takes no new modification — AWS's rule, and the agent's `pending`),
//! grown with `ModifyVolume`, waited for until the new size is usable (`optimizing` or
//! `completed`), and tagged with the decision.

use crate::config::{GroupParams, VolumeRef};
use elastic_sdk::aws::xml::{self, Node};
use elastic_sdk::aws::{Client, EC2};
use elastic_sdk::http::sleep;
use elastic_sdk::{host, log, PluginError};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);

/// A volume and its latest modification, as EC2 reports them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EbsVolume {
    pub id: String,
    pub size_gib: u64,
    /// `creating`, `available`, `in-use`, `deleting`, `deleted`, `error`.
    pub status: String,
    /// `instance i-… at /dev/sdf`; empty when detached.
    pub attachment: String,
    pub modification: Option<Modification>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Modification {
    /// `modifying`, `optimizing`, `completed`, `failed`.
    pub state: String,
    pub target_gib: u64,
    pub progress: Option<u32>,
    pub message: Option<String>,
}

impl EbsVolume {
    /// Why no resize may start now, if one may not.
    pub fn pending(&self) -> Option<String> {
        if self.status != "in-use" && self.status != "available" {
            return Some(format!("volume {} is {}", self.id, self.status));
        }
        let m = self.modification.as_ref()?;
        let progress = m.progress.map(|p| format!(", {p} %")).unwrap_or_default();
        match m.state.as_str() {
            "modifying" => Some(format!("modification to {} GiB is modifying{progress}", m.target_gib)),
            // The new size is usable, but AWS takes no other modification until this one completes.
            "optimizing" => Some(format!(
                "modification to {} GiB is optimizing{progress}: AWS allows the next one once it completed",
                m.target_gib
            )),
            _ => None,
        }
    }
}

/// The volume from a `DescribeVolumes` answer (the first listed).
pub fn parse_volume(body: &str) -> Result<Option<EbsVolume>, PluginError> {
    let doc = xml::parse(body, "ec2 DescribeVolumes")?;
    let Some(response) = xml::find(doc.root(), "DescribeVolumesResponse") else { return Ok(None) };
    let Some(v) = xml::list(response, "volumeSet").into_iter().next() else { return Ok(None) };
    let attachment = xml::list(v, "attachmentSet")
        .into_iter()
        .next()
        .map(|a| {
            let at = |k| xml::text(a, k).unwrap_or_default();
            format!("instance {} at {}", at("instanceId"), at("device"))
        })
        .unwrap_or_default();
    Ok(Some(EbsVolume {
        id: xml::text(v, "volumeId").unwrap_or_default(),
        size_gib: xml::text(v, "size").and_then(|s| s.parse().ok()).unwrap_or(0),
        status: xml::text(v, "status").unwrap_or_default(),
        attachment,
        modification: None,
    }))
}

/// The latest modification from a `DescribeVolumesModifications` (or `ModifyVolume`) answer.
pub fn parse_modification(body: &str) -> Result<Option<Modification>, PluginError> {
    let doc = xml::parse(body, "ec2 DescribeVolumesModifications")?;
    let items: Vec<Node> = match xml::find(doc.root(), "volumeModificationSet") {
        Some(set) => set.children().filter(|n| n.is_element()).collect(),
        None => xml::find(doc.root(), "volumeModification").into_iter().collect(),
    };
    // The newest by start time (ISO 8601 sorts as text); the last listed on a tie.
    let latest = items.into_iter().max_by_key(|m| xml::text(*m, "startTime").unwrap_or_default());
    Ok(latest.map(|m| Modification {
        state: xml::text(m, "modificationState").unwrap_or_default(),
        target_gib: xml::text(m, "targetSize").and_then(|s| s.parse().ok()).unwrap_or(0),
        progress: xml::text(m, "progress").and_then(|s| s.parse().ok()),
        message: xml::text(m, "statusMessage"),
    }))
}

/// The group's volume now, with its latest modification: two requests.
pub fn describe(c: &mut Client, group: &str, params: &GroupParams) -> Result<EbsVolume, PluginError> {
    let query = match params.volume_ref(group)? {
        VolumeRef::Id(id) => vec![("VolumeId.1".to_string(), id)],
        VolumeRef::Attached { instance, device } => vec![
            ("Filter.1.Name".to_string(), "attachment.instance-id".to_string()),
            ("Filter.1.Value.1".into(), instance),
            ("Filter.2.Name".into(), "attachment.device".into()),
            ("Filter.2.Value.1".into(), device),
        ],
    };
    let body = c.call(&EC2, "DescribeVolumes", &query)?;
    let mut v = parse_volume(&body)?.ok_or_else(|| {
        PluginError::BadConfig(format!(
            "group[{group}].backend_config names no EBS volume in {} ({})",
            c.connection.region,
            query.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" ")
        ))
    })?;
    // By filter, not `VolumeId.1`: AWS answers a volume never modified with
    // `InvalidVolumeModification.NotFound` to the latter, an empty set to the former.
    let filter =
        [("Filter.1.Name".to_string(), "volume-id".to_string()), ("Filter.1.Value.1".into(), v.id.clone())];
    let body = c.call(&EC2, "DescribeVolumesModifications", &filter)?;
    v.modification = parse_modification(&body)?;
    Ok(v)
}

/// Grows the volume to `size_gib` and waits until the new size is usable (or `modify_timeout`).
pub fn modify(
    c: &mut Client,
    group: &str,
    params: &GroupParams,
    size_gib: u64,
) -> Result<(EbsVolume, String), PluginError> {
    let before = describe(c, group, params)?;
    if size_gib <= before.size_gib {
        return Err(PluginError::InvalidInput(format!(
            "volume {} is {} GiB: an EBS volume cannot shrink or stay the size (asked {size_gib})",
            before.id, before.size_gib
        )));
    }
    if let Some(why) = before.pending() {
        return Err(PluginError::Conflict(why));
    }
    let started = host::now_ms();
    // Never sent twice: a lost answer may mean it was accepted (`pending` then tells).
    let modify = [("VolumeId".to_string(), before.id.clone()), ("Size".into(), size_gib.to_string())];
    let body = c.call_once(&EC2, "ModifyVolume", &modify)?;
    let accepted = parse_modification(&body)?;
    if let Some(id) = elastic_sdk::decision::id() {
        let tags = [("elastic-decision".to_string(), id)];
        if let Err(e) = crate::asg::create_tags(c, std::slice::from_ref(&before.id), &tags) {
            log::warn(&format!("tagging {} with the decision: {e:?}", before.id));
        }
    }
    let deadline = started + params.modify_timeout.as_millis() as i64;
    let mut state = accepted.map(|m| m.state).unwrap_or_else(|| "modifying".into());
    loop {
        let now = describe(c, group, params)?;
        let m = now.modification.clone();
        if let Some(m) = &m {
            state = m.state.clone();
            if m.state == "failed" {
                return Err(PluginError::Other(format!(
                    "ModifyVolume {} to {size_gib} GiB failed: {}; the volume stays {} GiB",
                    now.id,
                    m.message.clone().unwrap_or_else(|| "no status message".into()),
                    now.size_gib
                )));
            }
        }
        let usable = matches!(state.as_str(), "optimizing" | "completed") && now.size_gib >= size_gib;
        let seconds = (host::now_ms() - started) as f64 / 1000.0;
        if usable || host::now_ms() > deadline {
            let detail = format!(
                "modified EBS volume {} from {} to {size_gib} GiB ({state} after {seconds:.1} s{})",
                now.id,
                before.size_gib,
                if usable { "" } else { "; the agent waits for the new size" }
            );
            return Ok((now, detail));
        }
        sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOLUMES: &str = r#"<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><volumeSet><item>
<volumeId>vol-1</volumeId><size>2</size><availabilityZone>us-east-1a</availabilityZone><status>in-use</status>
<attachmentSet><item><volumeId>vol-1</volumeId><instanceId>i-1</instanceId><device>/dev/sdf</device><status>attached</status></item></attachmentSet>
</item></volumeSet></DescribeVolumesResponse>"#;

    const MODIFICATIONS: &str = r#"<DescribeVolumesModificationsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><volumeModificationSet>
<item><volumeId>vol-1</volumeId><modificationState>completed</modificationState><targetSize>2</targetSize><originalSize>1</originalSize><progress>100</progress><startTime>2026-12-05T01:00:00.000Z</startTime></item>
<item><volumeId>vol-1</volumeId><modificationState>optimizing</modificationState><targetSize>3</targetSize><originalSize>2</originalSize><progress>40</progress><startTime>2026-12-05T02:00:00.000Z</startTime></item>
</volumeModificationSet></DescribeVolumesModificationsResponse>"#;

    #[test]
    fn a_volume_with_a_modification_optimizing_is_pending() {
        let mut v = parse_volume(VOLUMES).unwrap().unwrap();
        assert_eq!((v.id.as_str(), v.size_gib, v.status.as_str()), ("vol-1", 2, "in-use"));
        assert_eq!(v.attachment, "instance i-1 at /dev/sdf");
        assert_eq!(v.pending(), None);
        v.modification = parse_modification(MODIFICATIONS).unwrap();
        let m = v.modification.clone().unwrap();
        assert_eq!((m.state.as_str(), m.target_gib, m.progress), ("optimizing", 3, Some(40)), "the newest");
        assert!(v.pending().unwrap().contains("optimizing, 40 %"), "{:?}", v.pending());
        v.modification.as_mut().unwrap().state = "completed".into();
        assert_eq!(v.pending(), None);
        v.status = "creating".into();
        assert!(v.pending().is_some());
        let empty = r#"<DescribeVolumesResponse><volumeSet/></DescribeVolumesResponse>"#;
        assert_eq!(parse_volume(empty).unwrap(), None);
    }

    #[test]
    fn modify_volumes_answer_gives_its_modification() {
        let body = r#"<ModifyVolumeResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><volumeModification><volumeId>vol-1</volumeId><modificationState>modifying</modificationState><targetSize>4</targetSize></volumeModification></ModifyVolumeResponse>"#;
        let m = parse_modification(body).unwrap().unwrap();
        assert_eq!((m.state.as_str(), m.target_gib), ("modifying", 4));
    }
}
