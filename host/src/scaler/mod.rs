//! Scaling groups. Today: the guardrails every recommendation passes through (issue 5 builds the
//! control loop, the journal and `agent simulate` on them).

pub mod guardrails;
