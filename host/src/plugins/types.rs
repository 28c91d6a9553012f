//! The host's own types for what crosses the plugin boundary.
//!
//! Everything outside [`super`] speaks these: plain Rust values, free of wasmtime and of any
//! contract version. The bindings of each contract version ([`super::bindings`]) are converted
//! into and out of them at the edge, where a generated export is called ([`super::convert`]),
//! so a new contract version changes no caller.
//!
//! They mirror the records and variants of `wit/plugin.wit` field for field (same names, same
//! types): the `types` interface first, then the records of the `policy` and `backend`
//! interfaces. The documentation of each is the contract's.

// --- interface `types` ---

/// One `key=value` label of a metric series, e.g. `cpu=3` or `process=web`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// One measurement, as a source plugin reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Metric name, dotted lower case in the OpenTelemetry style, e.g. `http.server.requests`.
    pub metric: String,
    /// Labels that distinguish series of one metric. The agent adds `source=<plugin name>`.
    pub labels: Vec<Label>,
    /// The value. NaN and infinities are dropped by the agent and counted as a fault.
    pub value: f64,
    /// When it was measured, in milliseconds since the Unix epoch (UTC). Zero means "now".
    pub timestamp_ms: i64,
}

/// The recent history of one metric series, oldest first, as two lists of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    /// The metric name as configured in the scaling group.
    pub metric: String,
    /// The series' labels.
    pub labels: Vec<Label>,
    /// The configured length of the window, in milliseconds (the points may cover less).
    pub length_ms: u64,
    /// When each value was measured, milliseconds since the Unix epoch, oldest first.
    pub timestamps_ms: Vec<i64>,
    /// The values, one per timestamp. Empty means "unknown", never zero.
    pub values: Vec<f64>,
}

/// How much a scaling group has now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capacity {
    /// Units that exist or are being created (servers, replicas).
    pub replicas: u32,
    /// Of `replicas`, how many are ready to serve.
    pub ready: u32,
    /// Size tier: an index into the group's size ladder, 0 the smallest.
    pub tier: u32,
    /// The tier's name as the backend knows it; empty when none.
    pub tier_name: String,
}

/// The capacity a group should have, after the agent's guardrails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    /// Number of units wanted.
    pub replicas: u32,
    /// Size tier wanted (index into the size ladder).
    pub tier: u32,
}

/// The limits the agent will hold a group to, whatever a policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Highest tier index of the group's size ladder; 0 when the group has no ladder.
    pub max_tier: u32,
}

/// Errors a plugin returns. The agent acts on the variant, the string is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The plugin's configuration is wrong; not retried until the configuration changes.
    BadConfig(String),
    /// Something the plugin depends on is unavailable right now; retried on the next interval.
    Unavailable(String),
    /// The input the agent passed cannot be used.
    InvalidInput(String),
    /// The backend refused because a quota or limit was reached.
    QuotaExceeded(String),
    /// The backend refused because the resource is busy with another operation.
    Conflict(String),
    /// Anything else. The message says what.
    Other(String),
}

/// For people: the variant in words, then the plugin's message (`bad config: no key \`url\``).
impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::BadConfig(m) => write!(f, "bad config: {m}"),
            PluginError::Unavailable(m) => write!(f, "unavailable: {m}"),
            PluginError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            PluginError::QuotaExceeded(m) => write!(f, "quota exceeded: {m}"),
            PluginError::Conflict(m) => write!(f, "conflict: {m}"),
            PluginError::Other(m) => write!(f, "error: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

/// What a plugin says about itself (`plugin-metadata` in the contract).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Unique name of the plugin in an agent.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// One or two sentences for `agent plugins inspect`.
    pub description: String,
    /// Every configuration key the plugin reads.
    pub config_keys: Vec<ConfigKey>,
}

/// One configuration key a plugin understands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigKey {
    /// The key, in the plugin's `[plugins.<name>.config]` table or a group's
    /// `policy_config`/`backend_config`.
    pub name: String,
    /// What it means, its unit and its default.
    pub description: String,
    /// Whether the plugin refuses to work without it.
    pub required: bool,
}

// --- interface `policy` ---

/// What the agent knows when it asks a policy (`policy.context` in the contract).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyContext {
    /// The scaling group's name.
    pub group: String,
    /// The evaluation time, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// The group's capacity now.
    pub current: Capacity,
    /// The bounds the agent will clamp to.
    pub bounds: Bounds,
    /// One window per metric the group configured, in configuration order.
    pub windows: Vec<Window>,
    /// The group's `policy_config` table for this policy, as a JSON object.
    pub params: String,
}

/// What a policy wants.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recommendation {
    /// Desired number of replicas, before the agent rounds it up and applies its guardrails.
    pub replicas: f64,
    /// Desired size tier; `None` keeps the current one.
    pub tier: Option<u32>,
    /// Why, in a sentence for people: it is journaled with the decision.
    pub reason: String,
}

// --- interface `backend` ---

/// Which group a backend call is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// The scaling group's name.
    pub name: String,
    /// The group's `backend_config` table for this backend, as a JSON object.
    pub params: String,
}

/// What a `scale` call did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The capacity after the call.
    pub capacity: Capacity,
    /// What was done, for people (e.g. "created web-4, web-5").
    pub detail: String,
}

// --- interface `volumes` (0.1.3) ---

/// Which storage group a `volumes` call is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeGroup {
    pub name: String,
    /// The group's `backend_config` table, as a JSON object.
    pub params: String,
}

/// A volume as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Volume {
    pub id: String,
    pub size_gib: u64,
    pub status: String,
    /// `Some(why)` while a change has not completed: no resize meanwhile.
    pub pending: Option<String>,
    /// Where it is attached, for people; empty when detached.
    pub attachment: String,
}

/// What a `volumes.resize` call did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resized {
    pub volume: Volume,
    pub detail: String,
}

// --- interfaces `scale-in` and `replica-units` ---

/// One unit as `scale-in.rank` ranks it, most removable first.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub unit: String,
    pub removable: bool,
    pub busy: Option<f64>,
    pub activity: Option<f64>,
    pub reason: String,
}

/// A replica unit as the contract names it: `web#2` → (`web`, 2).
pub fn parse_unit(unit: &str) -> Option<(&str, u32)> {
    let (process, index) = unit.rsplit_once('#')?;
    Some((process, index.parse().ok()?))
}
