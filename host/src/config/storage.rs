//! `[group.storage]`: a group whose capacity is one volume's size in GiB, grown (never shrunk)
//! by its backend's `volumes` interface, and the filesystem on it grown by the agent.

use super::{ConfigError, Located};
use crate::decide::storage::{StepSize, StorageRules};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The largest volume the agent will ask for: 1 PiB (EBS: 64 TiB). A backend reporting more is
/// faulted (`plugins::worker`).
const MAX_GIB: u64 = 1 << 20;

/// A storage group's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSpec {
    pub rules: StorageRules,
    /// `mount`: the filesystem grown inside this server once the volume grew. `None`: only the
    /// volume is grown (the filesystem is another machine's, or grown by other means).
    pub mount: Option<PathBuf>,
    /// `grow_wait`: how long the agent waits for the kernel to see the volume's new size before
    /// it gives up growing the filesystem (and says what to run). Default 60s.
    pub grow_wait: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    min_size: Spanned<String>,
    max_size: Spanned<String>,
    step_min_size: Option<Spanned<String>>,
    step_min_percent: Option<u32>,
    step_max_size: Option<Spanned<String>>,
    step_max_percent: Option<u32>,
    per_day: Option<u32>,
    cooldown: Option<Spanned<String>>,
    mount: Option<Spanned<String>>,
    grow_wait: Option<Spanned<String>>,
}

/// Validates `[group.storage]` of group `name`.
pub(super) fn validate(raw: RawStorage, name: &str, at: &Located) -> Result<StorageSpec, ConfigError> {
    let field = |f: &str| format!("group[{name}].storage.{f}");
    let gib = |s: &Spanned<String>, key: &str| -> Result<u64, ConfigError> {
        let bytes = super::parse_size(s.get_ref()).ok_or_else(|| {
            at.error(
                Some(s.span()),
                &format!("{}: `{}` is not a size such as 20GiB", field(key), s.get_ref()),
            )
        })?;
        if bytes % (1 << 30) != 0 {
            return Err(at.error(Some(s.span()), &format!("{}: volumes grow in whole GiB", field(key))));
        }
        Ok(bytes >> 30)
    };
    let (min_gib, max_gib) = (gib(&raw.min_size, "min_size")?, gib(&raw.max_size, "max_size")?);
    if min_gib == 0 || max_gib < min_gib {
        let why = format!("max_size: {max_gib} GiB must be at least min_size ({min_gib} GiB, at least 1)");
        return Err(at.error(Some(raw.max_size.span()), &field(&why)));
    }
    if max_gib > MAX_GIB {
        let why = format!("max_size: {max_gib} GiB is more than any cloud's volume (at most 1PiB)");
        return Err(at.error(Some(raw.max_size.span()), &field(&why)));
    }
    if raw.per_day == Some(0) {
        return Err(at.error(None, &field("per_day: at least 1 (EBS allows 4 modifications in 24 h)")));
    }
    let percent = |p: Option<u32>, key: &str| match p {
        Some(p) if p > 1000 => Err(at.error(None, &format!("{}: {p} is above 1000 %", field(key)))),
        p => Ok(p),
    };
    let defaults = StorageRules::default();
    let step_min = StepSize {
        gib: raw
            .step_min_size
            .as_ref()
            .map(|s| gib(s, "step_min_size"))
            .transpose()?
            .unwrap_or(defaults.step_min.gib),
        percent: percent(raw.step_min_percent, "step_min_percent")?.unwrap_or(defaults.step_min.percent),
    };
    let step_max = match (&raw.step_max_size, percent(raw.step_max_percent, "step_max_percent")?) {
        (None, None) => None,
        (size, p) => Some(StepSize {
            gib: size.as_ref().map(|s| gib(s, "step_max_size")).transpose()?.unwrap_or(0),
            percent: p.unwrap_or(0),
        }),
    };
    let mount = match &raw.mount {
        Some(m) if !m.get_ref().starts_with('/') => {
            return Err(at.error(Some(m.span()), &field("mount: an absolute path, e.g. /srv/data")))
        }
        m => m.as_ref().map(|m| PathBuf::from(m.get_ref())),
    };
    let cooldown = at.duration(&raw.cooldown, &field("cooldown"), Duration::ZERO)?;
    Ok(StorageSpec {
        rules: StorageRules {
            min_gib,
            max_gib,
            step_min,
            step_max,
            per_day: raw.per_day.unwrap_or(defaults.per_day),
            cooldown_ms: cooldown.map_or(defaults.cooldown_ms, |d| d.as_millis() as i64),
        },
        mount,
        grow_wait: at
            .duration(&raw.grow_wait, &field("grow_wait"), Duration::ZERO)?
            .unwrap_or(Duration::from_secs(60)),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::decide::storage::StepSize;
    use std::path::Path;

    const BASE: &str = "[[group]]\nname = \"data\"\npolicy = \"p\"\nbackend = \"b\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), Path::new("agent.toml")).map_err(|e| e.0)
    }

    #[test]
    fn a_storage_group_takes_its_bounds_in_gib_and_the_defaults_of_the_peers() {
        let c = parse("[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"20GiB\"\nmount = \"/srv/data\"\n")
            .unwrap();
        let g = &c.groups[0];
        let s = g.storage.as_ref().unwrap();
        assert_eq!((s.rules.min_gib, s.rules.max_gib, s.rules.per_day), (1, 20, 4));
        assert_eq!(s.rules.step_min, StepSize { gib: 1, percent: 10 });
        assert_eq!(s.rules.step_max, None);
        assert_eq!(s.mount.as_deref(), Some(Path::new("/srv/data")));
        // The policy's bounds are the sizes: min/max in GiB.
        assert_eq!((g.behavior.min, g.behavior.max), (1, 20));
        let c = parse(
            "[group.storage]\nmin_size = \"2G\"\nmax_size = \"1TiB\"\nstep_max_size = \"50GiB\"\n\
             step_max_percent = 50\nper_day = 2\ncooldown = \"6h\"\n",
        )
        .unwrap();
        let s = c.groups[0].storage.clone().unwrap();
        assert_eq!((s.rules.min_gib, s.rules.max_gib, s.rules.per_day), (2, 1024, 2));
        assert_eq!(s.rules.step_max, Some(StepSize { gib: 50, percent: 50 }));
        assert_eq!(s.rules.cooldown_ms, 6 * 3600 * 1000);
    }

    #[test]
    fn storage_errors_name_the_key() {
        let e = parse("[group.storage]\nmin_size = \"1.5GiB\"\nmax_size = \"2GiB\"\n").unwrap_err();
        assert!(e.contains("group[data].storage.min_size: `1.5GiB` is not a size"), "{e}");
        let e = parse("[group.storage]\nmin_size = \"1500MiB\"\nmax_size = \"2GiB\"\n").unwrap_err();
        assert!(e.contains("storage.min_size: volumes grow in whole GiB"), "{e}");
        let e = parse("[group.storage]\nmin_size = \"4GiB\"\nmax_size = \"2GiB\"\n").unwrap_err();
        assert!(e.contains("storage.max_size: 2 GiB must be at least min_size"), "{e}");
        let e = parse("[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"2GiB\"\nmount = \"data\"\n")
            .unwrap_err();
        assert!(e.contains("storage.mount: an absolute path"), "{e}");
        // A storage group's bounds are sizes: min and max are refused, not silently ignored.
        let e = parse("min = 1\nmax = 2\n[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"2GiB\"\n")
            .unwrap_err();
        assert!(e.contains("group[data].min: a storage group's bounds are storage.min_size"), "{e}");
        let e = parse("max = 2\n[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"2GiB\"\n").unwrap_err();
        assert!(e.contains("group[data].max: a storage group's bounds are storage.min_size"), "{e}");
        // And any other group needs them.
        let e = parse("").unwrap_err();
        assert!(e.contains("group[data].min: required"), "{e}");
        let e = parse("min = 1\n").unwrap_err();
        assert!(e.contains("group[data].max: required"), "{e}");
        // What only groups of units have is refused, naming it.
        let storage = "[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"2GiB\"\n";
        for (extra, key) in [
            ("tolerance = 0.2\n", "tolerance:"),
            ("coordination = \"cluster\"\n", "coordination:"),
            ("max_tier = 2\n", "max_tier:"),
            ("[group.scale_up]\ncooldown = \"1m\"\n", "scale_up/scale_down:"),
        ] {
            let e = parse(&format!("{extra}{storage}")).unwrap_err();
            assert!(e.contains(&format!("group[data].{key}")), "{extra}: {e}");
        }
        let e = parse("[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"2PiB\"\n").unwrap_err();
        assert!(e.contains("`2PiB` is not a size"), "{e}");
        let e = parse("[group.storage]\nmin_size = \"1GiB\"\nmax_size = \"2048TiB\"\n").unwrap_err();
        assert!(e.contains("storage.max_size: 2097152 GiB is more than any cloud's volume"), "{e}");
        let e = parse(&format!("{storage}per_day = 0\n")).unwrap_err();
        assert!(e.contains("storage.per_day: at least 1"), "{e}");
    }
}
