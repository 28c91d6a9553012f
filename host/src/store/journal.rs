//! The decision journal: every evaluation of every scaling group, with its inputs, what the
//! policy said, what each guardrail changed, and what the backend did.

use super::{Store, StoreError};
use rusqlite::params;
use serde::Serialize;

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
}

/// Longest `reason` and `outcome` kept in a journal row; longer text is cut, saying how much.
pub const MAX_JOURNAL_TEXT: usize = 2048;

impl Store {
    /// Appends `entry` to the journal, its free text escaped and cut at [`MAX_JOURNAL_TEXT`].
    pub fn journal(&self, e: &Entry) -> Result<(), StoreError> {
        let reason = crate::text::clean(&e.reason, MAX_JOURNAL_TEXT);
        let outcome = crate::text::clean(&e.outcome, MAX_JOURNAL_TEXT);
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO decisions (t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs, tier, target_tier)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                e.t_ms,
                e.group,
                e.current,
                e.ready,
                e.recommendation,
                reason,
                e.target,
                e.steps.to_string(),
                e.action.as_str(),
                outcome,
                e.backend_ms.map(|m| m as i64),
                e.inputs.to_string(),
                e.tier,
                e.target_tier
            ])
            .map(|_| ())
        })
    }

    /// Journal entries since `since_ms`, oldest first, of one group or all.
    pub fn decisions(&self, group: Option<&str>, since_ms: i64) -> Result<Vec<Entry>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs, tier, target_tier
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
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t, grp, current, ready, recommendation, reason, target, steps, action, outcome, backend_ms, inputs, tier, target_tier
                 FROM decisions WHERE grp = ?1 AND t >= ?2 ORDER BY t DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![group, since_ms, limit as i64], entry)?;
            let mut out = rows.collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
    }

    /// Capacity over time in one pass of the index, whatever the number of evaluations: per
    /// `step_ms` bucket since `since_ms`, the bucket's last evaluation's current, ready and
    /// target; and how many evaluations there were in all.
    pub fn capacity_steps(
        &self,
        group: &str,
        since_ms: i64,
        step_ms: i64,
    ) -> Result<CapacitySteps, StoreError> {
        self.read(|c| {
            // SQLite takes the bare columns of a `max()` aggregate from the row with the maximum.
            let mut stmt = c.prepare_cached(
                "SELECT (t / ?3) * ?3 AS b, max(t), current, ready, target, count(*) FROM decisions
                 WHERE grp = ?1 AND t >= ?2 GROUP BY b ORDER BY b",
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        store.journal(&entry(10, "web", Action::Scale)).unwrap();
        store.journal(&entry(20, "api", Action::Hold)).unwrap();
        store.journal(&entry(30, "web", Action::WouldScale)).unwrap();
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
            };
            store.journal(&e).unwrap();
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
}
