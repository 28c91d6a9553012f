//! The architecture as a table: which of the crate's top-level modules each one may import.
//! The test below reads every source file and fails on an import the table does not allow, on a
//! module the table does not place, and on a table that is not one-way (a cycle). The same table
//! stands in `docs/ARCHITECTURE.md`; change both together.

/// Module → the modules it may import, lowest layer first. A module sees only modules listed
/// before it: that is what makes the stack one-way.
pub const ALLOWED: &[(&str, &[&str])] = &[
    // Foundations: no knowledge of the agent.
    ("duration", &[]),
    ("text", &[]),
    ("timefmt", &[]),
    ("keys", &[]),
    ("rate", &[]),
    ("footprint", &[]),
    ("telemetry", &[]),
    ("pki", &["text"]),
    // The decision, pure: bounds, guardrails, schedules, the replay.
    ("decide", &["timefmt"]),
    // agent.toml → validated value types (it owns what it produces).
    ("config", &["decide", "duration", "keys", "pki", "text", "timefmt"]),
    // SQLite: samples, journal, plugin state. Plain numbers in, plain rows out.
    ("store", &["config", "duration", "rate", "text", "timefmt"]),
    // This machine's block devices and filesystems: growing one online (root, not a plugin).
    ("storage", &["text"]),
    ("sampler", &["config", "storage", "store", "telemetry", "timefmt"]),
    // wasmtime and the plugin contract: WIT types end here.
    ("plugins", &["config", "duration", "keys", "pki", "rate", "store", "telemetry", "text", "timefmt"]),
    ("supervisor", &["config", "duration", "plugins", "sampler", "store", "text", "timefmt"]),
    ("cluster", &["config", "decide", "duration", "pki", "store", "text", "timefmt"]),
    ("collector", &["config", "plugins", "store", "telemetry", "text", "timefmt"]),
    (
        "scaler",
        &[
            "cluster",
            "config",
            "decide",
            "duration",
            "plugins",
            "sampler",
            "storage",
            "store",
            "supervisor",
            "text",
            "timefmt",
        ],
    ),
    ("reload", &["config", "plugins", "scaler", "store", "supervisor", "text", "timefmt"]),
    (
        "api",
        &[
            "cluster",
            "collector",
            "config",
            "decide",
            "duration",
            "footprint",
            "keys",
            "plugins",
            "reload",
            "sampler",
            "scaler",
            "store",
            "supervisor",
            "telemetry",
            "text",
            "timefmt",
        ],
    ),
    (
        "daemon",
        &[
            "api",
            "cluster",
            "collector",
            "config",
            "duration",
            "footprint",
            "plugins",
            "reload",
            "sampler",
            "scaler",
            "store",
            "supervisor",
            "telemetry",
            "text",
            "timefmt",
        ],
    ),
    ("scaffold", &["config", "text"]),
    (
        "commands",
        &[
            "api",
            "cluster",
            "config",
            "daemon",
            "decide",
            "duration",
            "footprint",
            "keys",
            "plugins",
            "reload",
            "scaffold",
            "sampler",
            "scaler",
            "storage",
            "store",
            "supervisor",
            "telemetry",
            "text",
            "timefmt",
        ],
    ),
];

/// `source` without its `#[cfg(test)]` modules: an inline one to its closing brace, a
/// declaration (`mod x;`) alone — the code after either is still read.
pub fn without_tests(source: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let (mut out, mut rest) = (String::new(), source);
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        let item = rest[i + MARK.len()..].trim_start();
        let bare = item.strip_prefix("pub(crate) ").or_else(|| item.strip_prefix("pub ")).unwrap_or(item);
        let (semi, brace) = (item.find(';'), item.find('{'));
        rest = match (bare.starts_with("mod "), semi, brace) {
            (true, Some(s), b) if b.is_none_or(|b| s < b) => &item[s + 1..],
            (true, _, Some(b)) => &item[(b + 1 + closing(&item[b + 1..]) + 1).min(item.len())..],
            _ => {
                out.push_str(MARK);
                &rest[i + MARK.len()..]
            }
        };
    }
    out.push_str(rest);
    out
}

/// The crate's top-level modules each source file imports (`crate::m`, `crate::{m, …}`),
/// outside its `#[cfg(test)]` modules (tests may reach across, to build what they check).
pub fn imports(source: &str) -> std::collections::BTreeSet<String> {
    let code = without_tests(source);
    let code: String =
        code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut found = std::collections::BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..closing(group)];
            // Only the first path segment of each item names a module: `{a::b, c}` → a, c.
            for item in split_top(group) {
                found.insert(ident(item.trim()));
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// Where the group that `text` opens inside ends: its matching `}`.
fn closing(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// `a::{b, c}, d` → [`a::{b, c}`, `d`]: commas outside braces.
fn split_top(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&group[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every import of every module of `src`, as (module, imported, file).
    fn edges(src: &Path) -> Vec<(String, String, String)> {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut out = Vec::new();
        for file in files {
            let rel = file.strip_prefix(src).unwrap().to_string_lossy().into_owned();
            let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            if ["lib", "main", "layers"].contains(&module.as_str()) {
                continue;
            }
            for imported in imports(&std::fs::read_to_string(&file).unwrap()) {
                if imported != module {
                    out.push((module.clone(), imported, rel.clone()));
                }
            }
        }
        out
    }

    /// Checks `src` against the table: the violations, one line each.
    fn violations(src: &Path) -> Vec<String> {
        let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
        let mut out = Vec::new();
        for (module, imported, file) in edges(src) {
            match allowed.get(module.as_str()) {
                None => out.push(format!("{file}: module `{module}` has no place in layers::ALLOWED")),
                Some(may) if !may.contains(&imported.as_str()) => out
                    .push(format!("{file}: `{module}` imports `{imported}`, which the layers do not allow")),
                Some(_) => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn every_import_runs_down_the_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let v = violations(&src);
        assert!(v.is_empty(), "imports that run up the layers:\n{}", v.join("\n"));
        // Every module of lib.rs has a place in the table.
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod ")))
        {
            let m = line.trim_end_matches(';');
            assert!(m == "layers" || ALLOWED.iter().any(|(n, _)| *n == m), "`{m}` is not in layers::ALLOWED");
        }
    }

    #[test]
    fn generated_wit_types_end_in_plugins() {
        // The rest of the host speaks `plugins::types`; `plugins::bindings` is the edge.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let naming = naming_outside(&src, "plugins", "plugins::bindings");
        assert!(naming.is_empty(), "generated WIT types named outside plugins/: {naming:?}");
    }

    /// Source files outside `dir` (of `src`) whose code, outside comments and test modules,
    /// names `what`.
    fn naming_outside(src: &Path, dir: &str, what: &str) -> Vec<String> {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        files
            .iter()
            .filter(|f| !f.starts_with(src.join(dir)) && !f.ends_with("layers.rs"))
            .filter(|f| {
                let code = without_tests(&std::fs::read_to_string(f).unwrap());
                code.lines().any(|l| l.split("//").next().unwrap_or("").contains(what))
            })
            .map(|f| f.display().to_string())
            .collect()
    }

    #[test]
    fn sqlite_stays_in_store_and_wasmtime_in_plugins() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        assert_eq!(naming_outside(&src, "store", "rusqlite"), Vec::<String>::new(), "SQL outside store/");
        assert_eq!(
            naming_outside(&src, "plugins", "wasmtime"),
            Vec::<String>::new(),
            "wasmtime outside plugins/"
        );
    }

    #[test]
    fn released_contract_versions_are_never_edited() {
        // `wit/since_vX/plugin.wit` is the text of release X, frozen (docs/contract.md): a
        // change here is a change to what plugins built against X were promised.
        use sha2::Digest;
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let frozen = [
            ("since_v0.1.0", "a18afe62920454c2f2c46d729a6cb57aed09210f2d89922ed683ca1e827546c8"),
            ("since_v0.1.1", "8805ceb6399b9dae08967fcae1075d6a10dd06de16d35ddd472cd93f53689b57"),
            ("since_v0.1.2", "d42c7d312639ae3be376c49a401551cec29a735b6e1c60202f4112766aa2a0c1"),
            ("since_v0.1.3", "14e344a8a324d329da6c050e2b828f7de923669e12bd9eb1589ac346ee5becc6"),
        ];
        let mut found: Vec<String> = std::fs::read_dir(&wit)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("since_v"))
            .collect();
        found.sort();
        assert_eq!(
            found,
            frozen.map(|(v, _)| v.to_string()),
            "a release frozen here needs its hash in this list"
        );
        for (version, sha) in frozen {
            let text = std::fs::read(wit.join(version).join("plugin.wit")).unwrap();
            assert_eq!(hex::encode(sha2::Sha256::digest(&text)), sha, "wit/{version}/plugin.wit was edited");
        }
    }

    #[test]
    fn the_table_is_one_way() {
        for (i, (module, may)) in ALLOWED.iter().enumerate() {
            for m in *may {
                let at = ALLOWED.iter().position(|(n, _)| n == m);
                assert!(at.is_some_and(|at| at < i), "`{module}` may import `{m}`, which is not below it");
            }
        }
    }

    #[test]
    fn an_upward_import_is_caught() {
        // A copy of the tree with one import running up: `store` naming the scaler.
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(
            store.join("mod.rs"),
            "use crate::{timefmt::now_ms, config};\nuse crate::scaler::group;\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("config.rs"), "use crate::decide::guardrails::{Behavior, Step};\n")
            .unwrap();
        assert_eq!(
            violations(dir.path()),
            ["store/mod.rs: `store` imports `scaler`, which the layers do not allow"]
        );
        assert_eq!(
            imports("use crate::{a::{b, c}, d};\nfn f() { crate::e::x(); } // crate::f\n#[cfg(test)]\nmod tests { use crate::g; }"),
            ["a", "d", "e"].map(String::from).into()
        );
        // A test module declared or written before other code hides only itself.
        assert_eq!(
            imports("#[cfg(test)]\nmod eq;\nuse crate::h;\n#[cfg(test)]\npub(crate) mod t { fn f() { crate::g::x(); } }\nuse crate::i;"),
            ["h", "i"].map(String::from).into()
        );
    }
}
