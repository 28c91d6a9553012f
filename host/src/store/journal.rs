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
            let rows = stmt.query_map(params![since_ms, group], |r| {
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
            })?;
            rows.collect()
        })
    }
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
}
