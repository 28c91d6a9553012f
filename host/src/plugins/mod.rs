//! The plugin runtime: loading components from a folder, classifying them, confining them,
//! calling them, and swapping them live. Only this module touches wasmtime.
//!
//! - [`classify`]: what a file is, from its header, before compiling.
//! - [`signature`]: pins and signatures checked against the file's binding and `[trust]`.
//! - [`compile`]: compiling in a confined child; [`cache`]: compiled artifacts on disk,
//!   verified before use.
//! - [`loader`]: file → [`loader::Prepared`] (compiled, linked, metadata read).
//! - [`sandbox`]: per-store state, deny-all WASI, memory limits, and every grant check (HTTP
//!   origins, secrets, processes, the scale-in ranking); `host_impl` the host functions,
//!   [`outbound`] and [`tls`] the outbound-HTTP budgets and send path.
//! - [`meter`]: what a plugin made the agent spend, against its budgets; [`cpu`]: a call's CPU.
//! - [`worker`]: one worker per plugin owns its instance; calls run one at a time, in the
//!   caller's task, behind a fair lock; faults stop there.
//! - [`types`]: the host's own types for what crosses the boundary; the only ones the rest of
//!   the host names.
//! - [`convert`]: generated types of each contract version ↔ [`types`], at the edge.
//! - [`bindings`]: the contract's generated bindings, used only inside this module.
//! - [`registry`]: the live set of plugins in the folder, reconciled on every change;
//!   [`references`]: the configuration checked against it.
//!
//! Invariant: nothing a plugin does can fail anything but its own call.

pub mod bindings;
pub mod cache;
pub mod classify;
pub mod compile;
pub mod convert;
pub mod cpu;
mod engine;
mod host_impl;
pub mod loader;
pub mod meter;
pub mod outbound;
pub mod references;
pub mod registry;
pub mod sandbox;
pub mod signature;
pub mod tls;
pub mod types;
pub mod worker;

pub use bindings::{CONTRACT_VERSION, PACKAGE};
pub use compile::{CompileLimits, Compiler};
use sandbox::HostState;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Linker;

/// Adds the `elastic:plugin/host` interface to a linker (for benchmarks and tools that build
/// their own linker).
pub fn host_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    Ok(host_impl::add_to_linker(linker)?)
}

pub use crate::config::values::Kind;

/// The engine, one linker per kind and the compile cache: everything needed to
/// turn files into running plugins. Shared by the registry and every worker.
pub struct Runtime {
    pub engine: wasmtime::Engine,
    linkers: [Linker<HostState>; 3],
    cache: Option<cache::CompileCache>,
    compiler: Compiler,
    /// Say on stderr what is being compiled when it takes a while (the CLI's tools).
    announce_compiles: bool,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// A runtime whose compile cache lives in `cache_dir` (none: always compile), compiling in
    /// this process: for tools and benchmarks. The daemon uses [`Runtime::with_compiler`].
    pub fn new(cache_dir: Option<&Path>) -> anyhow::Result<Arc<Runtime>> {
        Runtime::with_compiler(cache_dir, Compiler::InProcess)
    }

    /// A runtime that compiles with `compiler`.
    pub fn with_compiler(cache_dir: Option<&Path>, compiler: Compiler) -> anyhow::Result<Arc<Runtime>> {
        Runtime::build(cache_dir, compiler, false)
    }

    /// A runtime for a command a person waits on: a compile that takes more than a second is
    /// announced on stderr.
    pub fn for_tools(cache_dir: Option<&Path>, compiler: Compiler) -> anyhow::Result<Arc<Runtime>> {
        Runtime::build(cache_dir, compiler, true)
    }

    fn build(
        cache_dir: Option<&Path>,
        compiler: Compiler,
        announce_compiles: bool,
    ) -> anyhow::Result<Arc<Runtime>> {
        let engine = engine::new_engine()?;
        let linker = |kind| -> anyhow::Result<Linker<HostState>> {
            let mut l = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut l)?;
            host_impl::add_to_linker(&mut l)?;
            // Only the kinds that may talk to the network get wasi:http at all; a policy that
            // imports it is refused at load time.
            if kind != Kind::Policy {
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut l)?;
            }
            if kind == Kind::Backend {
                host_impl::add_replicas_to_linker(&mut l)?;
            }
            Ok(l)
        };
        let linkers = [linker(Kind::Source)?, linker(Kind::Policy)?, linker(Kind::Backend)?];
        let cache = cache_dir.map(|d| cache::CompileCache::open(d, &engine)).transpose()?;
        let ticker = engine::EpochTicker::start(&engine);
        cpu::calibrate();
        Ok(Arc::new(Runtime { engine, linkers, cache, compiler, announce_compiles, _ticker: ticker }))
    }

    fn linker(&self, kind: Kind) -> &Linker<HostState> {
        &self.linkers[kind as usize]
    }

    /// The compile cache, if this runtime has one.
    pub fn cache(&self) -> Option<&cache::CompileCache> {
        self.cache.as_ref()
    }
}

/// Adds to a log filter that wasmtime's HTTP client shows only its errors, unless the filter
/// names it: it warns of a refused connection on its own, without the plugin's name, just before
/// the agent's line that names the plugin and the URL.
pub fn quiet_runtime_logs(directives: &mut String) {
    const TARGET: &str = "wasmtime_wasi_http";
    if !directives.contains(TARGET) {
        directives.push_str(&format!(",{TARGET}=error"));
    }
}
