//! What the operator writes: the cloud (`[plugins.openstack.config]`, one per agent) and each
//! group's server template and behaviour (`backend_config` of a `[[group]]`).

use elastic_sdk::PluginError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The microversion this plugin is written against; a cloud whose maximum is lower gets its
/// maximum, and the plugin uses only what that version has.
pub const WANTED_MICROVERSION: (u32, u32) = (2, 96);

/// `[plugins.openstack.config]`: where the cloud is and who we are. Secrets are not here: the
/// password or application credential secret comes from the host's secret grant.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    /// Keystone v3, e.g. `https://keystone.example.com:5000/v3`.
    pub auth_url: String,
    /// `password` (default) or `application_credential`.
    #[serde(default = "password")]
    pub auth_type: String,
    pub username: Option<String>,
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
    pub project_name: Option<String>,
    #[serde(default = "default_domain")]
    pub project_domain_name: String,
    pub application_credential_id: Option<String>,
    /// Region of the endpoints to use; default: the first the catalog lists.
    pub region_name: Option<String>,
    /// `public` (default), `internal` or `admin`.
    #[serde(default = "public")]
    pub interface: String,
    /// Use this compute endpoint instead of the catalog's (like `compute_endpoint_override` in
    /// clouds.yaml), e.g. to go through a proxy.
    pub compute_endpoint: Option<String>,
    /// Highest compute microversion to ask for, `2.N`; default 2.96 (lowered to the cloud's).
    pub microversion: Option<String>,
    /// Limit on each HTTP request: connecting, and waiting for the answer. Default 10s.
    #[serde(default = "ten_seconds", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub request_timeout: Duration,
    /// Attempts beyond the first for a request that failed in a retryable way. Default 4.
    #[serde(default = "four")]
    pub retries: u32,
}

/// A group's `backend_config`: the template of its servers and how to manage them.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    /// Image name or ID.
    pub image: String,
    /// Flavor of new servers when the group has no size ladder (`flavors`).
    pub flavor: Option<String>,
    /// The size ladder, smallest first: tier 0 is `flavors[0]`. Enables vertical scaling.
    #[serde(default)]
    pub flavors: Vec<String>,
    /// `"none"`, `"auto"`, or a list of network UUIDs. Default `"none"`.
    #[serde(default)]
    pub networks: Networks,
    /// Prefix of server names (`<prefix>-<8 hex>`); default the group's name.
    pub name_prefix: Option<String>,
    pub key_name: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Cloud-init user data, as text (the plugin encodes it).
    pub user_data: Option<String>,
    pub availability_zone: Option<String>,
    /// Server group UUID (scheduler hint), e.g. for anti-affinity.
    pub server_group: Option<String>,
    /// Extra metadata on every server.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Which servers go first on scale-in among those the agent measures alike: `newest`
    /// (default), `oldest` or `fewest-active-tasks`. Servers that are not ready always go first;
    /// a server that reports busy (`[group.scale_in]`) never goes.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// A server still building after this long is deleted and reported. Default 10m.
    #[serde(default = "ten_minutes", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub build_timeout: Duration,
    /// How long one resize (to VERIFY_RESIZE, then to ACTIVE after confirming) may take. Default 10m.
    #[serde(default = "ten_minutes", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub resize_timeout: Duration,
    /// How long to wait for deleted servers to disappear. Default 2m.
    #[serde(default = "two_minutes", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub delete_timeout: Duration,
    /// Health check of a resized server before confirming; revert when it fails.
    pub verify: Option<Verify>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(untagged)]
pub enum Networks {
    #[default]
    #[serde(skip)]
    Default,
    Named(String),
    Ids(Vec<String>),
}

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum DeletionPolicy {
    #[default]
    Newest,
    Oldest,
    FewestActiveTasks,
}

/// `verify = { url = "http://{address}:8080/healthz", expect_status = 200, timeout = "60s" }`
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// GET this; `{name}`, `{id}` and `{address}` (first IP of the server) are replaced. Its
    /// origin must be in the plugin's `allow_http`.
    pub url: String,
    /// Status that means healthy; default any 2xx.
    pub expect_status: Option<u16>,
    /// Keep trying this long before reverting. Default 60s.
    #[serde(default = "sixty_seconds", deserialize_with = "elastic_sdk::duration::deserialize")]
    pub timeout: Duration,
}

impl GroupParams {
    /// The ladder; a group without `flavors` has one tier, its `flavor`.
    pub fn ladder(&self) -> Result<Vec<String>, PluginError> {
        match (&self.flavor, self.flavors.is_empty()) {
            (_, false) => Ok(self.flavors.clone()),
            (Some(f), true) => Ok(vec![f.clone()]),
            (None, true) => Err(PluginError::BadConfig("backend_config: set `flavor` or `flavors`".into())),
        }
    }

    /// The tier new servers start at when nothing else says: `flavor`'s place in the ladder, else 0.
    pub fn initial_tier(&self) -> u32 {
        self.flavor.as_ref().and_then(|f| self.flavors.iter().position(|x| x == f)).unwrap_or(0) as u32
    }
}

impl Cloud {
    /// The highest microversion to ask for.
    pub fn wanted(&self) -> Result<(u32, u32), PluginError> {
        match &self.microversion {
            None => Ok(WANTED_MICROVERSION),
            Some(v) => parse_version(v)
                .ok_or_else(|| PluginError::BadConfig(format!("microversion `{v}`: write it as `2.N`"))),
        }
    }
}

/// `2.79` → (2, 79).
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn password() -> String {
    "password".into()
}
fn default_domain() -> String {
    "Default".into()
}
fn public() -> String {
    "public".into()
}
fn four() -> u32 {
    4
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}
fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_params_read_durations_networks_and_policies() {
        let p: GroupParams = serde_json::from_str(
            r#"{"image":"cirros","flavors":["m1.tiny","m1.small"],"flavor":"m1.small","networks":"none",
                "deletion_policy":"oldest","build_timeout":"90s"}"#,
        )
        .unwrap();
        assert_eq!(p.networks, Networks::Named("none".into()));
        assert_eq!(p.deletion_policy, DeletionPolicy::Oldest);
        assert_eq!(p.build_timeout, Duration::from_secs(90));
        assert_eq!(p.initial_tier(), 1);
        assert_eq!(p.ladder().unwrap().len(), 2);
        let p: GroupParams = serde_json::from_str(r#"{"image":"x","networks":["a","b"]}"#).unwrap();
        assert_eq!(p.networks, Networks::Ids(vec!["a".into(), "b".into()]));
        assert!(matches!(p.ladder(), Err(PluginError::BadConfig(m)) if m.contains("flavor")));
        let e = serde_json::from_str::<GroupParams>(r#"{"image":"x","flavor":"y","build_timeout":"10"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("no unit"), "{e}");
    }

    #[test]
    fn microversions_parse() {
        assert_eq!(parse_version("2.79"), Some((2, 79)));
        assert_eq!(parse_version("2"), None);
    }
}
