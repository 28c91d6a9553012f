//! Conversions between the generated bindings of each contract version and the host's own
//! types ([`super::types`]).
//!
//! The rest of the host never names a generated type: it calls plugins with native values, and
//! the worker converts them here, right where it calls a generated export, and converts what
//! comes back (as Zed's extension host does for each of its WIT versions).
//!
//! One module per breaking contract version. `v0_1` serves every `0.1.x`: a patch release only
//! adds interfaces, so the records it converts stay the same. A new contract version (`0.2`)
//! adds its bindings to [`super::bindings`] and its own module of conversions here, into the
//! same native types; nothing outside `plugins/` changes.
//!
//! Every conversion destructures its input completely: a field added on either side is a
//! compile error here, not a value silently dropped.

use super::types as native;

/// Converts every element of a list (moved, not copied: a list of numbers keeps its buffer).
pub(super) fn list<A, B: From<A>>(items: Vec<A>) -> Vec<B> {
    items.into_iter().map(B::from).collect()
}

/// A generated export's result, in the host's types.
pub(super) fn result<T, N: From<T>, E: Into<native::PluginError>>(
    r: Result<T, E>,
) -> Result<N, native::PluginError> {
    r.map(N::from).map_err(Into::into)
}

/// `From` both ways between the generated record `wire::NAME` and `native::NAME`: every field
/// listed (all of them, or the destructuring does not compile), each carried with `.into()`, a
/// list (after `;`) element by element.
macro_rules! both_ways {
    ($($name:ident { $($field:ident),* $(; $($list:ident),*)? })*) => {$(
        impl From<wire::$name> for native::$name {
            fn from(wire::$name { $($field,)* $($($list,)*)? }: wire::$name) -> Self {
                native::$name { $($field: $field.into(),)* $($($list: list($list),)*)? }
            }
        }

        impl From<native::$name> for wire::$name {
            fn from(native::$name { $($field,)* $($($list,)*)? }: native::$name) -> Self {
                wire::$name { $($field: $field.into(),)* $($($list: list($list),)*)? }
            }
        }
    )*};
}

/// `From` both ways between the generated variant `wire::NAME` and `native::NAME`, whose cases
/// carry one value each: every case listed (a missing one does not compile).
macro_rules! both_ways_variant {
    ($name:ident { $($case:ident),* }) => {
        impl From<wire::$name> for native::$name {
            fn from(v: wire::$name) -> Self {
                match v {
                    $(wire::$name::$case(m) => native::$name::$case(m.into()),)*
                }
            }
        }

        impl From<native::$name> for wire::$name {
            fn from(v: native::$name) -> Self {
                match v {
                    $(native::$name::$case(m) => wire::$name::$case(m.into()),)*
                }
            }
        }
    };
}

/// Contract `0.1.x` (`wit/plugin.wit`; every `0.1` release shares these records).
mod v0_1 {
    use super::{list, native};
    use crate::plugins::bindings as wire;

    both_ways! {
        Label { key, value }
        Sample { metric, value, timestamp_ms; labels }
        Window { metric, length_ms, timestamps_ms, values; labels }
        Capacity { replicas, ready, tier, tier_name }
        Target { replicas, tier }
        Bounds { min_replicas, max_replicas, max_tier }
        ConfigKey { name, description, required }
        Metadata { name, version, description; config_keys }
        PolicyContext { group, now_ms, current, bounds, params; windows }
        Recommendation { replicas, tier, reason }
        Group { name, params }
        Outcome { capacity, detail }
        VolumeGroup { name, params }
        Volume { id, size_gib, status, pending, attachment }
        Resized { volume, detail }
    }

    both_ways_variant!(PluginError { BadConfig, Unavailable, InvalidInput, QuotaExceeded, Conflict, Other });
}

#[cfg(test)]
mod tests {
    use super::native::*;
    use crate::plugins::bindings as wire;
    use std::fmt::Debug;

    /// native → generated → native gives back the original.
    fn round_trip<W, N>(original: N)
    where
        W: From<N>,
        N: From<W> + Clone + PartialEq + Debug,
    {
        let generated: W = original.clone().into();
        let back: N = generated.into();
        assert_eq!(back, original);
    }

    fn labels() -> Vec<Label> {
        vec![
            Label { key: "cpu".into(), value: "3".into() },
            Label { key: "process".into(), value: "web".into() },
        ]
    }

    fn capacity() -> Capacity {
        Capacity { replicas: 5, ready: 3, tier: 2, tier_name: "m1.large".into() }
    }

    #[test]
    fn label() {
        round_trip::<wire::Label, _>(Label { key: "cpu".into(), value: "3".into() });
        round_trip::<wire::Label, _>(Label::default());
    }

    #[test]
    fn sample() {
        round_trip::<wire::Sample, _>(Sample {
            metric: "http.server.requests".into(),
            labels: labels(),
            value: 12.5,
            timestamp_ms: 1_700_000_000_123,
        });
        round_trip::<wire::Sample, _>(Sample { timestamp_ms: -1, value: f64::MAX, ..Sample::default() });
    }

    #[test]
    fn window() {
        round_trip::<wire::Window, _>(Window {
            metric: "system.cpu.utilization".into(),
            labels: labels(),
            length_ms: 60_000,
            timestamps_ms: vec![1_000, 2_000, 3_000],
            values: vec![0.25, 0.5, 0.75],
        });
        round_trip::<wire::Window, _>(Window::default());
    }

    #[test]
    fn capacity_target_bounds() {
        round_trip::<wire::Capacity, _>(capacity());
        round_trip::<wire::Capacity, _>(Capacity { replicas: u32::MAX, ..Capacity::default() });
        round_trip::<wire::Target, _>(Target { replicas: 7, tier: 1 });
        round_trip::<wire::Bounds, _>(Bounds { min_replicas: 1, max_replicas: 20, max_tier: 3 });
    }

    #[test]
    fn every_plugin_error() {
        for e in [
            PluginError::BadConfig("no key `url`".into()),
            PluginError::Unavailable("the cloud API is down".into()),
            PluginError::InvalidInput("no window".into()),
            PluginError::QuotaExceeded("instances: 10 of 10".into()),
            PluginError::Conflict("busy".into()),
            PluginError::Other(String::new()),
        ] {
            round_trip::<wire::PluginError, _>(e);
        }
    }

    #[test]
    fn metadata() {
        round_trip::<wire::Metadata, _>(Metadata {
            name: "target-tracking".into(),
            version: "1.2.3".into(),
            description: "Keeps a metric near a target.".into(),
            config_keys: vec![
                ConfigKey {
                    name: "target".into(),
                    description: "the value per replica".into(),
                    required: true,
                },
                ConfigKey { name: "metric".into(), description: String::new(), required: false },
            ],
        });
        round_trip::<wire::ConfigKey, _>(ConfigKey {
            name: "k".into(),
            description: "d".into(),
            required: true,
        });
        round_trip::<wire::Metadata, _>(Metadata::default());
    }

    #[test]
    fn policy_context_and_recommendation() {
        round_trip::<wire::PolicyContext, _>(PolicyContext {
            group: "web".into(),
            now_ms: 1_700_000_000_000,
            current: capacity(),
            bounds: Bounds { min_replicas: 1, max_replicas: 20, max_tier: 3 },
            windows: vec![
                Window {
                    metric: "a".into(),
                    labels: labels(),
                    length_ms: 1_000,
                    timestamps_ms: vec![1],
                    values: vec![2.0],
                },
                Window::default(),
            ],
            params: r#"{"target": 0.6}"#.into(),
        });
        round_trip::<wire::Recommendation, _>(Recommendation {
            replicas: 4.5,
            tier: Some(2),
            reason: "cpu 80 % over 60 % target".into(),
        });
        round_trip::<wire::Recommendation, _>(Recommendation { tier: None, ..Recommendation::default() });
    }

    #[test]
    fn group_and_outcome() {
        round_trip::<wire::Group, _>(Group { name: "web".into(), params: r#"{"flavor": "m1"}"#.into() });
        round_trip::<wire::Outcome, _>(Outcome { capacity: capacity(), detail: "created web-4".into() });
    }

    #[test]
    fn results_convert_both_sides() {
        let ok: Result<wire::Capacity, wire::PluginError> = Ok(capacity().into());
        assert_eq!(super::result::<_, Capacity, _>(ok), Ok(capacity()));
        let err: Result<wire::Capacity, wire::PluginError> = Err(wire::PluginError::Conflict("busy".into()));
        assert_eq!(super::result::<_, Capacity, _>(err), Err(PluginError::Conflict("busy".into())));
        let samples: Vec<Sample> = super::list(vec![wire::Sample::from(Sample::default())]);
        assert_eq!(samples, [Sample::default()]);
    }
}
