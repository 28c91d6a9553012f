//! The wasmtime engine every plugin runs on, and the OS thread that advances its epoch.

use super::sandbox::TICK;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Builds the engine. Component model on, async on (wasi-http and fair scheduling need it),
/// epoch interruption on (CPU budgets), `component-model-async` off (it doubles call cost).
pub fn new_engine() -> wasmtime::Result<wasmtime::Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // A guest's own stack; deep recursion traps instead of overflowing the host's.
    config.max_wasm_stack(1 << 20);
    config.async_stack_size(2 << 20);
    wasmtime::Engine::new(&config)
}

/// Advances the engine's epoch every [`TICK`] from a dedicated OS thread: a tokio task could be
/// starved by the very guest it is meant to interrupt. Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &wasmtime::Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
