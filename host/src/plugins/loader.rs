//! File → [`Prepared`]: read, classify, compile (or load from cache), link, and ask the component
//! who it is. Every failure is one [`LoadError`] line naming the file, the reason and the remedy.

use super::bindings::{
    backend::BackendPluginPre, policy::PolicyPluginPre, source::SourcePluginPre, VolumesIndices,
};
use super::cache::{self, content_hash};
use super::classify::{self, Header, HeaderError};
use super::sandbox::{Grants, HostState};
use super::types::Metadata;
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
    /// The `[trust]` key whose signature it carries, once the registry has checked it.
    pub signer: Option<String>,
    /// Whether the configuration binds its name to this file (set by the registry).
    pub bound: bool,
}

/// A linked component of one kind, from which instances are made in microseconds.
#[derive(Clone)]
pub enum Pre {
    Source(SourcePluginPre<HostState>),
    Policy(PolicyPluginPre<HostState>),
    /// With the `volumes` export's indices when it has one (0.1.3).
    Backend(BackendPluginPre<HostState>, Option<VolumesIndices>),
}

impl Pre {
    pub fn kind(&self) -> Kind {
        match self {
            Pre::Source(_) => Kind::Source,
            Pre::Policy(_) => Kind::Policy,
            Pre::Backend(..) => Kind::Backend,
        }
    }
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
    let bytes = read_file(path).await.map_err(fail)?;
    prepare_bytes(rt, path, bytes).await.map_err(fail)
}

/// A plugin file's bytes. Opened without following a symbolic link and without blocking (a
/// FIFO put in its place would hang a plain open), checked to be a regular file no larger than
/// [`MAX_FILE_BYTES`] on the open descriptor, then read from that descriptor: what is checked
/// is what is read.
pub async fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_file_blocking(&path))
        .await
        .map_err(|e| format!("cannot read: {e}"))?
}

/// [`read_file`], on this thread.
pub fn read_file_blocking(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                "is a symbolic link; a plugin must be a regular file in the folder".to_string()
            }
            _ => format!("cannot read: {e}"),
        })?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(
            "is not a regular file (a FIFO, device or folder); a plugin must be a regular file".into()
        );
    }
    let len = meta.len();
    if len > MAX_FILE_BYTES {
        return Err(format!("is {len} bytes, more than the {MAX_FILE_BYTES} a plugin may be"));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // One byte more than it said: a file that grew meanwhile is read again at the next change.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("is more than the {MAX_FILE_BYTES} bytes a plugin may be"));
    }
    Ok(bytes)
}

/// As [`prepare`], for bytes already read from `path`.
pub async fn prepare_bytes(rt: &Arc<Runtime>, path: &Path, bytes: Vec<u8>) -> Result<Prepared, String> {
    let header = classify::read_header(&bytes).map_err(|e: HeaderError| e.to_string())?;
    if let Some(bad) = header.imports.iter().find(|i| !classify::import_allowed(header.kind, i)) {
        let why = if bad.starts_with("wasi:http/") {
            "policies may not use the network; move the HTTP call into a source plugin"
        } else {
            "the agent does not provide it; build against wit/ of this agent"
        };
        return Err(format!("imports `{bad}`, which a {} may not import: {why}", header.kind));
    }

    let hash = content_hash(&bytes);
    let started = Instant::now();
    let (component, origin) = component(rt, path, &hash, bytes).await?;
    let compile_time = started.elapsed();

    let pre = link(rt, header.kind, &component)?;

    // Ask it who it is, confined as any call is. The name is not known yet, so the file name
    // stands in for it in logs, and it gets no state and no grants.
    let stand_in = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let grants = Arc::new(Grants::new(&stand_in, PluginSettings::default(), None, None));
    // Short fixed limits whatever the kind: a backend's 10-minute timeout is for cloud calls,
    // not for saying who it is.
    let limits = worker::Limits::metadata();
    let mut instance =
        Instance::new(rt, &pre, grants, &limits).await.map_err(|f| format!("cannot be instantiated: {f}"))?;
    let metadata = instance.metadata(&limits).await.map_err(|f| format!("metadata() failed: {f}"))?;
    check_metadata(&metadata)?;
    Ok(Prepared {
        path: path.to_path_buf(),
        hash,
        header,
        metadata,
        pre,
        origin,
        compile_time,
        signer: None,
        bound: false,
    })
}

/// The component linked against the host, ready to instantiate.
fn link(rt: &Runtime, kind: Kind, component: &wasmtime::component::Component) -> Result<Pre, String> {
    let linked = rt
        .linker(kind)
        .instantiate_pre(component)
        .map_err(|e| format!("cannot be linked: {}; build it against wit/ of this agent", one_line(&e)))?;
    match kind {
        Kind::Source => SourcePluginPre::new(linked).map(Pre::Source),
        Kind::Policy => PolicyPluginPre::new(linked).map(Pre::Policy),
        Kind::Backend => {
            let volumes = volumes(rt, component, &linked)?;
            BackendPluginPre::new(linked).map(|b| Pre::Backend(b, volumes))
        }
    }
    .map_err(|e| format!("does not match the {kind} world: {}", one_line(&e)))
}

/// The `volumes` export of a backend, when it has one; one of another shape is refused.
fn volumes(
    rt: &Runtime,
    component: &wasmtime::component::Component,
    linked: &wasmtime::component::InstancePre<HostState>,
) -> Result<Option<VolumesIndices>, String> {
    let exported = component
        .component_type()
        .exports(&rt.engine)
        .any(|(name, _)| name.starts_with(&format!("{}/volumes@", super::bindings::PACKAGE)));
    if !exported {
        return Ok(None);
    }
    VolumesIndices::new(linked)
        .map(Some)
        .map_err(|e| format!("does not match the volume-backend world: {}", one_line(&e)))
}

/// Links again a plugin that was loaded from `path` (content `hash`) and parked: from the
/// compile cache, which keeps the entries of loaded plugins, so the file may have changed since
/// (a refused replacement leaves the loaded version running). From the file, compiled again,
/// only if the entry is gone and the file is still that version.
pub async fn relink(rt: &Arc<Runtime>, path: &Path, hash: &str, kind: Kind) -> Result<Pre, String> {
    let component = match cached(rt, hash).await? {
        Some(component) => component,
        None => {
            let bytes =
                tokio::fs::read(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if content_hash(&bytes) != hash {
                return Err(format!(
                    "its compile cache entry is gone and {} holds another version now; the agent loads that one at its next rescan",
                    path.display()
                ));
            }
            component(rt, path, hash, bytes).await?.0
        }
    };
    link(rt, kind, &component)
}

/// Caps on what a plugin may say about itself: it is echoed in logs, `/status` and the CLI.
pub const MAX_VERSION: usize = 64;
pub const MAX_DESCRIPTION: usize = 1024;
pub const MAX_CONFIG_KEYS: usize = 256;
pub const MAX_KEY_NAME: usize = 64;

/// Refuses metadata that is too large or could forge output, with one line that quotes at
/// most a short, escaped prefix of the offending text.
fn check_metadata(m: &Metadata) -> Result<(), String> {
    let quote = |s: &str| super::meter::clean(s, 40);
    if !valid_plugin_name(&m.name) {
        return Err(format!(
            "says its name is `{}`; a plugin name is 1-64 lower-case letters, digits and `-`",
            quote(&m.name)
        ));
    }
    let printable = |s: &str| !s.chars().any(char::is_control);
    if m.version.is_empty() || m.version.len() > MAX_VERSION || !printable(&m.version) {
        return Err(format!(
            "says its version is `{}`; a version is 1-{MAX_VERSION} printable characters",
            quote(&m.version)
        ));
    }
    if m.description.len() > MAX_DESCRIPTION {
        return Err(format!("has a {}-byte description; at most {MAX_DESCRIPTION}", m.description.len()));
    }
    if m.config_keys.len() > MAX_CONFIG_KEYS {
        return Err(format!("lists {} config keys; at most {MAX_CONFIG_KEYS}", m.config_keys.len()));
    }
    for k in &m.config_keys {
        if k.name.is_empty() || k.name.len() > MAX_KEY_NAME || !printable(&k.name) {
            return Err(format!(
                "lists config key `{}`; a key is 1-{MAX_KEY_NAME} printable characters",
                quote(&k.name)
            ));
        }
        if k.description.len() > MAX_DESCRIPTION {
            return Err(format!("config key `{}` has a description over {MAX_DESCRIPTION} bytes", k.name));
        }
    }
    Ok(())
}

/// The compiled component: from the cache, or compiled (in a child, for the daemon) and cached.
pub async fn component(
    rt: &Arc<Runtime>,
    path: &Path,
    hash: &str,
    bytes: Vec<u8>,
) -> Result<(wasmtime::component::Component, cache::Origin), String> {
    if let Some(component) = cached(rt, hash).await? {
        return Ok((component, cache::Origin::Cached));
    }
    let size = bytes.len();
    let compile = rt.compiler.compile(&rt.engine, bytes);
    let artifact = if rt.announce_compiles {
        announced(compile, path, size, rt.cache.is_some()).await
    } else {
        compile.await
    }?;
    // Mapped from its cache entry where there is one, so a cold start costs what a warm one
    // does; else copied into memory.
    let entry = rt.cache.as_ref().and_then(|cache| cache.store(hash, &artifact));
    // SAFETY: the artifact was produced by this binary's own compiler, just now (and the entry
    // holds exactly it: it was written to a private temporary file and renamed).
    let component = unsafe {
        match &entry {
            Some(path) => wasmtime::component::Component::deserialize_file(&rt.engine, path),
            None => wasmtime::component::Component::deserialize(&rt.engine, &artifact),
        }
    }
    .map_err(|e| format!("does not compile: {}", one_line(&e)))?;
    Ok((component, cache::Origin::Compiled))
}

/// The verified compile cache entry of `hash`, if the runtime has a cache and it has one.
async fn cached(rt: &Arc<Runtime>, hash: &str) -> Result<Option<wasmtime::component::Component>, String> {
    if rt.cache.is_none() {
        return Ok(None);
    }
    let (rt, hash) = (rt.clone(), hash.to_string());
    tokio::task::spawn_blocking(move || rt.cache.as_ref()?.lookup(&rt.engine, &hash))
        .await
        .map_err(|e| format!("cache task failed: {e}"))
}

/// Awaits `compile`, saying on stderr what is being compiled if it takes more than a second.
async fn announced<T>(
    compile: impl std::future::Future<Output = T>,
    path: &Path,
    size: usize,
    cached: bool,
) -> T {
    tokio::pin!(compile);
    tokio::select! {
        done = &mut compile => return done,
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    let then = if cached { "; cached for next time" } else { "" };
    eprintln!("compiling {} ({:.1} MB){then}…", path.display(), size as f64 / 1e6);
    compile.await
}

/// The first line of an error chain, without wasmtime's multi-line backtraces.
pub fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().to_string()
}
