//! `agent plugins new`: writes a ready plugin project — Rust (on the SDK) or Python
//! (componentize-py) — for any of the three worlds, outside the agent's workspace, that builds
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
    fn configure(self, name: &str) -> String {
        match self {
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
    }
    for (path, text) in files {
        let text = text
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{kind}}", kind.as_str())
            .replace("{{world}}", &world)
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{configure}}", &kind.configure(name));
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
        for lang in [Lang::Rust, Lang::Python] {
            for kind in [Kind::Policy, Kind::Source, Kind::Backend] {
                let name = format!("my-{}-{}", kind.as_str(), if lang == Lang::Rust { "rs" } else { "py" });
                let root = generate(&name, kind, lang, dir.path(), None).unwrap();
                for entry in walk(&root) {
                    let text = std::fs::read_to_string(&entry).unwrap();
                    assert!(!text.contains("{{"), "{} keeps a placeholder", entry.display());
                }
                let main = if lang == Lang::Rust { "src/lib.rs" } else { "app.py" };
                assert!(std::fs::read_to_string(root.join(main)).unwrap().contains(&format!("\"{name}\"")));
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
