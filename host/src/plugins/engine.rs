//! The wasmtime engine every plugin runs on, and the OS thread that advances its epoch.

use super::sandbox::TICK;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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

/// How many stores have a call into their guest in progress (running, waiting on the host, or
/// suspended after a yield): the ticker advances the epoch only while some do, so an idle agent has no thread waking every tick.
/// One count for the process: every engine's ticker runs while any guest runs, which costs
/// nothing where there is one engine (the daemon, a command).
static DEMAND: Demand = Demand { running: AtomicUsize::new(0), lock: Mutex::new(()), wake: Condvar::new() };

struct Demand {
    running: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Demand {
    fn up(&self) {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            // Under the lock: a ticker that just saw 0 is then surely waiting, and is woken.
            let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_all();
        }
    }

    fn down(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until a guest runs; false if `stop` was set meanwhile.
    fn wait(&self, stop: &AtomicBool) -> bool {
        let mut held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            if self.running.load(Ordering::SeqCst) > 0 {
                return true;
            }
            held = self.wake.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A store's share of [`DEMAND`]: counted while a call into its guest is in progress. The store's
/// call hook enters and leaves it; dropping the store (a call abandoned mid-guest) leaves it too.
#[derive(Default)]
pub struct GuestRunning {
    counted: bool,
}

impl GuestRunning {
    pub fn enter(&mut self) {
        if !self.counted {
            self.counted = true;
            DEMAND.up();
        }
    }

    pub fn leave(&mut self) {
        if self.counted {
            self.counted = false;
            DEMAND.down();
        }
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Advances the engine's epoch every [`TICK`] while a guest runs, from a dedicated OS thread: a
/// tokio task could be starved by the very guest it is meant to interrupt. It sleeps, waking for
/// nothing, while no guest runs. Stops when dropped.
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
                while DEMAND.wait(&flag) {
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
        self.stop.store(true, Ordering::SeqCst);
        let _held = DEMAND.lock.lock().unwrap_or_else(|p| p.into_inner());
        DEMAND.wake.notify_all();
    }
}
