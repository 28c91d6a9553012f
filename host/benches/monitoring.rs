//! Monitoring figures for docs/benchmarks.md:
//!
//!     cargo bench -p agent --bench monitoring
//!
//! - `sampler/tick` (wall time) and `sampler/tick_cpu_time` (this thread's CPU clock): one full sampling tick of this machine (CPU, load, memory, swap, every
//!   interface, disk and filesystem), as the agent does every `sample_interval`.
//! - `store/ingest`: committing a batch of 10 000 samples across 100 series, in one transaction,
//!   through the writer's own function. Reported as samples per second.
//! - `store/query_1h_1s`: reading a 1-hour window at 1 s resolution (3 600 points) of one series
//!   out of 100 that each hold that hour.

use agent::sampler::Sampler;
use agent::store::{write_batch, Interner, Labels, Sample, Selector, SeriesKey, Store};
use agent::timefmt::now_ms;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn sampler(c: &mut Criterion) {
    let mut sampler = Sampler::new();
    c.bench_function("sampler/tick", |b| b.iter(|| sampler.tick(now_ms(), &[])));
    // The same, timed by this thread's CPU clock: the CPU a tick costs, not its wall time.
    c.bench_function("sampler/tick_cpu_time", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu();
            for _ in 0..iters {
                std::hint::black_box(sampler.tick(now_ms(), &[]));
            }
            thread_cpu() - start
        })
    });
}

fn thread_cpu() -> std::time::Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn keys(n: usize) -> Vec<SeriesKey> {
    (0..n).map(|i| SeriesKey::new("bench.metric", Labels::new().with("series", i.to_string()))).collect()
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    drop(store);
    let mut conn = rusqlite::Connection::open(dir.path().join("agent.db")).unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let keys = keys(100);
    let mut interner = Interner::default();
    let mut t = 0i64;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("ingest", |b| {
        b.iter_batched(
            || {
                // 100 ticks of 100 series, as a sampler would produce them.
                let batch: Vec<Sample> = (0..100)
                    .flat_map(|tick| keys.iter().map(move |k| (tick, k)))
                    .map(|(tick, k)| Sample { key: k.clone(), t_ms: t + tick * 1000, value: tick as f64 })
                    .collect();
                t += 100_000;
                batch
            },
            |batch| write_batch(&mut conn, &mut interner, &batch, &mut 0).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn query(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (writer, thread) = store.start_writer().unwrap();
    let keys = keys(100);
    for second in 0..3600i64 {
        writer.submit(
            keys.iter()
                .map(|k| Sample { key: k.clone(), t_ms: second * 1000, value: second as f64 })
                .collect(),
        );
        if second % 200 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(50)); // stay under the queue bound
        }
    }
    drop(writer);
    thread.join().unwrap();
    let sel = Selector { name: "bench.metric".into(), matchers: vec![("series".into(), "42".into())] };
    let got = store.query(&sel, 0, 3_600_000, None).unwrap();
    assert_eq!(got[0].values.len(), 3600, "the hour is complete");
    c.bench_function("store/query_1h_1s", |b| b.iter(|| store.query(&sel, 0, 3_600_000, None).unwrap()));
}

criterion_group!(benches, sampler, ingest, query);
criterion_main!(benches);
