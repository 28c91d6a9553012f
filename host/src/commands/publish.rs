//! Plugins as OCI artifacts, in the layout the wasm OCI tooling uses (wkg, wash, Spin): one
//! `application/wasm` layer holding the component's bytes, a `application/vnd.wasm.config.v0+json`
//! config. `agent plugins push FILE REF`, `install REF`, `outdated`, `upgrade NAME`.
//!
//! An install is pulled by digest and verified (the layer's sha256 against the manifest, the
//! file's signer against its binding), written into the plugins folder atomically (a running
//! agent hot-swaps it), and bound: `[plugins.NAME]` in agent.toml gains its `sha256` and its
//! `source`, edited in place with the file's comments kept.

use super::{runtime, tool_runtime, Exit, RunOptions};
use crate::plugins::loader;
use anyhow::{anyhow, bail, Context};
use oci_client::client::{ClientConfig, ClientProtocol, Config as OciConfig, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const WASM_LAYER: &str = "application/wasm";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The largest component an install accepts (a plugin is a few MiB; a registry is a stranger).
const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// A reference as the operator wrote it (`oci://HOST[:PORT]/REPO:TAG`, `…@sha256:HEX`).
#[derive(Debug, Clone)]
pub struct OciRef {
    pub text: String,
    reference: Reference,
}

impl OciRef {
    pub fn parse(text: &str) -> anyhow::Result<OciRef> {
        let rest = text.strip_prefix("oci://").ok_or_else(|| {
            anyhow!("`{text}`: an OCI reference starts with oci:// (oci://HOST[:PORT]/REPO:TAG)")
        })?;
        let reference: Reference =
            rest.parse().with_context(|| format!("`{text}` is not an OCI reference"))?;
        Ok(OciRef { text: text.to_string(), reference })
    }

    /// The same repository at `digest` (`sha256:…`).
    fn at_digest(&self, digest: &str) -> String {
        let r = &self.reference;
        format!("oci://{}/{}@{digest}", r.registry(), r.repository())
    }
}

/// How to reach registries: plain HTTP only to loopback unless `insecure`; credentials from
/// `AGENT_REGISTRY_USERNAME` and `AGENT_REGISTRY_PASSWORD` (or `…_PASSWORD_FILE`).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub insecure: bool,
}

impl Access {
    fn client(&self, r: &OciRef) -> Client {
        let registry = r.reference.resolve_registry().to_string();
        let host = registry.rsplit_once(':').map_or(registry.as_str(), |(h, _)| h).trim_matches(['[', ']']);
        let loopback =
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let protocol = match loopback || self.insecure {
            true => ClientProtocol::HttpsExcept(vec![registry]),
            false => ClientProtocol::Https,
        };
        Client::new(ClientConfig { protocol, ..Default::default() })
    }

    fn auth() -> anyhow::Result<RegistryAuth> {
        let Ok(user) = std::env::var("AGENT_REGISTRY_USERNAME") else { return Ok(RegistryAuth::Anonymous) };
        let password = match std::env::var("AGENT_REGISTRY_PASSWORD") {
            Ok(p) => p,
            Err(_) => {
                let file = std::env::var("AGENT_REGISTRY_PASSWORD_FILE")
                    .context("AGENT_REGISTRY_USERNAME is set: set AGENT_REGISTRY_PASSWORD or AGENT_REGISTRY_PASSWORD_FILE too")?;
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {file}"))?
                    .trim_end()
                    .to_string()
            }
        };
        Ok(RegistryAuth::Basic(user, password))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `agent plugins push FILE REF`: the component as an artifact; prints its manifest's digest.
pub fn push(options: RunOptions, file: &Path, target: &str, access: Access) -> anyhow::Result<Exit> {
    let config = options.resolve()?;
    let r = OciRef::parse(target)?;
    runtime()?.block_on(async {
        let prepared = loader::prepare(&tool_runtime(&config)?, file).await?;
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        let meta = &prepared.metadata;
        let annotations = BTreeMap::from([
            ("org.opencontainers.image.title".to_string(), format!("{}.wasm", meta.name)),
            ("org.opencontainers.image.version".to_string(), meta.version.clone()),
            ("org.opencontainers.image.description".to_string(), crate::text::clean(&meta.description, 512)),
        ]);
        let wasm_config = serde_json::json!({
            "created": crate::timefmt::format(crate::timefmt::now_ms()),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [digest],
        });
        let layer = ImageLayer::new(bytes, WASM_LAYER.into(), None);
        let oci_config = OciConfig::new(serde_json::to_vec(&wasm_config)?, WASM_CONFIG.into(), None);
        let manifest = OciImageManifest::build(std::slice::from_ref(&layer), &oci_config, Some(annotations));
        let client = access.client(&r);
        let auth = Access::auth()?;
        client
            .push(&r.reference, &[layer], oci_config, &auth, Some(manifest))
            .await
            .map_err(|e| registry_error(&r, e))?;
        let pushed =
            client.fetch_manifest_digest(&r.reference, &auth).await.map_err(|e| registry_error(&r, e))?;
        println!("pushed {} {} ({digest}) to {}", meta.name, meta.version, r.text);
        println!("pin it by digest: {}", r.at_digest(&pushed));
        Ok(Exit::Success)
    })
}

fn registry_error(r: &OciRef, e: oci_client::errors::OciDistributionError) -> anyhow::Error {
    anyhow!("{}: {e}", r.text)
}

/// A component pulled and verified: its bytes, the sha256 of them (hex) and the manifest's digest.
struct Pulled {
    bytes: Vec<u8>,
    sha256: String,
    manifest_digest: String,
}

async fn pull(r: &OciRef, access: &Access) -> anyhow::Result<Pulled> {
    let client = access.client(r);
    let auth = Access::auth()?;
    let (manifest, manifest_digest) =
        client.pull_image_manifest(&r.reference, &auth).await.map_err(|e| registry_error(r, e))?;
    if let Some(wanted) = r.reference.digest().filter(|d| *d != manifest_digest) {
        bail!("{}: the registry answered manifest {manifest_digest}, not {wanted}: refused", r.text);
    }
    let layer = wasm_layer(r, &manifest)?;
    if layer.size < 0 || layer.size as u64 > MAX_COMPONENT_BYTES {
        bail!(
            "{}: a {}-byte component is more than an install takes ({MAX_COMPONENT_BYTES})",
            r.text,
            layer.size
        );
    }
    let mut bytes = Vec::with_capacity(layer.size as usize);
    client.pull_blob(&r.reference, layer, &mut bytes).await.map_err(|e| {
        anyhow!(
            "{}: the component's blob {} did not arrive intact: {e}; nothing was installed",
            r.text,
            layer.digest
        )
    })?;
    let sha256 = sha256_hex(&bytes);
    if layer.digest != format!("sha256:{sha256}") {
        bail!(
            "{}: the blob's sha256 is {sha256}, the manifest says {}: refused, nothing was installed",
            r.text,
            layer.digest
        );
    }
    Ok(Pulled { bytes, sha256, manifest_digest })
}

/// The one `application/wasm` layer of a manifest.
fn wasm_layer<'a>(
    r: &OciRef,
    manifest: &'a OciImageManifest,
) -> anyhow::Result<&'a oci_client::manifest::OciDescriptor> {
    let wasm: Vec<_> = manifest.layers.iter().filter(|l| l.media_type == WASM_LAYER).collect();
    match wasm.as_slice() {
        [one] => Ok(one),
        _ => {
            let types: Vec<&str> = manifest.layers.iter().map(|l| l.media_type.as_str()).collect();
            bail!(
                "{}: not a wasm component artifact (one {WASM_LAYER} layer expected; layers: {types:?})",
                r.text
            )
        }
    }
}

/// What `install` does with the binding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binding {
    /// Edit agent.toml and reload the running agent.
    Record,
    /// Print the `[plugins.NAME]` table to paste; touch no configuration.
    Print,
}

/// `agent plugins install REF`.
pub fn install(options: RunOptions, source: &str, access: Access, binding: Binding) -> anyhow::Result<Exit> {
    let config = options.clone().resolve()?;
    let dir = config.plugins_dir.clone().ok_or_else(|| {
        anyhow!("no plugins folder to install into: --plugins DIR, or [agent] plugins in agent.toml")
    })?;
    let r = OciRef::parse(source)?;
    let (name, sha256, path) = runtime()?.block_on(async {
        let pulled = pull(&r, &access).await?;
        let pending = dir.join(format!(".install-{}.part", &pulled.sha256[..16]));
        write_synced(&pending, &pulled.bytes)?;
        let checked = check(&config, &pending, &pulled).await;
        let (name, target) = match checked {
            Ok(found) => found,
            Err(e) => {
                let _ = std::fs::remove_file(&pending);
                return Err(e);
            }
        };
        let path = dir.join(&target);
        std::fs::rename(&pending, &path)
            .with_context(|| format!("moving the component to {}", path.display()))?;
        println!("installed {name} from {} ({}) as {}", r.text, pulled.manifest_digest, path.display());
        anyhow::Ok((name, pulled.sha256, path))
    })?;
    match (binding, &config.file) {
        (Binding::Print, _) | (_, None) => {
            if binding == Binding::Record {
                println!("no agent.toml to record the binding in; add this table:");
            }
            print!("{}", binding_table(&name, &path, &sha256, source));
            Ok(Exit::Success)
        }
        (Binding::Record, Some(file)) => {
            record_binding(file, &name, &sha256, source)?;
            println!(
                "bound in {}: [plugins.{name}] sha256 = \"{sha256}\", source = \"{source}\"",
                file.display()
            );
            reload_if_running(options)
        }
    }
}

/// The component's declared name, and the file it goes to: refused when its binding asks for
/// a signer it lacks (its pin is what this install records).
async fn check(
    config: &crate::config::Config,
    pending: &Path,
    pulled: &Pulled,
) -> anyhow::Result<(String, String)> {
    let prepared = loader::prepare(&tool_runtime(config)?, pending).await?;
    let name = prepared.metadata.name.clone();
    let binding = config.binding(&name).cloned().map(|b| crate::config::Binding { sha256: None, ..b });
    crate::plugins::signature::admit(&pulled.bytes, &pulled.sha256, binding.as_ref(), &config.trust)
        .map_err(|why| anyhow!("{name}: {why}; nothing was installed"))?;
    let file = binding.map_or_else(|| format!("{name}.wasm"), |b| b.file);
    Ok((name, file))
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", path.display()))
}

fn binding_table(name: &str, path: &Path, sha256: &str, source: &str) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let file_line =
        if file == format!("{name}.wasm") { String::new() } else { format!("file = \"{file}\"\n") };
    format!("[plugins.{name}]\n{file_line}sha256 = \"{sha256}\"\nsource = \"{source}\"\n")
}

/// Sets `sha256` and `source` of `[plugins.NAME]` in the file, keeping everything else as
/// written (comments, order, the other keys); written to a temporary file and renamed over.
pub fn record_binding(file: &Path, name: &str, sha256: &str, source: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{}: not valid TOML", file.display()))?;
    let plugins = doc
        .entry("plugins")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| anyhow!("{}: `plugins` is not a table", file.display()))?;
    let table = plugins
        .entry(name)
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| anyhow!("{}: `plugins.{name}` is not a table", file.display()))?;
    table["sha256"] = toml_edit::value(sha256);
    table["source"] = toml_edit::value(source);
    let pending = file.with_extension("toml.install");
    std::fs::write(&pending, doc.to_string()).with_context(|| format!("writing {}", pending.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(&pending, meta.permissions());
    }
    std::fs::rename(&pending, file).with_context(|| format!("replacing {}", file.display()))
}

/// Asks the running agent to reload; an agent that is not running takes the binding at its start.
fn reload_if_running(options: RunOptions) -> anyhow::Result<Exit> {
    let listen = options.clone().resolve()?.listen;
    if std::net::TcpStream::connect_timeout(&listen, std::time::Duration::from_secs(2)).is_err() {
        println!("no agent answers at {listen}: it loads the plugin at its next start");
        return Ok(Exit::Success);
    }
    super::reload(options)
}

/// Every bound plugin installed from a tag, against what that tag names now.
pub fn outdated(options: RunOptions, access: Access) -> anyhow::Result<Exit> {
    let config = options.resolve()?;
    let followed: Vec<(&String, &String, Option<&String>)> = config
        .plugins
        .iter()
        .filter_map(|(name, s)| s.source.as_ref().map(|src| (name, src, s.sha256.as_ref())))
        .collect();
    if followed.is_empty() {
        println!("no plugin was installed from a registry (no `source` in [plugins.NAME])");
        return Ok(Exit::Success);
    }
    runtime()?.block_on(async {
        for (name, source, pinned) in followed {
            let r = OciRef::parse(source)?;
            let line = match (r.reference.digest(), now_at(&r, &access).await) {
                (Some(_), _) => format!("{name}: pinned by digest ({source}): nothing to follow"),
                (None, Err(e)) => format!("{name}: {e:#}"),
                (None, Ok(now)) if Some(&now) == pinned => format!("{name}: up to date with {source}"),
                (None, Ok(now)) => format!(
                    "{name}: outdated — installed {}, {source} is now {now}: agent plugins upgrade {name}",
                    pinned.map_or("(no pin)", |p| &p[..p.len().min(16)]),
                ),
            };
            println!("{line}");
        }
        Ok(Exit::Success)
    })
}

/// The sha256 (hex) of the component a tag names now.
async fn now_at(r: &OciRef, access: &Access) -> anyhow::Result<String> {
    let client = access.client(r);
    let (manifest, _) =
        client.pull_image_manifest(&r.reference, &Access::auth()?).await.map_err(|e| registry_error(r, e))?;
    let layer = wasm_layer(r, &manifest)?;
    Ok(layer.digest.trim_start_matches("sha256:").to_string())
}

/// `agent plugins upgrade NAME`: installs again from the `source` its binding records.
pub fn upgrade(options: RunOptions, name: &str, access: Access) -> anyhow::Result<Exit> {
    let config = options.clone().resolve()?;
    let source =
        config.plugins.get(name).and_then(|s| s.source.clone()).ok_or_else(|| {
            anyhow!("[plugins.{name}] has no `source`: it was not installed from a registry")
        })?;
    install(options, &source, access, Binding::Record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_oci_and_keep_tag_or_digest() {
        let r = OciRef::parse("oci://127.0.0.1:5000/plugins/target-tracking:1.2").unwrap();
        assert_eq!(
            (r.reference.registry(), r.reference.repository()),
            ("127.0.0.1:5000", "plugins/target-tracking")
        );
        assert_eq!(r.reference.tag(), Some("1.2"));
        assert_eq!(r.at_digest("sha256:ab"), "oci://127.0.0.1:5000/plugins/target-tracking@sha256:ab");
        assert!(OciRef::parse("127.0.0.1:5000/x:1").unwrap_err().to_string().contains("starts with oci://"));
        assert!(OciRef::parse("oci://host/UPPER:1").is_err(), "repositories are lower-case");
    }

    #[test]
    fn the_binding_is_recorded_with_the_files_comments_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        let text =
            "# the operator's notes\n[agent]\nplugins = \"p\" # where\n\n[plugins.other]\nallow_http = []\n";
        std::fs::write(&file, text).unwrap();
        record_binding(&file, "target-tracking", "abc", "oci://r/t:1").unwrap();
        record_binding(&file, "other", "def", "oci://r/o:2").unwrap();
        let after = std::fs::read_to_string(&file).unwrap();
        assert!(after.starts_with("# the operator's notes\n[agent]\nplugins = \"p\" # where\n"), "{after}");
        assert!(
            after.contains("[plugins.other]\nallow_http = []\nsha256 = \"def\"\nsource = \"oci://r/o:2\"\n"),
            "{after}"
        );
        assert!(
            after.contains("[plugins.target-tracking]\nsha256 = \"abc\"\nsource = \"oci://r/t:1\"\n"),
            "{after}"
        );
        let table = binding_table("x", Path::new("/p/x.wasm"), "abc", "oci://r/x:1");
        assert_eq!(table, "[plugins.x]\nsha256 = \"abc\"\nsource = \"oci://r/x:1\"\n");
    }
}
