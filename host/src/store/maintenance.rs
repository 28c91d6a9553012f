//! Background upkeep on its own connection: roll complete minutes up into min/max/sum/count, and
//! drop raw samples and rollups past their retention. Work is done one series at a time, so each
//! write transaction is short and the writer is never held up for long.

use super::{Store, StoreError};
use crate::timefmt::now_ms;
use rusqlite::{params, Connection};
use std::time::Duration;

pub use crate::config::values::Retention;

/// What one pass did.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub rolled_up_minutes: u64,
    pub deleted_samples: u64,
    pub deleted_rollups: u64,
    pub deleted_decisions: u64,
    /// Series left with no samples and no rollups.
    pub deleted_series: u64,
    /// Plugins whose state was removed after the grace period.
    pub forgotten_plugins: u64,
}

const MINUTE: i64 = 60_000;

impl Store {
    /// The end (exclusive, ms) of the minutes already rolled up.
    #[cfg(test)]
    pub(crate) fn rollup_watermark(&self) -> Result<i64, StoreError> {
        self.read(rollup_watermark_on)
    }

    /// Runs one maintenance pass as of `now`, on a fresh connection.
    pub fn maintain(&self, now: i64, retention: &Retention) -> Result<Report, StoreError> {
        let conn = self.connect()?;
        pass(&conn, now, retention)
            .map_err(|source| StoreError::Sqlite { path: self.path().to_path_buf(), source })
    }

    /// Runs [`Store::maintain`] every `every` on a background thread, for the life of the process.
    pub fn start_maintenance(&self, retention: Retention, every: Duration) {
        // Memory never holds a window SQLite's raw samples no longer could.
        self.inner.recent.cap(retention.raw.as_millis().min(i64::MAX as u128) as i64);
        let store = self.clone();
        std::thread::Builder::new()
            .name("store-maintenance".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                // A run whose group stopped evaluating (a follower now, removed) is written too.
                if let Err(e) = store.flush_journal() {
                    tracing::error!("writing the journal's folded runs: {e}");
                }
                match store.maintain(now_ms(), &retention) {
                    Ok(r) if r != Report::default() => tracing::debug!("store maintenance: {r:?}"),
                    Ok(_) => {}
                    Err(e) => tracing::error!("store maintenance: {e}"),
                }
            })
            .expect("spawning the maintenance thread");
    }
}

fn pass(conn: &Connection, now: i64, retention: &Retention) -> rusqlite::Result<Report> {
    let mut report = Report::default();
    let series: Vec<i64> =
        conn.prepare("SELECT id FROM series")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let from: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'rollup_until'", [], |r| r.get::<_, String>(0))
        .map(|v| v.parse().unwrap_or(0))
        .unwrap_or(0);
    // Complete minutes only, with one minute's grace for samples that arrive late.
    let until = (now / MINUTE) * MINUTE - MINUTE;
    if until > from {
        // The first pass starts at the oldest sample, not at 1970.
        let from = if from == 0 {
            conn.query_row("SELECT min(t) FROM samples", [], |r| r.get::<_, Option<i64>>(0))?
                .map_or(until, |t| (t / MINUTE) * MINUTE)
        } else {
            from
        };
        for id in &series {
            let rolled = conn.execute(
                "INSERT OR REPLACE INTO rollups (series, t, n, min, max, sum)
                 SELECT series, (t / 60000) * 60000, count(*), min(v), max(v), sum(v) FROM samples
                 WHERE series = ?1 AND t >= ?2 AND t < ?3 GROUP BY t / 60000",
                params![id, from, until],
            )?;
            report.rolled_up_minutes += rolled as u64;
        }
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('rollup_until', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [until.to_string()],
        )?;
    }
    let raw_cutoff = now - retention.raw.as_millis() as i64;
    let rollup_cutoff = now - retention.rollups.as_millis() as i64;
    for id in &series {
        report.deleted_samples +=
            conn.execute("DELETE FROM samples WHERE series = ?1 AND t < ?2", params![id, raw_cutoff])? as u64;
        report.deleted_rollups += conn
            .execute("DELETE FROM rollups WHERE series = ?1 AND t < ?2", params![id, rollup_cutoff])?
            as u64;
    }
    journal_and_leftovers(conn, now, retention, &mut report)?;
    Ok(report)
}

/// The journal's retention (age, then rows), series with nothing left, and the state of plugins
/// not loaded for the grace period.
fn journal_and_leftovers(
    conn: &Connection,
    now: i64,
    retention: &Retention,
    report: &mut Report,
) -> rusqlite::Result<()> {
    let journal_cutoff = now - retention.journal.as_millis() as i64;
    report.deleted_decisions += conn.execute("DELETE FROM decisions WHERE t < ?1", [journal_cutoff])? as u64;
    report.deleted_decisions += conn.execute(
        "DELETE FROM decisions WHERE id <= (SELECT id FROM decisions ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [retention.journal_rows as i64],
    )? as u64;
    report.deleted_series += conn.execute(
        "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM samples WHERE series = series.id)
         AND NOT EXISTS (SELECT 1 FROM rollups WHERE series = series.id)",
        [],
    )? as u64;
    let state_cutoff = now - retention.state_grace.as_millis() as i64;
    let gone: Vec<String> = conn
        .prepare("SELECT plugin FROM plugin_seen WHERE t < ?1")?
        .query_map([state_cutoff], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for plugin in gone {
        conn.execute("DELETE FROM plugin_state WHERE plugin = ?1", [&plugin])?;
        conn.execute("DELETE FROM plugin_seen WHERE plugin = ?1", [&plugin])?;
        tracing::info!(
            "state of plugin `{plugin}` removed: not loaded for {}",
            crate::duration::format(retention.state_grace)
        );
        report.forgotten_plugins += 1;
    }
    Ok(())
}

/// Where the 1-minute rollups end (raw samples before it may be gone), on `c`.
pub(super) fn rollup_watermark_on(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT value FROM meta WHERE key = 'rollup_until'")?
        .query_row([], |r| r.get::<_, String>(0))
        .map(|v| v.parse().unwrap_or(0))
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(0) } else { Err(e) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Labels, Sample, Selector, SeriesKey};

    #[test]
    fn complete_minutes_are_rolled_up_and_old_data_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (writer, thread) = store.start_writer().unwrap();
        let key = SeriesKey::new("load", Labels::new());
        // Three minutes at one sample a second, values 0..180.
        let batch: Vec<Sample> =
            (0..180).map(|i| Sample { key: key.clone(), t_ms: i * 1000, value: i as f64 }).collect();
        writer.submit(batch);
        drop(writer);
        thread.join().unwrap();

        // At 4:30, minutes 0–2 are complete and past the one-minute grace.
        let retention = Retention {
            raw: Duration::from_secs(3600),
            rollups: Duration::from_secs(7200),
            ..Default::default()
        };
        let report = store.maintain(270_000, &retention).unwrap();
        assert_eq!(report.rolled_up_minutes, 3);
        assert_eq!(store.rollup_watermark().unwrap(), 180_000);
        assert_eq!(store.maintain(270_000, &retention).unwrap(), Report::default(), "nothing twice");

        // Much later the raw samples are gone, the rollups answer minute-step queries.
        let later = Retention {
            raw: Duration::from_secs(60),
            rollups: Duration::from_secs(7200),
            ..Default::default()
        };
        let report = store.maintain(3_000_000, &later).unwrap();
        assert_eq!(report.deleted_samples, 180);
        let sel = Selector { name: "load".into(), matchers: vec![] };
        assert!(store.query(&sel, 0, 180_000, None).unwrap()[0].values.is_empty(), "raw points dropped");
        let minutes = store.query(&sel, 0, 180_000, Some(60_000)).unwrap();
        assert_eq!(minutes[0].timestamps_ms, [0, 60_000, 120_000]);
        assert_eq!(minutes[0].values, [29.5, 89.5, 149.5]);

        // Past the rollup retention, they go too, and so does the series.
        let report = store.maintain(3_000_000 + 7_200_000, &retention).unwrap();
        assert_eq!(report.deleted_rollups, 3);
        assert_eq!(report.deleted_series, 1);
    }

    #[test]
    fn the_journal_and_the_state_of_removed_plugins_are_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day = 86_400_000;
        for t in 0..10 {
            let e = crate::store::JournalEntry {
                t_ms: t * day,
                group: "g".into(),
                // Each a different hold: identical ones would fold into one row.
                current: t as u32,
                ready: t as u32,
                recommendation: None,
                reason: String::new(),
                target: t as u32,
                tier: 0,
                target_tier: 0,
                steps: serde_json::json!([]),
                action: crate::store::Action::Hold,
                outcome: String::new(),
                backend_ms: None,
                inputs: serde_json::json!({}),
                count: 1,
                first_ms: t * day,
            };
            store.journal(e, Duration::from_secs(1)).unwrap();
        }
        store.plugin_state("kept").set("k", b"v").unwrap();
        store.plugin_state("gone").set("k", b"v").unwrap();
        store.mark_plugins_seen(&["kept".into()], 10 * day).unwrap();
        store.mark_plugins_seen(&["gone".into()], 2 * day).unwrap();
        let retention = Retention {
            journal: Duration::from_secs(5 * 86_400),
            journal_rows: 3,
            state_grace: Duration::from_secs(7 * 86_400),
            ..Default::default()
        };
        let report = store.maintain(10 * day, &retention).unwrap();
        assert_eq!(report.deleted_decisions, 7, "5 by age, then 2 more by rows");
        assert_eq!(
            store.decisions(None, 0).unwrap().iter().map(|e| e.t_ms / day).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert_eq!(report.forgotten_plugins, 1);
        assert_eq!(store.plugin_state("gone").get("k"), None);
        assert_eq!(store.plugin_state("kept").get("k").unwrap(), b"v");
    }
}
