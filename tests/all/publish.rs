//! Plugins published to and installed from a real OCI registry on loopback (Debian's
//! `docker-registry`, the CNCF distribution registry): push, install by tag and by digest, a
//! tampered blob refused, an install into a running agent's folder swapped in live with its
//! binding recorded, `outdated` and `upgrade` after a new push. Without `docker-registry` the
//! tests say loudly that they were skipped; CI installs it.

use crate::common::{agent_cli, plugin, skipped, wait_for, Agent};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A registry on a loopback port, storing on a folder of its own; stopped on drop.
struct Registry {
    child: Child,
    addr: String,
    root: tempfile::TempDir,
}

impl Registry {
    fn start_or_skip(test: &str) -> Option<Registry> {
        if Command::new("docker-registry").arg("--version").output().is_err() {
            skipped(&format!("{test}: no `docker-registry` here (Debian package docker-registry)"));
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", crate::common::free_port());
        let config = root.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            root.path().join("data").display()
        );
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry { child, addr, root };
        wait_for("the registry answering /v2/", Duration::from_secs(30), || {
            let (code, _) = crate::common::http_get(registry.addr.parse().unwrap(), "/v2/").ok()?;
            (code == 200).then_some(())
        });
        Some(registry)
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.addr)
    }

    /// Where the registry keeps the blob `sha256:HEX`.
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn a_plugin_is_pushed_installed_by_tag_and_digest_and_a_tampered_blob_is_refused() {
    let test = "publish::a_plugin_is_pushed_installed_by_tag_and_digest_and_a_tampered_blob_is_refused";
    let Some(registry) = Registry::start_or_skip(test) else { return };
    let (plugins, data, etc) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = etc.path().join("agent.toml");
    let text = format!(
        "# written by hand: kept by every install\n[agent]\nplugins = \"{}\" # the folder\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n",
        plugins.path().display(),
        data.path().display(),
        crate::common::free_port()
    );
    std::fs::write(&config, &text).unwrap();
    let wasm = plugin("target-tracking");
    let hex = sha256_hex(&wasm);
    let tag = registry.reference("plugins/target-tracking:1.0");

    let (code, out, err) =
        agent_cli(&["plugins", "push", wasm.to_str().unwrap(), &tag, "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("pushed target-tracking 0.1.0 (sha256:{hex}) to {tag}")), "{out}");
    let pinned = out
        .lines()
        .find_map(|l| l.strip_prefix("pin it by digest: "))
        .expect("a digest reference")
        .to_string();
    assert!(pinned.starts_with(&registry.reference("plugins/target-tracking@sha256:")), "{pinned}");

    // By tag: the file, verified, and its binding in agent.toml, the operator's comments kept.
    let (code, out, err) = agent_cli(&["plugins", "install", &tag, "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let installed = plugins.path().join("target-tracking.wasm");
    assert_eq!(sha256_hex(&installed), hex);
    assert!(out.contains("no agent answers at"), "{out}");
    let after = std::fs::read_to_string(&config).unwrap();
    assert!(after.starts_with(&text), "the file as written, then the binding:\n{after}");
    assert!(
        after.contains(&format!("[plugins.target-tracking]\nsha256 = \"{hex}\"\nsource = \"{tag}\"\n")),
        "{after}"
    );
    let (code, out, err) = agent_cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "the recorded binding is a valid configuration: {out}{err}");

    // By digest, printing the table instead of editing the file.
    std::fs::remove_file(&installed).unwrap();
    let (code, out, err) =
        agent_cli(&["plugins", "install", &pinned, "--print", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("[plugins.target-tracking]\nsha256 = \"{hex}\"\nsource = \"{pinned}\"\n")),
        "{out}"
    );
    assert_eq!(sha256_hex(&installed), hex);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), after, "--print edits nothing");

    // A blob changed in the registry's storage: refused, nothing written.
    std::fs::remove_file(&installed).unwrap();
    let blob = registry.blob(&format!("sha256:{hex}"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let (code, out, err) = agent_cli(&["plugins", "install", &tag, "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nothing was installed"), "{err}");
    let left: Vec<_> = std::fs::read_dir(plugins.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "nothing in the plugins folder, not even a partial file: {left:?}");
    // A reference that is not one.
    let (code, _, err) =
        agent_cli(&["plugins", "install", "registry/x:1", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("an OCI reference starts with oci://"), "{err}");
}

#[test]
fn an_install_into_a_running_agent_swaps_in_live_and_outdated_and_upgrade_follow_the_tag() {
    let test =
        "publish::an_install_into_a_running_agent_swaps_in_live_and_outdated_and_upgrade_follow_the_tag";
    let Some(registry) = Registry::start_or_skip(test) else { return };
    let plugins = tempfile::tempdir().unwrap();
    let agent = Agent::start(plugins.path(), "# the operator's file\n[agent]\nsample_interval = \"1s\"\n");
    let dir = plugins.path().to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--plugins", &dir]);
        agent.cli(&all)
    };
    let loaded_sha = || {
        let plugins = agent.status()["plugins"].as_array().cloned().unwrap_or_default();
        let p = plugins.into_iter().find(|p| p["name"] == "target-tracking")?;
        p["sha256"].as_str().map(String::from)
    };
    let tag = registry.reference("plugins/target-tracking:stable");
    let v1 = plugin("target-tracking");
    let (code, out, err) = cli(&["plugins", "push", v1.to_str().unwrap(), &tag]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["plugins", "install", &tag]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reloaded"), "the running agent was told: {out}");
    let v1_hex = sha256_hex(&v1);
    wait_for("v1 running, bound", Duration::from_secs(30), || (loaded_sha()? == v1_hex).then_some(()));

    // A new build under the same tag.
    let v2 = plugins.path().join("..").join(format!("v2-{}.wasm", std::process::id()));
    std::fs::write(&v2, crate::common::new_version(&v1, "v2")).unwrap();
    let v2_hex = sha256_hex(&v2);
    let (code, out, err) = cli(&["plugins", "push", v2.to_str().unwrap(), &tag]);
    let _ = std::fs::remove_file(&v2);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["plugins", "outdated"]);
    assert_eq!(code, 0, "{out}{err}");
    let expected = format!("target-tracking: outdated — installed {}, {tag} is now {v2_hex}", &v1_hex[..16]);
    assert!(out.contains(&expected), "{out}");
    let (code, out, err) = cli(&["plugins", "upgrade", "target-tracking"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("v2 swapped in", Duration::from_secs(30), || (loaded_sha()? == v2_hex).then_some(()));
    let (_, out, _) = cli(&["plugins", "outdated"]);
    assert!(out.contains(&format!("target-tracking: up to date with {tag}")), "{out}");
    let config = std::fs::read_to_string(agent.data.path().join("agent.toml")).unwrap();
    assert!(config.starts_with("# the operator's file\n"), "{config}");
    assert!(config.contains(&format!("sha256 = \"{v2_hex}\"")), "{config}");
}

#[test]
fn a_binding_that_asks_for_a_signer_refuses_an_unsigned_install_and_takes_a_signed_one() {
    let test = "publish::a_binding_that_asks_for_a_signer_refuses_an_unsigned_install_and_takes_a_signed_one";
    let Some(registry) = Registry::start_or_skip(test) else { return };
    let (plugins, etc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = crate::trust::keygen(etc.path(), "release");
    let config = etc.path().join("agent.toml");
    let text = format!(
        "[agent]\nplugins = \"{}\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n[trust]\ntrusted_keys = [\"release.pub\"]\n[plugins.target-tracking]\nsigner = \"{key}\"\n",
        plugins.path().display(),
        etc.path().join("data").display(),
        crate::common::free_port()
    );
    std::fs::write(&config, text).unwrap();
    let (unsigned, signed) = (registry.reference("p/tt:unsigned"), registry.reference("p/tt:signed"));
    let wasm = plugin("target-tracking");
    let signed_file = etc.path().join("target-tracking.signed.wasm");
    crate::trust::sign(&wasm, &etc.path().join("release"), &signed_file);
    for (file, reference) in [(wasm.as_path(), &unsigned), (signed_file.as_path(), &signed)] {
        let (code, out, err) = agent_cli(&[
            "plugins",
            "push",
            file.to_str().unwrap(),
            reference,
            "--config",
            config.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) =
        agent_cli(&["plugins", "install", &unsigned, "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("target-tracking: ") && err.contains("nothing was installed"), "{err}");
    assert!(!plugins.path().join("target-tracking.wasm").exists());
    let (code, out, err) = agent_cli(&["plugins", "install", &signed, "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sha256_hex(&plugins.path().join("target-tracking.wasm")), sha256_hex(&signed_file));
    let bound = std::fs::read_to_string(&config).unwrap();
    assert!(
        bound.contains(&format!("signer = \"{key}\"\nsha256 = \"{}\"", sha256_hex(&signed_file))),
        "{bound}"
    );
}
