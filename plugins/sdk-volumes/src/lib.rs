//! Bindings of the `volume-backend-plugin` world (contract 0.1.3): a backend that also grows
//! volumes, for storage groups. Everything shared is `elastic_sdk`'s own types and traits: a
//! backend implements [`elastic_sdk::backend::Guest`] as usual, and [`Guest`] (the `volumes`
//! interface) on the same type, then exports both with `export_volume_backend!(T)` instead of
//! `export_backend!(T)`.
//!
//! A crate of its own, not a module of `elastic_sdk`: two worlds that export the same interface
//! (`backend`) cannot both have public export macros in one crate (wit-bindgen issue #1502).

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "volume-backend-plugin",
        pub_export_macro: true,
        export_macro_name: "export_volume_backend",
        default_bindings_module: "elastic_sdk_volumes::bindings",
        with: {
            "elastic:plugin/types@0.1.4": elastic_sdk::source::bindings::elastic::plugin::types,
            "elastic:plugin/host@0.1.4": elastic_sdk::source::bindings::elastic::plugin::host,
            "elastic:plugin/about@0.1.4": elastic_sdk::source::bindings::elastic::plugin::about,
            "elastic:plugin/replicas@0.1.4": elastic_sdk::backend::bindings::elastic::plugin::replicas,
            "elastic:plugin/scale-in@0.1.4": elastic_sdk::backend::bindings::elastic::plugin::scale_in,
            "elastic:plugin/replica-units@0.1.4": elastic_sdk::backend::bindings::elastic::plugin::replica_units,
            "elastic:plugin/decision@0.1.4": elastic_sdk::backend::bindings::elastic::plugin::decision,
            "elastic:plugin/cloud-limits@0.1.4": elastic_sdk::backend::bindings::elastic::plugin::cloud_limits,
        },
    });
}

pub use bindings::exports::elastic::plugin::volumes::{Guest, Resized, Volume, VolumeGroup};

use bindings::exports::elastic::plugin::backend as this_world;
use elastic_sdk::{backend as sdk, Capacity, Metadata, PluginError, Target};

/// This world's copy of the `backend` export, served by the plugin's `elastic_sdk::backend::Guest`
/// (wit-bindgen generates an exported interface per world; its `with` maps imports only).
impl<T: sdk::Guest> this_world::Guest for T {
    fn metadata() -> Metadata {
        T::metadata()
    }

    fn describe(g: this_world::Group) -> Result<Capacity, PluginError> {
        T::describe(sdk::Group { name: g.name, params: g.params })
    }

    fn scale(g: this_world::Group, target: Target) -> Result<this_world::Outcome, PluginError> {
        let o = T::scale(sdk::Group { name: g.name, params: g.params }, target)?;
        Ok(this_world::Outcome { capacity: o.capacity, detail: o.detail })
    }
}
pub use bindings::export_volume_backend;
