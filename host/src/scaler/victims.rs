//! Which units a scale-in removes: the `scale-in.rank` a backend calls before it removes any.
//!
//! Ranked by what the agent *measured*, not by what was reserved: units that serve nothing
//! (not ready) first, then idle ones by their activity over the last minute, then those whose
//! busyness is unknown; units that report busy last, and not removable. For a replica
//! (`web#2`) that is its state, its `[process.busy]` probe asked now, and its sampled CPU; for
//! another unit (a server), the group's `[group.scale_in]` metrics, from any source.

use crate::config::{Config, GroupSpec};
use crate::plugins::sandbox::{Ranking, ReplicaControl, ReplicaFacts};
use crate::plugins::types::{parse_unit, PluginError};
use crate::store::{Selector, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
/// Activity is the mean over this long.
const ACTIVITY_MS: i64 = 60_000;
/// A unit's `busy` sample older than this is not believed.
const BUSY_FRESH_MS: i64 = 120_000;

/// One unit as ranked, with its class: 0 not ready, 1 idle, 2 unknown, 3 busy (the first
/// sort key).
#[derive(Debug, Clone, PartialEq)]
struct Ranked {
    candidate: Candidate,
    class: u8,
}

pub use crate::plugins::types::Candidate;

/// A supervised replica's readiness and state in words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readiness {
    pub ready: bool,
    pub state: &'static str,
}

/// What a unit reports, before it is ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    /// `Some` for a supervised replica.
    pub state: Option<Readiness>,
    /// Work in flight; `Err` why unknown.
    pub busy: Result<f64, String>,
    pub activity: Option<f64>,
    /// What `activity` is, for the reason (`CPU`, or the metric's name).
    pub activity_of: String,
}

impl Default for Measure {
    fn default() -> Self {
        Measure { state: None, busy: Err("not measured".into()), activity: None, activity_of: String::new() }
    }
}

/// Ranks measured units; ties keep the order the backend listed them in.
pub fn rank(units: Vec<(String, Measure)>) -> Vec<Candidate> {
    let mut ranked: Vec<Ranked> = units.into_iter().map(|(unit, m)| candidate(unit, m)).collect();
    // Stable: equal keys stay in the backend's order.
    ranked.sort_by(|a, b| {
        let activity = |r: &Ranked| r.candidate.activity.unwrap_or(f64::INFINITY);
        a.class.cmp(&b.class).then(activity(a).total_cmp(&activity(b)))
    });
    ranked.into_iter().map(|r| r.candidate).collect()
}

fn candidate(unit: String, m: Measure) -> Ranked {
    let activity = match m.activity {
        Some(a) if m.activity_of == "CPU" => format!(", {:.1} % CPU", a * 100.0),
        Some(a) => format!(", {} {a:.3}", m.activity_of),
        None => String::new(),
    };
    let (class, busy, reason) = match (&m.state, &m.busy) {
        (_, Ok(b)) if *b > 0.0 => (3, Some(*b), format!("busy: {b} in flight")),
        (Some(s), busy) if !s.ready => (0, busy.as_ref().ok().copied(), format!("not ready: {}", s.state)),
        (_, Ok(b)) => (1, Some(*b), format!("idle: busy {b}{activity}")),
        (_, Err(why)) => (2, None, format!("busyness unknown ({why}){activity}")),
    };
    Ranked { candidate: Candidate { unit, removable: class < 3, busy, activity: m.activity, reason }, class }
}

/// The agent's side of `scale-in.rank`.
pub struct Victims {
    store: Store,
    replicas: Option<Arc<dyn ReplicaControl>>,
    config: Box<dyn Fn() -> Option<Arc<Config>> + Send + Sync>,
}

impl Victims {
    pub fn new(
        store: Store,
        replicas: Option<Arc<dyn ReplicaControl>>,
        config: impl Fn() -> Option<Arc<Config>> + Send + Sync + 'static,
    ) -> Victims {
        Victims { store, replicas, config: Box::new(config) }
    }

    /// Ranks `units` of `group` for backend `plugin` (its grant checked by `plugins::sandbox`,
    /// the group's backend read again here: a reload may have changed it since); `granted` are
    /// the processes whose replicas it may name.
    pub async fn rank(
        &self,
        plugin: &str,
        group: &str,
        granted: &[String],
        units: Vec<String>,
    ) -> Result<Vec<Candidate>, PluginError> {
        let config =
            (self.config)().ok_or_else(|| PluginError::Unavailable("the agent is stopping".into()))?;
        let spec =
            config.groups.iter().find(|g| g.name == group && g.backend == plugin).ok_or_else(|| {
                PluginError::BadConfig(format!(
                    "`{}` is not a group this backend scales",
                    crate::text::clean(group, 64)
                ))
            })?;
        let mut replicas: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for unit in &units {
            if let Some((process, index)) = parse_unit(unit).filter(|(p, _)| granted.iter().any(|g| g == p)) {
                replicas.entry(process.to_string()).or_default().push(index);
            }
        }
        let mut measured = BTreeMap::new();
        for (process, indices) in replicas {
            self.measure_replicas(&process, indices, &mut measured).await?;
        }
        let others: Vec<String> = units.iter().filter(|u| !measured.contains_key(*u)).cloned().collect();
        if !others.is_empty() {
            let store = self.store.clone();
            let rule = spec.clone();
            let found = tokio::task::spawn_blocking(move || measure_units(&store, &rule, &others))
                .await
                .map_err(|e| PluginError::Other(e.to_string()))?;
            measured.extend(found);
        }
        let units = units.into_iter().map(|u| {
            let m = measured.remove(&u).unwrap_or_default();
            (u, m)
        });
        Ok(rank(units.collect()))
    }

    async fn measure_replicas(
        &self,
        process: &str,
        indices: Vec<u32>,
        into: &mut BTreeMap<String, Measure>,
    ) -> Result<(), PluginError> {
        let control = self
            .replicas
            .as_ref()
            .ok_or_else(|| PluginError::BadConfig("this agent supervises no processes".into()))?;
        let facts = control.inspect(process.to_string(), indices).await.map_err(PluginError::InvalidInput)?;
        let store = self.store.clone();
        let p = process.to_string();
        let cpu = tokio::task::spawn_blocking(move || replica_cpu(&store, &p)).await.unwrap_or_default();
        for ReplicaFacts { replica, ready, state, busy } in facts {
            let busy = match busy {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err(format!("no [process.busy] probe for `{process}`")),
                Err(why) => Err(why),
            };
            let measure = Measure {
                state: Some(Readiness { ready, state }),
                busy,
                activity: cpu.get(&replica).copied(),
                activity_of: "CPU".into(),
            };
            into.insert(format!("{process}#{replica}"), measure);
        }
        Ok(())
    }
}

impl Ranking for Victims {
    fn backend_of(&self, group: &str) -> Result<Option<String>, String> {
        let config = (self.config)().ok_or("the agent is stopping")?;
        Ok(config.groups.iter().find(|g| g.name == group).map(|g| g.backend.clone()))
    }

    fn rank(
        &self,
        plugin: String,
        group: String,
        granted: Vec<String>,
        units: Vec<String>,
    ) -> crate::plugins::sandbox::RankFuture<'_> {
        Box::pin(async move { Victims::rank(self, &plugin, &group, &granted, units).await })
    }
}

/// Mean CPU of each replica of `process` over the last minute.
fn replica_cpu(store: &Store, process: &str) -> BTreeMap<u32, f64> {
    let sel = Selector {
        name: crate::sampler::catalog::PROCESS_CPU.into(),
        matchers: vec![("process".into(), process.into())],
    };
    means(store, &sel, "replica").into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect()
}

/// Mean over the last minute of each series of `sel`, by the value of its label `by`.
fn means(store: &Store, sel: &Selector, by: &str) -> BTreeMap<String, f64> {
    let now = crate::timefmt::now_ms();
    let series = store.query(sel, now - ACTIVITY_MS, now + 1, None).unwrap_or_default();
    series
        .into_iter()
        .filter(|s| !s.values.is_empty())
        .filter_map(|s| {
            let mean = s.values.iter().sum::<f64>() / s.values.len() as f64;
            Some((s.labels.get(by)?.to_string(), mean))
        })
        .collect()
}

/// Units that are not replicas, from the group's `[group.scale_in]` metrics.
fn measure_units(store: &Store, spec: &GroupSpec, units: &[String]) -> BTreeMap<String, Measure> {
    let rule = &spec.scale_in;
    let label = rule.unit_label.as_str();
    let now = crate::timefmt::now_ms();
    let latest: BTreeMap<String, f64> = rule.busy.as_ref().map_or_else(BTreeMap::new, |metric| {
        let sel = Selector { name: metric.clone(), matchers: vec![] };
        let series = store.query(&sel, now - BUSY_FRESH_MS, now + 1, None).unwrap_or_default();
        series
            .into_iter()
            .filter_map(|s| Some((s.labels.get(label)?.to_string(), *s.values.last()?)))
            .collect()
    });
    let activity = rule.activity.as_ref().map_or_else(BTreeMap::new, |metric| {
        means(store, &Selector { name: metric.clone(), matchers: vec![] }, label)
    });
    units
        .iter()
        .map(|u| {
            let busy = match (&rule.busy, latest.get(u)) {
                (Some(_), Some(b)) if b.is_finite() && *b >= 0.0 => Ok(*b),
                (Some(m), _) => Err(format!("no recent `{m}` with {label}={u}")),
                (None, _) => Err(format!("group `{}` has no scale_in.busy metric", spec.name)),
            };
            let activity_of = rule.activity.clone().unwrap_or_default();
            (u.clone(), Measure { state: None, busy, activity: activity.get(u).copied(), activity_of })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: Option<Readiness> = Some(Readiness { ready: true, state: "ready" });
    const UNHEALTHY: Option<Readiness> = Some(Readiness { ready: false, state: "unhealthy" });
    const STARTING: Option<Readiness> = Some(Readiness { ready: false, state: "starting" });

    fn m(state: Option<Readiness>, busy: Result<f64, &str>, cpu: Option<f64>) -> Measure {
        Measure { state, busy: busy.map_err(String::from), activity: cpu, activity_of: "CPU".into() }
    }

    #[test]
    fn busy_units_are_last_and_never_removable_idle_ones_go_by_activity() {
        let ranked = rank(vec![
            ("web#0".into(), m(READY, Ok(2.0), Some(0.01))),
            ("web#1".into(), m(READY, Ok(0.0), Some(0.20))),
            ("web#2".into(), m(READY, Err("timeout"), Some(0.0))),
            ("web#3".into(), m(READY, Ok(0.0), Some(0.05))),
            ("web#4".into(), m(UNHEALTHY, Ok(3.0), None)),
            ("web#5".into(), m(STARTING, Ok(0.0), None)),
        ]);
        let order: Vec<&str> = ranked.iter().map(|c| c.unit.as_str()).collect();
        // Not ready first (in the backend's order), then idle by CPU, unknown, and busy ones.
        assert_eq!(order, ["web#5", "web#3", "web#1", "web#2", "web#0", "web#4"]);
        let removable: Vec<bool> = ranked.iter().map(|c| c.removable).collect();
        assert_eq!(removable, [true, true, true, true, false, false]);
        assert_eq!(ranked[1].reason, "idle: busy 0, 5.0 % CPU");
        assert_eq!(ranked[4].reason, "busy: 2 in flight");
        assert_eq!(ranked[3].reason, "busyness unknown (timeout), 0.0 % CPU");
    }

    #[test]
    fn ties_keep_the_backends_order_and_unknown_activity_goes_last_among_equals() {
        let ranked = rank(vec![
            ("b".into(), m(None, Ok(0.0), None)),
            ("a".into(), m(None, Ok(0.0), Some(0.5))),
            ("c".into(), m(None, Ok(0.0), None)),
        ]);
        let order: Vec<&str> = ranked.iter().map(|c| c.unit.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn units_are_parsed_only_with_a_numeric_index() {
        assert_eq!(parse_unit("web#2"), Some(("web", 2)));
        assert_eq!(parse_unit("a#b#7"), Some(("a#b", 7)));
        assert_eq!(parse_unit("web-2"), None);
        assert_eq!(parse_unit("web#x"), None);
    }
}
