//! Turning a component's bytes into native code, outside the daemon.
//!
//! A small file can be pathological for the compiler (many seconds, gigabytes), and the
//! compiler's memory stays in a process after it is done. So the daemon compiles each plugin in
//! a child: the agent re-executes itself as `agent __compile-plugin`, hands it the bytes on stdin
//! and reads the artifact from stdout. The child runs under an address-space limit
//! (`compile_memory_mib`) and a CPU-time limit, and the parent kills it at `compile_timeout`
//! of wall time. The daemon only ever deserialises an artifact its own binary produced (through a
//! pipe from its own child, or HMAC-verified from the cache).

use std::io::{Read, Write};
use std::path::PathBuf;

/// The argument that makes the agent binary a compiler child. Not a user command.
pub const CHILD_ARG: &str = "__compile-plugin";

pub use crate::config::values::CompileLimits;

/// Where compilation happens.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// In this process (tools and benchmarks that compile trusted files).
    InProcess,
    /// In a child running `exe __compile-plugin`, under `limits`.
    Child { exe: PathBuf, limits: CompileLimits },
}

impl Compiler {
    /// A child of this very binary.
    pub fn child_of_self(limits: CompileLimits) -> std::io::Result<Compiler> {
        Ok(Compiler::Child { exe: std::env::current_exe()?, limits })
    }

    /// The serialised artifact for `wasm`, or why there is none (one line).
    pub async fn compile(&self, engine: &wasmtime::Engine, wasm: Vec<u8>) -> Result<Vec<u8>, String> {
        match self {
            Compiler::InProcess => {
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || engine.precompile_component(&wasm))
                    .await
                    .map_err(|e| format!("compiler task failed: {e}"))?
                    .map_err(|e| format!("does not compile: {}", super::loader::one_line(&e)))
            }
            Compiler::Child { exe, limits } => in_child(exe, limits, wasm).await,
        }
    }
}

async fn in_child(exe: &PathBuf, limits: &CompileLimits, wasm: Vec<u8>) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(CHILD_ARG)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_clear()
        .kill_on_drop(true);
    let (memory, cpu_secs) = (limits.memory_bytes, limits.timeout.as_secs().max(1) * 2);
    // SAFETY: only async-signal-safe calls (setrlimit, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = |resource, value: u64| {
                let rl = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
                if libc::setrlimit(resource, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            limit(libc::RLIMIT_AS, memory)?;
            limit(libc::RLIMIT_CPU, cpu_secs)?;
            limit(libc::RLIMIT_CORE, 0)?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the compiler ({}): {e}", exe.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let feed = async move {
        let _ = stdin.write_all(&wasm).await;
        drop(stdin);
    };
    let run = async {
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        output
    };
    let mib = limits.memory_bytes >> 20;
    let secs = crate::duration::format(limits.timeout);
    let output = match tokio::time::timeout(limits.timeout, run).await {
        Err(_) => {
            return Err(format!(
                "compiling it took longer than compile_timeout ({secs}); the compiler was stopped"
            ))
        }
        Ok(Err(e)) => return Err(format!("compiler child failed: {e}")),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    use std::os::unix::process::ExitStatusExt;
    Err(match output.status.signal() {
        _ if said.contains("memory allocation") || said.contains("out of memory") => format!(
            "compiling it needs more than compile_memory_mib ({mib} MiB); the compiler was stopped"
        ),
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => {
            format!("compiling it used more CPU time than compile_timeout allows ({secs}); the compiler was stopped")
        }
        Some(libc::SIGABRT) | Some(libc::SIGSEGV) => format!(
            "the compiler crashed on it (signal {}), probably out of memory at compile_memory_mib ({mib} MiB)",
            output.status.signal().unwrap_or(0)
        ),
        _ => format!("does not compile: {}", crate::plugins::meter::clean(&said, 500)),
    })
}

/// The child's side: read a component from stdin, write its artifact to stdout. Exit 0 on
/// success, 1 with one line on stderr otherwise.
pub fn child_main() -> ! {
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("reading the component: {e}");
        std::process::exit(1);
    }
    let result = super::engine::new_engine().and_then(|engine| engine.precompile_component(&wasm));
    match result {
        Ok(artifact) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&artifact).and_then(|_| out.flush()).is_err() {
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{}", super::loader::one_line(&e));
            std::process::exit(1);
        }
    }
}
