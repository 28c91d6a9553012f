//! Reads a `.wasm` file's header before anything is compiled: is it a component, which of our
//! worlds does it export, against which contract version, and what does it import.
//!
//! This is a parse of the whole file (a truncated or corrupt file fails here, never later), and
//! it runs no code.

use super::bindings::{CONTRACT_VERSION, PACKAGE};
use super::Kind;
use wasmparser::{Encoding, Parser, Payload};

/// What the header says.
#[derive(Debug, Clone)]
pub struct Header {
    pub kind: Kind,
    /// The contract version the component was built against, e.g. `0.1.0`.
    pub contract: String,
    /// Top-level import names, e.g. `wasi:http/outgoing-handler@0.2.6`.
    pub imports: Vec<String>,
    /// Top-level export names.
    pub exports: Vec<String>,
    /// A backend that also exports `volumes` (0.1.3): it can serve a storage group.
    pub volumes: bool,
}

/// Why a file cannot be a plugin. The text is the reason and what to do about it.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum HeaderError {
    #[error(
        "not a WebAssembly file (no `\\0asm` header); only put plugin .wasm files in the plugins folder"
    )]
    NotWasm,
    #[error("is a core WebAssembly module, not a component; build it for `wasm32-wasip2` (or wrap it with `wasm-tools component new`)")]
    CoreModule,
    #[error("is truncated or malformed ({0}); rebuild it or copy it again")]
    Malformed(String),
    #[error("exports none of {PACKAGE}/source, /policy or /backend (it exports: {0}); build it against the `source-plugin`, `policy-plugin` or `backend-plugin` world of wit/")]
    NoKnownWorld(String),
    #[error("exports more than one plugin kind ({0}); a component is one source, one policy or one backend")]
    SeveralKinds(String),
    #[error("was built against contract {found}, which this agent ({PACKAGE}@{CONTRACT_VERSION}) cannot run; rebuild it against wit/ of this agent or upgrade the agent")]
    Incompatible { found: String },
}

/// Classifies `bytes`.
pub fn read_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(HeaderError::NotWasm);
    }
    if Parser::is_core_wasm(bytes) {
        return Err(HeaderError::CoreModule);
    }
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| HeaderError::Malformed(e.message().to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(HeaderError::CoreModule);
                }
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| HeaderError::Malformed(e.message().to_string()))?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| HeaderError::Malformed(e.message().to_string()))?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HeaderError::Malformed("unexpected end of file".into()));
    }

    let ours: Vec<(Kind, &str)> = exports
        .iter()
        .filter_map(|name| {
            let (interface, version) = name.strip_prefix(PACKAGE)?.strip_prefix('/')?.split_once('@')?;
            let kind = match interface {
                "source" => Kind::Source,
                "policy" => Kind::Policy,
                "backend" => Kind::Backend,
                _ => return None,
            };
            Some((kind, version))
        })
        .collect();
    let (kind, version) = match ours.as_slice() {
        [] => {
            let list = if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") };
            return Err(HeaderError::NoKnownWorld(list));
        }
        [one] => *one,
        many => {
            let kinds: Vec<_> = many.iter().map(|(k, _)| k.as_str()).collect();
            return Err(HeaderError::SeveralKinds(kinds.join(", ")));
        }
    };
    if !compatible(version, CONTRACT_VERSION) {
        return Err(HeaderError::Incompatible { found: format!("{PACKAGE}@{version}") });
    }
    let volumes = kind == Kind::Backend
        && exports.iter().any(|n| n.strip_prefix(PACKAGE).is_some_and(|i| i.starts_with("/volumes@")));
    Ok(Header { kind, contract: version.to_string(), imports, exports, volumes })
}

/// Semver compatibility as the component model reads it: same major, and while the major is 0,
/// same minor. Pre-release versions only match themselves.
pub fn compatible(guest: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.split('.');
        let triple = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        parts.next().is_none().then_some(triple)
    };
    match (parse(guest), parse(host)) {
        (Some((0, gmin, _)), Some((0, hmin, _))) => gmin == hmin,
        (Some((gmaj, ..)), Some((hmaj, ..))) => gmaj == hmaj,
        _ => guest == host,
    }
}

/// Imports a component of `kind` may have. Anything else is refused before instantiation with a
/// message naming the import, rather than a linker error.
pub fn import_allowed(kind: Kind, name: &str) -> bool {
    let package = name.split('@').next().unwrap_or(name);
    if ["host", "types", "about"].iter().any(|i| package == format!("{PACKAGE}/{i}")) {
        return true;
    }
    // What only a backend may ask of the agent: the replica count, (0.1.2) scale-in and the
    // decision, (0.1.4) the cloud's bounds.
    if ["replicas", "scale-in", "replica-units", "decision", "cloud-limits"]
        .iter()
        .any(|i| package == format!("{PACKAGE}/{i}"))
    {
        return kind == Kind::Backend;
    }
    // Rust's wasm32-wasip2 std imports these whether or not the plugin uses them; the sandbox
    // gives them nothing to reach (no preopens, no env, no sockets).
    let wasi_base =
        ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/"];
    if wasi_base.iter().any(|p| package.starts_with(p)) {
        return true;
    }
    package.starts_with("wasi:http/") && matches!(kind, Kind::Source | Kind::Backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_wasm_core_modules_and_truncation() {
        assert_eq!(read_header(b"hello").unwrap_err(), HeaderError::NotWasm);
        let core = b"\0asm\x01\0\0\0";
        assert_eq!(read_header(core).unwrap_err(), HeaderError::CoreModule);
        let component = b"\0asm\x0d\0\x01\0";
        assert!(matches!(read_header(component).unwrap_err(), HeaderError::NoKnownWorld(_)));
        // A component header followed by a section that claims more bytes than exist.
        let truncated = b"\0asm\x0d\0\x01\0\x0b\x7f\x01";
        assert!(matches!(read_header(truncated).unwrap_err(), HeaderError::Malformed(_)));
    }

    #[test]
    fn version_compatibility_follows_component_semver() {
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(compatible("0.1.3", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.0.0", "1.4.0"));
        assert!(!compatible("2.0.0", "1.4.0"));
        assert!(!compatible("0.1.0-rc1", "0.1.0"));
    }

    #[test]
    fn policies_may_not_import_the_network() {
        assert!(import_allowed(Kind::Policy, "elastic:plugin/host@0.1.0"));
        assert!(import_allowed(Kind::Policy, "elastic:plugin/about@0.1.1"));
        assert!(import_allowed(Kind::Policy, "wasi:cli/environment@0.2.6"));
        assert!(!import_allowed(Kind::Policy, "wasi:http/outgoing-handler@0.2.6"));
        assert!(import_allowed(Kind::Source, "wasi:http/outgoing-handler@0.2.6"));
        assert!(!import_allowed(Kind::Backend, "acme:secret/keys@1.0.0"));
        assert!(import_allowed(Kind::Backend, "elastic:plugin/scale-in@0.1.2"));
        assert!(!import_allowed(Kind::Policy, "elastic:plugin/replica-units@0.1.2"));
        assert!(import_allowed(Kind::Backend, "elastic:plugin/cloud-limits@0.1.4"));
        assert!(!import_allowed(Kind::Source, "elastic:plugin/cloud-limits@0.1.4"));
    }
}
