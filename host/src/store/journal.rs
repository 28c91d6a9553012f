//! The decision journal: every evaluation of every scaling group, with its inputs, what the
//! policy said, what each guardrail changed, and what the backend did.
//!
//! A run of identical holds is one row (see [`Store::journal`]): `t` its last evaluation,
//! `first_t` its first, `count` how many. A group at rest at 1 s would otherwise write 86 400
//! rows a day, and evict its meaningful decisions from the row-count retention within hours.

use super::{Store, StoreError};
use rusqlite::params;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What happened in one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The target equalled the current capacity.
    Hold,
    /// The backend was asked to scale.
    Scale,
    /// Dry run: the backend would have been asked to scale.
    WouldScale,
    /// The backend was asked and failed.
    ScaleFailed,
    /// No usable recommendation (policy error, fault, missing metrics): held.
    NoRecommendation,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Hold => "hold",
            Action::Scale => "scale",
            Action::WouldScale => "would-scale",
            Action::ScaleFailed => "scale-failed",
            Action::NoRecommendation => "no-recommendation",
        }
    }

    fn parse(text: &str) -> Action {
        match text {
            "scale" => Action::Scale,
            "would-scale" => Action::WouldScale,
            "scale-failed" => Action::ScaleFailed,
            "no-recommendation" => Action::NoRecommendation,
            _ => Action::Hold,
        }
    }
}

/// One journal row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    pub t_ms: i64,
    pub group: String,
    pub current: u32,
    pub ready: u32,
    /// What the policy recommended; `None` when it gave nothing usable.
    pub recommendation: Option<f64>,
    /// The policy's reason, or why there was no recommendation.
    pub reason: String,
    pub target: u32,
    /// The size tier before the decision, and the one decided (equal when not scaling vertically).
    pub tier: u32,
    pub target_tier: u32,
    /// The guardrails that changed the number (JSON list of {guardrail, before, after, why}).
    pub steps: serde_json::Value,
    pub action: Action,
    /// The backend's account, or its error.
    pub outcome: String,
    pub backend_ms: Option<u64>,
    /// Summary of the metric windows the policy saw (JSON).
    pub inputs: serde_json::Value,
    /// The evaluations this row stands for: 1, or a run of identical holds (folded), of which
    /// `first_ms` is the first and `t_ms` the last; the row's text and inputs are the last's.
    pub count: u32,
    pub first_ms: i64,
}

impl Entry {
    /// What makes two holds the same for folding: the action and every number decided, the
    /// whole-replica recommendation (the fractional part differs with every sample and decides
    /// nothing: the guardrails round it up first), the guardrails that acted, the backend's
    /// account, and for a hold without a recommendation its reason. `None` for an action,
    /// which is never folded. (`reason` and `outcome` are the entry's, cleaned.)
    fn fold_key(&self) -> Option<FoldKey> {
        if !self.foldable() {
            return None;
        }
        Some(FoldKey {
            action: self.action,
            numbers: self.numbers(),
            whole: self.whole(),
            guardrails: self.guardrails().map(str::to_string).collect(),
            outcome: self.outcome.clone(),
            reason: (self.action == Action::NoRecommendation).then(|| self.reason.clone()),
        })
    }

    /// Whether this entry has `key` (see [`Entry::fold_key`]), without building its own.
    fn has_fold_key(&self, key: &FoldKey) -> bool {
        self.foldable()
            && self.action == key.action
            && self.numbers() == key.numbers
            && self.whole() == key.whole
            && self.guardrails().eq(key.guardrails.iter().map(String::as_str))
            && self.outcome == key.outcome
            && key.reason.as_deref().is_none_or(|r| r == self.reason)
    }

    /// A hold that called the backend (a describe, a failed call) is its own row.
    fn foldable(&self) -> bool {
        matches!(self.action, Action::Hold | Action::NoRecommendation) && self.backend_ms.is_none()
    }

    fn numbers(&self) -> [u32; 5] {
        [self.current, self.ready, self.target, self.tier, self.target_tier]
    }

    fn whole(&self) -> Option<i64> {
        self.recommendation.map(|r| if r.is_finite() { r.ceil() as i64 } else { i64::MIN })
    }

    fn guardrails(&self) -> impl Iterator<Item = &str> {
        let steps = match &self.steps {
            serde_json::Value::Array(steps) => steps.as_slice(),
            _ => &[],
        };
        steps.iter().map(|s| s["guardrail"].as_str().unwrap_or(""))
    }
}

/// See [`Entry::fold_key`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FoldKey {
    action: Action,
    numbers: [u32; 5],
    whole: Option<i64>,
    guardrails: Vec<String>,
    outcome: String,
    reason: Option<String>,
}

/// A group's last journal row, while it is a hold a next one like it may fold into, and what
/// has folded into it since the row was last written.
#[derive(Debug)]
pub(super) struct Fold {
    row: i64,
    key: FoldKey,
    /// The evaluations folded in and not written yet: the latest, with how many and since when
    /// in `count` and `first_ms`.
    pending: Option<Entry>,
    written: Instant,
    /// The run's latest evaluation: one after a longer gap than two intervals (the agent was
    /// a follower, stopped, or frozen meanwhile) starts a new row.
    last_ms: i64,
}

/// How long a folded run's row may lag its latest evaluation: a hold at rest costs no write
/// until then (or until the run ends, or [`Store::flush_journal`]). Readers in this process
/// flush first; another process (`agent decisions`) may see a run's count this much behind
/// (up to the store's maintenance period, a minute, once the group stopped evaluating),
/// and a killed agent loses at most this much of a run's count — never a decision.
pub const FOLD_FLUSH: Duration = Duration::from_secs(5);

/// Longest `reason` and `outcome` kept in a journal row; longer text is cut, saying how much.
pub const MAX_JOURNAL_TEXT: usize = 2048;

impl Store {
    /// Appends `entry` to the journal, its free text escaped and cut at [`MAX_JOURNAL_TEXT`]. A
    /// hold identical to the group's last row (see [`Entry::fold_key`]) folds into that row
    /// instead: its count grows, its time becomes this one's, its text and inputs this one's —
    /// in memory, written at least every [`FOLD_FLUSH`] and when the run ends. A run spans no
    /// gap longer than two of the group's intervals (`every`).
    pub fn journal(&self, mut e: Entry, every: Duration) -> Result<(), StoreError> {
        let max_gap = 2 * every.as_millis().min(i64::MAX as u128 / 4) as i64 + 1_000;
        crate::text::clean_in_place(&mut e.reason, MAX_JOURNAL_TEXT);
        crate::text::clean_in_place(&mut e.outcome, MAX_JOURNAL_TEXT);
        let mut folds = self.inner.folds.lock().unwrap_or_else(|p| p.into_inner());
        let continues = |f: &&mut Fold| e.has_fold_key(&f.key) && e.t_ms.saturating_sub(f.last_ms) <= max_gap;
        if let Some(fold) = folds.get_mut(&e.group).filter(continues) {
            fold.last_ms = e.t_ms;
            (e.count, e.first_ms) = fold.pending.as_ref().map_or((1, e.t_ms), |p| (p.count + 1, p.first_ms));
            fold.pending = Some(e);
            // Every group's fold is written together, in one transaction: at a thousand
            // groups, one commit each would be most of an evaluation's cost.
            if fold.written.elapsed() >= FOLD_FLUSH {
                self.write_folds(&mut folds)?;
            }
            return Ok(());
        }
        // The run ended: its row is brought up to date, and the new entry is written even if
        // that fails (the entry may be an action).
        let flushed = match folds.remove(&e.group) {
            Some(mut fold) => self.with(|c| write_fold(c, &mut fold)),
            None => Ok(()),
        };
        self.insert_folding(&mut folds, e)?;
        flushed
    }

    fn insert_folding(
        &self,
        folds: &mut std::collections::HashMap<String, Fold>,
        e: Entry,
    ) -> Result<(), StoreError> {
        let row = self.with(|c| {
            insert(c, &e)?;
            Ok(c.last_insert_rowid())
        })?;
        if let Some(key) = e.fold_key() {
            let fold = Fold { row, key, pending: None, written: Instant::now(), last_ms: e.t_ms };
            folds.insert(e.group, fold);
        }
        Ok(())
    }

    /// Writes what has folded into each group's row and is not written yet: before this
    /// process reads the journal, and when the agent stops.
    pub fn flush_journal(&self) -> Result<(), StoreError> {
        let mut folds = self.inner.folds.lock().unwrap_or_else(|p| p.into_inner());
        if folds.values().all(|f| f.pending.is_none()) {
            return Ok(());
        }
        self.write_folds(&mut folds)
    }

    /// Writes every fold's pending evaluations in one transaction; on failure every one stays
    /// pending (and is tried again after [`FOLD_FLUSH`]).
    fn write_folds(&self, folds: &mut std::collections::HashMap<String, Fold>) -> Result<(), StoreError> {
        let rows = self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut rows = Vec::new();
            for fold in folds.values() {
                if let Some(e) = &fold.pending {
                    rows.push(write_pending(&tx, fold.row, e)?);
                }
            }
            tx.commit()?;
            Ok(rows)
        });
        let now = Instant::now();
        let mut written = rows.as_ref().ok().map(|r| r.iter());
        for fold in folds.values_mut() {
            fold.written = now;
            // The same order as above: the map did not change in between.
            if let (Some(written), true) = (written.as_mut(), fold.pending.is_some()) {
                fold.row = *written.next().expect("a row per pending fold");
                fold.pending = None;
            }
        }
        rows.map(|_| ())
    }

    /// Journal rows whose last evaluation is at or after `since_ms`, oldest first, of one group
    /// or all (a folded run that began earlier is included whole).
    pub fn decisions(&self, group: Option<&str>, since_ms: i64) -> Result<Vec<Entry>, StoreError> {
        self.flush_journal()?;
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs, tier, target_tier, coalesce(first_t, t), count
                 FROM decisions WHERE t >= ?1 AND (?2 IS NULL OR grp = ?2) ORDER BY t, id",
            )?;
            let rows = stmt.query_map(params![since_ms, group], entry)?;
            rows.collect()
        })
    }

    /// The newest `limit` entries of `group` since `since_ms`, oldest first: what a reader that
    /// cannot afford a week of 1-s evaluations reads.
    pub fn recent_decisions(
        &self,
        group: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.flush_journal()?;
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs, tier, target_tier, coalesce(first_t, t), count
                 FROM decisions WHERE grp = ?1 AND t >= ?2 ORDER BY t DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![group, since_ms, limit as i64], entry)?;
            let mut out = rows.collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
    }

    /// Capacity over time in two passes of the index, whatever the number of evaluations: per
    /// `step_ms` bucket since `since_ms`, the bucket's last evaluation's current, ready and
    /// target; and how many evaluations there were in all.
    pub fn capacity_steps(
        &self,
        group: &str,
        since_ms: i64,
        step_ms: i64,
    ) -> Result<CapacitySteps, StoreError> {
        self.flush_journal()?;
        self.read(|c| {
            // SQLite takes the bare columns of a `max()` aggregate from the row with the maximum.
            // A folded run counts at both ends (its first time clipped to the window), so the
            // capacity it held shows from its start, not only from its last evaluation.
            let mut stmt = c.prepare_cached(
                "SELECT (t / ?3) * ?3 AS b, max(t), current, ready, target, sum(n) FROM (
                     SELECT t, current, ready, target, count AS n FROM decisions WHERE grp = ?1 AND t >= ?2
                     UNION ALL
                     SELECT max(first_t, ?2), current, ready, target, 0 FROM decisions
                     WHERE grp = ?1 AND t >= ?2 AND first_t IS NOT NULL
                 ) GROUP BY b ORDER BY b",
            )?;
            let mut rows = stmt.query(params![group, since_ms, step_ms.max(1)])?;
            let mut out = CapacitySteps::default();
            while let Some(r) = rows.next()? {
                out.t.push(r.get(0)?);
                out.current.push(r.get(2)?);
                out.ready.push(r.get(3)?);
                out.target.push(r.get(4)?);
                out.evaluations += r.get::<_, i64>(5)? as u64;
            }
            Ok(out)
        })
    }
}

fn insert(c: &rusqlite::Connection, e: &Entry) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO decisions (t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs, tier, target_tier, first_t, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        e.t_ms,
        e.group,
        e.current,
        e.ready,
        e.recommendation,
        e.reason,
        e.target,
        e.steps.to_string(),
        e.action.as_str(),
        e.outcome,
        e.backend_ms.map(|m| m as i64),
        e.inputs.to_string(),
        e.tier,
        e.target_tier,
        (e.count > 1).then_some(e.first_ms),
        e.count.max(1)
    ])
    .map(|_| ())
}

/// Writes what has folded into `fold` since it was last written: into its row, or into a new
/// one when retention took the row meanwhile. (SQLite evaluates the new values from the old
/// row: `first_t` keeps the run's first time.) What could not be written stays pending.
fn write_fold(c: &rusqlite::Connection, fold: &mut Fold) -> rusqlite::Result<()> {
    fold.written = Instant::now();
    let Some(e) = fold.pending.take() else { return Ok(()) };
    let written = write_pending(c, fold.row, &e);
    match written {
        Ok(row) => fold.row = row,
        Err(_) => fold.pending = Some(e),
    }
    written.map(|_| ())
}

/// Adds `e`'s folded evaluations to row `row`, or to a new row if it is gone; the row's id.
fn write_pending(c: &rusqlite::Connection, row: i64, e: &Entry) -> rusqlite::Result<i64> {
    let changed = c
        .prepare_cached(
            "UPDATE decisions SET first_t = coalesce(first_t, t), t = ?2, count = count + ?3,
             recommendation = ?4, reason = ?5, steps = ?6, backend_ms = ?7, inputs = ?8 WHERE id = ?1",
        )?
        .execute(params![
            row,
            e.t_ms,
            e.count,
            e.recommendation,
            e.reason,
            e.steps.to_string(),
            e.backend_ms.map(|m| m as i64),
            e.inputs.to_string()
        ])?;
    if changed == 0 {
        insert(c, e)?;
        return Ok(c.last_insert_rowid());
    }
    Ok(row)
}

/// A group's capacity per time bucket (see [`Store::capacity_steps`]).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct CapacitySteps {
    pub t: Vec<i64>,
    pub current: Vec<u32>,
    pub ready: Vec<u32>,
    pub target: Vec<u32>,
    #[serde(skip)]
    pub evaluations: u64,
}

fn entry(r: &rusqlite::Row) -> rusqlite::Result<Entry> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or(serde_json::Value::Null))
    };
    Ok(Entry {
        t_ms: r.get(0)?,
        group: r.get(1)?,
        current: r.get(2)?,
        ready: r.get(3)?,
        recommendation: r.get(4)?,
        reason: r.get(5)?,
        target: r.get(6)?,
        steps: json(7)?,
        action: Action::parse(&r.get::<_, String>(8)?),
        outcome: r.get(9)?,
        backend_ms: r.get::<_, Option<i64>>(10)?.map(|m| m as u64),
        inputs: json(11)?,
        tier: r.get(12)?,
        target_tier: r.get(13)?,
        first_ms: r.get(14)?,
        count: r.get(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The groups' interval in these tests.
    const EVERY: Duration = Duration::from_secs(1);

    #[test]
    fn entries_round_trip_per_group_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry = |t, group: &str, action| Entry {
            t_ms: t,
            group: group.into(),
            current: 2,
            ready: 2,
            recommendation: Some(3.5),
            reason: "because".into(),
            target: 4,
            tier: 1,
            target_tier: 2,
            steps: serde_json::json!([{"guardrail": "round"}]),
            action,
            outcome: "ok".into(),
            backend_ms: Some(12),
            inputs: serde_json::json!({}),
            count: 1,
            first_ms: t,
        };
        store.journal(entry(10, "web", Action::Scale), EVERY).unwrap();
        store.journal(entry(20, "api", Action::Hold), EVERY).unwrap();
        store.journal(entry(30, "web", Action::WouldScale), EVERY).unwrap();
        let web = store.decisions(Some("web"), 0).unwrap();
        assert_eq!(web.len(), 2);
        assert_eq!(web[0], entry(10, "web", Action::Scale));
        assert_eq!(web[1].action, Action::WouldScale);
        assert_eq!(store.decisions(None, 15).unwrap().len(), 2);
    }

    #[test]
    fn recent_entries_and_capacity_per_bucket_are_read_without_the_whole_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for t in 0..10 {
            let e = Entry {
                t_ms: t * 1_000,
                group: "web".into(),
                current: t as u32,
                ready: t as u32,
                recommendation: None,
                reason: String::new(),
                target: t as u32 + 1,
                tier: 0,
                target_tier: 0,
                steps: serde_json::json!([]),
                action: Action::Hold,
                outcome: String::new(),
                backend_ms: None,
                inputs: serde_json::json!({}),
                count: 1,
                first_ms: t * 1_000,
            };
            store.journal(e, EVERY).unwrap();
        }
        let recent: Vec<i64> = store.recent_decisions("web", 0, 3).unwrap().iter().map(|e| e.t_ms).collect();
        assert_eq!(recent, [7_000, 8_000, 9_000]);
        let cap = store.capacity_steps("web", 1_000, 4_000).unwrap();
        // Buckets [0,4s) (from 1s on), [4s,8s), [8s,12s); each holds its last evaluation.
        assert_eq!(cap.t, [0, 4_000, 8_000]);
        assert_eq!(cap.current, [3, 7, 9]);
        assert_eq!(cap.target, [4, 8, 10]);
        assert_eq!(cap.evaluations, 9);
    }

    fn hold(t_ms: i64, current: u32, recommendation: f64) -> Entry {
        Entry {
            t_ms,
            group: "web".into(),
            current,
            ready: current,
            recommendation: Some(recommendation),
            reason: format!("load {recommendation}"),
            target: current,
            tier: 0,
            target_tier: 0,
            steps: serde_json::json!([{"guardrail": "round", "before": recommendation, "after": recommendation.ceil()}]),
            action: Action::Hold,
            outcome: String::new(),
            backend_ms: None,
            inputs: serde_json::json!({"load": recommendation}),
            count: 1,
            first_ms: t_ms,
        }
    }

    #[test]
    fn a_run_of_identical_holds_is_one_row_with_its_count_first_and_last_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // 2.2, 2.6, 2.9 replicas all round up to 3: one decision, three evaluations.
        for (t, r) in [(1_000, 2.2), (2_000, 2.6), (3_000, 2.9)] {
            store.journal(hold(t, 3, r), EVERY).unwrap();
        }
        let scale = Entry { action: Action::Scale, target: 4, ..hold(4_000, 3, 3.5) };
        store.journal(scale, EVERY).unwrap();
        // After an action, a new run; a different whole recommendation, another.
        for (t, r) in [(5_000, 3.1), (6_000, 3.2), (7_000, 2.1)] {
            store.journal(hold(t, 4, r), EVERY).unwrap();
        }
        let rows = store.decisions(Some("web"), 0).unwrap();
        let runs: Vec<_> = rows.iter().map(|e| (e.first_ms, e.t_ms, e.count, e.action)).collect();
        assert_eq!(
            runs,
            [
                (1_000, 3_000, 3, Action::Hold),
                (4_000, 4_000, 1, Action::Scale),
                (5_000, 6_000, 2, Action::Hold),
                (7_000, 7_000, 1, Action::Hold)
            ]
        );
        // The folded row reads as its last evaluation.
        assert_eq!(rows[0].recommendation, Some(2.9));
        assert_eq!(rows[0].reason, "load 2.9");
        assert_eq!(rows[0].inputs, serde_json::json!({"load": 2.9}));
        // A window starting inside a run includes the run whole; evaluations count its count.
        assert_eq!(store.decisions(Some("web"), 2_500).unwrap()[0].first_ms, 1_000);
        assert_eq!(store.capacity_steps("web", 0, 1_000).unwrap().evaluations, 7);
    }

    #[test]
    fn a_folded_run_shows_its_capacity_from_its_first_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.journal(Entry { action: Action::Scale, target: 3, ..hold(0, 2, 2.5) }, EVERY).unwrap();
        for t in 1..=9 {
            store.journal(hold(t * 1_000, 3, 2.5), EVERY).unwrap();
        }
        let cap = store.capacity_steps("web", 0, 2_000).unwrap();
        // Without the run's first time, bucket [0, 2s) would end at 2 replicas until 8 s.
        assert_eq!(cap.t, [0, 8_000]);
        assert_eq!(cap.current, [3, 3]);
        assert_eq!(cap.evaluations, 10);
        // A window that opens inside the run starts with it.
        let cap = store.capacity_steps("web", 4_500, 2_000).unwrap();
        assert_eq!(cap.t, [4_000, 8_000]);
    }

    #[test]
    fn a_hold_without_a_recommendation_folds_only_with_the_same_reason_and_a_lost_row_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let none = |t, why: &str| Entry {
            action: Action::NoRecommendation,
            recommendation: None,
            reason: why.into(),
            ..hold(t, 2, 0.0)
        };
        store.journal(none(1, "policy timed out"), EVERY).unwrap();
        store.journal(none(2, "policy timed out"), EVERY).unwrap();
        store.journal(none(3, "metric app.load missing"), EVERY).unwrap();
        let counts: Vec<u32> = store.decisions(None, 0).unwrap().iter().map(|e| e.count).collect();
        assert_eq!(counts, [2, 1]);
        // Retention deleted the row being folded into: the next hold starts a new one.
        store.with(|c| c.execute("DELETE FROM decisions", [])).unwrap();
        store.journal(none(4, "metric app.load missing"), EVERY).unwrap();
        let rows = store.decisions(None, 0).unwrap();
        assert_eq!((rows.len(), rows[0].count, rows[0].t_ms), (1, 1, 4));
    }

    #[test]
    fn a_run_spans_no_gap_longer_than_two_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // An agent that was a follower (or stopped) from 3 s to 9 s evaluated nothing then.
        for t in [1_000, 2_000, 3_000, 9_000, 10_000] {
            store.journal(hold(t, 3, 2.5), EVERY).unwrap();
        }
        let rows = store.decisions(Some("web"), 0).unwrap();
        let runs: Vec<_> = rows.iter().map(|e| (e.first_ms, e.t_ms, e.count)).collect();
        assert_eq!(runs, [(1_000, 3_000, 3), (9_000, 10_000, 2)]);
    }
}
