//! `agent tune`: a group's own week of history, seeded into the agent's database as the agent
//! keeps it (1-minute rollups and a decision journal), replayed through its deliberately poor
//! running policy and the candidates; the recommendation must beat it on both axes, on the part
//! it was chosen on and on the held-out rest.

use crate::common::{agent_cli, plugin, plugin_dir, root};
use rusqlite::params;
use std::path::Path;

const MINUTE: i64 = 60_000;

/// The last 7 days of the NASA trace as `web.requests` per minute, ending now, and a journal
/// row per hour (tune reads the units from it; the group's policy sees the demand itself).
fn seed_week(dir: &Path) -> usize {
    drop(agent::store::Store::open(dir).expect("creating the database"));
    let text = std::fs::read_to_string(root().join("tests/traces/nasa-http-1995.csv")).unwrap();
    let demand: Vec<f64> =
        text.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    let week = &demand[demand.len() - 7 * 1440..];
    let now = agent::timefmt::now_ms();
    let rolled_until = now / MINUTE * MINUTE - MINUTE;
    let first = rolled_until - week.len() as i64 * MINUTE;
    let mut conn = rusqlite::Connection::open(dir.join("agent.db")).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO series (name, labels) VALUES ('web.requests', '{}')", []).unwrap();
    let id = tx.last_insert_rowid();
    {
        let mut rollup = tx
            .prepare("INSERT INTO rollups (series, t, n, min, max, sum) VALUES (?1, ?2, 1, ?3, ?3, ?3)")
            .unwrap();
        let mut journal = tx
            .prepare(
                "INSERT INTO decisions (t, grp, current, ready, recommendation, reason, target, steps, action, outcome, inputs)
                 VALUES (?1, 'web', 2, 2, 2.0, 'seeded', 2, '[]', 'hold', '', '{}')",
            )
            .unwrap();
        for (i, v) in week.iter().enumerate() {
            let t = first + i as i64 * MINUTE;
            rollup.execute(params![id, t, v]).unwrap();
            if i % 60 == 0 {
                journal.execute(params![t]).unwrap();
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollup_until', ?1)",
        [rolled_until.to_string()],
    )
    .unwrap();
    tx.commit().unwrap();
    week.len()
}

#[test]
fn tune_recommends_a_setting_better_on_both_axes_than_a_poor_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let points = seed_week(&data);
    let plugins = plugin_dir(&[&plugin("target-tracking"), &plugin("predictive")]);
    // Deliberately poor: the median demand of the last 3 hours plus 50 % — late to every
    // jump, and the same head-room whether the demand is calm or jumping.
    let poor =
        r#"{ method = "quantile", capacity_per_unit = 50, quantile = 0.5, trend_over = "1m", margin = 0.5 }"#;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nplugins = \"{}\"\ndata_dir = \"{}\"\n[[group]]\nname = \"web\"\ninterval = \"1m\"\n\
             metrics = [{{ name = \"web.requests\", window = \"3h\" }}]\npolicy = \"predictive\"\n\
             policy_config = {poor}\nbackend = \"ledger\"\nmin = 1\nmax = 20\n[group.scale_down]\nstabilization = \"3m\"\n",
            plugins.path().display(),
            data.display()
        ),
    )
    .unwrap();
    let (code, out, err) = agent_cli(&["tune", "web", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    // The week ends at the last complete minute: tune's 7 days may miss its first minutes.
    let read = v["points"].as_u64().unwrap() as usize;
    assert!(read <= points && read >= points - 3, "{read} of {points}");
    assert!(v["cut_short"].is_null() && v["skipped"] == serde_json::json!([]), "{v}");
    eprintln!(
        "agent tune replayed {} settings over {read} minutes in {:.1} s",
        v["tried"].as_array().unwrap().len(),
        v["seconds"]
    );
    let tried = v["tried"].as_array().unwrap();
    assert!(tried.len() >= 10, "{v}");
    let running = tried.iter().find(|t| t["running"] == true).expect("the running setting is replayed");
    assert_eq!(running["policy_config"]["margin"], 0.5);
    let pick = &v["recommended"];
    assert!(pick.is_object(), "no recommendation: {v:#}");
    for part in ["tuned", "held_out"] {
        let (a, b) = (&pick[part], &running[part]);
        let units = |s: &serde_json::Value| s["average_units"].as_f64().unwrap();
        let under = |s: &serde_json::Value| s["timeshare_u"].as_f64().unwrap();
        assert!(units(a) < units(b) && under(a) < under(b), "{part}: {a} against the running {b}");
        // Every setting reports its scaling actions.
        assert!(a["actions"].as_u64().unwrap() > 0 && b["actions"].as_u64().unwrap() > 0);
    }
    // The table marks both and prints the setting ready to paste.
    let (code, out, err) = agent_cli(&["tune", "web", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    if std::env::var_os("TUNE_PRINT").is_some() {
        eprintln!("{out}");
    }
    assert!(out.contains("← running") && out.contains("← recommended"), "{out}");
    let pasted = out.lines().find(|l| l.starts_with("policy_config = {")).expect(&out);
    let table: toml::Table = toml::from_str(pasted).unwrap_or_else(|e| panic!("{e}: {pasted}"));
    assert_eq!(serde_json::to_value(&table["policy_config"]).unwrap(), pick["policy_config"], "{out}");
}

#[test]
fn tune_says_what_is_missing_without_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    drop(agent::store::Store::open(&data).unwrap());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ndata_dir = \"{}\"\n[[group]]\nname = \"web\"\ninterval = \"1m\"\nmetrics = [{{ name = \"web.requests\", window = \"1m\" }}]\n\
             policy = \"target-tracking\"\npolicy_config = {{ target = 0.6 }}\nbackend = \"ledger\"\nmin = 1\nmax = 4\n",
            data.display()
        ),
    )
    .unwrap();
    let (code, _, err) = agent_cli(&["tune", "web", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("metric `web.requests` has 0 points") && err.lines().count() <= 2, "{err}");
    let (code, _, err) = agent_cli(&["tune", "nope", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("no [[group]] named `nope`"), "{err}");
}
