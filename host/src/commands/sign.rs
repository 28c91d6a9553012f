//! `agent plugins keygen` and `agent plugins sign`: Ed25519 keys as OpenSSL writes them, and
//! signatures appended to a component (see `plugins::signature`).

use super::Exit;
use crate::plugins::signature;
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a new private key to `path` (mode 0600, never over an existing file) and its public
/// key to `path.pub`; prints the key's id and the `[trust]` lines that trust it.
pub fn keygen(path: &Path) -> anyhow::Result<Exit> {
    let (seed, public) = signature::keygen().map_err(anyhow::Error::msg)?;
    let public_path = path.with_file_name(format!(
        "{}.pub",
        path.file_name().context("give the private key's file name, e.g. release.key")?.to_string_lossy()
    ));
    write_new(path, crate::keys::private_pem(&seed).as_bytes(), 0o600)?;
    write_new(&public_path, crate::keys::public_pem(&public).as_bytes(), 0o644)?;
    let id = crate::keys::key_id(&public);
    println!("key {id}");
    println!("private: {} (keep it secret: whoever holds it signs plugins the agent trusts)", path.display());
    println!("public:  {}", public_path.display());
    println!();
    println!("In agent.toml, trust it, and optionally require it for one plugin:");
    println!("  [trust]");
    println!("  trusted_keys = [\"{}\"]", public_path.display());
    println!("  [plugins.NAME]");
    println!("  signer = \"{id}\"");
    Ok(Exit::Success)
}

/// Appends a signature by `key` to `file` (in place, atomically), or writes the signed copy to
/// `out`. Prints the key id and the signed file's SHA-256.
pub fn sign(file: &Path, key: &Path, out: Option<&Path>) -> anyhow::Result<Exit> {
    let pem =
        std::fs::read_to_string(key).with_context(|| format!("{}: cannot read the key", key.display()))?;
    let seed = crate::keys::parse_private_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let bytes = crate::plugins::loader::read_file_blocking(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    crate::plugins::classify::read_header(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let signed = signature::sign(&bytes, &seed).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let target = out.unwrap_or(file);
    replace(target, &signed)?;
    let id = crate::keys::key_id(&signature::public_key(&seed).map_err(anyhow::Error::msg)?);
    println!("signed {} with key {id}", target.display());
    println!("sha256 {}", crate::plugins::cache::content_hash(&signed));
    Ok(Exit::Success)
}

/// Creates `path` with `mode`; refuses to overwrite anything, or to follow a link.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create (it must not exist yet)", path.display()))?;
    f.write_all(bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a running agent watching
/// the folder never sees half a file.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().context("the output needs a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.signing"));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, bytes, 0o644)?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))
}
