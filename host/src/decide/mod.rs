//! The decision, pure: no clock, no I/O, no runtime. What a group should become given what it
//! observed, what its policy advised and what it remembers (`decision.rs`), through the host's
//! guardrails (`guardrails.rs`, which no plugin can bypass) and calendar windows
//! (`schedule.rs`), and a storage group's own guardrails (`storage.rs`: grow only, steps, a
//! daily limit); the replay of a trace through the same step (`simulate.rs`, `agent
//! simulate`) and its charts (`plot.rs`).
//!
//! The live loop (`scaler`) and the replay both call [`decision::decide`]; the test
//! `scaler::equivalence` holds them to the same answers.

pub mod decision;
pub mod guardrails;
pub mod plot;
pub mod schedule;
pub mod simulate;
pub mod storage;
