//! The OpenStack backend: a scaling group is a set of Nova servers tagged with the group's name.
//! Horizontal scaling creates and deletes servers from a template; vertical scaling resizes them
//! along a flavor ladder (resize → VERIFY_RESIZE → optional health check → confirm or revert).
//!
//! ```toml
//! [plugins.openstack]
//! allow_http = ["http://keystone.example:5000", "http://nova.example:8774", "http://glance.example:9292"]
//! secrets = { password = { env = "OS_PASSWORD" } }
//! [plugins.openstack.config]
//! auth_url = "http://keystone.example:5000/v3"
//! username = "autoscaler"
//! project_name = "web"
//!
//! [[group]]
//! name = "web"
//! backend = "openstack"
//! backend_config = { image = "ubuntu-24.04", flavors = ["m1.small", "m1.medium"], networks = "auto" }
//! ```
//! Every key is in `docs/openstack.md`.

pub mod cinder;
pub mod config;
pub mod errors;
pub mod group;
pub mod nova;
pub mod plan;
pub mod session;

use elastic_sdk::backend::{Group as GroupRef, Guest, Outcome};
use elastic_sdk::{host, key, log, parse_json, Capacity, Metadata, PluginError, Target};
use elastic_sdk_volumes::{Resized, Volume, VolumeGroup};
use std::cell::RefCell;

/// The session and memory of this instance; rebuilt when the plugin's config changes.
struct Instance {
    session: session::Session,
    memory: group::Memory,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

/// Runs `f` with the instance's session (a new one when the plugin's config changed).
fn with_session<T>(
    group: &str,
    what: &str,
    f: impl FnOnce(&mut session::Session) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    with_instance(group, what, |i| f(&mut i.session))
}

fn with_instance<T>(
    group: &str,
    what: &str,
    f: impl FnOnce(&mut Instance) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let source = host::config();
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|i| i.session.source != source) {
            let cloud: config::Cloud = parse_json(&source, "[plugins.openstack.config]")?;
            *slot =
                Some(Instance { session: session::Session::new(cloud, source), memory: Default::default() });
        }
        let i = slot.as_mut().expect("just set");
        i.session.requests = 0;
        let result = f(i);
        log::debug(&format!("{what} {group}: {} API requests", i.session.requests));
        result
    })
}

fn with_group<T>(
    g: &GroupRef,
    what: &str,
    f: impl FnOnce(&mut session::Session, &mut group::Memory, &group::Group) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let params: config::GroupParams = parse_json(&g.params, &format!("group[{}].backend_config", g.name))?;
    let ladder = params.ladder()?;
    let group = group::Group { name: &g.name, params, ladder };
    with_instance(&g.name, what, |i| f(&mut i.session, &mut i.memory, &group))
}

struct OpenStack;

impl Guest for OpenStack {
    fn metadata() -> Metadata {
        Metadata {
            name: "openstack".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Nova servers: creates and deletes them (horizontal) and resizes them along a flavor ladder (vertical).".into(),
            config_keys: vec![
                key("auth_url", "Keystone v3 URL, e.g. http://keystone:5000/v3", true),
                key("auth_type", "password (default) or application_credential", false),
                key("username", "user name (password auth)", false),
                key("user_domain_name", "the user's domain; default Default", false),
                key("project_name", "project to scope to (password auth)", false),
                key("project_domain_name", "the project's domain; default Default", false),
                key("application_credential_id", "application credential ID (its secret: secret `application_credential_secret`)", false),
                key("region_name", "region of the endpoints; default the catalog's first", false),
                key("interface", "endpoint interface: public (default), internal, admin", false),
                key("compute_endpoint", "use this compute URL instead of the catalog's", false),
                key("microversion", "highest compute microversion to use, 2.N; default 2.96", false),
                key("request_timeout", "limit on each HTTP request; default 10s", false),
                key("retries", "extra attempts for a retryable failure; default 4", false),
                // A group's backend_config (see docs/openstack.md).
                key("image", "(group backend_config) image name or ID of new servers; required, except in a storage group", false),
                key("volume", "(storage group backend_config) the Cinder volume's id or unique name", false),
                key("server", "(storage group backend_config) or: the server (name or id) the volume is attached to", false),
                key("device", "(storage group backend_config) and the device it is attached at, e.g. /dev/vdb", false),
                key("extend_timeout", "(storage group backend_config) wait for Cinder to report the new size; default 2m", false),
                key("flavor", "(group backend_config) flavor of new servers without a ladder", false),
                key("flavors", "(group backend_config) the size ladder, smallest first (vertical scaling)", false),
                key("networks", "(group backend_config) \"none\" (default), \"auto\" or network UUIDs", false),
                key("name_prefix", "(group backend_config) server name prefix; default the group's name", false),
                key("key_name", "(group backend_config) SSH key pair of new servers", false),
                key("security_groups", "(group backend_config) security groups of new servers", false),
                key("user_data", "(group backend_config) cloud-init user data, as text", false),
                key("availability_zone", "(group backend_config) availability zone of new servers", false),
                key("server_group", "(group backend_config) server group UUID (scheduler hint)", false),
                key("metadata", "(group backend_config) extra metadata on every server", false),
                key("deletion_policy", "(group backend_config) newest (default), oldest, fewest-active-tasks: the order among servers the agent's scale-in ranking measures alike", false),
                key("build_timeout", "(group backend_config) a server still building after this is deleted; default 10m", false),
                key("resize_timeout", "(group backend_config) limit on one resize; default 10m", false),
                key("delete_timeout", "(group backend_config) wait for deleted servers to disappear; default 2m", false),
                key("verify", "(group backend_config) health check of a resized server before confirming", false),
            ],
        }
    }

    fn describe(g: GroupRef) -> Result<Capacity, PluginError> {
        with_group(&g, "describe", group::describe)
    }

    fn scale(g: GroupRef, target: Target) -> Result<Outcome, PluginError> {
        with_group(&g, "scale", |s, m, group| {
            let (capacity, detail) = group::scale(s, m, group, target)?;
            Ok(Outcome { capacity, detail })
        })
    }
}

/// A storage group's Cinder volume (see `cinder`).
impl elastic_sdk_volumes::Guest for OpenStack {
    fn describe(g: VolumeGroup) -> Result<Volume, PluginError> {
        with_session(&g.name, "volumes.describe", |s| {
            let v = cinder::find(s, &cinder::params(&g.name, &g.params)?)?;
            Ok(volume(v))
        })
    }

    fn resize(g: VolumeGroup, size_gib: u64) -> Result<Resized, PluginError> {
        with_session(&g.name, "volumes.resize", |s| {
            let params = cinder::params(&g.name, &g.params)?;
            let (v, detail) = cinder::extend(s, &params, size_gib, elastic_sdk::decision::id())?;
            Ok(Resized { volume: volume(v), detail })
        })
    }
}

fn volume(v: cinder::CinderVolume) -> Volume {
    let pending = v.pending();
    Volume { id: v.id, size_gib: v.size_gib, status: v.status, pending, attachment: v.attachment }
}

elastic_sdk_volumes::export_volume_backend!(OpenStack);
