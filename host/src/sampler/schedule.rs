//! The sampling loop: a dedicated thread that ticks on a fixed schedule (not drifting with the
//! tick's own duration), hands each batch to the store writer and records what a tick cost.

use super::{ProcessRef, Sampler};
use crate::store::Writer;
use crate::telemetry::Telemetry;
use crate::timefmt::now_ms;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Where the sampler learns which processes to measure (the supervisor, when there is one).
pub type ProcessSource = Box<dyn Fn() -> Vec<ProcessRef> + Send>;

/// Stops the loop when dropped.
pub struct Running {
    /// Dropping it wakes the thread at once: it sleeps in `recv_timeout` on the other end.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn spawn(
    interval: Duration,
    writer: Writer,
    telemetry: Arc<Telemetry>,
    processes: ProcessSource,
) -> Running {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || {
            let mut sampler = Sampler::new();
            let mut next = Instant::now() + interval;
            loop {
                // One sleep per tick, cut short only by a stop.
                let now = Instant::now();
                if now < next {
                    match stopped.recv_timeout(next - now) {
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
                // A tick that overran skips the slots it missed rather than bursting.
                while next <= now {
                    next += interval;
                }
                let started = Instant::now();
                let samples = sampler.tick(now_ms(), &processes());
                telemetry.record_tick(started.elapsed());
                writer.submit(samples);
            }
        })
        .expect("spawning the sampler thread");
    Running { stop: Some(stop), thread: Some(thread) }
}
