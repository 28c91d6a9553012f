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

/// Series name+labels → id, cached for the writer's lifetime.
#[derive(Default)]
pub struct Interner {
    ids: HashMap<SeriesKey, (i64, Arc<SeriesKey>)>,
}

impl Interner {
    fn id(&mut self, conn: &Connection, key: &SeriesKey) -> rusqlite::Result<(i64, Arc<SeriesKey>)> {
        if let Some(hit) = self.ids.get(key) {
            return Ok(hit.clone());
        }
        let labels = key.labels.to_json();
        conn.prepare_cached("INSERT OR IGNORE INTO series (name, labels) VALUES (?1, ?2)")?
            .execute(params![key.name, labels])?;
        let id: i64 = conn
            .prepare_cached("SELECT id FROM series WHERE name = ?1 AND labels = ?2")?
            .query_row(params![key.name, labels], |r| r.get(0))?;
        let entry = (id, Arc::new(key.clone()));
        self.ids.insert(key.clone(), entry.clone());
        Ok(entry)
    }
}

/// Writes `batch` in one transaction. Non-finite values are skipped (the producer counts them).
/// Returns what was written, as (series id, key, time, value) of the newest sample per series.
pub fn write_batch(
    conn: &mut Connection,
    interner: &mut Interner,
    batch: &[Sample],
) -> rusqlite::Result<Vec<(i64, Latest)>> {
    let tx = conn.transaction()?;
    let mut newest: HashMap<i64, Latest> = HashMap::new();
    {
        let mut insert =
            tx.prepare_cached("INSERT OR REPLACE INTO samples (series, t, v) VALUES (?1, ?2, ?3)")?;
        for s in batch.iter().filter(|s| s.value.is_finite()) {
            let (id, key) = interner.id(&tx, &s.key)?;
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
    /// Starts the writer thread on its own connection.
    pub fn start_writer(&self) -> Result<(Writer, std::thread::JoinHandle<()>), super::StoreError> {
        let conn = self.connect()?;
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let path = self.path().to_path_buf();
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, rx, &thread_stats, &path))
            .expect("spawning the store writer");
        Ok((Writer { tx, stats }, handle))
    }
}

fn run(mut conn: Connection, rx: Receiver<Vec<Sample>>, stats: &WriterStats, path: &std::path::Path) {
    let mut interner = Interner::default();
    while let Ok(mut batch) = rx.recv() {
        // Whatever else is already queued goes into the same transaction.
        while batch.len() < 100_000 {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        match write_batch(&mut conn, &mut interner, &batch) {
            Ok(newest) => {
                let ns = started.elapsed().as_nanos() as u64;
                stats.write_ns_total.fetch_add(ns, Ordering::Relaxed);
                stats.write_ns_last.store(ns, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
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
