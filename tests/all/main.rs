//! One integration-test binary (one link step), a module per capability.

mod browser;
mod common;

mod alerts;
mod api_limits;
mod aws;
mod cli;
mod containment;
mod contract;
mod fault_proxy;
mod first_hour;
mod fleet;
mod footprint;
mod guide;
mod hardening;
mod hot_reload;
mod javascript;
mod loading;
mod monitoring;
mod openstack;
mod package;
mod page;
mod pki;
mod publish;
mod python;
mod sandbox;
mod scaffold;
mod scale_in;
mod scaler;
mod storage;
mod supervisor;
mod supervisor_ops;
mod trust;
mod tune;
mod week_old;

/// Under `CI=true` only what `tests/skips-allowed` names may be skipped (`common::skipped`).
#[test]
fn only_the_listed_skips_are_allowed_under_ci() {
    assert!(common::skip_allowed(r#"process_tree = "cgroup-v1": no writable cgroup v1 mount here"#));
    assert!(common::skip_allowed("memory_max/cpu_max: no cgroup limits here (subreaper)"));
    assert!(!common::skip_allowed("fleet::a_test: no `etcd` here (apt-get install etcd-server to run it)"));
    assert!(!common::skip_allowed("openstack::a_test: no OpenStack cloud configured"));
}
