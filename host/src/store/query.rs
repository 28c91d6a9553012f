//! Reading samples back: the series list, and windows of one metric. The CLI, `/metrics` and the
//! scaler all read through here, on a read-only connection that never blocks the writer.

use super::series::{Labels, SeriesKey};
use super::{Store, StoreError};
use rusqlite::params;
use serde::Serialize;

/// Which series: a metric name and labels that must match exactly.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<(String, String)>,
}

/// One series' points in a time range, oldest first, as two parallel lists.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SeriesPoints {
    pub name: String,
    pub labels: Labels,
    pub timestamps_ms: Vec<i64>,
    pub values: Vec<f64>,
}

/// A series and its newest sample.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesInfo {
    pub name: String,
    pub labels: Labels,
    pub last_ms: Option<i64>,
    pub last_value: Option<f64>,
}

impl Store {
    fn series_ids(&self, name: Option<&str>) -> Result<Vec<(i64, SeriesKey)>, StoreError> {
        self.read(|c| series_ids(c, name))
    }

    /// Every series with its newest raw sample.
    pub fn list_series(&self) -> Result<Vec<SeriesInfo>, StoreError> {
        let ids = self.series_ids(None)?;
        self.read(|c| {
            let mut last =
                c.prepare_cached("SELECT t, v FROM samples WHERE series = ?1 ORDER BY t DESC LIMIT 1")?;
            ids.into_iter()
                .map(|(id, key)| {
                    let newest: Option<(i64, f64)> =
                        last.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).ok();
                    Ok(SeriesInfo {
                        name: key.name,
                        labels: key.labels,
                        last_ms: newest.map(|n| n.0),
                        last_value: newest.map(|n| n.1),
                    })
                })
                .collect()
        })
    }

    /// Points of the series `sel` selects in `[from_ms, to_ms)`. Without a step, the raw points;
    /// with one, the mean of each step-long bucket (stamped with the bucket's start), read from
    /// the 1-minute rollups where raw samples have been dropped and the step allows it.
    pub fn query(
        &self,
        sel: &Selector,
        from_ms: i64,
        to_ms: i64,
        step_ms: Option<i64>,
    ) -> Result<Vec<SeriesPoints>, StoreError> {
        // One read transaction for the whole query: one snapshot and one read lock (each
        // statement on its own would take and release a lock of its own).
        self.read(|c| snapshot(c, |c| query_on(c, sel, from_ms, to_ms, step_ms)))
    }
}

/// Runs `f` in one read transaction on `c`, ended whatever `f` returns.
fn snapshot<T>(
    c: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    // A transaction a failed read left open would pin this connection's snapshot for good.
    if !c.is_autocommit() {
        c.execute_batch("ROLLBACK")?;
    }
    c.prepare_cached("BEGIN")?.execute([])?;
    let out = f(c);
    let ended = c.prepare_cached("COMMIT").and_then(|mut s| s.execute([]));
    if ended.is_err() && !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
    let out = out?;
    ended?;
    Ok(out)
}

fn series_ids(c: &rusqlite::Connection, name: Option<&str>) -> rusqlite::Result<Vec<(i64, SeriesKey)>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, name, labels FROM series WHERE ?1 IS NULL OR name = ?1 ORDER BY name, labels",
    )?;
    let rows = stmt.query_map(params![name], |r| {
        let labels: String = r.get(2)?;
        Ok((r.get(0)?, SeriesKey::new(r.get::<_, String>(1)?, Labels::from_json(&labels))))
    })?;
    rows.collect()
}

fn query_on(
    c: &rusqlite::Connection,
    sel: &Selector,
    from_ms: i64,
    to_ms: i64,
    step_ms: Option<i64>,
) -> rusqlite::Result<Vec<SeriesPoints>> {
    let ids: Vec<(i64, SeriesKey)> = series_ids(c, Some(&sel.name))?
        .into_iter()
        .filter(|(_, k)| k.labels.matches(&sel.matchers))
        .collect();
    // Only a stepped query may read rollups.
    let rolled_until = if step_ms.is_some() { super::maintenance::rollup_watermark_on(c)? } else { 0 };
    let mut out = Vec::with_capacity(ids.len());
    for (id, key) in ids {
        let mut points = SeriesPoints {
            name: key.name,
            labels: key.labels,
            timestamps_ms: Vec::new(),
            values: Vec::new(),
        };
        let mut push = |t: i64, v: f64| {
            points.timestamps_ms.push(t);
            points.values.push(v);
        };
        match step_ms {
            None => {
                let mut stmt = c.prepare_cached(
                    "SELECT t, v FROM samples WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t",
                )?;
                let mut rows = stmt.query(params![id, from_ms, to_ms])?;
                while let Some(r) = rows.next()? {
                    push(r.get(0)?, r.get(1)?);
                }
            }
            Some(step) => {
                let step = step.max(1);
                // Rollups cover whole minutes before the watermark; use them only where
                // the raw samples may be gone and buckets are whole minutes.
                let split = if step % 60_000 == 0 { rolled_until.clamp(from_ms, to_ms) } else { from_ms };
                let mut rolled = c.prepare_cached(
                    "SELECT (t / ?4) * ?4 AS b, sum(sum) / sum(n) FROM rollups
                             WHERE series = ?1 AND t >= ?2 AND t < ?3 GROUP BY b ORDER BY b",
                )?;
                let mut rows = rolled.query(params![id, from_ms, split, step])?;
                while let Some(r) = rows.next()? {
                    push(r.get(0)?, r.get(1)?);
                }
                let mut raw = c.prepare_cached(
                    "SELECT (t / ?4) * ?4 AS b, avg(v) FROM samples
                             WHERE series = ?1 AND t >= ?2 AND t < ?3 GROUP BY b ORDER BY b",
                )?;
                let mut rows = raw.query(params![id, split, to_ms, step])?;
                while let Some(r) = rows.next()? {
                    push(r.get(0)?, r.get(1)?);
                }
            }
        }
        out.push(points);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Sample, SeriesKey};

    pub(crate) fn sample(name: &str, labels: Labels, t_ms: i64, value: f64) -> Sample {
        Sample { key: SeriesKey::new(name, labels), t_ms, value }
    }

    fn store_with(samples: Vec<Sample>) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (writer, thread) = store.start_writer().unwrap();
        assert!(writer.submit(samples));
        drop(writer);
        thread.join().unwrap();
        (dir, store)
    }

    #[test]
    fn written_samples_come_back_by_name_labels_and_range() {
        let cpu0 = Labels::new().with("cpu", "0");
        let cpu1 = Labels::new().with("cpu", "1");
        let mut batch = Vec::new();
        for i in 0..10 {
            batch.push(sample("cpu", cpu0.clone(), i * 1000, i as f64));
            batch.push(sample("cpu", cpu1.clone(), i * 1000, 10.0 + i as f64));
        }
        batch.push(sample("cpu", cpu0.clone(), 3000, f64::NAN)); // dropped, 3.0 stays
        let (_dir, store) = store_with(batch);

        let all = store.query(&Selector { name: "cpu".into(), matchers: vec![] }, 0, 10_000, None).unwrap();
        assert_eq!(all.len(), 2);
        let one = store
            .query(
                &Selector { name: "cpu".into(), matchers: vec![("cpu".into(), "1".into())] },
                2000,
                5000,
                None,
            )
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].timestamps_ms, [2000, 3000, 4000]);
        assert_eq!(one[0].values, [12.0, 13.0, 14.0]);
        let cpu0_points = &all.iter().find(|s| s.labels == cpu0).unwrap().values;
        assert_eq!(cpu0_points[3], 3.0, "a NaN never replaces a stored value");

        let stepped = store
            .query(
                &Selector { name: "cpu".into(), matchers: vec![("cpu".into(), "0".into())] },
                0,
                10_000,
                Some(5000),
            )
            .unwrap();
        assert_eq!(stepped[0].timestamps_ms, [0, 5000]);
        assert_eq!(stepped[0].values, [2.0, 7.0], "mean of 0..5 and of 5..10");

        let listed = store.list_series().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].last_ms, listed[0].last_value), (Some(9000), Some(9.0)));
        assert!(store
            .query(&Selector { name: "nope".into(), matchers: vec![] }, 0, 1, None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_read_only_store_reads_beside_a_live_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (writer, _thread) = store.start_writer().unwrap();
        let reader = Store::open_read_only(dir.path()).unwrap();
        for i in 0..50 {
            writer.submit(vec![sample("x", Labels::new(), i, i as f64)]);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let got = reader.query(&Selector { name: "x".into(), matchers: vec![] }, 0, 100, None).unwrap();
            if got.first().is_some_and(|s| s.values.len() == 50) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the reader never saw all 50 samples");
        }
        assert!(reader.plugin_state("p").set("k", b"v").is_err(), "a read-only store does not write");
    }
    #[test]
    fn window_from_memory_equals_the_sqlite_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let start = crate::timefmt::now_ms();
        // Written before the keeping began, by a source whose clock runs 190 s ahead.
        let (writer, thread) = store.start_writer().unwrap();
        assert!(writer.submit(vec![sample("load", Labels::new().with("a", "x"), start + 190_000, 99.0)]));
        drop(writer);
        thread.join().unwrap();
        store.keep_recent(["load".to_string()], 120_000);
        let (writer, thread) = store.start_writer().unwrap();
        let shapes = [
            Labels::new().with("a", "x"),
            Labels::new().with("a", "x").with("b", "y"),
            Labels::new().with("a", "w"),
        ];
        let mut all = Vec::new();
        for i in 0..300 {
            let t = start + i * 1_000;
            all.extend(
                shapes
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| i % (k + 1) as i64 == 0) // uneven series
                    .map(|(k, l)| sample("load", l.clone(), t, (i * 7 + k as i64) as f64 % 13.0))
                    .chain([sample("load", shapes[0].clone(), t, f64::NAN)]),
            ); // not stored either way
        }
        assert!(writer.submit(all));
        drop(writer);
        thread.join().unwrap();
        for (from, to, matchers) in [
            (start + 200_000, start + 300_000, vec![]),
            (start + 250_500, start + 260_000, vec![("a".to_string(), "x".to_string())]),
            (start + 297_000, start + 400_000, vec![("b".to_string(), "y".to_string())]),
        ] {
            let sel = Selector { name: "load".into(), matchers };
            let memory =
                store.inner.recent.window(&sel.name, &sel.matchers, from, to).expect("memory answers");
            let mut sqlite = store.query(&sel, from, to, None).unwrap();
            sqlite.retain(|s| !s.values.is_empty());
            assert!(!memory.is_empty());
            assert_eq!(memory, sqlite, "window [{from}, {to}) of {:?}", sel.matchers);
        }
        // Not back to what was written before the keeping began, nor beyond the horizon: there
        // the store reads SQLite instead.
        assert!(store.inner.recent.window("load", &[], start + 190_000, start + 300_000).is_none());
        assert!(store.inner.recent.window("load", &[], start + 190_001, start + 300_000).is_some());
        let sel = Selector { name: "load".into(), matchers: vec![] };
        assert!(store.inner.recent.window("load", &[], start, start + 300_000).is_none());
        let whole = store.window(&sel, start, start + 300_000).unwrap();
        assert_eq!(whole.iter().map(|s| s.values.len()).sum::<usize>(), 300 + 150 + 100);
        // A restart: what the last run wrote is SQLite's, memory starts after it.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.keep_recent(["load".to_string()], 120_000);
        assert!(store.inner.recent.window("load", &[], start + 250_000, start + 300_000).is_none());
        assert_eq!(store.window(&sel, start + 250_000, start + 300_000).unwrap().len(), 3);
    }
}
