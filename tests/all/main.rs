//! One integration-test binary (one link step), a module per capability.

mod browser;
mod common;

mod alerts;
mod api_limits;
mod cli;
mod containment;
mod contract;
mod first_hour;
mod fleet;
mod footprint;
mod guide;
mod hardening;
mod hot_reload;
mod loading;
mod monitoring;
mod openstack;
mod package;
mod page;
mod pki;
mod python;
mod sandbox;
mod scaffold;
mod scale_in;
mod scaler;
mod supervisor;
mod supervisor_ops;
mod trust;
mod week_old;
