//! Human durations in configuration and on the command line; shared with the plugin SDK so a
//! plugin's config reads durations exactly as `agent.toml` does.

pub use elastic_duration::{format, parse};
