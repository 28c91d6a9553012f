//! One watch per agent over the groups' keys in etcd (`PREFIX/groups/`), so that an agent at
//! rest asks etcd nothing to know its role: the last state of each group's leader key as the
//! watch (or a campaign) saw it, and whether the watch is in step with etcd.
//!
//! Only what cannot go stale unnoticed is answered from here: a leader key under a lease. etcd
//! deletes such a key when its lease ends (the leader died, stopped renewing or resigned), and
//! the watch then says so; a key without a lease (forged) is left to the campaign's vacancy rule.
//! A watch that breaks or that etcd cancels starts over from now, its cache dropped: every group
//! campaigns once more (one request each). Resuming from the last revision seen would replay
//! what was missed, but nothing says when the replay is over — etcd sends no message for an
//! empty one — so a cache kept across a break could answer from before it.

use super::etcd::{self, Etcd, Event, WatchMessage, WatchStream};
use super::{holder, spread, Role};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first wait before reopening a watch, doubling up to [`BACKOFF_MAX`]; reset once a watch
/// has stayed open that long (a member that cancels each new watch is not asked in a loop).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What was last seen of one group's leader key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Held {
    Kv(etcd::Kv),
    Deleted { mod_revision: i64 },
}

impl Held {
    fn mod_revision(&self) -> i64 {
        match self {
            Held::Kv(kv) => kv.mod_revision,
            Held::Deleted { mod_revision } => *mod_revision,
        }
    }
}

/// What the watch has seen. Pure: the rules of the cache, tested without etcd.
#[derive(Debug)]
pub(super) struct Seen {
    /// The watch is created and has not broken since: every change reaches this cache.
    synced: bool,
    /// The revision from which every change is (or will be) delivered. A campaign's read at
    /// revision R may be kept only if R + 1 reaches it: nothing between them was missed.
    covered_from: i64,
    /// The member the watch is open on.
    endpoint: Option<usize>,
    leaders: BTreeMap<String, Held>,
    /// The agents registered under `PREFIX/agents/`, listed after the watch opened, and the
    /// revision of that list (changes up to it are in it); `None` until listed.
    agents: Option<(BTreeSet<String>, i64)>,
    /// Per group whose key the watch saw go: when, and who held it (for [`spread`]).
    vacated: BTreeMap<String, (Instant, Option<String>)>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            synced: false,
            covered_from: i64::MAX,
            endpoint: None,
            leaders: BTreeMap::new(),
            agents: None,
            vacated: BTreeMap::new(),
        }
    }
}

impl Seen {
    pub(super) fn synced(&self) -> bool {
        self.synced
    }

    /// The watch was created, from now, when etcd was at `revision`.
    fn created(&mut self, revision: i64, endpoint: usize) {
        self.synced = true;
        self.endpoint = Some(endpoint);
        self.covered_from = revision.saturating_add(1);
    }

    /// The stream ended: changes may be missed from here. Start over from now, every group
    /// campaigning once more.
    fn lost(&mut self) {
        *self = Seen::default();
    }

    /// Applies a change of the leader key of `group`.
    fn changed(&mut self, group: &str, held: Held) {
        self.record(group, held);
    }

    /// Keeps `held` for `group` unless a later state of the key is already known (a campaign's
    /// answer and the watch's event for the same change arrive in either order). A deletion
    /// remembers when, and who held the key.
    fn record(&mut self, group: &str, held: Held) -> bool {
        if self.leaders.get(group).is_some_and(|h| h.mod_revision() > held.mod_revision()) {
            return false;
        }
        match (&held, self.leaders.get(group)) {
            (Held::Deleted { .. }, Some(Held::Kv(kv))) => {
                self.vacated.insert(group.to_string(), (Instant::now(), Some(holder(kv))));
            }
            (Held::Deleted { .. }, _) => {
                self.vacated.entry(group.to_string()).or_insert((Instant::now(), None));
            }
            (Held::Kv(_), _) => {
                self.vacated.remove(group);
            }
        }
        self.leaders.insert(group.to_string(), held);
        true
    }

    /// This agent (`node`) deleted the key of `group` at `revision` to hand it over (unless the
    /// watch already saw a later change of it).
    pub(super) fn vacate(&mut self, group: &str, revision: i64, node: &str) {
        if self.synced && self.record(group, Held::Deleted { mod_revision: revision }) {
            self.vacated.insert(group.to_string(), (Instant::now(), Some(node.to_string())));
        }
    }

    /// The agents registered when etcd was at `revision`.
    fn listed(&mut self, agents: BTreeSet<String>, revision: i64) {
        self.agents = Some((agents, revision));
    }

    /// An agent's registration key changed at `revision`: `present` or gone.
    fn agent(&mut self, name: &str, revision: i64, present: bool) {
        let Some((agents, listed_at)) = self.agents.as_mut() else { return };
        if revision <= *listed_at {
            return; // already in the list
        }
        if present {
            // Bounded as the list is: a flood of registrations costs no more memory.
            if agents.len() < MAX_AGENTS {
                agents.insert(name.to_string());
            }
        } else {
            agents.remove(name);
        }
    }

    /// When the watch saw the key of `group` go, and who held it, while it is still vacant.
    pub(super) fn vacancy(&self, group: &str) -> Option<(Instant, Option<String>)> {
        match self.leaders.get(group)? {
            Held::Deleted { .. } => self.vacated.get(group).cloned(),
            Held::Kv(_) => None,
        }
    }

    /// What [`spread`] decides on, for agent `me` with `groups` cluster groups: only while the
    /// watch is in step and the agents are listed.
    pub(super) fn fleet(&self, me: &str, groups: usize) -> Option<spread::Fleet> {
        let (agents, _) = self.agents.as_ref().filter(|_| self.synced)?;
        let mut leads = BTreeMap::new();
        for held in self.leaders.values() {
            if let Held::Kv(kv) = held {
                if kv.lease != 0 {
                    *leads.entry(holder(kv)).or_insert(0) += 1;
                }
            }
        }
        let mut agents: Vec<String> = agents.iter().cloned().collect();
        if !agents.iter().any(|a| a == me) {
            agents.push(me.to_string());
        }
        Some(spread::Fleet { agents, leads, me: me.to_string(), groups })
    }

    /// What a campaign read at revision `read_at` — kept only while the watch is synced and
    /// covers every change since `read_at`, so a later change cannot be missing behind it.
    pub(super) fn campaigned(&mut self, group: &str, held: Held, read_at: i64) {
        if self.synced && read_at.saturating_add(1) >= self.covered_from {
            self.record(group, held);
        }
    }

    /// Drops what is known of `group` (a fenced commit found the key changed): it campaigns.
    pub(super) fn forget(&mut self, group: &str) {
        self.leaders.remove(group);
    }

    /// The role known without a request, for an agent holding `lease`: only a leader key under
    /// a lease, while the watch is synced (a deleted or lease-less key is the campaign's).
    pub(super) fn role(&self, group: &str, lease: i64) -> Option<Role> {
        if !self.synced {
            return None;
        }
        match self.leaders.get(group)? {
            Held::Kv(kv) if kv.lease == 0 => None,
            Held::Kv(kv) if kv.lease == lease => {
                Some(Role::Leader { token: kv.create_revision, takeover: false })
            }
            Held::Kv(kv) => Some(Role::Follower { leader: holder(kv) }),
            Held::Deleted { .. } => None,
        }
    }
}

/// The cache and the watcher task's signals, shared by the Cluster and the task.
#[derive(Default)]
pub(super) struct Watching {
    seen: Mutex<Seen>,
    /// Ends the current stream (it may be dead without a word): it is reopened where it stopped.
    restart: tokio::sync::Notify,
}

impl Watching {
    pub(super) fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reopens the stream if one is open: a renewal failed, or requests moved to another member
    /// than the stream's (`current`; a member cut off from the others keeps a stream silent).
    pub(super) fn check(&self, renewed: bool, current: usize) {
        let elsewhere = self.seen().endpoint.is_some_and(|e| e != current);
        if !renewed || elsewhere {
            // A permit is kept if no stream waits yet (one is being opened): it ends at once.
            self.restart.notify_one();
        }
    }
}

/// The agents listed at most (a list is bounded by etcd's answer size too).
const MAX_AGENTS: usize = 20_000;

/// The watched range, `PREFIX/` up to, not including, `PREFIX0` ('/' + 1): the groups' keys
/// and the agents' registrations.
fn range(prefix: &str) -> (String, String) {
    (format!("{prefix}/"), format!("{prefix}0"))
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq)]
enum Key<'a> {
    /// `PREFIX/groups/NAME/leader`, with a valid group name.
    Leader(&'a str),
    /// `PREFIX/agents/NODE`, an agent's registration.
    Agent(&'a str),
    /// Another (a group's state).
    Other,
}

/// What `key` is, under `root` (`PREFIX/`); `Err` for a key outside it (etcd sent what was not
/// asked for).
fn classify<'a>(key: &'a [u8], root: &str) -> Result<Key<'a>, String> {
    let Some(rest) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(root)) else {
        let named = crate::text::clean(&String::from_utf8_lossy(key), 128);
        return Err(format!("a change of `{named}`, outside `{root}`"));
    };
    let valid = |name: &&str| crate::config::valid_plugin_name(name);
    if let Some(group) = rest.strip_prefix("groups/").and_then(|r| r.strip_suffix("/leader")).filter(valid) {
        return Ok(Key::Leader(group));
    }
    Ok(rest
        .strip_prefix("agents/")
        .filter(|n| !n.is_empty() && n.len() <= 128)
        .map_or(Key::Other, Key::Agent))
}

/// Follows the groups' keys until `stop`'s sender is dropped (with the Cluster).
pub(super) async fn run(
    w: std::sync::Arc<Watching>,
    etcd: Etcd,
    prefix: String,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let (from, to) = range(&prefix);
    let mut backoff = BACKOFF_MIN;
    loop {
        let followed = tokio::select! {
            followed = watch_once(&w, &etcd, &from, &to) => followed,
            _ = stop.changed() => return,
        };
        if followed >= BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens the watch from now and follows it until it ends (or is told to reopen); how long it
/// was followed.
async fn watch_once(w: &Watching, etcd: &Etcd, from: &str, to: &str) -> Duration {
    let (mut stream, revision) = match etcd.watch(from, to, None).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::debug!("watching `{from}` in etcd: {e}; trying again");
            return Duration::ZERO;
        }
    };
    w.seen().created(revision, stream.endpoint);
    tracing::debug!("watching `{from}` in etcd from revision {revision}");
    list_agents(w, etcd, from).await;
    let since = Instant::now();
    let ended = tokio::select! {
        ended = follow(w, &mut stream, from) => ended,
        _ = w.restart.notified() => "a renewal failed or went to another member".to_string(),
    };
    let why = ended;
    w.seen().lost();
    tracing::debug!(
        "the watch of `{from}` in etcd ended: {why}; reopening it, every group campaigning once more"
    );
    since.elapsed()
}

/// Lists the agents registered under `ROOT` (`PREFIX/`) `agents/`, once the watch is open: its
/// changes after the list keep it current. Without it, no [`spread`] rule applies.
async fn list_agents(w: &Watching, etcd: &Etcd, root: &str) {
    let (from, to) = (format!("{root}agents/"), format!("{root}agents0"));
    match etcd.keys(&from, &to, MAX_AGENTS).await {
        Ok((keys, revision)) => {
            let agents = keys
                .iter()
                .filter_map(|k| match classify(k, root) {
                    Ok(Key::Agent(name)) => Some(name.to_string()),
                    _ => None,
                })
                .collect();
            w.seen().listed(agents, revision);
        }
        Err(e) => tracing::debug!("listing the agents under `{from}` in etcd: {e}; leadership is not spread"),
    }
}

/// Applies the stream's changes to the cache until the stream ends; why it ended.
async fn follow(w: &Watching, stream: &mut WatchStream, groups: &str) -> String {
    loop {
        let events = match stream.next().await {
            Ok(Some(WatchMessage::Events(events))) => events,
            Ok(Some(WatchMessage::Created { .. })) => continue,
            Ok(Some(WatchMessage::Canceled { compact_revision: Some(c), .. })) => {
                return format!("etcd compacted its history to revision {c}")
            }
            Ok(Some(WatchMessage::Canceled { reason, .. })) => {
                return format!("etcd canceled the watch ({reason})")
            }
            Ok(None) => return "the stream ended".to_string(),
            Err(e) => return e.to_string(),
        };
        apply(&mut w.seen(), events, groups);
    }
}

/// Applies one message's changes. An unreadable one may have been of a leader key: what was
/// seen is dropped (every group campaigns once more) rather than kept stale.
fn apply(seen: &mut Seen, events: Vec<Result<Event, String>>, root: &str) {
    for event in events {
        let event = match event {
            Ok(event) => event,
            Err(why) => {
                tracing::debug!("the watch of `{root}`: {why}: ignored; every group campaigns once more");
                seen.leaders.clear();
                continue;
            }
        };
        match classify(&event.key, root) {
            Ok(Key::Leader(group)) => {
                let held = match event.kv {
                    Some(kv) => Held::Kv(kv),
                    None => Held::Deleted { mod_revision: event.mod_revision },
                };
                seen.changed(group, held);
            }
            Ok(Key::Agent(name)) => seen.agent(name, event.mod_revision, event.kv.is_some()),
            Ok(Key::Other) => {}
            Err(why) => tracing::debug!("the watch of `{root}`: {why}: ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/elastic/";
    const MINE: i64 = 0x77;

    fn leased(node: &str, create: i64, modified: i64, lease: i64) -> Held {
        Held::Kv(etcd::Kv {
            value: node.as_bytes().to_vec(),
            create_revision: create,
            mod_revision: modified,
            lease,
        })
    }

    /// A cache whose watch was created at revision 10.
    fn synced() -> Seen {
        let mut s = Seen::default();
        s.created(10, 0);
        s
    }

    #[test]
    fn a_leased_leader_key_answers_the_role_without_a_request_and_the_rest_campaigns() {
        let mut s = synced();
        assert_eq!(s.role("web", MINE), None, "nothing seen yet: campaign");
        s.changed("web", leased("b", 11, 11, 0x42));
        assert_eq!(s.role("web", MINE), Some(Role::Follower { leader: "b".into() }));
        s.changed("web", Held::Deleted { mod_revision: 12 });
        assert_eq!(s.role("web", MINE), None, "deleted: campaign at once");
        s.campaigned("web", leased("a", 13, 13, MINE), 13);
        assert_eq!(s.role("web", MINE), Some(Role::Leader { token: 13, takeover: false }));
        // A key without a lease (forged) never expires: the vacancy rule's, by campaigns.
        s.changed("web", leased("ghost", 14, 14, 0));
        assert_eq!(s.role("web", MINE), None);
        // A watch that ended answers nothing, nor does its successor until a campaign or a
        // change says: a replay's end cannot be told.
        s.changed("web", leased("b", 15, 15, 0x42));
        s.lost();
        assert_eq!(s.role("web", MINE), None);
        s.created(30, 0);
        assert_eq!(s.role("web", MINE), None);
        s.campaigned("web", leased("b", 15, 15, 0x42), 29);
        assert_eq!(s.role("web", MINE), None, "read before the new watch: not kept");
        s.campaigned("web", leased("b", 15, 15, 0x42), 30);
        assert_eq!(s.role("web", MINE), Some(Role::Follower { leader: "b".into() }));
    }

    #[test]
    fn the_fleet_is_known_from_the_agents_list_its_changes_and_the_leader_keys() {
        let mut s = synced();
        s.changed("web", leased("a", 11, 11, MINE));
        s.changed("api", leased("a", 12, 12, MINE));
        assert!(s.fleet("a", 2).is_none(), "the agents are not listed yet: no spread rule");
        s.listed(["a", "b"].map(String::from).into(), 12);
        let f = s.fleet("a", 2).unwrap();
        assert_eq!((f.agents.len(), f.mine(), f.share()), (2, 2, 1));
        assert!(f.hands_over(), "a leads both, b none");
        // A registration the list already had is not counted twice; a later one counts, and
        // a deletion (its lease ended) removes the agent.
        s.agent("b", 12, true);
        s.agent("c", 13, true);
        s.agent("b", 14, false);
        assert_eq!(s.fleet("a", 2).unwrap().agents, ["a", "c"]);
        // A deleted key remembers who held it, until it is held again.
        s.changed("web", Held::Deleted { mod_revision: 15 });
        assert_eq!(s.vacancy("web").unwrap().1.as_deref(), Some("a"));
        assert_eq!(s.fleet("a", 2).unwrap().mine(), 1);
        s.changed("web", leased("c", 16, 16, 0x43));
        assert!(s.vacancy("web").is_none());
        // Out of step: nothing is decided on what may be stale.
        s.lost();
        assert!(s.fleet("a", 2).is_none());
    }

    #[test]
    fn an_older_campaign_answer_does_not_overwrite_a_newer_change() {
        let mut s = synced();
        s.changed("web", Held::Deleted { mod_revision: 14 });
        // A campaign that read the key (held by b, modified at 12) at revision 13, answered late.
        s.campaigned("web", leased("b", 12, 12, 0x42), 13);
        assert_eq!(s.leaders["web"], Held::Deleted { mod_revision: 14 });
        // The watch's event for a change the cache already has from a campaign: kept as is.
        s.campaigned("web", leased("a", 15, 15, MINE), 15);
        s.changed("web", Held::Deleted { mod_revision: 14 });
        assert_eq!(s.role("web", MINE), Some(Role::Leader { token: 15, takeover: false }));
        // A read older than the watch's start may hide a change before it: not kept.
        let mut s = synced();
        s.campaigned("web", leased("b", 5, 5, 0x42), 8);
        assert_eq!(s.role("web", MINE), None);
        s.campaigned("web", leased("b", 5, 5, 0x42), 10);
        assert_eq!(s.role("web", MINE), Some(Role::Follower { leader: "b".into() }));
        // Nor while the watch is not synced.
        let mut s = Seen::default();
        s.campaigned("web", leased("b", 5, 5, 0x42), 8);
        assert!(s.leaders.is_empty());
    }

    #[test]
    fn changes_outside_the_leader_keys_are_ignored_and_an_unreadable_one_drops_the_cache() {
        assert_eq!(classify(b"/elastic/groups/web/leader", ROOT), Ok(Key::Leader("web")));
        assert_eq!(classify(b"/elastic/groups/web/state", ROOT), Ok(Key::Other));
        assert_eq!(classify(b"/elastic/groups/We b/leader", ROOT), Ok(Key::Other));
        assert_eq!(classify(b"/elastic/groups/a/b/leader", ROOT), Ok(Key::Other));
        assert_eq!(classify(b"/elastic/agents/node-1", ROOT), Ok(Key::Agent("node-1")));
        assert!(classify(b"/other/x", ROOT).unwrap_err().contains("outside `/elastic/`"));
        assert!(classify(b"\xff\xfe", ROOT).is_err());

        let mut s = synced();
        let put = |key: &str, node: &str, rev: i64| {
            let kv = etcd::Kv { value: node.into(), create_revision: rev, mod_revision: rev, lease: 0x42 };
            Ok(Event { key: key.into(), mod_revision: rev, kv: Some(kv) })
        };
        apply(&mut s, vec![put("/elastic/groups/web/leader", "b", 11), put("/elsewhere", "x", 12)], ROOT);
        apply(&mut s, vec![put("/elastic/groups/web/state", "{}", 13)], ROOT);
        assert_eq!(s.role("web", MINE), Some(Role::Follower { leader: "b".into() }));
        apply(&mut s, vec![Err("an event without a readable key".into())], ROOT);
        assert_eq!(s.role("web", MINE), None, "dropped: campaign once more");
    }

    #[test]
    fn a_failed_renewal_or_requests_gone_to_another_member_reopen_the_stream() {
        let w = Watching::default();
        w.seen().created(1, 2);
        let notified = w.restart.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        w.check(true, 2);
        assert!(futures_ready(notified.as_mut()).is_none(), "same member, renewed: stays");
        w.check(true, 0);
        assert!(futures_ready(notified.as_mut()).is_some(), "another member answers now");
    }

    /// Polls `f` once.
    fn futures_ready<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = f;
        match std::pin::Pin::new(&mut f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
