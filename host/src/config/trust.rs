//! `[trust]`: the public keys plugin signatures are checked against, and whether every plugin
//! must carry one; and the bindings that tie a plugin name to a file (`[plugins.NAME] file`,
//! `sha256`, `signer`). See docs/plugins.md, "Who a plugin is".

use super::{ConfigError, Located};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// `[trust]`, validated: every key read and its id computed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustSpec {
    pub keys: Vec<TrustedKey>,
    /// `require_signature`: a file with no signature by a trusted key is refused. Default false.
    pub require_signature: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrustedKey {
    /// [`crate::keys::key_id`] of the key: what `signer = "…"` names.
    pub id: String,
    pub public: [u8; 32],
    /// Where it came from, for messages.
    pub source: String,
}

impl TrustSpec {
    pub fn key(&self, id: &str) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// What ties plugin `name` to a file: the only file that may run under that name and receive
/// its `[plugins.NAME]` grants, state and groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub name: String,
    /// A file name in the plugins folder: `file = "…"`, by default `NAME.wasm`.
    pub file: String,
    /// `sha256 = "…"`: the file's content must have this digest (lower-case hex).
    pub sha256: Option<String>,
    /// `signer = "KEYID"`: the file must be signed by this key of `[trust]`.
    pub signer: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    #[serde(default)]
    trusted_keys: Vec<Spanned<String>>,
    #[serde(default)]
    require_signature: bool,
}

/// Reads every trusted key: a PEM file (relative to the configuration file) or PEM text.
pub(super) fn validate(raw: Option<RawTrust>, base: &Path, at: &Located) -> Result<TrustSpec, ConfigError> {
    let Some(raw) = raw else { return Ok(TrustSpec::default()) };
    let mut keys: Vec<TrustedKey> = Vec::new();
    for entry in raw.trusted_keys {
        let value = entry.get_ref();
        let (text, source) = if value.contains("-----BEGIN") {
            (value.clone(), "inline key".to_string())
        } else {
            let path = base.join(value);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                at.error(
                    Some(entry.span()),
                    &format!("trust.trusted_keys: cannot read {}: {e}", path.display()),
                )
            })?;
            (text, path.display().to_string())
        };
        let public = crate::keys::parse_public_pem(&text)
            .map_err(|e| at.error(Some(entry.span()), &format!("trust.trusted_keys: {source} {e}")))?;
        let id = crate::keys::key_id(&public);
        if !keys.iter().any(|k| k.id == id) {
            keys.push(TrustedKey { id, public, source });
        }
    }
    Ok(TrustSpec { keys, require_signature: raw.require_signature })
}

/// `[plugins.NAME] file`: a `.wasm` file name in the plugins folder, nothing more.
pub(super) fn file_name(value: &Spanned<String>, field: &str, at: &Located) -> Result<String, ConfigError> {
    let name = value.get_ref();
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && !name.starts_with('.')
        && name.ends_with(".wasm")
        && !name.chars().any(char::is_control);
    if !plain {
        return Err(at.error(
            Some(value.span()),
            &format!("{field}: a file name in the plugins folder ending in .wasm, like `my-policy.wasm`"),
        ));
    }
    Ok(name.clone())
}

/// `[plugins.NAME] sha256`: 64 hex digits, kept lower-case.
pub(super) fn digest(value: &Spanned<String>, field: &str, at: &Located) -> Result<String, ConfigError> {
    let hex = value.get_ref().trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(at.error(
            Some(value.span()),
            &format!("{field}: the file's SHA-256 as 64 hex digits (`sha256sum FILE` prints it)"),
        ));
    }
    Ok(hex)
}

/// Every name bound to a file, checked: no two names share a file, every signer is trusted.
pub(super) fn bindings(
    names: impl Iterator<Item = String>,
    plugins: &BTreeMap<String, super::PluginSettings>,
    trust: &TrustSpec,
    at: &Located,
) -> Result<BTreeMap<String, Binding>, ConfigError> {
    let mut by_name = BTreeMap::new();
    let mut by_file: BTreeMap<String, String> = BTreeMap::new();
    for name in names {
        let settings = plugins.get(&name);
        let binding = Binding {
            file: settings.and_then(|s| s.file.clone()).unwrap_or_else(|| format!("{name}.wasm")),
            sha256: settings.and_then(|s| s.sha256.clone()),
            signer: settings.and_then(|s| s.signer.clone()),
            name: name.clone(),
        };
        if let Some(signer) = binding.signer.as_deref().filter(|s| trust.key(s).is_none()) {
            let known: Vec<&str> = trust.keys.iter().map(|k| k.id.as_str()).collect();
            return Err(at.error(
                None,
                &format!(
                    "plugins.{name}.signer: `{signer}` is not the id of a key in [trust] trusted_keys (known: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            ));
        }
        if let Some(other) = by_file.insert(binding.file.clone(), name.clone()) {
            return Err(at.error(
                None,
                &format!(
                    "plugins `{other}` and `{name}` are both bound to the file {}; give one of them its own `file = \"…\"`",
                    binding.file
                ),
            ));
        }
        by_name.insert(name, binding);
    }
    Ok(by_name)
}
