//! What a plugin's call costs the agent in CPU time, against the call's budget.
//!
//! A call into a plugin is a future the caller polls; each poll runs on one thread, without
//! waiting: the guest's code and every host function it calls (log, clock, config, state,
//! secrets, metric lookups, an HTTP request's setup — refused ones included) run inside a poll,
//! and whatever the call waits for (a response, a timer, its turn after a yield) happens between
//! polls. So a call's CPU time is the thread's CPU time summed over the call's polls: everything
//! the host does for the plugin is the plugin's CPU, and waiting is not.
//!
//! A poll shorter than [`SHORT`] — the common case, a whole policy evaluation in microseconds —
//! is charged its duration on the CPU's time-stamp counter (a few cycles to read, where a read
//! of the thread's CPU clock costs a system call), a longer one the thread's CPU time since the
//! poll started, so that a host function that blocks the thread (a disk write) or the thread
//! being preempted is not charged as work. The thread's CPU clock at a poll's start is the
//! thread's last reading when that is under [`FRESH`] old (a burst of evaluations makes one
//! system call per [`FRESH`] per thread, not one per poll): a long poll may so be charged up to
//! [`FRESH`] of CPU more than it used, never less.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A call's CPU time and budget. Shared by the store (its epoch callback checks it) and the
/// future that runs the call (which marks each poll); all of it happens on the polling thread,
/// one poll at a time.
#[derive(Default, Clone)]
pub struct CpuMeter(Arc<Cell>);

#[derive(Default)]
struct Cell {
    budget_ns: AtomicU64,
    /// Charged by the polls that have ended.
    used_ns: AtomicU64,
    /// The tick the running poll started at.
    poll_tick: AtomicU64,
    /// The thread's CPU time when the running poll started.
    poll_cpu_ns: AtomicU64,
}

/// Polls shorter than this are charged their time-stamp-counter duration.
const SHORT: Duration = Duration::from_millis(1);

/// How old the thread's last CPU clock reading may be to stand for the one at a poll's start.
const FRESH: Duration = Duration::from_micros(100);

impl CpuMeter {
    /// A new call with `budget` starts.
    pub fn arm(&self, budget: Duration) {
        self.0.budget_ns.store(budget.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
        self.0.used_ns.store(0, Relaxed);
    }

    /// Runs `call`, charging each of its polls.
    pub async fn metered<F: Future>(&self, call: F) -> F::Output {
        let mut call = std::pin::pin!(call);
        std::future::poll_fn(|cx| {
            self.begin_poll();
            let result = call.as_mut().poll(cx);
            self.end_poll();
            result
        })
        .await
    }

    fn begin_poll(&self) {
        let now = tick::now();
        self.0.poll_cpu_ns.store(recent_thread_cpu_ns(now), Relaxed);
        self.0.poll_tick.store(now.0, Relaxed);
    }

    fn end_poll(&self) {
        let took = tick::between(tick::Tick(self.0.poll_tick.load(Relaxed)), tick::now());
        let spent = if took < SHORT {
            took.as_nanos() as u64
        } else {
            thread_cpu_ns().saturating_sub(self.0.poll_cpu_ns.load(Relaxed))
        };
        self.0.used_ns.fetch_add(spent, Relaxed);
    }

    /// At an epoch tick, inside a poll: whether the call has used its budget.
    pub fn spent(&self) -> bool {
        let so_far = thread_cpu_ns().saturating_sub(self.0.poll_cpu_ns.load(Relaxed));
        self.0.used_ns.load(Relaxed) + so_far >= self.0.budget_ns.load(Relaxed)
    }

    /// The CPU time charged to the call so far (polls that have ended).
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.0.used_ns.load(Relaxed))
    }

    /// Whether the call ended over its budget (between two ticks, or in a host function).
    pub fn over_budget(&self) -> bool {
        self.0.used_ns.load(Relaxed) > self.0.budget_ns.load(Relaxed)
    }
}

/// The calling thread's CPU time at most [`FRESH`] before `now` (never after it).
fn recent_thread_cpu_ns(now: tick::Tick) -> u64 {
    thread_local! {
        /// The thread's last reading: when, and what it read.
        static LAST: std::cell::Cell<Option<(tick::Tick, u64)>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        // (A counter read on another core may be behind: a reading "from the future" is stale.)
        Some((at, cpu)) if at <= now && tick::between(at, now) < FRESH => cpu,
        _ => {
            let cpu = thread_cpu_ns();
            last.set(Some((now, cpu)));
            cpu
        }
    })
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Calibrates the counter now (about 5 ms), rather than in the first plugin call.
pub fn calibrate() {
    tick::now();
}

/// The clock read at the start and end of every poll of a call. The CPU's time-stamp counter
/// where it is invariant (x86-64 with `nonstop_tsc`), a few cycles to read, scaled to time by the
/// best of five 1-ms measurements against `Instant` the first time; `Instant` elsewhere.
mod tick {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Tick(pub u64);

    /// Nanoseconds per tick; `None`: ticks are nanoseconds since [`base`].
    fn scale() -> Option<f64> {
        static SCALE: OnceLock<Option<f64>> = OnceLock::new();
        *SCALE.get_or_init(calibrate)
    }

    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    /// The counter's period in nanoseconds, from five 1-ms spans against `Instant`. Each end of a
    /// span is a counter read between two `Instant` reads; a thread preempted between them makes
    /// that bracket wide and its pairing wrong, so the span whose brackets are narrowest is kept
    /// (one preemption cannot skew every charge for the life of the process).
    #[cfg(target_arch = "x86_64")]
    fn calibrate() -> Option<f64> {
        use std::arch::x86_64::{__cpuid, _rdtsc};
        // cpuid and rdtsc exist on every x86-64 CPU. Leaf 0x8000_0007 EDX bit 8 is the
        // invariant TSC: constant rate, running in every power state.
        let invariant = __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
        if !invariant {
            return None;
        }
        // SAFETY: see above.
        let read = || {
            let (before, c, after) = (Instant::now(), unsafe { _rdtsc() }, Instant::now());
            (before + (after - before) / 2, c, after - before)
        };
        let span = || {
            let (t0, c0, w0) = read();
            std::thread::sleep(Duration::from_millis(1));
            let (t1, c1, w1) = read();
            let ticks = c1.checked_sub(c0).filter(|&d| d > 0)?;
            Some((w0 + w1, (t1 - t0).as_nanos() as f64 / ticks as f64))
        };
        let spans = (0..5).filter_map(|_| span());
        spans.min_by_key(|(width, _)| *width).map(|(_, scale)| scale)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn calibrate() -> Option<f64> {
        None
    }

    pub fn now() -> Tick {
        #[cfg(target_arch = "x86_64")]
        if scale().is_some() {
            // SAFETY: see `calibrate`.
            return Tick(unsafe { std::arch::x86_64::_rdtsc() });
        }
        Tick(base().elapsed().as_nanos() as u64)
    }

    /// The time from `a` to `b` (zero if `b` is earlier).
    pub fn between(a: Tick, b: Tick) -> Duration {
        let d = b.0.saturating_sub(a.0);
        Duration::from_nanos(scale().map_or(d, |s| (d as f64 * s) as u64))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ticks_measure_time_like_instant_does() {
            now(); // calibrated
                   // Instant read outside and inside the two ticks: the time between the ticks is at
                   // least the inner span and at most the outer one, however long this thread waits
                   // between two reads on a loaded machine. Only the counter's scale can put the
                   // ticks' measure outside them (by more than its 5 % here).
            let (outer_0, a, inner_0) = (Instant::now(), now(), Instant::now());
            std::thread::sleep(Duration::from_millis(20));
            let (inner_1, b, outer_1) = (Instant::now(), now(), Instant::now());
            let measured = between(a, b).as_secs_f64();
            let (inner, outer) = ((inner_1 - inner_0).as_secs_f64(), (outer_1 - outer_0).as_secs_f64());
            assert!(
                measured >= inner * 0.95 && measured <= outer * 1.05,
                "ticks say {measured} s, Instant between {inner} and {outer} s"
            );
            assert_eq!(between(b, a), Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that burns `work` of CPU on each of `polls` polls, waking itself in between.
    struct Burn {
        polls: u32,
        work: Duration,
    }

    impl Future for Burn {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            let start = thread_cpu_ns();
            while thread_cpu_ns() - start < self.work.as_nanos() as u64 {}
            self.polls -= 1;
            if self.polls == 0 {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polls_are_charged_and_waiting_between_them_is_not() {
        let meter = CpuMeter::default();
        meter.arm(Duration::from_secs(1));
        meter.metered(Burn { polls: 4, work: Duration::from_millis(2) }).await;
        // Waiting between polls (a sleep here) is not charged.
        meter.metered(async { tokio::time::sleep(Duration::from_secs(1)).await }).await;
        let used = meter.used();
        assert!(used >= Duration::from_millis(8), "4 polls of 2 ms of CPU charged {used:?}");
        assert!(used < Duration::from_millis(500), "the 1 s sleep was charged: {used:?}");
        assert!(!meter.over_budget());
    }

    #[test]
    fn a_poll_that_reaches_a_tick_is_checked_against_the_budget() {
        let meter = CpuMeter::default();
        meter.arm(Duration::from_millis(1));
        meter.begin_poll();
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < 2_000_000 {}
        assert!(meter.spent(), "2 ms of CPU in a 1 ms budget");
        meter.end_poll();
        assert!(meter.over_budget());
        meter.arm(Duration::from_secs(10));
        meter.begin_poll();
        assert!(!meter.spent());
        meter.end_poll();
    }

    #[test]
    fn a_poll_that_blocks_the_thread_is_charged_its_cpu_not_its_wait() {
        let meter = CpuMeter::default();
        meter.arm(Duration::from_secs(1));
        meter.begin_poll();
        std::thread::sleep(Duration::from_millis(20));
        meter.end_poll();
        let used = meter.used();
        assert!(used < Duration::from_millis(5), "a poll asleep for 20 ms was charged {used:?}");
    }

    #[test]
    fn the_thread_clock_is_read_again_only_once_its_reading_is_stale() {
        let now = tick::now();
        let first = recent_thread_cpu_ns(now);
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < 2_000_000 {}
        assert_eq!(recent_thread_cpu_ns(now), first, "a fresh reading is reused");
        let later = recent_thread_cpu_ns(tick::now());
        assert!(later >= first + 2_000_000, "a stale reading is replaced: {first} then {later}");
    }
}
