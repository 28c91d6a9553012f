//! Host bindings for the three plugin worlds of `wit/plugin.wit` (contract `0.1.x`).
//!
//! One `bindgen!` per world; the shared `types` and `host` interfaces are generated once (in
//! `source`) and reused by the others through `with`, so a `Capacity` is one Rust type across
//! the three worlds.
//!
//! These generated types stay inside `plugins/`: the rest of the host speaks the native types
//! of [`super::types`], and [`super::convert`] converts between the two where an export is
//! called. The aliases below are for `plugins/` itself (the conversions, the host functions).
//! When the contract makes a breaking release (0.2.0), its bindings get a module of their own
//! here and a module of conversions into the same native types in [`super::convert`].

pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "source-plugin",
        exports: { default: async },
    });
}

pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-plugin",
        exports: { default: async },
        with: {
            "elastic:plugin/types": super::source::elastic::plugin::types,
            "elastic:plugin/host": super::source::elastic::plugin::host,
            "elastic:plugin/about": super::source::elastic::plugin::about,
        },
    });
}

pub mod backend {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "backend-plugin",
        imports: {
            "elastic:plugin/replicas": async,
            "elastic:plugin/scale-in": async,
            "elastic:plugin/replica-units": async,
        },
        exports: { default: async },
        with: {
            "elastic:plugin/types": super::source::elastic::plugin::types,
            "elastic:plugin/host": super::source::elastic::plugin::host,
            "elastic:plugin/about": super::source::elastic::plugin::about,
        },
    });
}

/// The `volume-backend-plugin` world (0.1.3): only its `volumes` export is used. A backend is
/// instantiated through [`backend`]'s bindings whether or not it exports `volumes`, and
/// `volumes` is looked up on the same instance when it does, so a backend built before 0.1.3
/// needs nothing of this.
pub mod volume_backend {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "volume-backend-plugin",
        exports: { default: async },
        with: {
            "elastic:plugin/types": super::source::elastic::plugin::types,
            "elastic:plugin/host": super::source::elastic::plugin::host,
            "elastic:plugin/about": super::source::elastic::plugin::about,
            "elastic:plugin/replicas": super::backend::elastic::plugin::replicas,
            "elastic:plugin/scale-in": super::backend::elastic::plugin::scale_in,
            "elastic:plugin/replica-units": super::backend::elastic::plugin::replica_units,
            "elastic:plugin/decision": super::backend::elastic::plugin::decision,
            "elastic:plugin/cloud-limits": super::backend::elastic::plugin::cloud_limits,
        },
    });
}

pub use backend::exports::elastic::plugin::backend::{Group, Outcome};
pub use policy::exports::elastic::plugin::policy::{Context as PolicyContext, Recommendation};
pub use source::elastic::plugin::host::{self as host_api, Level};
pub use source::elastic::plugin::types::{
    Bounds, Capacity, ConfigKey, Label, PluginError, PluginMetadata as Metadata, Sample, Target, Window,
};
pub use volume_backend::exports::elastic::plugin::volumes::{
    GuestIndices as VolumesIndices, Resized, Volume, VolumeGroup,
};

/// The contract version this host is built for: the `@x.y.z` of every interface name.
pub const CONTRACT_VERSION: &str = "0.1.4";
/// The WIT package name.
pub const PACKAGE: &str = "elastic:plugin";
