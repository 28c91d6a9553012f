//! File → [`Prepared`]: read, classify, compile (or load from cache), link, and ask the component
//! who it is. Every failure is one [`LoadError`] line naming the file, the reason and the remedy.

use super::bindings::{
    backend::BackendPluginPre, policy::PolicyPluginPre, source::SourcePluginPre, Metadata,
};
use super::cache::{self, content_hash};
use super::classify::{self, Header, HeaderError};
use super::sandbox::{Grants, HostState};
use super::worker::{self, Instance};
use super::{Kind, Runtime};
use crate::config::{valid_plugin_name, PluginSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Larger files are refused before they are read into memory.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// A component ready to be instantiated, with what it said about itself.
pub struct Prepared {
    pub path: PathBuf,
    pub hash: String,
    pub header: Header,
    pub metadata: Metadata,
    pub pre: Pre,
    /// Compiled now, or loaded from the compile cache.
    pub origin: cache::Origin,
    /// How long compiling or loading from cache took.
    pub compile_time: Duration,
}

/// A linked component of one kind, from which instances are made in microseconds.
#[derive(Clone)]
pub enum Pre {
    Source(SourcePluginPre<HostState>),
    Policy(PolicyPluginPre<HostState>),
    Backend(BackendPluginPre<HostState>),
}

/// Why a file could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub reason: String,
}

impl Prepared {
    pub fn kind(&self) -> Kind {
        self.header.kind
    }
}

/// Loads `path` into `rt`. Runs the component only to call `metadata`, under the default limits.
pub async fn prepare(rt: &Arc<Runtime>, path: &Path) -> Result<Prepared, LoadError> {
    let fail = |reason: String| LoadError { file: path.to_path_buf(), reason };
    let len = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?.len();
    if len > MAX_FILE_BYTES {
        return Err(fail(format!("is {len} bytes, more than the {MAX_FILE_BYTES} a plugin may be")));
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| fail(format!("cannot read: {e}")))?;
    prepare_bytes(rt, path, bytes).await.map_err(fail)
}

async fn prepare_bytes(rt: &Arc<Runtime>, path: &Path, bytes: Vec<u8>) -> Result<Prepared, String> {
    let header = classify::read_header(&bytes).map_err(|e: HeaderError| e.to_string())?;
    if let Some(bad) = header.imports.iter().find(|i| !classify::import_allowed(header.kind, i)) {
        let why = if bad.starts_with("wasi:http/") {
            "policies may not use the network; move the HTTP call into a source plugin"
        } else {
            "the agent does not provide it; build against wit/ of this agent"
        };
        return Err(format!("imports `{bad}`, which a {} may not import: {why}", header.kind));
    }

    // Compiling is CPU-heavy; keep it off the async workers.
    let hash = content_hash(&bytes);
    let started = Instant::now();
    let (component, origin) = {
        let (rt, hash) = (rt.clone(), hash.clone());
        tokio::task::spawn_blocking(move || match &rt.cache {
            Some(cache) => cache.load(&rt.engine, &bytes, &hash),
            None => wasmtime::component::Component::from_binary(&rt.engine, &bytes)
                .map(|c| (c, cache::Origin::Compiled)),
        })
        .await
        .map_err(|e| format!("compiler task failed: {e}"))?
        .map_err(|e| format!("does not compile: {}", one_line(&e)))?
    };
    let compile_time = started.elapsed();

    let linked = rt
        .linker(header.kind)
        .instantiate_pre(&component)
        .map_err(|e| format!("cannot be linked: {}; build it against wit/ of this agent", one_line(&e)))?;
    let pre = match header.kind {
        Kind::Source => SourcePluginPre::new(linked).map(Pre::Source),
        Kind::Policy => PolicyPluginPre::new(linked).map(Pre::Policy),
        Kind::Backend => BackendPluginPre::new(linked).map(Pre::Backend),
    }
    .map_err(|e| format!("does not match the {} world: {}", header.kind, one_line(&e)))?;

    // Ask it who it is, confined as any call is. The name is not known yet, so the file name
    // stands in for it in logs, and it gets no state and no grants.
    let stand_in = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let grants = Arc::new(Grants {
        plugin: stand_in.into(),
        settings: PluginSettings::default(),
        state: None,
        replicas: None,
    });
    let limits = worker::Limits::for_kind(header.kind, &grants.settings);
    let mut instance =
        Instance::new(rt, &pre, grants, &limits).await.map_err(|f| format!("cannot be instantiated: {f}"))?;
    let metadata = instance.metadata(&limits).await.map_err(|f| format!("metadata() failed: {f}"))?;
    if !valid_plugin_name(&metadata.name) {
        return Err(format!(
            "says its name is `{}`; a plugin name is 1-64 lower-case letters, digits and `-`",
            metadata.name.escape_debug()
        ));
    }
    Ok(Prepared { path: path.to_path_buf(), hash, header, metadata, pre, origin, compile_time })
}

/// The first line of an error chain, without wasmtime's multi-line backtraces.
pub fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().to_string()
}
