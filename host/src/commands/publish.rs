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
use std::time::Duration;

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
        // Without a host the reference would mean Docker Hub, and credentials would go there.
        let host = rest.split('/').next().unwrap_or_default();
        if !(host.contains('.') || host.contains(':') || host == "localhost") || !rest.contains('/') {
            bail!("`{text}` names no registry host: oci://HOST[:PORT]/REPO:TAG (oci://docker.io/… for Docker Hub)");
        }
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
        // A registry that stops answering fails the command rather than hanging it.
        let (connect_timeout, read_timeout) = (Some(Duration::from_secs(10)), Some(Duration::from_secs(60)));
        Client::new(ClientConfig { protocol, connect_timeout, read_timeout, ..Default::default() })
    }

    /// Credentials for `r`'s registry: only the one `AGENT_REGISTRY_HOST` names, when it is set
    /// (an `outdated` over several registries sends them to no other).
    fn auth(r: &OciRef) -> anyhow::Result<RegistryAuth> {
        let Ok(user) = std::env::var("AGENT_REGISTRY_USERNAME") else { return Ok(RegistryAuth::Anonymous) };
        if std::env::var("AGENT_REGISTRY_HOST").is_ok_and(|h| h != r.reference.resolve_registry()) {
            return Ok(RegistryAuth::Anonymous);
        }
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
        let auth = Access::auth(&r)?;
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

/// A registry's error, as the operator reads it: what the registry sent is a stranger's text,
/// escaped and bounded.
fn registry_error(r: &OciRef, e: oci_client::errors::OciDistributionError) -> anyhow::Error {
    anyhow!("{}: {}", r.text, crate::text::clean(&e.to_string(), 600))
}

/// A component pulled and verified: its bytes, the sha256 of them (hex) and the manifest's digest.
struct Pulled {
    bytes: Vec<u8>,
    sha256: String,
    manifest_digest: String,
}

async fn pull(r: &OciRef, access: &Access) -> anyhow::Result<Pulled> {
    let client = access.client(r);
    let auth = Access::auth(r)?;
    let (manifest, manifest_digest) =
        client.pull_image_manifest(&r.reference, &auth).await.map_err(|e| registry_error(r, e))?;
    // oci-client has checked the manifest's bytes against the reference's digest, if it has one.
    let layer = wasm_layer(r, &manifest)?;
    if layer.size < 0 || layer.size as u64 > MAX_COMPONENT_BYTES {
        bail!(
            "{}: a {}-byte component is more than an install takes ({MAX_COMPONENT_BYTES})",
            r.text,
            layer.size
        );
    }
    let mut bytes = Vec::with_capacity(layer.size as usize);
    let bounded = Bounded { out: &mut bytes, max: layer.size as usize };
    client.pull_blob(&r.reference, layer, bounded).await.map_err(|e| {
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
    Ok(Pulled { bytes, sha256, manifest_digest: crate::text::clean(&manifest_digest, 100) })
}

/// A sink that takes no more than the manifest declared: a registry streaming more is cut off.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
}

impl tokio::io::AsyncWrite for Bounded<'_> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + buf.len() > this.max {
            let e = std::io::Error::other(format!("more than the {} bytes the manifest declares", this.max));
            return std::task::Poll::Ready(Err(e));
        }
        this.out.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The one `application/wasm` layer of a manifest.
fn wasm_layer<'a>(
    r: &OciRef,
    manifest: &'a OciImageManifest,
) -> anyhow::Result<&'a oci_client::manifest::OciDescriptor> {
    let wasm: Vec<_> = manifest.layers.iter().filter(|l| l.media_type == WASM_LAYER).collect();
    match wasm.as_slice() {
        // A digest the registry wrote is printed and compared: only the one form it may have.
        [one] if !is_sha256(&one.digest) => {
            bail!("{}: the layer's digest is not sha256:<64 hex digits>: refused", r.text)
        }
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

/// `agent plugins install REF`; with `expect`, the component must declare that name (an
/// upgrade must not install another plugin under a moved tag).
pub fn install(
    options: RunOptions,
    source: &str,
    access: Access,
    binding: Binding,
    expect: Option<&str>,
) -> anyhow::Result<Exit> {
    let config = options.clone().resolve()?;
    let dir = config.plugins_dir.clone().ok_or_else(|| {
        anyhow!("no plugins folder to install into: --plugins DIR, or [agent] plugins in agent.toml")
    })?;
    let r = OciRef::parse(source)?;
    let record = match binding {
        Binding::Record => config.file.clone(),
        Binding::Print => None,
    };
    let recorded = runtime()?.block_on(async {
        let pulled = pull(&r, &access).await?;
        let pending = Pending::write(&dir, &pulled.bytes)?;
        let (name, target) = check(&config, &pending.path, &pulled, expect).await?;
        // The configuration first, checked whole before anything is replaced: a file that would
        // not load is never put in place, nor a component the old pin would refuse.
        let edited = match &record {
            Some(file) => Some(edit_binding(file, &name, &pulled.sha256, source)?),
            None => None,
        };
        let path = dir.join(&target);
        pending.persist(&path)?;
        println!("installed {name} from {} ({}) as {}", r.text, pulled.manifest_digest, path.display());
        match (edited, &record) {
            (Some(edited), Some(file)) => {
                edited.persist(file)?;
                let sha = &pulled.sha256;
                println!(
                    "bound in {}: [plugins.{name}] sha256 = \"{sha}\", source = \"{source}\"",
                    file.display()
                );
                anyhow::Ok(true)
            }
            _ => {
                if binding == Binding::Record {
                    println!("no agent.toml to record the binding in; add this table:");
                }
                print!("{}", binding_table(&name, &path, &pulled.sha256, source));
                anyhow::Ok(false)
            }
        }
    })?;
    if recorded {
        reload_if_running(options)
    } else {
        Ok(Exit::Success)
    }
}

/// A file written under a unique temporary name in its destination's folder, removed unless it
/// is renamed into place (an error, a refusal or a panic leaves nothing behind).
struct Pending {
    path: std::path::PathBuf,
    kept: bool,
}

impl Pending {
    fn write(dir: &Path, bytes: &[u8]) -> anyhow::Result<Pending> {
        use std::io::Write;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = dir.join(format!(".install-{}-{nanos}.part", std::process::id()));
        let pending = Pending { path, kept: false };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pending.path)
            .with_context(|| format!("writing {}", pending.path.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", pending.path.display()))?;
        Ok(pending)
    }

    fn persist(mut self, to: &Path) -> anyhow::Result<()> {
        std::fs::rename(&self.path, to).with_context(|| format!("moving it to {}", to.display()))?;
        self.kept = true;
        if let Some(dir) = to.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The component's declared name, and the file it goes to: refused when its binding asks for
/// a signer it lacks (its pin is what this install records), when it is not the plugin an
/// upgrade expects, or when its file is another plugin's.
async fn check(
    config: &crate::config::Config,
    pending: &Path,
    pulled: &Pulled,
    expect: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let prepared = loader::prepare(&tool_runtime(config)?, pending).await?;
    let name = prepared.metadata.name.clone();
    if let Some(wanted) = expect.filter(|w| *w != name) {
        bail!("the component declares `{name}`, not `{wanted}`: its tag now holds another plugin; nothing was installed");
    }
    let binding = config.binding(&name).cloned().map(|b| crate::config::Binding { sha256: None, ..b });
    crate::plugins::signature::admit(&pulled.bytes, &pulled.sha256, binding.as_ref(), &config.trust)
        .map_err(|why| anyhow!("{name}: {why}; nothing was installed"))?;
    let file = binding.map_or_else(|| format!("{name}.wasm"), |b| b.file);
    if let Some(other) = config.binding_of_file(&file).filter(|b| b.name != name) {
        bail!(
            "{file} is the file of plugin `{}`: `{name}` cannot be installed over it; nothing was installed",
            other.name
        );
    }
    Ok((name, file))
}

fn binding_table(name: &str, path: &Path, sha256: &str, source: &str) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let file_line =
        if file == format!("{name}.wasm") { String::new() } else { format!("file = \"{file}\"\n") };
    format!("[plugins.{name}]\n{file_line}sha256 = \"{sha256}\"\nsource = \"{source}\"\n")
}

/// `file` with `sha256` and `source` of `[plugins.NAME]` set — everything else as written
/// (comments, order, the other keys, inline tables) — checked as a whole configuration, and
/// written beside it with its mode and owner, ready to be renamed over it.
pub fn edit_binding(file: &Path, name: &str, sha256: &str, source: &str) -> anyhow::Result<EditedConfig> {
    let file = std::fs::canonicalize(file).with_context(|| format!("reading {}", file.display()))?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{}: not valid TOML", file.display()))?;
    let plugins = doc
        .entry("plugins")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_like_mut()
        .ok_or_else(|| anyhow!("{}: `plugins` is not a table", file.display()))?;
    if plugins.get(name).is_none() {
        plugins.insert(name, toml_edit::Item::Table(toml_edit::Table::new()));
    }
    let table = plugins
        .get_mut(name)
        .and_then(|t| t.as_table_like_mut())
        .ok_or_else(|| anyhow!("{}: `plugins.{name}` is not a table", file.display()))?;
    table.insert("sha256", toml_edit::value(sha256));
    table.insert("source", toml_edit::value(source));
    // An inline table keeps its one-line look, its separators even.
    if let Some(inline) = plugins.get_mut(name).and_then(|t| t.as_inline_table_mut()) {
        inline.fmt();
    }
    let edited = doc.to_string();
    crate::config::Config::parse(&edited, &file).map_err(|e| {
        anyhow!("the binding would make {} invalid, so nothing was installed: {e}", file.display())
    })?;
    EditedConfig::write(&file, &edited)
}

/// A configuration file's new text, written beside it.
pub struct EditedConfig {
    pending: Pending,
}

impl EditedConfig {
    fn write(file: &Path, text: &str) -> anyhow::Result<EditedConfig> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = file.parent().unwrap_or(Path::new("."));
        let pending = Pending::write(dir, text.as_bytes())?;
        if let Ok(meta) = std::fs::metadata(file) {
            let _ = std::fs::set_permissions(
                &pending.path,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            );
            if let Ok(path) = std::ffi::CString::new(pending.path.as_os_str().as_encoded_bytes()) {
                // SAFETY: a NUL-terminated path; without the right to chown it fails, harmlessly.
                unsafe { libc::chown(path.as_ptr(), meta.uid(), meta.gid()) };
            }
        }
        Ok(EditedConfig { pending })
    }

    pub fn persist(self, file: &Path) -> anyhow::Result<()> {
        let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        self.pending.persist(&file)
    }
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
            let line = match OciRef::parse(source) {
                Err(e) => format!("{name}: {e:#}"),
                Ok(r) if r.reference.digest().is_some() => {
                    format!("{name}: pinned by digest ({source}): nothing to follow")
                }
                Ok(r) => follow(&config, name, &r, pinned, &access).await,
            };
            println!("{line}");
        }
        Ok(Exit::Success)
    })
}

/// What `outdated` says of one plugin following a tag: the file on disk against its pin (a build
/// changed by hand is said so, and `upgrade` would replace it), then the pin against the tag.
async fn follow(
    config: &crate::config::Config,
    name: &str,
    r: &OciRef,
    pinned: Option<&String>,
    access: &Access,
) -> String {
    let file = config.binding(name).map(|b| b.file.clone()).unwrap_or_else(|| format!("{name}.wasm"));
    let on_disk =
        config.plugins_dir.as_ref().and_then(|d| std::fs::read(d.join(&file)).ok()).map(|b| sha256_hex(&b));
    let short = |h: &str| h[..h.len().min(16)].to_string();
    let local = match (&on_disk, pinned) {
        (Some(disk), Some(pin)) if disk != pin => {
            format!(" (the file {file} was changed by hand: {}, not the pinned {})", short(disk), short(pin))
        }
        (None, _) => format!(" ({file} is not in the plugins folder)"),
        _ => String::new(),
    };
    match now_at(r, access).await {
        Err(e) => format!("{name}: {e:#}"),
        Ok(now) if Some(&now) == pinned => format!("{name}: up to date with {}{local}", r.text),
        Ok(now) => format!(
            "{name}: outdated — installed {}, {} is now {now}: agent plugins upgrade {name}{local}",
            pinned.map_or("(no pin)".to_string(), |p| short(p)),
            r.text
        ),
    }
}

/// The sha256 (hex) of the component a tag names now.
async fn now_at(r: &OciRef, access: &Access) -> anyhow::Result<String> {
    let client = access.client(r);
    let (manifest, _) = client
        .pull_image_manifest(&r.reference, &Access::auth(r)?)
        .await
        .map_err(|e| registry_error(r, e))?;
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
    install(options, &source, access, Binding::Record, Some(name))
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
        assert!(is_sha256(&format!("sha256:{}", "0a".repeat(32))));
        assert!(!is_sha256("sha256:\u{1b}[31m") && !is_sha256(&format!("sha256:{}", "A".repeat(64))));
        let hostless = OciRef::parse("oci://team/x:1").unwrap_err().to_string();
        assert!(hostless.contains("names no registry host"), "never Docker Hub by default: {hostless}");
        assert!(
            OciRef::parse("oci://localhost/x:1").is_ok()
                && OciRef::parse("oci://r.example/x@sha256:0").is_err()
        );
    }

    #[test]
    fn the_binding_is_recorded_with_the_files_comments_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        let text = "# the operator's notes\n[agent]\nplugins = \"p\" # where\n\n[plugins]\ninline = { disabled = true }\n\n[plugins.other]\nallow_http = []\n";
        std::fs::write(&file, text).unwrap();
        let record = |name: &str, sha: &str, src: &str| {
            edit_binding(&file, name, sha, src).unwrap().persist(&file).unwrap()
        };
        let (a, d, z) = ("a".repeat(64), "d".repeat(64), "0".repeat(64));
        record("target-tracking", &a, "oci://r/t:1");
        record("other", &d, "oci://r/o:2");
        record("inline", &z, "oci://r/i:3");
        let after = std::fs::read_to_string(&file).unwrap();
        assert!(after.starts_with("# the operator's notes\n[agent]\nplugins = \"p\" # where\n"), "{after}");
        assert!(
            after.contains(&format!(
                "[plugins.other]\nallow_http = []\nsha256 = \"{d}\"\nsource = \"oci://r/o:2\"\n"
            )),
            "{after}"
        );
        assert!(
            after.contains(&format!(
                "[plugins.target-tracking]\nsha256 = \"{a}\"\nsource = \"oci://r/t:1\"\n"
            )),
            "{after}"
        );
        assert!(
            after.contains(&format!(
                "inline = {{ disabled = true, sha256 = \"{z}\", source = \"oci://r/i:3\" }}"
            )),
            "{after}"
        );
        // What would not load is not written: a source that is no OCI reference.
        let refused = edit_binding(&file, "other", &d, "https://r/o:2").err().unwrap().to_string();
        assert!(
            refused.contains("so nothing was installed") && refused.contains("plugins.other.source"),
            "{refused}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), after);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        let table = binding_table("x", Path::new("/p/x.wasm"), "abc", "oci://r/x:1");
        assert_eq!(table, "[plugins.x]\nsha256 = \"abc\"\nsource = \"oci://r/x:1\"\n");
    }
}
