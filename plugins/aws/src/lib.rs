//! The AWS backend: a scaling group is an EC2 Auto Scaling group (horizontal: its desired
//! capacity; scale-in terminates the instances the agent's ranking chooses, never a busy one),
//! and a storage group is an EBS volume (`ModifyVolume`). Requests are SigV4-signed by the SDK.
//!
//! ```toml
//! [plugins.aws]
//! allow_http = ["https://autoscaling.eu-west-1.amazonaws.com", "https://ec2.eu-west-1.amazonaws.com"]
//! secrets = { access_key_id = { env = "AWS_ACCESS_KEY_ID" }, secret_access_key = { env = "AWS_SECRET_ACCESS_KEY" } }
//! [plugins.aws.config]
//! region = "eu-west-1"
//!
//! [[group]]
//! name = "web"
//! backend = "aws"
//! backend_config = { auto_scaling_group = "web-asg" }
//! ```
//! Every key is in `docs/aws.md`.

pub mod asg;
pub mod config;
pub mod ebs;

use config::GroupParams;
use elastic_sdk::aws::{Client, Connection};
use elastic_sdk::backend::{Group, Guest, Outcome};
use elastic_sdk::{key, parse_json, Capacity, Metadata, PluginError, Target};
use elastic_sdk_volumes::{Resized, Volume, VolumeGroup};

/// Runs `f` with the plugin instance's AWS client (see `elastic_sdk::aws::client::with_client`).
fn with_client<T>(
    group: &str,
    what: &str,
    f: impl FnOnce(&mut Client) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let connection = |json: &str| parse_json::<Connection>(json, "[plugins.aws.config]");
    elastic_sdk::aws::client::with_client(&format!("{what} {group}"), connection, f)
}

struct Aws;

impl Guest for Aws {
    fn metadata() -> Metadata {
        Metadata {
            name: "aws".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "EC2 Auto Scaling groups: sets their desired capacity and terminates the instances the agent ranks idle (horizontal); EBS volumes grow in storage groups.".into(),
            config_keys: [
                key("auto_scaling_group", "(group backend_config) the EC2 Auto Scaling group; default the group's name", false),
                key("volume", "(storage group backend_config) the EBS volume id, vol-…", false),
                key("instance", "(storage group backend_config) or: the instance the volume is attached to", false),
                key("device", "(storage group backend_config) and its device, e.g. /dev/sdf", false),
                key("modify_timeout", "(storage group backend_config) wait for the new size to be usable; default 2m", false),
            ]
            .into_iter()
            .chain(elastic_sdk::aws::client::connection_keys())
            .collect(),
        }
    }

    fn describe(g: Group) -> Result<Capacity, PluginError> {
        let params = GroupParams::parse(&g.name, &g.params)?;
        with_client(&g.name, "describe", |c| {
            let asg = asg::describe(c, params.asg(&g.name))?;
            asg::report_limits(&g.name, &asg);
            Ok(asg.capacity())
        })
    }

    fn scale(g: Group, target: Target) -> Result<Outcome, PluginError> {
        let params = GroupParams::parse(&g.name, &g.params)?;
        if target.tier != 0 {
            return Err(PluginError::BadConfig(format!(
                "group {}: the aws backend does not resize instances (tier {} asked): remove max_tier",
                g.name, target.tier
            )));
        }
        with_client(&g.name, "scale", |c| {
            let (capacity, detail) = asg::scale(c, &g.name, params.asg(&g.name), target)?;
            Ok(Outcome { capacity, detail })
        })
    }
}

/// A storage group's EBS volume (see `ebs`).
impl elastic_sdk_volumes::Guest for Aws {
    fn describe(g: VolumeGroup) -> Result<Volume, PluginError> {
        let params = GroupParams::parse(&g.name, &g.params)?;
        with_client(&g.name, "volumes.describe", |c| Ok(volume(ebs::describe(c, &g.name, &params)?)))
    }

    fn resize(g: VolumeGroup, size_gib: u64) -> Result<Resized, PluginError> {
        let params = GroupParams::parse(&g.name, &g.params)?;
        with_client(&g.name, "volumes.resize", |c| {
            let (v, detail) = ebs::modify(c, &g.name, &params, size_gib)?;
            Ok(Resized { volume: volume(v), detail })
        })
    }
}

fn volume(v: ebs::EbsVolume) -> Volume {
    let pending = v.pending();
    Volume { id: v.id, size_gib: v.size_gib, status: v.status, pending, attachment: v.attachment }
}

elastic_sdk_volumes::export_volume_backend!(Aws);
