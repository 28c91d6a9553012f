//! Runs of journal entries that say the same, for people: the page's timeline and
//! `agent decisions` show one line per run. The journal already folds holds identical to the
//! number (see `journal`); a run also joins holds whose inputs differ but whose outcome does not
//! (same action, same replicas, same guardrails), which is what a reader asks of a timeline.

use super::journal::{Action, Entry};
use serde::Serialize;

/// A journal entry and how many evaluations after it said the same.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    #[serde(flatten)]
    pub entry: Entry,
    /// Evaluations after the first that the run stands for (with those the journal folded).
    pub repeats: u32,
    /// Unix milliseconds of the run's last evaluation.
    pub last_ms: i64,
}

impl Run {
    /// One journal row as it is (which may stand for identical holds the journal folded).
    pub fn one(entry: Entry) -> Run {
        let (repeats, last_ms) = (entry.count.max(1) - 1, entry.t_ms);
        Run { entry, repeats, last_ms }
    }
}

/// What makes an evaluation worth its own line: what was done, from and to what, and which
/// guardrails changed the number (rounding aside: it almost always does).
fn signature(e: &Entry) -> (Action, u32, u32, u32, Vec<&str>) {
    let steps = e.steps.as_array().map(Vec::as_slice).unwrap_or_default();
    let guardrails = steps.iter().filter_map(|s| s["guardrail"].as_str()).filter(|g| *g != "round").collect();
    (e.action, e.current, e.target, e.target_tier, guardrails)
}

/// Run-length: an entry that says what the one before it said is counted in that one's
/// `repeats` (with the evaluations the journal folded into it); every action other than a hold
/// is its own run.
pub fn runs(entries: &[Entry]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut last = None;
    for e in entries {
        let sig = signature(e);
        let same = e.action == Action::Hold && last.as_ref() == Some(&sig);
        match out.last_mut() {
            Some(run) if same => {
                run.repeats += e.count.max(1);
                run.last_ms = e.t_ms;
            }
            // A row the journal folded stands for `count` evaluations already.
            _ => out.push(Run { entry: e.clone(), repeats: e.count.max(1) - 1, last_ms: e.t_ms }),
        }
        last = Some(sig);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(t_ms: i64, action: Action, current: u32, target: u32, guardrails: &[&str]) -> Entry {
        let steps: Vec<_> = guardrails.iter().map(|g| json!({"guardrail": g})).collect();
        Entry {
            t_ms,
            group: "web".into(),
            current,
            ready: current,
            recommendation: Some(target as f64),
            reason: format!("at {t_ms}"),
            target,
            tier: 0,
            target_tier: 0,
            steps: json!(steps),
            action,
            outcome: String::new(),
            backend_ms: None,
            inputs: json!({}),
            count: 1,
            first_ms: t_ms,
        }
    }

    #[test]
    fn repeated_holds_fold_into_one_run_and_actions_stay_apart() {
        let entries = vec![
            entry(1, Action::Hold, 2, 2, &["round"]),
            entry(2, Action::Hold, 2, 2, &["round"]),
            entry(3, Action::Hold, 2, 2, &["round", "stabilization"]),
            entry(4, Action::Hold, 2, 2, &["stabilization"]),
            entry(5, Action::Scale, 2, 3, &["round"]),
            entry(6, Action::Scale, 3, 4, &["round"]),
            entry(7, Action::Hold, 4, 4, &[]),
        ];
        let summary: Vec<(i64, u32, i64)> =
            runs(&entries).iter().map(|r| (r.entry.t_ms, r.repeats, r.last_ms)).collect();
        assert_eq!(summary, [(1, 1, 2), (3, 1, 4), (5, 0, 5), (6, 0, 6), (7, 0, 7)]);
    }

    #[test]
    fn a_row_the_journal_folded_counts_every_evaluation_it_stands_for() {
        let folded = |t, count| Entry { count, first_ms: t - 10, ..entry(t, Action::Hold, 2, 2, &[]) };
        let entries = vec![folded(20, 5), folded(40, 3), entry(50, Action::Scale, 2, 3, &[]), folded(70, 4)];
        let summary: Vec<(i64, u32)> = runs(&entries).iter().map(|r| (r.entry.t_ms, r.repeats)).collect();
        assert_eq!(summary, [(20, 7), (50, 0), (70, 3)]);
    }
}
