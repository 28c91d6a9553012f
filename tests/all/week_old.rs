//! A database as an agent holds it after a week: 1-minute rollups of every series for a week
//! (to the last complete minute), raw 1-s samples for the last `raw_hours`, and a 1-s group's journal for the last
//! `journal_hours`. Written straight into the schema the agent made (`Store::open`), in one
//! transaction, so that a test or benchmark starts from a week in seconds.

use crate::common::{http_get_within, load_source, JsonServer};
use rusqlite::params;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct WeekOld {
    pub series: usize,
    pub raw_hours: i64,
    pub journal_hours: i64,
    pub group: &'static str,
}

const WEEK_MS: i64 = 7 * 24 * 3_600_000;

/// The name every seeded series has (its `n` label tells them apart).
pub const SERIES: &str = "app.load";

impl WeekOld {
    /// Seeds `dir/agent.db` (created by the agent's own code if absent).
    pub fn seed(&self, dir: &Path) {
        drop(agent::store::Store::open(dir).expect("creating the database"));
        let mut conn = rusqlite::Connection::open(dir.join("agent.db")).unwrap();
        let now = agent::timefmt::now_ms();
        let tx = conn.transaction().unwrap();
        self.metrics(&tx, now);
        self.journal(&tx, now);
        tx.commit().unwrap();
    }

    fn metrics(&self, tx: &rusqlite::Transaction, now: i64) {
        let minute = 60_000;
        let raw_from = now - self.raw_hours * 3_600_000;
        // The agent rolls up every complete minute as it goes (the raw samples of the last
        // `raw_hours` are kept beside their rollups).
        let rolled_until = now / minute * minute - minute;
        for n in 0..self.series {
            tx.execute(
                "INSERT INTO series (name, labels) VALUES (?1, ?2)",
                params![SERIES, format!("n={n}")],
            )
            .unwrap();
            let id = tx.last_insert_rowid();
            let mut rollup = tx
                .prepare_cached(
                    "INSERT INTO rollups (series, t, n, min, max, sum) VALUES (?1, ?2, 60, ?3, ?3, ?4)",
                )
                .unwrap();
            let mut t = (now - WEEK_MS) / minute * minute;
            while t < rolled_until {
                let v = (t / minute % 100) as f64;
                rollup.execute(params![id, t, v, v * 60.0]).unwrap();
                t += minute;
            }
            let mut raw =
                tx.prepare_cached("INSERT INTO samples (series, t, v) VALUES (?1, ?2, ?3)").unwrap();
            let mut t = raw_from;
            while t < now {
                raw.execute(params![id, t, (t / 1000 % 100) as f64]).unwrap();
                t += 1000;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollup_until', ?1)",
            [rolled_until.to_string()],
        )
        .unwrap();
    }

    fn journal(&self, tx: &rusqlite::Transaction, now: i64) {
        let mut row = tx
            .prepare_cached(
                "INSERT INTO decisions (t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs)
                 VALUES (?1, ?2, 2, 2, 2.0, 'app.load mean 20.000 vs target 10 per replica → 2.000', 2,
                 '[{\"guardrail\":\"round\",\"before\":2.0,\"after\":2}]', 'hold', '', NULL,
                 '{\"app.load:mean\":20.0,\"app.load:points\":10}')",
            )
            .unwrap();
        let mut t = now - self.journal_hours * 3_600_000;
        while t < now - 60_000 {
            row.execute(params![t, self.group]).unwrap();
            t += 1000;
        }
    }
}

/// A group `name` evaluated every second on `app`'s load (http-json, target-tracking, ledger):
/// the kind of group whose journal [`WeekOld`] writes.
pub fn one_second_group(name: &str, app: &JsonServer) -> String {
    format!(
        "{source}[[group]]\nname = \"{name}\"\ninterval = \"1s\"\nmetrics = [{{ name = \"app.load\", window = \"5s\" }}]\n\
         policy = \"target-tracking\"\npolicy_config = {{ target = 10, per = \"total\" }}\nbackend = \"ledger\"\n\
         backend_config = {{ initial = 2 }}\nmin = 1\nmax = 10\n",
        source = load_source(app)
    )
}

/// Clients reading 7-day windows of `/api/series` (even ones) and `/api/decisions` (odd ones)
/// back to back, ignoring `Retry-After`: what a careless dashboard, or a hostile one, does.
pub struct ReadFlood {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

/// What the flood's clients got.
#[derive(Default, Clone)]
pub struct Seen {
    /// How long each answered (200) read took, in ms.
    pub answered_ms: Vec<f64>,
    /// 503s saying the agent is busy.
    pub refused: usize,
    /// Anything else (status and the start of the body, or the error).
    pub other: Vec<String>,
}

impl ReadFlood {
    pub fn start(addr: SocketAddr, clients: usize, group: &str) -> ReadFlood {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Seen::default())));
        let clients = (0..clients)
            .map(|i| {
                let path = if i % 2 == 0 {
                    format!("/api/series?name={SERIES}&window=7d")
                } else {
                    format!("/api/decisions?group={group}&window=7d")
                };
                let (stop, seen) = (stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let got = http_get_within(addr, &path, Duration::from_secs(60));
                        let mut seen = seen.lock().unwrap();
                        match got {
                            Ok((200, _)) => seen.answered_ms.push(t.elapsed().as_secs_f64() * 1e3),
                            Ok((503, body)) if body.contains("busy") => seen.refused += 1,
                            other => seen.other.push(format!("{path}: {other:.200?}")),
                        }
                    }
                })
            })
            .collect();
        ReadFlood { stop, seen, clients }
    }

    pub fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.into_iter().for_each(|c| c.join().unwrap());
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}
