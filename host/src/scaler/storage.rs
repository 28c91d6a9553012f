//! One evaluation of a storage group (`[group.storage]`): the volume's size from the backend's
//! `volumes.describe`, the policy asked in GiB (its `capacity.replicas` is the size), the
//! storage guardrails (`decide::storage`: never shrink, one resize at a time, at most `per_day`
//! a day counted from the journal, cooldown, steps, bounds), the backend's `volumes.resize`,
//! then the filesystem at `mount` grown inside this server. Everything lands in one journal
//! entry: `current`/`target` are GiB, the outcome says what the cloud and each growing step did.

use super::group::{policy_context, step_json, unrecorded, windows, GroupPlugins, Windows};
use crate::config::{GroupSpec, StorageSpec};
use crate::decide::decision::Advice;
use crate::decide::storage::{decide_size, failures_from_journal, resizes_from_journal, SizeDecision};
use crate::plugins::types::{Capacity, Volume, VolumeGroup};
use crate::storage::grow;
use crate::store::{Action, JournalEntry, Store};
use std::time::{Duration, Instant};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// One evaluation: the journal entry, and the volume as described (for `/status`).
pub(super) async fn evaluate(
    spec: &GroupSpec,
    storage: &StorageSpec,
    plugins: &impl GroupPlugins,
    store: &Store,
    now: i64,
    grow_tried: &mut Option<GrowTried>,
) -> (JournalEntry, Option<Volume>) {
    let group = VolumeGroup { name: spec.name.clone(), params: spec.backend_params.clone() };
    let mut volume = match plugins.describe_volume(&group).await {
        Ok(v) => v,
        Err(why) => return (unrecorded(spec, now, why), None),
    };
    let caught_up = follow_the_volume(spec, storage, &mut volume, grow_tried, now).await;
    let current = volume.size_gib;
    let Windows { windows, missing, inputs } = windows(spec, store, now);
    let advice = if missing.is_empty() {
        let capacity =
            Capacity { replicas: gib32(current), ready: gib32(current), tier: 0, tier_name: String::new() };
        let bounds = spec.rules().bounds(now);
        plugins.advise(policy_context(spec, &bounds, capacity, windows, now)).await
    } else {
        Err(format!("no data for {} in the window; holding", missing.join(", ")))
    };
    let mut entry = unrecorded(spec, now, String::new());
    if let Some(report) = &caught_up {
        entry.outcome = grown(report);
        entry.steps = serde_json::Value::Array(grow_steps(report).collect());
    }
    entry.current = gib32(current);
    entry.ready = gib32(current);
    entry.target = gib32(current);
    entry.inputs = inputs;
    let advice = match advice {
        Ok(a) => a,
        Err(why) => {
            entry.reason = why;
            return (entry, Some(volume));
        }
    };
    let decided = decide(spec, storage, store, &volume, &advice, now);
    entry.recommendation = Some(advice.replicas);
    entry.reason = match &decided.plugin_fault {
        Some(fault) => format!("policy `{}` misbehaved: {fault}; holding", spec.policy),
        None => advice.reason,
    };
    entry.action = if decided.plugin_fault.is_some() { Action::NoRecommendation } else { Action::Hold };
    entry.target = gib32(decided.target_gib);
    if let serde_json::Value::Array(steps) = &mut entry.steps {
        // The guardrails first, then what catching up ran.
        let grow = std::mem::take(steps);
        steps.extend(decided.steps.iter().map(step_json));
        steps.extend(grow);
    }
    if decided.target_gib > current {
        act(spec, storage, plugins, &group, &volume, decided.target_gib, &mut entry).await;
    }
    (entry, Some(volume))
}

/// The storage guardrails on the advice, with the resizes of the last day (and of the cooldown,
/// when longer) read from the journal: a restart forgets nothing.
fn decide(
    spec: &GroupSpec,
    storage: &StorageSpec,
    store: &Store,
    volume: &Volume,
    advice: &Advice,
    now: i64,
) -> SizeDecision {
    let lookback = DAY_MS.max(storage.rules.cooldown_ms);
    let rows = match store.decisions(Some(&spec.name), now - lookback) {
        Ok(rows) => rows,
        Err(e) => {
            // Without the history the daily limit cannot be honoured: hold rather than guess.
            let why = format!("reading the journal for the daily limit: {e}");
            return SizeDecision::hold(volume.size_gib, advice.replicas, "journal", why);
        }
    };
    let rows: Vec<_> =
        rows.iter().map(|e| (e.t_ms, e.action.as_str(), e.current as u64, e.target as u64)).collect();
    let resizes = resizes_from_journal(rows.iter().copied(), now);
    let failures = failures_from_journal(rows.iter().copied(), now);
    let pending = volume.pending.as_deref();
    decide_size(&storage.rules, volume.size_gib, advice.replicas, now, &resizes, pending, &failures)
}

/// Grows the volume (unless dry run), then the filesystem; the entry gets the action and the
/// outcome of both.
async fn act(
    spec: &GroupSpec,
    storage: &StorageSpec,
    plugins: &impl GroupPlugins,
    group: &VolumeGroup,
    volume: &Volume,
    target: u64,
    entry: &mut JournalEntry,
) {
    let current = volume.size_gib;
    if spec.dry_run {
        entry.action = Action::WouldScale;
        entry.outcome = format!("dry run: would grow volume {} from {current} to {target} GiB", volume.id);
        return;
    }
    let decision = super::group::decision_id(&spec.name, None, entry.t_ms);
    let started = Instant::now();
    let resized = plugins.resize_volume(group, target, decision).await;
    entry.backend_ms = Some(started.elapsed().as_millis() as u64);
    let resized = match resized {
        Ok(r) => r,
        Err(why) => {
            entry.action = Action::ScaleFailed;
            entry.outcome = why;
            return;
        }
    };
    entry.action = Action::Scale;
    entry.outcome = resized.detail;
    let Some(mount) = &storage.mount else { return };
    if resized.volume.pending.is_some() || resized.volume.size_gib < target {
        // The cloud has not finished: the filesystem follows once it has (see
        // `follow_the_volume`), not by waiting here for a size the kernel cannot see yet.
        entry.outcome.push_str(&format!("; the filesystem at {} grows once the volume has", mount.display()));
        return;
    }
    tracing::info!(
        group = %spec.name,
        "volume {} grown to {} GiB; growing the filesystem at {} (waiting up to {} for the kernel to see the new size)",
        resized.volume.id,
        resized.volume.size_gib,
        mount.display(),
        crate::duration::format(storage.grow_wait)
    );
    let request = grow::Request {
        mount_point: mount.clone(),
        device_bytes: Some(resized.volume.size_gib.max(target) << 30),
        wait: storage.grow_wait,
    };
    let report = match tokio::task::spawn_blocking(move || grow::grow(&request)).await {
        Ok(report) => report,
        Err(e) => {
            entry.outcome.push_str(&format!("; growing {} did not finish: {e}", mount.display()));
            return;
        }
    };
    entry.outcome.push_str(&format!("; {}", grown(&report)));
    if let serde_json::Value::Array(steps) = &mut entry.steps {
        steps.extend(grow_steps(&report));
    }
}

/// Retried at most this often while a filesystem lags its volume and the kernel sees no new
/// size (a grow that fails the same way is not run every evaluation).
const GROW_RETRY_MS: i64 = 5 * 60 * 1000;

/// The last time the agent grew a lagging filesystem: the disk size the kernel saw then, and
/// whether the grow went through (the filesystem is then as large as that disk allows, though
/// it may hold less than the volume: a partition that cannot grow, a layout of the operator's).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct GrowTried {
    t_ms: i64,
    disk_bytes: Option<u64>,
    done: bool,
}

/// Keeps the filesystem at the group's mount in step with its volume. When it lags (the last
/// resize grew the volume but not the filesystem: a grow that failed or timed out, a restart in
/// between), it is grown again — when the kernel sees a new disk size since the last try, or
/// `GROW_RETRY_MS` after it; never in a dry run — and the volume is marked pending, so no resize
/// starts until it caught up. Returns the grow's report when one ran.
async fn follow_the_volume(
    spec: &GroupSpec,
    storage: &StorageSpec,
    volume: &mut Volume,
    tried: &mut Option<GrowTried>,
    now: i64,
) -> Option<grow::Report> {
    let mount = storage.mount.clone()?;
    let bytes = volume.size_gib << 30;
    let at = mount.clone();
    let lag = tokio::task::spawn_blocking(move || grow::behind(&at, bytes)).await.ok()??;
    let last = tried.filter(|t| t.disk_bytes == lag.disk_bytes);
    if last.is_some_and(|t| t.done) {
        return None; // grown as far as this disk allows: not a lag to wait for
    }
    let mut report = None;
    if !spec.dry_run && last.is_none_or(|t| now - t.t_ms >= GROW_RETRY_MS) {
        let request = grow::Request { mount_point: mount, device_bytes: Some(bytes), wait: Duration::ZERO };
        let r = tokio::task::spawn_blocking(move || grow::grow(&request)).await.ok();
        let done = r.as_ref().is_some_and(|r| r.error.is_none());
        *tried = Some(GrowTried { t_ms: now, disk_bytes: lag.disk_bytes, done });
        if let Some(why) = r.as_ref().and_then(|r| r.error.as_ref()) {
            tracing::warn!(group = %spec.name, "{}; growing it failed: {why}", lag.why);
        }
        report = r;
    }
    volume.pending.get_or_insert(format!("{}: no resize until it caught up", lag.why));
    report
}

/// A grow's steps as the journal keeps them beside the guardrails': `grow` names the step.
fn grow_steps(report: &grow::Report) -> impl Iterator<Item = serde_json::Value> + '_ {
    report.steps.iter().map(|s| serde_json::json!({"grow": s.step, "ran": s.ran, "saw": s.saw, "ok": s.ok}))
}

/// The filesystem's part of the outcome, in a sentence.
fn grown(report: &grow::Report) -> String {
    let mount = report.mount_point.display();
    let size = |b: Option<u64>| b.map(grow::human).unwrap_or_else(|| "?".into());
    match &report.error {
        None if report.grew() => format!(
            "filesystem {mount} ({}) grown from {} to {}",
            report.fstype.as_deref().unwrap_or("?"),
            size(report.before_bytes),
            size(report.after_bytes)
        ),
        None => format!("filesystem {mount} already fills its device ({})", size(report.after_bytes)),
        Some(why) => format!("filesystem {mount} NOT grown (the volume stays grown): {why}"),
    }
}

/// GiB in the journal's replica columns.
fn gib32(gib: u64) -> u32 {
    u32::try_from(gib).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::types::{Group, Outcome, PolicyContext, Resized, Target};
    use std::sync::Mutex;

    /// A cloud with one volume, and a policy that wants `wants` GiB.
    struct Cloud {
        size: Mutex<u64>,
        wants: Mutex<f64>,
        pending: Mutex<Option<String>>,
        asked: Mutex<Vec<u64>>,
        refuse: Mutex<Option<String>>,
    }

    impl GroupPlugins for Cloud {
        async fn describe(&self, _: &Group, _: u32) -> Result<Capacity, String> {
            unreachable!("a storage group is described by volumes.describe")
        }
        async fn advise(&self, ctx: PolicyContext) -> Result<Advice, String> {
            assert_eq!(ctx.current.replicas as u64, *self.size.lock().unwrap(), "the policy sees GiB");
            Ok(Advice { replicas: *self.wants.lock().unwrap(), tier: None, reason: "full".into() })
        }
        async fn scale(&self, _: &Group, _: Target, _: u32, _: String) -> Result<Outcome, String> {
            unreachable!("a storage group is resized by volumes.resize")
        }
        async fn describe_volume(&self, _: &VolumeGroup) -> Result<Volume, String> {
            let size_gib = *self.size.lock().unwrap();
            let pending = self.pending.lock().unwrap().clone();
            Ok(Volume {
                id: "vol-1".into(),
                size_gib,
                status: "in-use".into(),
                pending,
                ..Default::default()
            })
        }
        async fn resize_volume(
            &self,
            g: &VolumeGroup,
            size_gib: u64,
            decision: String,
        ) -> Result<Resized, String> {
            assert!(decision.starts_with("data#"), "{decision}");
            self.asked.lock().unwrap().push(size_gib);
            if let Some(why) = self.refuse.lock().unwrap().clone() {
                return Err(why);
            }
            *self.size.lock().unwrap() = size_gib;
            Ok(Resized {
                volume: self.describe_volume(g).await?,
                detail: format!("extended to {size_gib} GiB"),
            })
        }
    }

    fn spec(extra: &str) -> GroupSpec {
        let text = format!(
            "[[group]]\nname = \"data\"\npolicy = \"p\"\nbackend = \"b\"\n[group.storage]\n\
             min_size = \"1GiB\"\nmax_size = \"10GiB\"\nstep_max_size = \"1GiB\"\n{extra}"
        );
        crate::config::Config::parse(&text, std::path::Path::new("agent.toml")).unwrap().groups.remove(0)
    }

    /// Evaluates at `t` and journals the entry, as the loop does.
    fn tick(spec: &GroupSpec, cloud: &Cloud, store: &Store, t: i64) -> JournalEntry {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let storage = spec.storage.clone().unwrap();
        let (entry, _) = rt.block_on(evaluate(spec, &storage, cloud, store, t, &mut None));
        store.journal(entry.clone(), spec.interval).unwrap();
        entry
    }

    fn cloud(size: u64, wants: f64) -> Cloud {
        Cloud {
            size: size.into(),
            wants: wants.into(),
            pending: None.into(),
            asked: Vec::new().into(),
            refuse: None.into(),
        }
    }

    fn held_by(e: &JournalEntry) -> Vec<String> {
        e.steps.as_array().unwrap().iter().filter_map(|s| s["guardrail"].as_str().map(String::from)).collect()
    }

    #[test]
    fn a_volume_grows_step_by_step_never_shrinks_and_keeps_its_daily_limit_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec("per_day = 2\n");
        let t0 = 1_700_000_000_000;
        let c = cloud(1, 9.0);
        {
            let store = Store::open(dir.path()).unwrap();
            let e = tick(&spec, &c, &store, t0);
            assert_eq!((e.action, e.current, e.target), (Action::Scale, 1, 2), "{e:?}");
            assert_eq!(held_by(&e), ["step-max"]);
            let e = tick(&spec, &c, &store, t0 + 60_000);
            assert_eq!((e.action, e.current, e.target), (Action::Scale, 2, 3), "{e:?}");
        }
        // A new agent (a new store handle on the same file) remembers the two resizes.
        let store = Store::open(dir.path()).unwrap();
        let e = tick(&spec, &c, &store, t0 + 120_000);
        assert_eq!((e.action, e.target), (Action::Hold, 3), "{e:?}");
        assert_eq!(held_by(&e), ["per-day"]);
        // A day after the first resize, one more is allowed.
        let e = tick(&spec, &c, &store, t0 + DAY_MS + 1);
        assert_eq!((e.action, e.current, e.target), (Action::Scale, 3, 4), "{e:?}");
        // Usage drops: the policy wants 1 GiB, the volume stays.
        *c.wants.lock().unwrap() = 1.0;
        let e = tick(&spec, &c, &store, t0 + DAY_MS + 60_000);
        assert_eq!((e.action, e.current, e.target), (Action::Hold, 4, 4), "{e:?}");
        assert_eq!(held_by(&e), ["never-shrink"]);
        assert!(e.steps[0]["why"].as_str().unwrap().contains("a volume never shrinks"), "{e:?}");
        assert_eq!(*c.asked.lock().unwrap(), [2, 3, 4], "never asked below the current size");
    }

    #[test]
    fn no_resize_while_the_last_one_is_pending_and_none_in_a_dry_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = cloud(2, 5.0);
        *c.pending.lock().unwrap() = Some("extending".into());
        let e = tick(&spec(""), &c, &store, 1_700_000_000_000);
        assert_eq!((e.action, e.target), (Action::Hold, 2), "{e:?}");
        assert_eq!(held_by(&e), ["in-progress"]);
        *c.pending.lock().unwrap() = None;
        let e = tick(&spec("\n"), &c, &store, 1_700_000_060_000);
        assert_eq!(e.action, Action::Scale);
        let dry = {
            let mut s = spec("");
            s.dry_run = true;
            s
        };
        let e = tick(&dry, &c, &store, 1_700_000_120_000);
        assert_eq!(e.action, Action::WouldScale, "{e:?}");
        assert!(e.outcome.starts_with("dry run: would grow volume vol-1 from 3 to 4 GiB"), "{}", e.outcome);
        assert_eq!(*c.asked.lock().unwrap(), [3]);
    }

    #[test]
    fn a_refused_resize_is_retried_after_a_backoff_not_every_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = cloud(2, 5.0);
        *c.refuse.lock().unwrap() = Some("quota-exceeded: gigabytes".into());
        let t0 = 1_700_000_000_000;
        let e = tick(&spec(""), &c, &store, t0);
        assert_eq!((e.action, e.outcome.as_str()), (Action::ScaleFailed, "quota-exceeded: gigabytes"));
        let e = tick(&spec(""), &c, &store, t0 + 30_000);
        assert_eq!((e.action, held_by(&e)), (Action::Hold, vec!["backoff".to_string()]), "{e:?}");
        let e = tick(&spec(""), &c, &store, t0 + 61_000);
        assert_eq!(e.action, Action::ScaleFailed, "tried again after a minute");
        // Two in a row: two minutes now.
        let e = tick(&spec(""), &c, &store, t0 + 61_000 + 90_000);
        assert_eq!(held_by(&e), ["backoff"]);
        *c.refuse.lock().unwrap() = None;
        let e = tick(&spec(""), &c, &store, t0 + 61_000 + 121_000);
        assert_eq!((e.action, e.target), (Action::Scale, 3));
        assert_eq!(c.asked.lock().unwrap().len(), 3, "three calls in four minutes, not one per evaluation");
    }
}
