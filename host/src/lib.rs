//! The `agent` library: everything the binary does, usable from tests and benchmarks.
//!
//! Module map, lowest layer first; each imports only modules above it in this list (the table
//! is `layers.rs`, checked by its test; see `docs/ARCHITECTURE.md`):
//! - foundations: [`duration`], [`text`], [`timefmt`] (the one clock), [`keys`], [`rate`],
//!   [`footprint`], [`telemetry`], [`pki`] (TLS files).
//! - [`decide`]: the decision, pure — guardrails, schedules, the one decision step, the replay.
//! - [`config`]: `agent.toml` → a validated [`config::Config`]; nothing else parses TOML.
//! - [`store`]: the SQLite database; nothing else speaks SQL.
//! - [`sampler`]: this machine's readings.
//! - [`plugins`]: wasmtime and the contract; nothing else touches a component, a store, an
//!   instance or a generated type.
//! - [`supervisor`]: the application's processes.
//! - [`cluster`]: etcd: one decider per group across a fleet.
//! - [`collector`]: source plugins → the store.
//! - [`scaler`]: the live loop of each group (gather → decide → act → record).
//! - [`reload`]: a changed configuration applied to the running parts.
//! - [`api`]: the HTTP endpoints and the operator's page.
//! - [`daemon`]: wires the above together for `agent run`.
//! - [`scaffold`], [`commands`]: `agent plugins new`'s templates; the command line.

pub mod api;
pub mod cluster;
pub mod collector;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod duration;
pub mod footprint;
pub mod keys;
#[cfg(test)]
mod layers;
pub mod pki;
pub mod plugins;
pub mod rate;
pub mod reload;
pub mod sampler;
pub mod scaffold;
pub mod scaler;
pub mod storage;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod text;
pub mod timefmt;
