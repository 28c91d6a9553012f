//! `agent plugins new`: writes a ready plugin project — Rust (on the SDK), Python
//! (componentize-py) or JavaScript (componentize-js) — for any of the three worlds, outside the agent's workspace, that builds
//! to a `.wasm` with one command and has a test. The templates are files in this folder,
//! compiled into the binary.

use std::path::{Path, PathBuf};

/// The contract, copied into Python projects (componentize-py reads WIT files).
const WIT: &str = include_str!("../../../wit/plugin.wit");
/// The componentize-py a generated Python project pins (the one `scripts/build-plugins` uses).
pub const COMPONENTIZE_PY: &str = "0.25.1";

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Kind {
    Policy,
    Source,
    Backend,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The JavaScript toolchain a generated project pins: the same package.json and lockfile as
/// `scripts/build-plugins` installs (so both build with the same componentize-js), its build
/// script, and the SDK.
mod js {
    pub const PACKAGE: &str = include_str!("../../../scripts/js-toolchain/package.json");
    pub const LOCK: &str = include_str!("../../../scripts/js-toolchain/package-lock.json");
    pub const BUILD: &str = include_str!("../../../scripts/js-toolchain/build.mjs");
    pub const SDK_CORE: &str = include_str!("../../../plugins/js-sdk/core.js");
    pub const SDK_INDEX: &str = include_str!("../../../plugins/js-sdk/index.js");
    /// The toolchain's own name in its package.json and lockfile, replaced by the project's.
    pub const TOOLCHAIN: &str = "elastic-js-toolchain";
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::Source => "source",
            Kind::Backend => "backend",
        }
    }

    /// What to put in `agent.toml`, for the README.
    fn configure(self, name: &str, lang: Lang) -> String {
        match self {
            // componentize-js's `fetch` is left out: a JavaScript source calls no origin (yet).
            Kind::Source if lang == Lang::Js => format!(
                "Configure it: `[plugins.{name}]` with `interval = \"10s\"` and `[plugins.{name}.config]`."
            ),
            Kind::Policy => format!(
                "Use it in a group: `policy = \"{name}\"`, `policy_config = {{ target = 0.6 }}` in a `[[group]]`."
            ),
            Kind::Source => format!(
                "Configure it: `[plugins.{name}]` with `interval = \"10s\"` (and `allow_http` for the origins it reads) and `[plugins.{name}.config]`."
            ),
            Kind::Backend => format!("Use it in a group: `backend = \"{name}\"` in a `[[group]]`."),
        }
    }
}

/// Writes the project `dir/name` and returns its path.
pub fn generate(
    name: &str,
    kind: Kind,
    lang: Lang,
    dir: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    if !crate::config::valid_plugin_name(name) {
        anyhow::bail!("plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter");
    }
    let root = dir.join(name);
    if root.exists() && std::fs::read_dir(&root)?.next().is_some() {
        anyhow::bail!("{} exists and is not empty: choose another --dir or name", root.display());
    }
    let world = format!("{}-plugin", kind.as_str());
    let mut files: Vec<(&str, String)> = Vec::new();
    match lang {
        Lang::Rust => {
            let sdk = sdk_path(sdk)?;
            let features = if kind == Kind::Source { ", features = [\"http\"]" } else { "" };
            files.push((
                "Cargo.toml",
                include_str!("rust/Cargo.toml.tmpl")
                    .replace("{{sdk}}", &sdk.display().to_string())
                    .replace("{{sdk_features}}", features),
            ));
            files.push(("build.sh", include_str!("rust/build.sh").into()));
            files.push(("README.md", include_str!("rust/README.md").into()));
            let lib = match kind {
                Kind::Policy => include_str!("rust/policy.rs"),
                Kind::Source => include_str!("rust/source.rs"),
                Kind::Backend => include_str!("rust/backend.rs"),
            };
            files.push(("src/lib.rs", lib.into()));
            files.push((".gitignore", "/target\n*.wasm\n".into()));
        }
        Lang::Python => {
            let (app, logic, test) = match kind {
                Kind::Policy => (
                    include_str!("python/policy_app.py"),
                    include_str!("python/policy_logic.py"),
                    include_str!("python/policy_test.py"),
                ),
                Kind::Source => (
                    include_str!("python/source_app.py"),
                    include_str!("python/source_logic.py"),
                    include_str!("python/source_test.py"),
                ),
                Kind::Backend => (
                    include_str!("python/backend_app.py"),
                    include_str!("python/backend_logic.py"),
                    include_str!("python/backend_test.py"),
                ),
            };
            files.push(("app.py", app.into()));
            files.push(("logic.py", logic.into()));
            files.push(("test_logic.py", test.into()));
            files.push(("build.sh", include_str!("python/build.sh").into()));
            files.push(("README.md", include_str!("python/README.md").into()));
            files.push(("wit/plugin.wit", WIT.into()));
            files.push((".gitignore", ".venv/\n__pycache__/\n*.wasm\n".into()));
        }
        Lang::Js => {
            let (app, logic, test) = match kind {
                Kind::Policy => (
                    include_str!("js/policy_app.js"),
                    include_str!("js/policy_logic.js"),
                    include_str!("js/policy_test.js"),
                ),
                Kind::Source => (
                    include_str!("js/source_app.js"),
                    include_str!("js/source_logic.js"),
                    include_str!("js/source_test.js"),
                ),
                Kind::Backend => (
                    include_str!("js/backend_app.js"),
                    include_str!("js/backend_logic.js"),
                    include_str!("js/backend_test.js"),
                ),
            };
            files.push(("app.js", app.into()));
            files.push(("logic.js", logic.into()));
            files.push(("logic.test.js", test.into()));
            files.push(("sdk/core.js", js::SDK_CORE.into()));
            files.push(("sdk/index.js", js::SDK_INDEX.into()));
            files.push(("build.mjs", js::BUILD.into()));
            files.push(("package.json", js_package(js::PACKAGE, name, &world)));
            files.push(("package-lock.json", js::LOCK.replace(js::TOOLCHAIN, name)));
            files.push(("README.md", include_str!("js/README.md").into()));
            files.push(("jsconfig.json", include_str!("js/jsconfig.json").into()));
            files.push(("wit/plugin.wit", WIT.into()));
            files.push((".gitignore", include_str!("js/gitignore").into()));
        }
    }
    for (path, text) in files {
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{kind}}", kind.as_str())
            .replace("{{world}}", &world)
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{configure}}", &kind.configure(name, lang));
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("a file in the project"))?;
        std::fs::write(&file, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(root)
}

/// The project's package.json: the toolchain's, named after the plugin, building its world.
fn js_package(toolchain: &str, name: &str, world: &str) -> String {
    toolchain
        .replace(js::TOOLCHAIN, name)
        .replace("--world policy-plugin", &format!("--world {world}"))
        .replace("plugin.wasm", &format!("{name}.wasm"))
        .lines()
        .map(|l| match l.trim_start().starts_with("\"description\"") {
            true => format!(
                "  \"description\": \"A plugin for the elastic-scaling agent, in JavaScript ({world})\","
            ),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The SDK a Rust project depends on: `--sdk`, else `$ELASTIC_SDK`, else the one in the source
/// tree this agent was built from.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    let candidate = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ELASTIC_SDK").map(PathBuf::from))
        .unwrap_or(built_from);
    let sdk = candidate.canonicalize().map_err(|_| {
        anyhow::anyhow!(
            "the plugin SDK is not at {}: pass --sdk PATH to the agent's plugins/sdk (or set ELASTIC_SDK)",
            candidate.display()
        )
    })?;
    if !sdk.join("Cargo.toml").exists() {
        anyhow::bail!(
            "{} is not the plugin SDK (no Cargo.toml): pass --sdk PATH to plugins/sdk",
            sdk.display()
        );
    }
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_language_is_written_with_its_names_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for kind in [Kind::Policy, Kind::Source, Kind::Backend] {
                let suffix = match lang {
                    Lang::Rust => "rs",
                    Lang::Python => "py",
                    Lang::Js => "js",
                };
                let name = format!("my-{}-{suffix}", kind.as_str());
                let root = generate(&name, kind, lang, dir.path(), None).unwrap();
                for entry in walk(&root) {
                    let text = std::fs::read_to_string(&entry).unwrap();
                    assert!(!text.contains("{{"), "{} keeps a placeholder", entry.display());
                }
                let main = match lang {
                    Lang::Rust => "src/lib.rs",
                    Lang::Python => "app.py",
                    Lang::Js => "app.js",
                };
                let named = |text: String| {
                    text.contains(&format!("\"{name}\"")) || text.contains(&format!("'{name}'"))
                };
                assert!(named(std::fs::read_to_string(root.join(main)).unwrap()), "{main}");
                if lang == Lang::Js {
                    // npm ci refuses a lockfile that does not match package.json: both name the project.
                    let package = std::fs::read_to_string(root.join("package.json")).unwrap();
                    let lock = std::fs::read_to_string(root.join("package-lock.json")).unwrap();
                    assert!(
                        named(package.clone()) && named(lock),
                        "package.json and its lockfile name the project"
                    );
                    let world = format!("--world {}-plugin", kind.as_str());
                    assert!(
                        package.contains(&world) && package.contains(&format!("{name}.wasm")),
                        "{package}"
                    );
                }
            }
        }
        let err = generate("my-policy-rs", Kind::Policy, Lang::Rust, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(generate("Bad_Name", Kind::Policy, Lang::Rust, dir.path(), None).is_err());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
