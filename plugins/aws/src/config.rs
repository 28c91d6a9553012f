//! A group's `backend_config` for the `aws` backend (the plugin's own table is the SDK's
//! `aws::Connection`). Every key is in docs/aws.md.

use elastic_sdk::PluginError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    /// The EC2 Auto Scaling group; default the scaling group's own name.
    #[serde(default)]
    pub auto_scaling_group: Option<String>,
    /// (storage group) the EBS volume's id, `vol-…`.
    #[serde(default)]
    pub volume: Option<String>,
    /// (storage group) or: the instance the volume is attached to…
    #[serde(default)]
    pub instance: Option<String>,
    /// …and the device it is attached at, e.g. `/dev/sdf`.
    #[serde(default)]
    pub device: Option<String>,
    /// (storage group) how long a resize waits for the modification to reach `optimizing`
    /// (the new size usable). Default 2m.
    #[serde(default = "two_minutes", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub modify_timeout: Duration,
}

fn two_minutes() -> Duration {
    Duration::from_secs(120)
}

impl GroupParams {
    pub fn parse(group: &str, json: &str) -> Result<GroupParams, PluginError> {
        elastic_sdk::parse_json(json, &format!("group[{group}].backend_config"))
    }

    pub fn asg<'a>(&'a self, group: &'a str) -> &'a str {
        self.auto_scaling_group.as_deref().unwrap_or(group)
    }
}

/// How a storage group names its volume.
#[derive(Debug, PartialEq)]
pub enum VolumeRef {
    Id(String),
    Attached { instance: String, device: String },
}

impl GroupParams {
    pub fn volume_ref(&self, group: &str) -> Result<VolumeRef, PluginError> {
        match (&self.volume, &self.instance, &self.device) {
            (Some(id), None, None) => Ok(VolumeRef::Id(id.clone())),
            (None, Some(i), Some(d)) => Ok(VolumeRef::Attached { instance: i.clone(), device: d.clone() }),
            _ => Err(PluginError::BadConfig(format!(
                "group[{group}].backend_config: name the EBS volume with `volume = \"vol-…\"`, or with `instance` and `device` together"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_named_one_way_or_the_other() {
        let p = GroupParams::parse("data", r#"{"volume": "vol-1"}"#).unwrap();
        assert_eq!(p.volume_ref("data").unwrap(), VolumeRef::Id("vol-1".into()));
        let p = GroupParams::parse("data", r#"{"instance": "i-1", "device": "/dev/sdf"}"#).unwrap();
        assert!(matches!(p.volume_ref("data").unwrap(), VolumeRef::Attached { .. }));
        let p = GroupParams::parse("data", r#"{"instance": "i-1"}"#).unwrap();
        assert!(matches!(p.volume_ref("data"), Err(PluginError::BadConfig(m)) if m.contains("together")));
        let wrong = GroupParams::parse("web", r#"{"autoscaling_group": "x"}"#);
        assert!(matches!(wrong, Err(PluginError::BadConfig(m)) if m.contains("autoscaling_group")));
        assert_eq!(GroupParams::default().asg("web"), "web");
    }
}
