//! The on-disk cache of compiled components, so a restart does not recompile.
//!
//! An entry is named by the SHA-256 of the `.wasm` and the engine's compatibility hash, and
//! starts with an HMAC of the artifact under a key only this data folder holds. Deserialising
//! native code is only safe for artifacts we produced, so an entry whose tag does not verify (a
//! foreign or damaged file) is recompiled and overwritten, never loaded.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

type Tag = Hmac<Sha256>;
const TAG_LEN: usize = 32;

pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

/// Where a component came from, for benchmarks and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cached,
}

impl CompileCache {
    /// Opens `DIR`, creating it and its key on first use.
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<CompileCache> {
        use anyhow::Context;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the compile cache {}", dir.display()))?;
        let key_path = dir.join("key");
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k.try_into().expect("32 bytes"),
            _ => {
                let mut key = [0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
                    .context("reading /dev/urandom for the cache key")?;
                write_private(&key_path, &key).with_context(|| format!("writing {}", key_path.display()))?;
                key
            }
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache { dir: dir.to_path_buf(), key, engine_hash: format!("{:016x}", hasher.finish()) })
    }

    fn entry(&self, content_hash: &str) -> PathBuf {
        self.dir.join(format!("{content_hash}-{}.cwasm", self.engine_hash))
    }

    fn tag(&self, artifact: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("any key length");
        mac.update(artifact);
        mac
    }

    /// The component for `wasm`, from the cache when a verified entry exists, else compiled
    /// (and cached; a failure to write the cache is logged, not fatal).
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        content_hash: &str,
    ) -> wasmtime::Result<(Component, Origin)> {
        let path = self.entry(content_hash);
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() > TAG_LEN {
                let (tag, artifact) = bytes.split_at(TAG_LEN);
                if self.tag(artifact).verify_slice(tag).is_ok() {
                    // SAFETY: the HMAC proves this agent's own `serialize` wrote these bytes for
                    // this engine configuration.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(component) => return Ok((component, Origin::Cached)),
                        Err(e) => {
                            tracing::warn!("{}: cached artifact unusable ({e}); recompiling", path.display())
                        }
                    }
                } else {
                    tracing::warn!(
                        "{}: cache entry was not written by this agent; recompiling",
                        path.display()
                    );
                }
            }
        }
        let component = Component::from_binary(engine, wasm)?;
        match component.serialize() {
            Ok(artifact) => {
                let mut bytes = self.tag(&artifact).finalize().into_bytes().to_vec();
                bytes.extend_from_slice(&artifact);
                let tmp = path.with_extension("tmp");
                if let Err(e) = write_private(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
                    tracing::warn!("{}: could not write the compile cache: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("could not serialise a compiled component: {e}"),
        }
        Ok((component, Origin::Compiled))
    }
}

/// Hex SHA-256 of a file's bytes: the identity of a plugin version.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
