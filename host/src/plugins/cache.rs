//! The on-disk cache of compiled components, so a restart does not recompile.
//!
//! An entry is the artifact alone, named `SHA256-ENGINE-TAG.cwasm`: the SHA-256 of the `.wasm`,
//! the engine's compatibility hash, and an HMAC of the artifact under a key only this data
//! folder holds. Deserialising native code is only safe for artifacts we produced, so an entry
//! whose tag does not verify (a foreign or damaged file) is recompiled and replaced, never
//! loaded.
//!
//! A verified entry is mapped, not read: the agent's memory holds only the pages of native code
//! that run (the Python policy's 35 MB artifact costs a few MiB until it is used). Entries are
//! never written in place (a temporary file, then a rename), so a mapped entry cannot change
//! under the agent.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

type Tag = Hmac<Sha256>;

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

    /// The start of the name of `content_hash`'s entry (its tag follows).
    fn prefix(&self, content_hash: &str) -> String {
        format!("{content_hash}-{}-", self.engine_hash)
    }

    fn tag(&self) -> Tag {
        Tag::new_from_slice(&self.key).expect("any key length")
    }

    /// The component for `content_hash`, if a verified entry exists. The entry's time is
    /// refreshed, so garbage collection keeps what is in use.
    pub fn lookup(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let prefix = self.prefix(content_hash);
        let path = std::fs::read_dir(&self.dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".cwasm"))
        })?;
        let name = path.file_name()?.to_str()?;
        let claimed = hex::decode(&name[prefix.len()..name.len() - ".cwasm".len()]).unwrap_or_default();
        // One descriptor for the check and the load: what was verified is what is mapped, even
        // if the name is replaced meanwhile. Never through a link.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).ok()?
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) || !self.verifies(&file, &claimed) {
            tracing::warn!("{}: cache entry was not written by this agent; recompiling", path.display());
            return None;
        }
        let same_file = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        // SAFETY: the HMAC proves this agent's own `serialize` wrote this file (the open
        // descriptor's, which `same_file` names) for this engine configuration, and entries are
        // replaced by rename, never modified in place.
        match unsafe { Component::deserialize_file(engine, &same_file) } {
            Ok(component) => {
                let _ = file.set_modified(std::time::SystemTime::now());
                Some(component)
            }
            Err(e) => {
                tracing::warn!("{}: cached artifact unusable ({e}); recompiling", path.display());
                None
            }
        }
    }

    /// Whether the file's HMAC is `claimed` (read in pieces: no copy of a large artifact).
    fn verifies(&self, mut file: &std::fs::File, claimed: &[u8]) -> bool {
        let mut mac = self.tag();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match std::io::Read::read(&mut file, &mut buf) {
                Ok(0) => break,
                Ok(n) => mac.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        mac.verify_slice(claimed).is_ok()
    }

    /// Stores an artifact this agent produced and returns its entry (a failure to write is
    /// logged, not fatal).
    pub fn store(&self, content_hash: &str, artifact: &[u8]) -> Option<PathBuf> {
        let mut mac = self.tag();
        mac.update(artifact);
        let prefix = self.prefix(content_hash);
        let path = self.dir.join(format!("{prefix}{}.cwasm", hex::encode(mac.finalize().into_bytes())));
        // Per process: an `agent plugins …` command may fill the cache beside the daemon.
        let tmp = path.with_extension(format!("cwasm.{}.tmp", std::process::id()));
        if let Err(e) = write_private(&tmp, artifact).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!("{}: could not write the compile cache: {e}", path.display());
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        // An entry of the same plugin under another tag (damaged, or from an earlier key) goes;
        // another process's temporary file of it does not.
        for stale in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let n = stale.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&prefix) && n.ends_with(".cwasm") && stale.path() != path {
                let _ = std::fs::remove_file(stale.path());
            }
        }
        Some(path)
    }

    /// Removes entries of other engines (an upgraded agent), half-written files, and entries
    /// not used for `unused`; then the least recently used until the cache holds at most
    /// `max_bytes`. Entries in `keep` (content hashes of loaded plugins) are never removed.
    pub fn collect_garbage(&self, keep: &[String], unused: std::time::Duration, max_bytes: u64) -> GcReport {
        let mut report = GcReport::default();
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return report };
        let now = std::time::SystemTime::now();
        let mut live = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "key" {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let used = meta.modified().unwrap_or(now);
            let age = now.duration_since(used).unwrap_or_default();
            let ours = name.ends_with(".cwasm") && name.contains(&format!("-{}-", self.engine_hash));
            let kept = keep.iter().any(|h| name.starts_with(h.as_str()));
            if kept && ours {
                live.push((used, meta.len(), entry.path(), true));
            } else if !ours || age > unused {
                if std::fs::remove_file(entry.path()).is_ok() {
                    report.removed += 1;
                    report.bytes += meta.len();
                }
            } else {
                live.push((used, meta.len(), entry.path(), false));
            }
        }
        live.sort_by_key(|e| e.0);
        let mut total: u64 = live.iter().map(|e| e.1).sum();
        for (_, len, path, kept) in live {
            if total <= max_bytes {
                break;
            }
            if !kept && std::fs::remove_file(&path).is_ok() {
                total -= len;
                report.removed += 1;
                report.bytes += len;
            }
        }
        report
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, PartialEq)]
pub struct GcReport {
    pub removed: u64,
    pub bytes: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_collection_keeps_loaded_and_recent_entries_within_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let engine = super::super::engine::new_engine().unwrap();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
        let put = |hash: &str, len: usize, used: std::time::SystemTime| {
            let path = dir.path().join(format!("{}{}.cwasm", cache.prefix(hash), "00".repeat(32)));
            std::fs::write(&path, vec![0u8; len]).unwrap();
            std::fs::File::options().append(true).open(&path).unwrap().set_modified(used).unwrap();
        };
        let now = std::time::SystemTime::now();
        put("loaded-but-old", 10, old);
        put("unused-old", 10, old);
        put("recent-a", 600, now - std::time::Duration::from_secs(60));
        put("recent-b", 600, now);
        std::fs::write(dir.path().join("deadbeef-0000000000000000.cwasm"), b"other engine").unwrap();
        std::fs::write(dir.path().join("x.tmp"), b"half written").unwrap();
        let unused = std::time::Duration::from_secs(30 * 86_400);
        let report = cache.collect_garbage(&["loaded-but-old".into()], unused, 1000);
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let has = |h: &str| left.iter().any(|n| n.starts_with(h));
        assert!(has("key") && has("loaded-but-old") && has("recent-b"), "{left:?}");
        assert!(!has("unused-old") && !has("recent-a") && !has("deadbeef") && !has("x.tmp"), "{left:?}");
        assert_eq!(report.removed, 4);
    }
}
