//! One integration-test binary (one link step), a module per capability.

mod common;

mod cli;
mod hot_reload;
mod loading;
mod monitoring;
mod openstack;
mod sandbox;
mod scaler;
mod supervisor;
