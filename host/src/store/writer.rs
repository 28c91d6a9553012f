//! The one writer of samples: a thread with its own connection that commits each batch in one
//! transaction. Producers hand it batches through a bounded queue and never wait on SQLite; a
//! full queue drops the batch and counts it.

use super::series::{Sample, SeriesKey};
use super::Store;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Counters the writer keeps, for `/metrics`.
#[derive(Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub batches: AtomicU64,
    pub errors: AtomicU64,
    /// Sum and last of the time to commit a batch, in nanoseconds.
    pub write_ns_total: AtomicU64,
    pub write_ns_last: AtomicU64,
    /// Samples of new series refused because the store holds `max_series` live series.
    pub series_refused: AtomicU64,
    /// Series that left memory after no write for the raw retention.
    pub series_evicted: AtomicU64,
    /// The latest stored value of every series written since start: `/metrics` serves these.
    latest: RwLock<HashMap<i64, Latest>>,
}

#[derive(Clone)]
pub struct Latest {
    pub key: Arc<SeriesKey>,
    pub t_ms: i64,
    pub value: f64,
}

impl WriterStats {
    /// Live series: written within the raw retention.
    pub fn live_series(&self) -> usize {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The latest value of each series, sorted by series.
    pub fn latest(&self) -> Vec<Latest> {
        let mut all: Vec<Latest> =
            self.latest.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }
}

/// The way to the writer thread. Cheap to clone. The thread stops (after writing what it has)
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Vec<Sample>>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// Queues `batch` for writing. Returns false (and counts the samples as dropped) when the
    /// writer is this far behind.
    pub fn submit(&self, batch: Vec<Sample>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let n = batch.len() as u64;
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Series name+labels → id, for the live series (at most `max` of them).
pub struct Interner {
    /// One copy of each key, shared with the `latest` map.
    ids: HashMap<Arc<SeriesKey>, i64>,
    max: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_max(usize::MAX)
    }
}

impl Interner {
    pub fn with_max(max: usize) -> Interner {
        Interner { ids: HashMap::new(), max }
    }

    /// The id of `key`; `None` when it is new and the store already holds `max` live series.
    fn id(&mut self, conn: &Connection, key: &SeriesKey) -> rusqlite::Result<Option<(i64, Arc<SeriesKey>)>> {
        if let Some((key, id)) = self.ids.get_key_value(key) {
            return Ok(Some((*id, key.clone())));
        }
        if self.ids.len() >= self.max {
            return Ok(None);
        }
        let labels = key.labels.to_json();
        conn.prepare_cached("INSERT OR IGNORE INTO series (name, labels) VALUES (?1, ?2)")?
            .execute(params![key.name, labels])?;
        let id: i64 = conn
            .prepare_cached("SELECT id FROM series WHERE name = ?1 AND labels = ?2")?
            .query_row(params![key.name, labels], |r| r.get(0))?;
        let key = Arc::new(key.clone());
        self.ids.insert(key.clone(), id);
        Ok(Some((id, key)))
    }

    fn forget(&mut self, key: &SeriesKey) {
        self.ids.remove(key);
    }
}

/// What the writer holds in memory, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Live series at most (all sources together).
    pub max_series: usize,
    /// A series not written for this long leaves memory (it stays in the database).
    pub idle: std::time::Duration,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits { max_series: 50_000, idle: std::time::Duration::from_secs(86_400) }
    }
}

/// Writes `batch` in one transaction. Non-finite values are skipped (the producer counts them),
/// and so are samples of new series the interner refuses (counted in `refused`).
/// Returns what was written, as (series id, key, time, value) of the newest sample per series.
pub fn write_batch(
    conn: &mut Connection,
    interner: &mut Interner,
    batch: &[Sample],
    refused: &mut u64,
) -> rusqlite::Result<Vec<(i64, Latest)>> {
    let tx = conn.transaction()?;
    let mut newest: HashMap<i64, Latest> = HashMap::new();
    {
        let mut insert =
            tx.prepare_cached("INSERT OR REPLACE INTO samples (series, t, v) VALUES (?1, ?2, ?3)")?;
        for s in batch.iter().filter(|s| s.value.is_finite()) {
            let Some((id, key)) = interner.id(&tx, &s.key)? else {
                *refused += 1;
                continue;
            };
            insert.execute(params![id, s.t_ms, s.value])?;
            let entry = newest.entry(id).or_insert_with(|| Latest { key, t_ms: i64::MIN, value: 0.0 });
            if s.t_ms >= entry.t_ms {
                entry.t_ms = s.t_ms;
                entry.value = s.value;
            }
        }
    }
    tx.commit()?;
    Ok(newest.into_iter().collect())
}

/// How many batches may wait for the writer before new ones are dropped.
const QUEUE: usize = 256;

impl Store {
    /// Starts the writer thread on its own connection, with the default limits.
    pub fn start_writer(&self) -> Result<(Writer, std::thread::JoinHandle<()>), super::StoreError> {
        self.start_writer_with(WriterLimits::default())
    }

    /// Starts the writer thread on its own connection.
    pub fn start_writer_with(
        &self,
        limits: WriterLimits,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), super::StoreError> {
        let conn = self.connect()?;
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let path = self.path().to_path_buf();
        let thread_stats = stats.clone();
        let recent = self.inner.recent.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, rx, &thread_stats, &recent, &path, limits))
            .expect("spawning the store writer");
        Ok((Writer { tx, stats }, handle))
    }
}

fn run(
    mut conn: Connection,
    rx: Receiver<Vec<Sample>>,
    stats: &WriterStats,
    recent: &super::recent::Recent,
    path: &std::path::Path,
    limits: WriterLimits,
) {
    let mut interner = Interner::with_max(limits.max_series);
    let mut swept = Instant::now();
    while let Ok(mut batch) = rx.recv() {
        // Whatever else is already queued goes into the same transaction.
        while batch.len() < 100_000 {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if swept.elapsed() > SWEEP_EVERY {
            evict_idle(stats, &mut interner, limits.idle);
            swept = Instant::now();
        }
        let started = Instant::now();
        let mut refused = 0;
        match write_batch(&mut conn, &mut interner, &batch, &mut refused) {
            Ok(newest) => {
                let ns = started.elapsed().as_nanos() as u64;
                stats.write_ns_total.fetch_add(ns, Ordering::Relaxed);
                stats.write_ns_last.store(ns, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.written.fetch_add(batch.len() as u64 - refused, Ordering::Relaxed);
                // What was written: finite values of the series the interner took.
                let written =
                    batch.iter().filter(|s| s.value.is_finite() && interner.ids.contains_key(&s.key));
                recent.record(written.map(|s| (&s.key, s.t_ms, s.value)));
                if refused > 0 && stats.series_refused.fetch_add(refused, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "{}: the store holds {} live series ([store] max_series); samples of new series are dropped and counted",
                        path.display(),
                        limits.max_series
                    );
                }
                let mut latest = stats.latest.write().unwrap_or_else(|p| p.into_inner());
                for (id, l) in newest {
                    match latest.get_mut(&id) {
                        Some(old) if old.t_ms > l.t_ms => {}
                        _ => {
                            latest.insert(id, l);
                        }
                    }
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!("{}: writing {} samples failed: {e}", path.display(), batch.len());
            }
        }
    }
}

/// How often the writer looks for series to let go of.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Drops from memory the series not written for `idle` (their data stays in the database).
fn evict_idle(stats: &WriterStats, interner: &mut Interner, idle: std::time::Duration) {
    let cutoff = crate::timefmt::now_ms() - idle.as_millis() as i64;
    let mut latest = stats.latest.write().unwrap_or_else(|p| p.into_inner());
    let before = latest.len();
    latest.retain(|_, l| {
        let keep = l.t_ms >= cutoff;
        if !keep {
            interner.forget(&l.key);
        }
        keep
    });
    let evicted = (before - latest.len()) as u64;
    if evicted > 0 {
        stats.series_evicted.fetch_add(evicted, Ordering::Relaxed);
        latest.shrink_to_fit();
        interner.ids.shrink_to_fit();
    }
}
