//! One decider per group across a fleet: every agent with a `coordination = "cluster"` group
//! campaigns for that group's leader key in etcd, and only the holder acts on it.
//!
//! Safety does not rest on clocks: an etcd lease can outlive its TTL across an etcd leader
//! change, so the holder records each decision in a transaction guarded by its leader key's
//! creation revision (the fencing token) *before* it calls the backend; a deposed leader's
//! transaction fails and it does not call. The group's decision state (stabilization,
//! cooldowns, rate-limit history, the last decision) lives beside the key, so a new leader
//! continues it. Without etcd every cluster group holds (freeze): a decision needs the key.
//!
//! Nothing read from etcd is trusted: a leader key without a live lease (written by hand, or
//! left by a lease etcd no longer knows) would hold a group forever, so once this agent has
//! seen it so for a lease TTL it deletes it — guarded by its modification revision, so only
//! that very key goes — and campaigns; a state's timestamps beyond now plus [`MAX_SKEW_MS`] are
//! dropped, so a forged far-future action cannot hold a cooldown forever.
//!
//! Quiet at rest: one watch per agent follows the groups' keys ([`watch`]), so while it is in
//! step with etcd and the lease is confirmed, a leader key under a lease answers the role without
//! a request — only the lease renewal (and the leader's fenced record) reach etcd.

pub mod etcd;
mod spread;
mod watch;

use crate::config::ClusterSpec;
use crate::decide::guardrails::History;
use etcd::{Compare, Etcd, EtcdError, Op};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far in the future a timestamp read from etcd may be (clocks of a fleet differ a little):
/// later ones are forged or broken, and dropped.
pub const MAX_SKEW_MS: i64 = 30_000;
/// The largest group state read from etcd. A state is recommendations and actions over the
/// longest window (a few KiB at 1 s intervals over 5 min); more is not one this agent wrote.
pub const MAX_STATE_BYTES: usize = 256 << 10;

/// What this agent is for a group, now.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// It holds the group's key, created at revision `token`; `takeover` the first time it
    /// sees itself leading with this token.
    Leader { token: i64, takeover: bool },
    /// Another agent holds it.
    Follower { leader: String },
    /// The key is vacant, and this agent lets an agent leading fewer groups take it first
    /// (see [`spread`]): a follower for now.
    Deferring { why: String },
    /// etcd cannot be reached (or the lease is not known to be alive): hold.
    Frozen { why: String },
}

/// A group's decision state as the leader keeps it in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedState {
    pub leader: String,
    pub token: i64,
    pub history: History,
    pub decision: Option<SharedDecision>,
}

/// The last decision the leader recorded before calling the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedDecision {
    pub id: String,
    pub t_ms: i64,
    pub from: u32,
    pub to: u32,
    pub tier: u32,
}

/// What `/status` shows of one cluster group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupView {
    /// `leader`, `follower` or `frozen`.
    pub role: &'static str,
    pub leader: Option<String>,
    /// The creation revision of the leader key: the fencing token every decision is guarded by.
    pub fencing_revision: Option<i64>,
    /// When this agent last saw the leadership change hands (or first saw a leader).
    pub last_failover_ms: Option<i64>,
    /// Why it is frozen.
    pub reason: Option<String>,
}

/// What `/status` shows of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node: String,
    pub etcd: Vec<String>,
    pub etcd_reachable: bool,
    pub lease_ttl_ms: u64,
    /// Requests sent to etcd since start.
    pub etcd_requests: u64,
    /// How the agent talks to etcd: over TLS (every member `https://`), with a client
    /// certificate, as an etcd user (its name; never the password or token).
    pub tls: bool,
    pub client_certificate: bool,
    pub user: Option<String>,
    /// Whether the agent's watch over the groups' keys is open and in step with etcd: then a
    /// leader key under a lease answers the role without a request.
    pub watch_synced: bool,
    pub groups: BTreeMap<String, GroupView>,
}

struct Lease {
    id: i64,
    /// When etcd last confirmed it: beyond the TTL it may be gone.
    renewed: Instant,
}

/// How often an agent looks whether it leads more than its share.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// How long an agent hands nothing over after a group it handed over came back to it (nobody
/// took it: an agent counted in the fleet does not run that group, say).
const HOLD_OFF: Duration = Duration::from_secs(600);

/// What an agent remembers of its hand-overs.
#[derive(Default)]
struct Handing {
    /// The last group handed over, and when; cleared once another agent is seen leading it.
    handed: Option<(String, Instant)>,
    /// When the last hand-over was (one per two intervals at most).
    handed_at: Option<Instant>,
    /// When it last looked whether it should (each evaluation of each group would scan them all).
    checked: Option<Instant>,
    /// No hand-over before this (a handed-over group came back).
    held_off_until: Option<Instant>,
}

pub struct Cluster {
    pub spec: ClusterSpec,
    etcd: Etcd,
    lease: tokio::sync::Mutex<Option<Lease>>,
    views: Mutex<BTreeMap<String, GroupView>>,
    /// Per group, what this agent has seen of a leader key it does not hold.
    watches: Mutex<BTreeMap<String, Watch>>,
    reachable: std::sync::atomic::AtomicBool,
    /// What the watch over the groups' keys has seen (see [`watch`]).
    watching: Arc<watch::Watching>,
    /// The cluster groups this agent runs (that asked for their role), for its share.
    groups: Mutex<std::collections::BTreeSet<String>>,
    /// This agent's hand-overs (see [`Handing`]).
    handing: Mutex<Handing>,
    /// Dropped with the Cluster: ends the watcher task.
    _watcher: tokio::sync::watch::Sender<()>,
}

/// What this agent knows of the leader key of a group it follows: whether it has a live lease.
/// The timing rule is here (pure; the requests are in [`Cluster::vacant`]).
#[derive(Debug, Default)]
struct Watch {
    /// The key (by modification revision) first seen without a live lease, and when.
    lifeless: Option<(i64, Instant)>,
    /// The lease last asked about (`/v3/lease/timetolive`), and when.
    checked: Option<(i64, Instant)>,
}

impl Watch {
    /// Whether the key's lease must be asked about now: a lease not asked about yet, else at most
    /// once per TTL — a healthy follower adds one request per TTL, not one per evaluation.
    fn lease_check_due(&self, lease: i64, now: Instant, ttl: Duration) -> bool {
        lease != 0 && !self.checked.is_some_and(|(l, at)| l == lease && now.duration_since(at) < ttl)
    }

    /// Records that the key at `mod_revision` has (`alive`) or has not a live lease now; whether
    /// it has been seen without one for `ttl` — then it is vacant. A changed key starts over.
    fn saw(&mut self, mod_revision: i64, alive: bool, now: Instant, ttl: Duration) -> bool {
        if alive {
            self.lifeless = None;
            return false;
        }
        let since = match self.lifeless {
            Some((rev, since)) if rev == mod_revision => since,
            _ => now,
        };
        self.lifeless = Some((mod_revision, since));
        now.duration_since(since) >= ttl
    }
}

/// What a campaign's transaction found.
enum Campaign {
    /// The key was free: this agent created it, at this revision.
    Created(i64),
    Held(etcd::Kv),
    /// Deleted between the comparison and the read.
    Gone,
}

impl Cluster {
    /// Connects lazily (the first campaign grants the lease); renews the lease and watches the
    /// groups' keys in the background until the returned handle is dropped.
    pub fn start(spec: ClusterSpec) -> Arc<Cluster> {
        let etcd = Etcd::new(&spec);
        if let (Some(user), Some(plain)) = (&spec.user, spec.etcd.iter().find(|e| e.starts_with("http://"))) {
            tracing::warn!(
                "etcd user `{}` over plain http ({plain}): its password and token cross the network unencrypted; use https:// members",
                user.name
            );
        }
        let (watcher, stop) = tokio::sync::watch::channel(());
        let watching = Arc::new(watch::Watching::default());
        tokio::spawn(watch::run(watching.clone(), etcd.clone(), spec.prefix.clone(), stop));
        let cluster = Arc::new(Cluster {
            spec,
            etcd,
            lease: Default::default(),
            views: Default::default(),
            watches: Default::default(),
            reachable: true.into(),
            watching,
            groups: Default::default(),
            handing: Default::default(),
            _watcher: watcher,
        });
        tokio::spawn(renew(Arc::downgrade(&cluster)));
        cluster
    }

    fn key(&self, group: &str, what: &str) -> String {
        format!("{}/groups/{group}/{what}", self.spec.prefix)
    }

    fn reached(&self, ok: bool) {
        self.reachable.store(ok, std::sync::atomic::Ordering::Relaxed);
    }

    /// The agent's lease: the one it has while etcd confirmed it within the TTL; one not
    /// confirmed for a TTL is asked about again (an etcd leader election can take longer than a
    /// short TTL, and etcd keeps leases across it: keeping ours keeps the groups this agent led);
    /// a new one only once etcd says ours is gone.
    async fn lease(&self) -> Result<i64, EtcdError> {
        let mut lease = self.lease.lock().await;
        if let Some(l) = lease.as_mut() {
            if l.renewed.elapsed() < self.spec.lease_ttl {
                return Ok(l.id);
            }
            if self.etcd.keepalive(l.id).await? {
                l.renewed = Instant::now();
                return Ok(l.id);
            }
            tracing::warn!(node = %self.spec.node, "etcd lease {:x} expired: the groups it led are others' now", l.id);
        }
        let id = self.etcd.grant(self.spec.lease_ttl).await?;
        tracing::info!(node = %self.spec.node, "etcd lease {id:x} granted ({}s)", self.spec.lease_ttl.as_secs());
        *lease = Some(Lease { id, renewed: Instant::now() });
        self.register(id).await;
        Ok(id)
    }

    /// Registers this agent under its lease (`PREFIX/agents/NODE`), so the others count it for
    /// their share (see [`spread`]); gone with the lease. A failure only leaves it uncounted.
    async fn register(&self, lease: i64) {
        let key = format!("{}/agents/{}", self.spec.prefix, self.spec.node);
        let put = Op::Put { key: &key, value: self.spec.node.as_bytes(), lease };
        if let Err(e) = self.etcd.txn(&[], &[put], &[]).await {
            tracing::debug!("registering `{key}` in etcd: {e}; the other agents do not count this one");
        }
    }

    /// What [`spread`] decides on now, if the watch knows the fleet.
    fn fleet(&self) -> Option<spread::Fleet> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.watching.seen().fleet(&self.spec.node, groups)
    }

    /// Why this agent leaves the vacant key of `group` to another for now, if it does: it
    /// leads its share, another leads less, and the key went less than `wait` ago.
    fn deferring(&self, group: &str, wait: Duration) -> Option<String> {
        let (since, left) = self.watching.seen().vacancy(group)?;
        if since.elapsed() >= wait {
            return None;
        }
        let fleet = self.fleet()?;
        fleet.defers(group, left.as_deref()).then(|| {
            format!(
                "leads {} groups, its share is {} ({} agents): leaving `{group}` to the agents leading fewest for {}",
                fleet.mine(),
                fleet.share(),
                fleet.agents.len(),
                crate::duration::format(wait)
            )
        })
    }

    /// Whether this agent should hand one of its groups over now: it leads more than its share
    /// while another leads two fewer, and it handed none over within `wait`.
    pub fn hands_over(&self, wait: Duration) -> bool {
        {
            let mut h = self.handing.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let handed_lately = h.handed_at.is_some_and(|at| now.duration_since(at) < wait);
            let looked_lately = h.checked.is_some_and(|at| now.duration_since(at) < LOOK_EVERY);
            if handed_lately || looked_lately || h.held_off_until.is_some_and(|until| now < until) {
                return false;
            }
            h.checked = Some(now);
        }
        self.fleet().is_some_and(|f| f.hands_over())
    }

    /// Another agent leads `group`: if this one handed it over, the hand-over worked.
    fn taken(&self, group: &str) {
        let mut h = self.handing.lock().unwrap_or_else(|p| p.into_inner());
        if h.handed.as_ref().is_some_and(|(g, _)| g == group) {
            h.handed = None;
        }
    }

    /// A group this agent handed over came back to it (it campaigned and won after the wait):
    /// nobody took it, so hand nothing over for [`HOLD_OFF`] rather than loop.
    fn came_back(&self, group: &str) {
        let mut h = self.handing.lock().unwrap_or_else(|p| p.into_inner());
        if h.handed.as_ref().is_some_and(|(g, at)| g == group && at.elapsed() < HOLD_OFF) {
            h.held_off_until = Some(Instant::now() + HOLD_OFF);
            tracing::info!(
                group,
                "`{group}`, handed over, came back: no other agent took it; no hand-over for {}",
                crate::duration::format(HOLD_OFF)
            );
        }
    }

    /// Hands `group` over: deletes its leader key if it is still the one created at `token`,
    /// and defers on it (see [`spread`]). Whether it was handed over.
    pub async fn hand_over(&self, group: &str, token: i64) -> bool {
        let Some(fleet) = self.fleet() else { return false };
        let key = self.key(group, "leader");
        match self.etcd.txn(&[Compare::CreateRevision(&key, token)], &[Op::Delete(&key)], &[]).await {
            Ok(r) if r.succeeded => {
                self.watching.seen().vacate(group, r.revision, &self.spec.node);
                let mut h = self.handing.lock().unwrap_or_else(|p| p.into_inner());
                (h.handed, h.handed_at) = (Some((group.to_string(), Instant::now())), Some(Instant::now()));
                drop(h);
                tracing::info!(
                    group,
                    node = %self.spec.node,
                    "handed `{group}` over: this agent led {} groups, its share is {} of {} over {} agents",
                    fleet.mine(),
                    fleet.share(),
                    fleet.groups,
                    fleet.agents.len()
                );
                let why = format!(
                    "handed over to spread the leadership ({} groups led)",
                    fleet.mine().saturating_sub(1)
                );
                self.observe(group, Role::Deferring { why });
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(group, "handing `{group}` over: {e}");
                false
            }
        }
    }

    /// Campaigns for `group`: takes its leader key if nobody holds it, else reads who does.
    /// No request when the watch already knows the key under a lease; else one (a transaction)
    /// when the lease is alive.
    /// A vacant key goes first to agents leading fewer groups for up to `wait` (see
    /// [`spread`]).
    pub async fn role(&self, group: &str, wait: Duration) -> Role {
        {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            if !groups.contains(group) {
                groups.insert(group.to_string());
            }
        }
        if let Some(role) = self.known(group).await {
            return self.observe(group, role);
        }
        if let Some(why) = self.deferring(group, wait) {
            return self.observe(group, Role::Deferring { why });
        }
        let role = match self.campaign(group).await {
            Ok(role) => role,
            Err(e) => Role::Frozen { why: e.to_string() },
        };
        self.reached(!matches!(role, Role::Frozen { .. }));
        self.observe(group, role)
    }

    /// The role the watch already tells, without a request: only while renewals succeed and the
    /// lease was confirmed within its TTL (else the campaign renews it first, or freezes).
    async fn known(&self, group: &str) -> Option<Role> {
        if !self.reachable.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let lease = self.lease.lock().await;
        let lease = lease.as_ref().filter(|l| l.renewed.elapsed() < self.spec.lease_ttl)?.id;
        self.watching.seen().role(group, lease)
    }

    async fn campaign(&self, group: &str) -> Result<Role, EtcdError> {
        let lease = self.lease().await?;
        let key = self.key(group, "leader");
        let (kv, read_at) = match self.try_create(&key, lease).await? {
            (Campaign::Held(kv), _) if kv.lease != lease && self.vacant(group, &key, &kv).await? => {
                // The lifeless key is gone: campaign for it like any free key.
                self.try_create(&key, lease).await?
            }
            other => other,
        };
        self.remember(group, &kv, lease, read_at);
        let role = match kv {
            Campaign::Created(revision) => {
                self.came_back(group);
                Role::Leader { token: revision, takeover: true }
            }
            // Ours only if it is under this lease: a key left by this node's previous run (an
            // agent restarted within the TTL) is not.
            Campaign::Held(kv) if kv.lease == lease => {
                Role::Leader { token: kv.create_revision, takeover: false }
            }
            // Whatever is in etcd reaches the log, /status and the page: cleaned, bounded.
            Campaign::Held(kv) => Role::Follower { leader: holder(&kv) },
            // Deleted between the comparison and the read: try again next time.
            Campaign::Gone => Role::Frozen { why: "the leader key changed while it was read".into() },
        };
        if matches!(role, Role::Leader { .. }) {
            self.watches.lock().unwrap_or_else(|p| p.into_inner()).remove(group);
        }
        Ok(role)
    }

    /// One transaction: create the leader key under `lease` if it does not exist, else read it;
    /// what it found, and the store's revision it read at.
    async fn try_create(&self, key: &str, lease: i64) -> Result<(Campaign, i64), EtcdError> {
        let put = Op::Put { key, value: self.spec.node.as_bytes(), lease };
        let r = self.etcd.txn(&[Compare::CreateRevision(key, 0)], &[put], &[Op::Get(key)]).await?;
        let found = match (r.succeeded, r.gets.into_iter().next().flatten()) {
            (true, _) => Campaign::Created(r.revision),
            (false, Some(kv)) => Campaign::Held(kv),
            (false, None) => Campaign::Gone,
        };
        Ok((found, r.revision))
    }

    /// Gives the watch's cache what a campaign found (it then answers the next roles).
    fn remember(&self, group: &str, found: &Campaign, lease: i64, read_at: i64) {
        let held = match found {
            Campaign::Created(revision) => watch::Held::Kv(etcd::Kv {
                value: self.spec.node.as_bytes().to_vec(),
                create_revision: *revision,
                mod_revision: *revision,
                lease,
            }),
            Campaign::Held(kv) => watch::Held::Kv(kv.clone()),
            Campaign::Gone => return,
        };
        self.watching.seen().campaigned(group, held, read_at);
    }

    /// Whether the leader key `kv` of `group`, held by another lease, is vacant: seen by this
    /// agent without a live lease (lease 0, or one etcd no longer knows) for a lease TTL. Then it
    /// is deleted, guarded by its modification revision (a key rewritten meanwhile stays), and
    /// `true` is returned whoever deleted it. A lease is asked about at most once per TTL.
    async fn vacant(&self, group: &str, key: &str, kv: &etcd::Kv) -> Result<bool, EtcdError> {
        // With the watch in step, a leased key's end is seen when etcd deletes it with its lease:
        // nothing to ask. Only a key without a lease is timed here.
        if kv.lease != 0 && self.watching.seen().synced() {
            return Ok(false);
        }
        let ttl = self.spec.lease_ttl;
        let due = self.watch(group, |w| w.lease_check_due(kv.lease, Instant::now(), ttl));
        let alive = match (kv.lease, due) {
            (0, _) => false,
            (lease, true) => {
                let left = self.etcd.time_to_live(lease).await?;
                self.watch(group, |w| w.checked = Some((lease, Instant::now())));
                left > 0
            }
            // A lease confirmed or refuted less than a TTL ago: nothing new to decide on.
            (_, false) => return Ok(false),
        };
        if !self.watch(group, |w| w.saw(kv.mod_revision, alive, Instant::now(), ttl)) {
            return Ok(false);
        }
        let r = self.etcd.txn(&[Compare::ModRevision(key, kv.mod_revision)], &[Op::Delete(key)], &[]).await?;
        if r.succeeded {
            tracing::warn!(
                group,
                "the leader key of `{group}` (`{}`, lease {:x}) had no live lease for {}: deleted it (modification revision {}); campaigning",
                holder(kv),
                kv.lease,
                crate::duration::format(ttl),
                kv.mod_revision
            );
        }
        self.watch(group, |w| *w = Watch::default());
        Ok(true)
    }

    fn watch<T>(&self, group: &str, f: impl FnOnce(&mut Watch) -> T) -> T {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        f(watches.entry(group.to_string()).or_default())
    }

    /// Records `role` in the group's view; marks a takeover only when the token is new here.
    fn observe(&self, group: &str, role: Role) -> Role {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let view = views.entry(group.to_string()).or_default();
        let now = crate::timefmt::now_ms();
        let role = match role {
            Role::Leader { token, .. } => {
                let takeover = view.fencing_revision != Some(token) || view.role != "leader";
                if view.fencing_revision != Some(token) {
                    view.last_failover_ms = Some(now);
                    tracing::info!(group, node = %self.spec.node, "leading group `{group}` (fencing revision {token})");
                }
                *view = GroupView {
                    role: "leader",
                    leader: Some(self.spec.node.clone()),
                    fencing_revision: Some(token),
                    reason: None,
                    ..view.clone()
                };
                Role::Leader { token, takeover }
            }
            Role::Follower { leader } => {
                self.taken(group);
                if view.leader.as_deref() != Some(leader.as_str()) {
                    view.last_failover_ms = Some(now);
                    tracing::info!(group, "group `{group}` is led by `{leader}`");
                }
                *view = GroupView {
                    role: "follower",
                    leader: Some(leader.clone()),
                    fencing_revision: None,
                    reason: None,
                    ..view.clone()
                };
                Role::Follower { leader }
            }
            Role::Deferring { why } => {
                if view.reason.as_deref() != Some(why.as_str()) {
                    tracing::debug!(group, "{why}");
                }
                *view = GroupView {
                    role: "follower",
                    leader: None,
                    fencing_revision: None,
                    reason: Some(why.clone()),
                    ..view.clone()
                };
                Role::Deferring { why }
            }
            Role::Frozen { why } => {
                if view.role != "frozen" {
                    tracing::warn!(group, "group `{group}` frozen: {why}");
                }
                *view = GroupView {
                    role: "frozen",
                    reason: Some(why.clone()),
                    fencing_revision: None,
                    ..view.clone()
                };
                Role::Frozen { why }
            }
        };
        role
    }

    /// The group's decision state, as the last leader recorded it, read as untrusted: bounded in size, timestamps beyond now plus [`MAX_SKEW_MS`] dropped
    /// (with a warning naming the group and the key), text cleaned. A state that does not parse
    /// or is too large is ignored (the leader goes on from its own journal's history).
    pub async fn load(&self, group: &str) -> Result<Option<SharedState>, EtcdError> {
        let key = self.key(group, "state");
        let Some(kv) = self.etcd.get(&key).await? else { return Ok(None) };
        let state = match parse_state(&kv.value) {
            Ok(state) => state,
            Err(why) => {
                tracing::warn!(group, "the decision state of `{group}` at `{key}` {why}: ignored");
                return Ok(None);
            }
        };
        let (state, dropped) = sanitize(state, crate::timefmt::now_ms());
        if dropped > 0 {
            tracing::warn!(
                group,
                "the decision state of `{group}` at `{key}` had {dropped} entries dated more than {}s in the future: dropped (a forged or broken clock must not hold a cooldown)",
                MAX_SKEW_MS / 1000
            );
        }
        Ok(Some(state))
    }

    /// Records `state` if, and only if, the group's leader key is still the one created at
    /// `token`: `Ok(false)` when this agent was deposed (then it must not act).
    pub async fn commit(&self, group: &str, token: i64, state: &SharedState) -> Result<bool, EtcdError> {
        let (leader, key) = (self.key(group, "leader"), self.key(group, "state"));
        let value = serde_json::to_vec(state).expect("the state serialises");
        let put = Op::Put { key: &key, value: &value, lease: 0 };
        let r = self.etcd.txn(&[Compare::CreateRevision(&leader, token)], &[put], &[]).await;
        self.reached(r.is_ok());
        let r = r?;
        if !r.succeeded {
            // What the cache holds of the key is stale: the next role asks etcd.
            self.watching.seen().forget(group);
            tracing::warn!(group, node = %self.spec.node, "deposed: the leader key of `{group}` is no longer the one created at revision {token}; not acting");
            let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = views.get_mut(group) {
                *v = GroupView { role: "follower", fencing_revision: None, ..v.clone() };
            }
        }
        Ok(r.succeeded)
    }

    /// Deletes the leader key of `group` if it is still the one this agent created at `token`
    /// (a planned stop, a group removed or made local): another agent leads at its next
    /// evaluation. A failure only logs: the lease still ends the leadership within its TTL.
    pub async fn resign(&self, group: &str, token: i64) {
        let key = self.key(group, "leader");
        match self.etcd.txn(&[Compare::CreateRevision(&key, token)], &[Op::Delete(&key)], &[]).await {
            Ok(r) if r.succeeded => {
                self.watching.seen().forget(group);
                self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(group);
                tracing::info!(group, node = %self.spec.node, "resigned the leadership of `{group}`: another agent leads at its next evaluation");
                let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
                views.remove(group);
            }
            Ok(_) => tracing::debug!(group, "resigning `{group}`: no longer its leader"),
            Err(e) => tracing::warn!(
                group,
                "resigning `{group}`: {e}; it passes to another agent when the lease expires"
            ),
        }
    }

    /// `group` no longer runs here as a cluster group (removed, made local, the agent stops):
    /// it no longer counts in this agent's share, whatever its role was.
    pub fn leave(&self, group: &str) {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(group);
    }

    /// Ends this agent's lease (a planned stop, once its groups resigned): keys left under it
    /// go at once instead of a TTL later.
    pub async fn stop(&self) {
        let Some(lease) = self.lease.lock().await.take() else { return };
        if let Err(e) = self.etcd.revoke(lease.id).await {
            tracing::debug!("revoking the etcd lease: {e}");
        }
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node: self.spec.node.clone(),
            etcd: self.spec.etcd.clone(),
            etcd_reachable: self.reachable.load(std::sync::atomic::Ordering::Relaxed),
            lease_ttl_ms: self.spec.lease_ttl.as_millis() as u64,
            etcd_requests: self.etcd.requests.load(std::sync::atomic::Ordering::Relaxed),
            tls: self.spec.etcd.iter().all(|e| e.starts_with("https://")),
            client_certificate: self.spec.identity.is_some(),
            user: self.spec.user.as_ref().map(|u| u.name.clone()),
            watch_synced: self.watching.seen().synced(),
            groups: self.views.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// The view of one group, for `/status`.
    pub fn view(&self, group: &str) -> Option<GroupView> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).get(group).cloned()
    }
}

/// The name a leader key holds, as it may be shown: cleaned, bounded.
fn holder(kv: &etcd::Kv) -> String {
    crate::text::clean(&String::from_utf8_lossy(&kv.value), 128)
}

/// A state's bytes, bounded and parsed.
fn parse_state(value: &[u8]) -> Result<SharedState, String> {
    if value.len() > MAX_STATE_BYTES {
        return Err(format!("is {} bytes, more than {} KiB", value.len(), MAX_STATE_BYTES >> 10));
    }
    serde_json::from_slice(value).map_err(|e| format!("is not a decision state this agent reads ({e})"))
}

/// `state` without its entries dated after `now_ms` plus [`MAX_SKEW_MS`] (kept, a forged action
/// dated 2100 would hold its direction's cooldown and rate limit until then, a forged
/// recommendation the stabilization window), its lists in time order as the guardrails expect,
/// its text cleaned; and how many entries were dropped.
fn sanitize(mut state: SharedState, now_ms: i64) -> (SharedState, usize) {
    let latest = now_ms.saturating_add(MAX_SKEW_MS);
    let h = &mut state.history;
    let before = h.recommendations.len() + h.actions.len();
    h.recommendations.retain(|(t, _)| *t <= latest);
    h.actions.retain(|(t, ..)| *t <= latest);
    h.recommendations.make_contiguous().sort_by_key(|(t, _)| *t);
    h.actions.make_contiguous().sort_by_key(|(t, ..)| *t);
    let mut dropped = before - h.recommendations.len() - h.actions.len();
    if h.last_tier_change_ms.is_some_and(|t| t > latest) {
        h.last_tier_change_ms = None;
        dropped += 1;
    }
    if state.decision.as_ref().is_some_and(|d| d.t_ms > latest) {
        state.decision = None;
        dropped += 1;
    }
    if let Some(d) = &mut state.decision {
        crate::text::clean_in_place(&mut d.id, 256);
    }
    crate::text::clean_in_place(&mut state.leader, 128);
    (state, dropped)
}

/// Renews the lease every `renew_every` while the cluster lives. A lease etcd no longer knows is
/// dropped (the next campaign takes a new one); one it cannot confirm lapses after the TTL. A
/// failed renewal, or one another member answered, reopens the watch: its stream may be dead
/// without a word, or on a member cut off from the others.
async fn renew(cluster: std::sync::Weak<Cluster>) {
    let every = match cluster.upgrade() {
        Some(c) => c.spec.renew_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        let mut lease = c.lease.lock().await;
        let Some(l) = lease.as_mut() else { continue };
        let renewed = c.etcd.keepalive(l.id).await;
        c.watching.check(renewed.is_ok(), c.etcd.current());
        match renewed {
            Ok(true) => {
                l.renewed = Instant::now();
                c.reached(true);
            }
            Ok(false) => {
                tracing::warn!(node = %c.spec.node, "etcd lease {:x} expired: the groups it led are others' now", l.id);
                *lease = None;
            }
            Err(e) => {
                c.reached(false);
                tracing::debug!("renewing the etcd lease: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn a_lease_less_leader_key_is_vacant_once_seen_so_for_the_ttl() {
        let (mut w, t0) = (Watch::default(), Instant::now());
        // Lease 0: nothing to ask etcd, but not vacant at first sight.
        assert!(!w.lease_check_due(0, t0, TTL));
        assert!(!w.saw(7, false, t0, TTL));
        assert!(!w.saw(7, false, t0 + Duration::from_millis(2999), TTL));
        assert!(w.saw(7, false, t0 + TTL, TTL), "seen lease-less for the TTL: vacant");
        // The key rewritten meanwhile (another revision) starts the count again.
        let mut w = Watch::default();
        assert!(!w.saw(7, false, t0, TTL));
        assert!(!w.saw(8, false, t0 + TTL, TTL));
        assert!(w.saw(8, false, t0 + 2 * TTL, TTL));
        // A live lease in between forgets what was seen.
        let mut w = Watch::default();
        assert!(!w.saw(7, false, t0, TTL));
        assert!(!w.saw(7, true, t0 + Duration::from_secs(1), TTL));
        assert!(!w.saw(7, false, t0 + TTL, TTL));
    }

    #[test]
    fn a_followed_leader_s_lease_is_asked_about_at_most_once_per_ttl() {
        let (mut w, t0) = (Watch::default(), Instant::now());
        assert!(w.lease_check_due(42, t0, TTL), "a lease never asked about");
        w.checked = Some((42, t0));
        assert!(!w.lease_check_due(42, t0 + Duration::from_secs(1), TTL));
        assert!(!w.lease_check_due(42, t0 + Duration::from_millis(2999), TTL));
        assert!(w.lease_check_due(42, t0 + TTL, TTL));
        assert!(w.lease_check_due(43, t0 + Duration::from_secs(1), TTL), "a new leader's lease");
        // Unknown to etcd at t0 and again one TTL later: vacant then, not before.
        assert!(!w.saw(5, false, t0, TTL));
        assert!(w.saw(5, false, t0 + TTL, TTL));
    }

    fn state(json: serde_json::Value) -> SharedState {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn timestamps_beyond_now_and_the_skew_are_dropped_from_a_read_state() {
        let now = 1_800_000_000_000_i64;
        let year_2100 = 4_102_444_800_000_i64;
        let s = state(serde_json::json!({
            "leader": "mallory\u{1b}[2J", "token": 5,
            "history": {
                "recommendations": [[now - 1000, 3], [year_2100, 9], [now + MAX_SKEW_MS, 4]],
                "actions": [[now - 500, 1, 3], [year_2100, 1, 2], [now - 2000, 3, 1]],
                "last_tier_change_ms": year_2100,
            },
            "decision": {"id": "x", "t_ms": year_2100, "from": 1, "to": 2, "tier": 0},
        }));
        let (s, dropped) = sanitize(s, now);
        assert_eq!(dropped, 4);
        let h = &s.history;
        assert_eq!(h.recommendations, [(now - 1000, 3), (now + MAX_SKEW_MS, 4)], "within the skew is kept");
        assert_eq!(h.actions, [(now - 2000, 3, 1), (now - 500, 1, 3)], "in time order");
        assert_eq!(h.last_tier_change_ms, None);
        assert!(s.decision.is_none());
        assert_eq!(s.leader, "mallory\\u{1b}[2J", "cleaned for the log");

        // A state within the skew is untouched.
        let ok = state(
            serde_json::json!({"leader": "a", "token": 1, "history": {"recommendations": [[now, 2]], "actions": []},
            "decision": {"id": "web@1#1", "t_ms": now + 1000, "from": 1, "to": 2, "tier": 0}}),
        );
        let (ok, dropped) = sanitize(ok, now);
        assert_eq!((dropped, ok.decision.unwrap().t_ms), (0, now + 1000));
    }

    #[test]
    fn a_state_too_large_or_unreadable_is_refused_with_the_reason() {
        let big = vec![b' '; MAX_STATE_BYTES + 1];
        assert!(parse_state(&big).unwrap_err().contains("more than 256 KiB"));
        assert!(parse_state(b"{\"leader\": 3}")
            .unwrap_err()
            .contains("is not a decision state this agent reads"));
        let fine =
            br#"{"leader":"a","token":1,"history":{"recommendations":[],"actions":[]},"decision":null}"#;
        assert_eq!(parse_state(fine).unwrap().token, 1);
    }
}
