//! The `agent` library: everything the binary does, usable from tests and benchmarks.
//!
//! Module map (see `docs/ARCHITECTURE.md`):
//! - [`config`]: `agent.toml` → a validated [`config::Config`]; nothing else parses TOML.
//! - [`store`]: the SQLite database; nothing else speaks SQL.
//! - [`plugins`]: wasmtime; nothing else touches a component, a store or an instance.
//! - [`api`]: the HTTP endpoints.
//! - [`cluster`]: etcd: one decider per group across a fleet.
//! - [`daemon`]: wires the above together for `agent run`; [`reload`] applies a changed
//!   configuration to it.

pub mod api;
pub mod cluster;
pub mod collector;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod footprint;
pub mod keys;
pub mod plugins;
pub mod reload;
pub mod sampler;
pub mod scaffold;
pub mod scaler;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod text;
pub mod timefmt;
