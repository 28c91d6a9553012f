//! `[[group]]`: scaling groups — the metrics a policy sees, the policy and backend plugins, the
//! bounds and the guardrails. Raw TOML → validated [`GroupSpec`].

use super::{ConfigError, Located};
use crate::decide::guardrails::{Behavior, Direction, RateRule, Select, TierRules};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    /// How often the group is evaluated. Default 15s.
    pub interval: Duration,
    pub metrics: Vec<MetricWindow>,
    /// The policy plugin's name.
    pub policy: String,
    /// `policy_config`, as JSON (the policy's `context.params`).
    pub policy_params: String,
    /// The backend plugin's name.
    pub backend: String,
    /// `backend_config`, as JSON (the backend's `group.params`).
    pub backend_params: String,
    pub behavior: Behavior,
    /// Vertical scaling: `min_tier`, `max_tier` (default 0: no vertical moves), `tier_cooldown`.
    pub tiers: TierRules,
    /// Do everything but call the backend's `scale`; journal "would scale".
    pub dry_run: bool,
    /// After this many evaluations in a row without a usable recommendation, scale to
    /// `capacity` instead of holding. `None`: always hold.
    pub fallback: Option<Fallback>,
    /// `[[group.schedule]]`: windows that change `min`/`max` on a calendar.
    pub schedules: Vec<crate::decide::schedule::Window>,
    /// `[group.scale_in]`: per-unit metrics that rank units that are not supervised replicas.
    pub scale_in: super::ScaleInRule,
    /// `coordination = "cluster"`: acted on only by the agent holding the group's leader key in
    /// etcd (`[cluster]`), its decision state kept there. Default `local`.
    pub coordinated: bool,
    /// `[group.storage]`: the capacity is a volume's size in GiB (`min`/`max` are its bounds).
    pub storage: Option<super::StorageSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricWindow {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub window: Duration,
}

pub use crate::decide::decision::Fallback;

impl GroupSpec {
    /// What the group decides by (the live loop and `agent simulate` alike).
    pub fn rules(&self) -> crate::decide::decision::Rules<'_> {
        crate::decide::decision::Rules {
            behavior: &self.behavior,
            tiers: &self.tiers,
            fallback: self.fallback,
            schedules: &self.schedules,
            interval_ms: self.interval.as_millis() as i64,
            cloud: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    name: Spanned<String>,
    interval: Option<Spanned<String>>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
    policy: String,
    #[serde(default)]
    policy_config: toml::Table,
    backend: String,
    #[serde(default)]
    backend_config: toml::Table,
    min: Option<Spanned<u32>>,
    max: Option<Spanned<u32>>,
    tolerance: Option<Spanned<f64>>,
    sanity_ceiling: Option<u32>,
    #[serde(default)]
    min_tier: u32,
    max_tier: Option<Spanned<u32>>,
    tier_cooldown: Option<Spanned<String>>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    scale_up: RawDirection,
    #[serde(default)]
    scale_down: RawDirection,
    fallback: Option<RawFallback>,
    #[serde(default)]
    schedule: Vec<Spanned<super::schedule::RawSchedule>>,
    scale_in: Option<super::scale_in::RawScaleIn>,
    coordination: Option<Spanned<String>>,
    storage: Option<super::storage::RawStorage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    window: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDirection {
    stabilization: Option<Spanned<String>>,
    cooldown: Option<Spanned<String>>,
    select: Option<Spanned<String>>,
    policies: Option<Vec<Spanned<RawRule>>>,
}

impl RawDirection {
    fn is_set(&self) -> bool {
        self.stabilization.is_some()
            || self.cooldown.is_some()
            || self.select.is_some()
            || self.policies.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "type")]
    kind: String,
    value: u32,
    period: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    after: u32,
    capacity: u32,
}

pub(super) fn validate(
    raw: Vec<RawGroup>,
    clustered: bool,
    at: &Located,
) -> Result<Vec<GroupSpec>, ConfigError> {
    let mut groups: Vec<GroupSpec> = Vec::new();
    for mut g in raw {
        let name = g.name.get_ref().clone();
        let field = |f: &str| format!("group[{name}].{f}");
        if !super::valid_plugin_name(&name) || groups.iter().any(|x| x.name == name) {
            return Err(
                at.error(Some(g.name.span()), &field("name: unique, lower-case letters, digits and `-`"))
            );
        }
        let storage = g.storage.take().map(|s| super::storage::validate(s, &name, at)).transpose()?;
        let (min, max) = bounds(&g, storage.as_ref(), at, &field)?;
        if storage.is_some() {
            only_what_storage_uses(&g, at, &field)?;
        }
        let tolerance = match &g.tolerance {
            None => 0.1,
            Some(t) if (0.0..1.0).contains(t.get_ref()) => *t.get_ref(),
            Some(t) => {
                return Err(at.error(Some(t.span()), &field("tolerance: a fraction in [0, 1), e.g. 0.1")))
            }
        };
        let interval = at
            .duration(&g.interval, &field("interval"), Duration::from_millis(100))?
            .unwrap_or(Duration::from_secs(15));
        let mut metrics = Vec::new();
        for m in g.metrics {
            let window = at
                .duration(&m.window, &field("metrics.window"), Duration::from_millis(100))?
                .unwrap_or(Duration::from_secs(60));
            metrics.push(MetricWindow { name: m.name, labels: m.labels.into_iter().collect(), window });
        }
        let defaults = Behavior::hpa(min, max);
        let direction = |raw: &RawDirection, d: Direction, which: &str| -> Result<Direction, ConfigError> {
            let ms = |x: Duration| x.as_millis() as i64;
            let f = |k: &str| field(&format!("{which}.{k}"));
            let select = match &raw.select {
                None => d.select,
                Some(s) => match s.get_ref().as_str() {
                    "max" => Select::Max,
                    "min" => Select::Min,
                    "disabled" => Select::Disabled,
                    other => {
                        return Err(at.error(
                            Some(s.span()),
                            &format!("{}: `{other}` is not max, min or disabled", f("select")),
                        ))
                    }
                },
            };
            let rules = match &raw.policies {
                None => d.rules,
                Some(list) => {
                    let mut rules = Vec::new();
                    for r in list {
                        let span = r.span();
                        let r = r.get_ref();
                        let period = crate::duration::parse(&r.period).map_err(|e| {
                            at.error(Some(span.clone()), &format!("{}: {e}", f("policies.period")))
                        })?;
                        let period_ms = ms(period).max(1);
                        rules.push(match r.kind.as_str() {
                            "pods" => RateRule::Pods { value: r.value, period_ms },
                            "percent" => RateRule::Percent { value: r.value, period_ms },
                            other => {
                                return Err(at.error(
                                    Some(span),
                                    &format!("{}: `{other}` is not pods or percent", f("policies.type")),
                                ))
                            }
                        });
                    }
                    rules
                }
            };
            Ok(Direction {
                stabilization_ms: at
                    .duration(&raw.stabilization, &f("stabilization"), Duration::ZERO)?
                    .map_or(d.stabilization_ms, ms),
                cooldown_ms: at
                    .duration(&raw.cooldown, &f("cooldown"), Duration::ZERO)?
                    .map_or(d.cooldown_ms, ms),
                rules,
                select,
            })
        };
        let behavior = Behavior {
            min,
            max,
            tolerance,
            sanity_ceiling: g.sanity_ceiling.unwrap_or(defaults.sanity_ceiling).max(max),
            up: direction(&g.scale_up, defaults.up.clone(), "scale_up")?,
            down: direction(&g.scale_down, defaults.down.clone(), "scale_down")?,
        };
        let max_tier = g.max_tier.as_ref().map_or(g.min_tier, |t| *t.get_ref());
        if let Some(t) = g.max_tier.as_ref().filter(|t| *t.get_ref() < g.min_tier) {
            return Err(at.error(
                Some(t.span()),
                &field(&format!("max_tier: {max_tier} is below min_tier {}", g.min_tier)),
            ));
        }
        let tiers = TierRules {
            min: g.min_tier,
            max: max_tier,
            cooldown_ms: at
                .duration(&g.tier_cooldown, &field("tier_cooldown"), Duration::ZERO)?
                .map_or(TierRules::default().cooldown_ms, |d| d.as_millis() as i64),
        };
        let json = |t: &toml::Table| serde_json::to_string(t).expect("a TOML table is valid JSON");
        let schedules = super::schedule::validate(g.schedule, &name, at)?;
        let coordinated = match g.coordination.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
            None | Some(("local", _)) => false,
            Some(("cluster", _)) if clustered => true,
            Some(("cluster", span)) => {
                return Err(at.error(
                    Some(span),
                    &field("coordination: `cluster` needs a [cluster] table (the etcd members)"),
                ))
            }
            Some((other, span)) => {
                return Err(
                    at.error(Some(span), &field(&format!("coordination: `{other}` is not local or cluster")))
                )
            }
        };
        groups.push(GroupSpec {
            storage,
            coordinated,
            schedules,
            scale_in: super::scale_in::scale_in(g.scale_in),
            name: name.clone(),
            interval,
            metrics,
            policy: g.policy,
            policy_params: json(&g.policy_config),
            backend: g.backend,
            backend_params: json(&g.backend_config),
            behavior,
            tiers,
            dry_run: g.dry_run,
            fallback: g
                .fallback
                .map(|f| Fallback { after: f.after.max(1), capacity: f.capacity.clamp(min, max) }),
        });
    }
    Ok(groups)
}

/// `min` and `max`: given for a group of units, the sizes in GiB for a storage group.
fn bounds(
    g: &RawGroup,
    storage: Option<&super::StorageSpec>,
    at: &Located,
    field: &dyn Fn(&str) -> String,
) -> Result<(u32, u32), ConfigError> {
    let not_for_storage = |key: &str, b: &Spanned<u32>| {
        let why = format!(
            "{key}: a storage group's bounds are storage.min_size and storage.max_size; remove min and max"
        );
        at.error(Some(b.span()), &field(&why))
    };
    match (storage, &g.min, &g.max) {
        (Some(s), None, None) => {
            let gib = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            Ok((gib(s.rules.min_gib), gib(s.rules.max_gib)))
        }
        (Some(_), Some(b), _) => Err(not_for_storage("min", b)),
        (Some(_), None, Some(b)) => Err(not_for_storage("max", b)),
        (None, Some(min), Some(max)) => {
            let (lo, hi) = (*min.get_ref(), *max.get_ref());
            if lo > hi {
                return Err(at.error(Some(max.span()), &field(&format!("max: {hi} is below min {lo}"))));
            }
            Ok((lo, hi))
        }
        (None, None, _) => Err(at.error(Some(g.name.span()), &field("min: required (the fewest units)"))),
        (None, Some(_), None) => Err(at.error(Some(g.name.span()), &field("max: required (the most units)"))),
    }
}

/// A storage group grows one volume on this server: what only groups of units have is refused
/// rather than ignored.
fn only_what_storage_uses(
    g: &RawGroup,
    at: &Located,
    field: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let refused = [
        (
            g.coordination.as_ref().is_some_and(|c| c.get_ref() != "local"),
            "coordination: a storage group grows this server's volume; it cannot be `cluster`",
        ),
        (g.max_tier.is_some() || g.min_tier > 0, "max_tier: a storage group has no size ladder"),
        (!g.schedule.is_empty(), "schedule: not for storage groups (a volume never shrinks)"),
        (g.fallback.is_some(), "fallback: not for storage groups (a volume never grows blind)"),
        (g.scale_in.is_some(), "scale_in: not for storage groups (a volume never shrinks)"),
        (g.scale_up.is_set() || g.scale_down.is_set(), "scale_up/scale_down: not for storage groups; their steps, cooldown and daily limit are in [group.storage]"),
        (g.tolerance.is_some(), "tolerance: not for storage groups (storage.step_min_size and step_min_percent set the least growth)"),
        (g.sanity_ceiling.is_some() || g.tier_cooldown.is_some(), "sanity_ceiling/tier_cooldown: not for storage groups"),
    ];
    match refused.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err(at.error(Some(g.name.span()), &field(why))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::decide::guardrails::{RateRule, Select, TierRules};
    use std::path::Path;

    #[test]
    fn a_group_parses_with_hpa_defaults_and_overrides() {
        let c = Config::parse(
            r#"
[[group]]
name = "web"
interval = "10s"
policy = "target-tracking"
policy_config = { target = 0.6 }
backend = "ledger"
min = 1
max = 10
metrics = [{ name = "system.cpu.utilization", window = "2m" }]
[group.scale_down]
stabilization = "1m"
select = "min"
policies = [{ type = "pods", value = 1, period = "30s" }]
"#,
            Path::new("agent.toml"),
        )
        .unwrap();
        let g = &c.groups[0];
        assert_eq!((g.behavior.min, g.behavior.max, g.behavior.tolerance), (1, 10, 0.1));
        assert_eq!(g.policy_params, r#"{"target":0.6}"#);
        assert_eq!(g.metrics[0].window.as_secs(), 120);
        assert_eq!(g.behavior.down.stabilization_ms, 60_000);
        assert_eq!(g.behavior.down.select, Select::Min);
        assert_eq!(g.behavior.down.rules, [RateRule::Pods { value: 1, period_ms: 30_000 }]);
        assert_eq!(g.behavior.up.rules.len(), 2, "HPA default scale-up rules");
        assert_eq!(g.tiers, TierRules::default(), "no vertical moves unless asked");
    }

    #[test]
    fn tiers_parse_and_are_checked() {
        let base = "[[group]]\nname = \"g\"\npolicy = \"p\"\nbackend = \"b\"\nmin = 1\nmax = 2\n";
        let c = Config::parse(
            &format!("{base}min_tier = 1\nmax_tier = 3\ntier_cooldown = \"30s\"\n"),
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(c.groups[0].tiers, TierRules { min: 1, max: 3, cooldown_ms: 30_000 });
        let e =
            Config::parse(&format!("{base}min_tier = 2\nmax_tier = 1\n"), Path::new("a.toml")).unwrap_err().0;
        assert!(e.contains("group[g].max_tier: 1 is below min_tier 2"), "{e}");
    }

    #[test]
    fn errors_name_the_group_and_field() {
        let err = |t: &str| Config::parse(t, Path::new("agent.toml")).unwrap_err().0;
        let base = "[[group]]\nname = \"g\"\npolicy = \"p\"\nbackend = \"b\"\n";
        assert!(err(&format!("{base}min = 5\nmax = 2\n")).contains("group[g].max: 2 is below min 5"));
        assert!(err(&format!("{base}min = 1\nmax = 2\ntolerance = 2.0\n")).contains("group[g].tolerance"));
        let e = err(&format!("{base}min = 1\nmax = 2\n[group.scale_up]\nselect = \"most\"\n"));
        assert!(e.contains("group[g].scale_up.select: `most`"), "{e}");
    }
}
