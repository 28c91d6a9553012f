//! The wasmtime engine every plugin runs on, and the OS thread that advances its epoch.

use super::sandbox::TICK;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
/// suspended after a yield): the ticker advances the epoch only while some do, and for
/// [`LINGER`] after, so an idle agent has no thread waking every tick and back-to-back calls
/// (a burst of evaluations) do not pay a wake-up each.
/// One count for the process: every engine's ticker runs while any guest runs, which costs
/// nothing where there is one engine (the daemon, a command).
static DEMAND: Demand = Demand {
    running: AtomicUsize::new(0),
    parked: AtomicBool::new(false),
    lock: Mutex::new(()),
    wake: Condvar::new(),
};

/// How long the ticker keeps ticking after the last guest call ended before it sleeps.
const LINGER: Duration = Duration::from_millis(100);

struct Demand {
    running: AtomicUsize,
    /// The ticker is asleep (or about to be): the first call must wake it.
    parked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Demand {
    fn up(&self) {
        // Both sides are SeqCst: either the ticker sees this call before sleeping, or this
        // sees `parked` and wakes it under the lock it sleeps with.
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 && self.parked.load(Ordering::SeqCst) {
            let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_all();
        }
    }

    fn down(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn busy(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    /// Sleeps until a guest runs; false if `stop` was set meanwhile.
    fn park(&self, stop: &AtomicBool) -> bool {
        let mut held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.parked.store(true, Ordering::SeqCst);
        let running = loop {
            if stop.load(Ordering::SeqCst) {
                break false;
            }
            if self.busy() {
                break true;
            }
            held = self.wake.wait(held).unwrap_or_else(|p| p.into_inner());
        };
        self.parked.store(false, Ordering::SeqCst);
        running
    }
}

/// A call into a guest in progress, counted in [`DEMAND`] while it lives. Held across every
/// call into guest code (instantiation and `metadata()` too): two atomic operations a call, not
/// two per crossing of the boundary. Dropped with the call's future if its caller abandons it.
pub struct GuestRunning(());

impl GuestRunning {
    pub fn start() -> GuestRunning {
        DEMAND.up();
        GuestRunning(())
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        DEMAND.down();
    }
}

/// Advances the engine's epoch every [`TICK`] while a guest runs, from a dedicated OS thread: a
/// tokio task could be starved by the very guest it is meant to interrupt. It sleeps, waking for
/// nothing, while no guest runs (from [`LINGER`] after the last call). Stops when dropped.
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
                let mut idle_since: Option<Instant> = None;
                while !flag.load(Ordering::SeqCst) {
                    if DEMAND.busy() {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= LINGER {
                        if !DEMAND.park(&flag) {
                            break;
                        }
                        idle_since = None;
                    }
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
