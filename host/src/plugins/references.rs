//! What the configuration asks of the plugins, checked against the plugins loaded: a group's
//! `policy` and `backend` name a loaded plugin of that kind; the keys of its `policy_config` and
//! `backend_config`, and of each `[plugins.NAME.config]`, are keys the plugin declares in its
//! metadata (and the keys it requires are given); each `[plugins.NAME]` table names a loaded
//! plugin. A typo is caught when both sides are known — after the first load of the folder,
//! on every reload and whenever the folder changes — instead of surfacing as a group that
//! never decides. Problems are warnings: the agent runs what works.

use super::worker::Status;
use super::Kind;
use crate::config::{Config, GroupSpec};
use crate::text::closest;
use serde::Serialize;
use std::collections::BTreeMap;

/// What is wrong, one sentence each.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Problems {
    /// By group name.
    pub groups: BTreeMap<String, Vec<String>>,
    /// By the name in a `[plugins.NAME]` table.
    pub plugins: BTreeMap<String, Vec<String>>,
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.plugins.is_empty()
    }

    /// Every problem as a line that says where it is.
    pub fn lines(&self) -> Vec<String> {
        let groups =
            self.groups.iter().flat_map(|(g, ps)| ps.iter().map(move |p| format!("group `{g}`: {p}")));
        let plugins =
            self.plugins.iter().flat_map(|(n, ps)| ps.iter().map(move |p| format!("[plugins.{n}]: {p}")));
        groups.chain(plugins).collect()
    }
}

/// The problems of `config` given the plugins `loaded`.
pub fn check(config: &Config, loaded: &[Status]) -> Problems {
    let mut problems = Problems::default();
    for group in &config.groups {
        let found = check_group(group, config, loaded);
        if !found.is_empty() {
            problems.groups.insert(group.name.clone(), found);
        }
    }
    for source in loaded.iter().filter(|s| s.kind == Kind::Source) {
        if let Some(problem) = unconfigured(source, &config.plugin(&source.name).config_json) {
            problems.plugins.entry(source.name.clone()).or_default().push(problem);
        }
    }
    for (name, settings) in &config.plugins {
        if settings.disabled {
            continue;
        }
        let found = match loaded.iter().find(|s| s.name == *name) {
            None => vec![format!("no plugin `{name}` is loaded{}", hint(name, loaded, None))],
            Some(plugin) => {
                unknown_keys("config", &settings.config_json, plugin).into_iter().collect::<Vec<_>>()
            }
        };
        if !found.is_empty() {
            problems.plugins.entry(name.clone()).or_default().extend(found);
        }
    }
    problems
}

/// Why the source `plugin` is not collected under its `[plugins.NAME.config]` (`own`, JSON): the
/// required keys it lacks, if any. A source runs on its own table alone; collecting it without a
/// key it refuses to work without would fail every tick.
pub fn unconfigured(plugin: &Status, own: &str) -> Option<String> {
    let given = keys_of(own);
    let what = required_missing(plugin, |k| given.contains(k))?;
    let name = &plugin.name;
    Some(format!(
        "not collected: source `{name}` requires {what} in [plugins.{name}.config] (or set [plugins.{name}] disabled = true, or remove {})",
        plugin.file
    ))
}

fn check_group(group: &GroupSpec, config: &Config, loaded: &[Status]) -> Vec<String> {
    let mut found = Vec::new();
    for (kind, name, table, params) in [
        (Kind::Policy, &group.policy, "policy_config", &group.policy_params),
        (Kind::Backend, &group.backend, "backend_config", &group.backend_params),
    ] {
        let Some(plugin) = loaded.iter().find(|s| s.name == *name) else {
            found.push(format!("{kind} `{name}` is not loaded{}", hint(name, loaded, Some(kind))));
            continue;
        };
        if plugin.kind != kind {
            found.push(format!("`{name}` is a {}, not a {kind}", plugin.kind));
            continue;
        }
        found.extend(unknown_keys(table, params, plugin));
        let (own, given) = (keys_of(&config.plugin(name).config_json), keys_of(params));
        let Some(what) = required_missing(plugin, |k| given.contains(k) || own.contains(k)) else {
            continue;
        };
        found.push(format!("`{name}` requires {what}, in {table} or [plugins.{name}.config]"));
    }
    found
}

/// The required keys of `plugin` that `given` lacks, in words: `` `url` (what it is) `` or a list.
fn required_missing(plugin: &Status, given: impl Fn(&String) -> bool) -> Option<String> {
    let missing: Vec<_> = plugin.config_keys.iter().filter(|k| k.required && !given(&k.name)).collect();
    match missing.as_slice() {
        [] => None,
        [one] => Some(format!("`{}` ({})", one.name, crate::text::clean(&one.description, 120))),
        many => Some(listed(many.iter().map(|k| format!("`{}`", k.name)))),
    }
}

/// Names a plugin declares are listed up to this many in one problem: the plugin chooses how
/// many it declares (up to 256), and a problem is one line of the log.
const LISTED: usize = 12;

/// `a, b, c` — at most [`LISTED`] of them, then how many more.
fn listed(items: impl ExactSizeIterator<Item = String>) -> String {
    let more = items.len().saturating_sub(LISTED);
    let shown: Vec<String> = items.take(LISTED).collect();
    if more == 0 {
        shown.join(", ")
    } else {
        format!("{} and {more} more", shown.join(", "))
    }
}

/// The keys of `json` (a TOML table turned JSON) that `plugin` does not declare, as one problem.
fn unknown_keys(table: &str, json: &str, plugin: &Status) -> Option<String> {
    let declared: Vec<&str> = plugin.config_keys.iter().map(|k| k.name.as_str()).collect();
    let unknown: Vec<String> = keys_of(json)
        .into_iter()
        .filter(|k| !declared.contains(&k.as_str()))
        .map(|k| match closest(&k, declared.iter().copied()) {
            Some(near) => format!("`{k}` (did you mean `{near}`?)"),
            None => format!("`{k}`"),
        })
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let reads =
        if declared.is_empty() { "none".to_string() } else { listed(declared.iter().map(|k| k.to_string())) };
    let name = &plugin.name;
    Some(format!(
        "{table} has {}, which `{name}` does not read (it reads: {reads})",
        listed(unknown.into_iter())
    ))
}

fn keys_of(json: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// "; did you mean `x`?" when a loaded plugin (of `kind`) has a close name, else what is loaded.
fn hint(name: &str, loaded: &[Status], kind: Option<Kind>) -> String {
    let names: Vec<&str> =
        loaded.iter().filter(|s| kind.is_none_or(|k| s.kind == k)).map(|s| s.name.as_str()).collect();
    let what = kind.map_or("plugins".to_string(), |k| format!("{k} plugins"));
    match closest(name, names.iter().copied()) {
        Some(near) => format!("; did you mean `{near}`?"),
        None if names.is_empty() => format!(" (no {what} are loaded)"),
        None => format!(" ({what} loaded: {})", listed(names.iter().map(|n| n.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::types::{ConfigKey, Metadata};
    use std::path::Path;

    fn plugin(name: &str, kind: Kind, keys: &[(&str, bool)]) -> Status {
        let key = |(n, required): &(&str, bool)| ConfigKey {
            name: n.to_string(),
            description: "d".into(),
            required: *required,
        };
        let metadata = Metadata {
            name: name.into(),
            version: "1".into(),
            description: String::new(),
            config_keys: keys.iter().map(key).collect(),
        };
        Status::ready(&metadata, kind, "0.1.1", &format!("{name}.wasm"), "")
    }

    fn loaded() -> Vec<Status> {
        vec![
            plugin("target-tracking", Kind::Policy, &[("target", true), ("metric", false)]),
            plugin("threshold", Kind::Policy, &[("high", true), ("low", true)]),
            plugin("local-replicas", Kind::Backend, &[("process", true)]),
            plugin("http-json", Kind::Source, &[("url", true)]),
        ]
    }

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/agent/agent.toml")).expect("valid config")
    }

    const GROUP: &str = "[[group]]\nname = \"web\"\nmetrics = [{ name = \"m\" }]\nmin = 1\nmax = 3\n";

    #[test]
    fn a_correct_configuration_has_no_problems() {
        let c = config(&format!(
            "{GROUP}policy = \"target-tracking\"\npolicy_config = {{ target = 1 }}\nbackend = \"local-replicas\"\nbackend_config = {{ process = \"w\" }}\n[plugins.http-json.config]\nurl = \"x\"\n"
        ));
        assert_eq!(check(&c, &loaded()), Problems::default());
    }

    #[test]
    fn names_of_missing_plugins_get_the_closest_loaded_one_of_their_kind() {
        let c = config(&format!(
            "{GROUP}policy = \"target-trackin\"\nbackend = \"openstack\"\n[plugins.treshold]\n"
        ));
        let p = check(&c, &loaded()[..3]);
        assert_eq!(
            p.groups["web"],
            [
                "policy `target-trackin` is not loaded; did you mean `target-tracking`?",
                "backend `openstack` is not loaded (backend plugins loaded: local-replicas)"
            ]
        );
        assert_eq!(p.plugins["treshold"], ["no plugin `treshold` is loaded; did you mean `threshold`?"]);
        assert_eq!(p.lines().len(), 3);
        assert!(p.lines()[0].starts_with("group `web`: policy"), "{:?}", p.lines());
    }

    #[test]
    fn a_source_lacking_a_required_key_in_its_own_table_is_not_collected() {
        let p = check(&config(""), &loaded());
        assert_eq!(
            p.plugins["http-json"],
            ["not collected: source `http-json` requires `url` (d) in [plugins.http-json.config] (or set [plugins.http-json] disabled = true, or remove http-json.wasm)"]
        );
        // Only sources: a policy's required key may come from the group that uses it.
        assert_eq!(p.lines().len(), 1, "{:?}", p.lines());
        assert!(check(&config("[plugins.http-json.config]\nurl = \"x\"\n"), &loaded()).is_empty());
    }

    #[test]
    fn a_plugin_of_the_wrong_kind_is_named_as_such() {
        let c = config(&format!("{GROUP}policy = \"local-replicas\"\nbackend = \"threshold\"\n"));
        let p = check(&c, &loaded());
        assert_eq!(
            p.groups["web"],
            ["`local-replicas` is a backend, not a policy", "`threshold` is a policy, not a backend"]
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_reported_with_what_the_plugin_reads() {
        let c = config(&format!(
            "{GROUP}policy = \"target-tracking\"\npolicy_config = {{ targt = 1 }}\nbackend = \"local-replicas\"\n[plugins.local-replicas.config]\nprocess = \"w\"\nextra = 1\n"
        ));
        let p = check(&c, &loaded());
        assert_eq!(
            p.groups["web"],
            [
                "policy_config has `targt` (did you mean `target`?), which `target-tracking` does not read (it reads: target, metric)",
                "`target-tracking` requires `target` (d), in policy_config or [plugins.target-tracking.config]"
            ]
        );
        // A required key in the plugin's own table counts.
        assert_eq!(
            p.plugins["local-replicas"],
            ["config has `extra`, which `local-replicas` does not read (it reads: process)"]
        );
    }

    #[test]
    fn a_plugin_declaring_many_keys_makes_one_short_problem_of_each_kind() {
        let names: Vec<String> = (0..250).map(|i| format!("key-{i:03}-{}", "x".repeat(50))).collect();
        let keys: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), true)).collect();
        let loaded = vec![plugin("many", Kind::Policy, &keys), plugin("ledger", Kind::Backend, &[])];
        let c = config(&format!(
            "{GROUP}policy = \"many\"\npolicy_config = {{ other = 1 }}\nbackend = \"ledger\"\n"
        ));
        let p = check(&c, &loaded);
        assert_eq!(p.groups["web"].len(), 2, "{:?}", p.groups);
        for problem in &p.groups["web"] {
            assert!(problem.len() < 1200 && problem.contains("and 238 more"), "{problem}");
        }
    }

    #[test]
    fn disabled_plugins_are_not_expected_to_be_loaded() {
        let c = config("[plugins.openstack]\ndisabled = true\n");
        assert!(check(&c, &loaded()[..3]).is_empty());
    }
}
