//! One decider per group across a fleet: every agent with a `coordination = "cluster"` group
//! campaigns for that group's leader key in etcd, and only the holder acts on it.
//!
//! Safety does not rest on clocks: an etcd lease can outlive its TTL across an etcd leader
//! change, so the holder records each decision in a transaction guarded by its leader key's
//! creation revision (the fencing token) *before* it calls the backend; a deposed leader's
//! transaction fails and it does not call. The group's decision state (stabilization,
//! cooldowns, rate-limit history, the last decision) lives beside the key, so a new leader
//! continues it. Without etcd every cluster group holds (freeze): a decision needs the key.

pub mod etcd;

use crate::config::ClusterSpec;
use crate::scaler::guardrails::History;
use etcd::{Compare, Etcd, EtcdError, Op};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What this agent is for a group, now.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// It holds the group's key, created at revision `token`; `takeover` the first time it
    /// sees itself leading with this token.
    Leader { token: i64, takeover: bool },
    /// Another agent holds it.
    Follower { leader: String },
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
    pub groups: BTreeMap<String, GroupView>,
}

struct Lease {
    id: i64,
    /// When etcd last confirmed it: beyond the TTL it may be gone.
    renewed: Instant,
}

pub struct Cluster {
    pub spec: ClusterSpec,
    etcd: Etcd,
    lease: tokio::sync::Mutex<Option<Lease>>,
    views: Mutex<BTreeMap<String, GroupView>>,
    reachable: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Connects lazily (the first campaign grants the lease) and renews the lease in the
    /// background until the returned handle is dropped.
    pub fn start(spec: ClusterSpec) -> Arc<Cluster> {
        let etcd = Etcd::new(spec.etcd.clone(), spec.request_timeout);
        let cluster = Arc::new(Cluster {
            spec,
            etcd,
            lease: Default::default(),
            views: Default::default(),
            reachable: true.into(),
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

    /// The agent's lease: the one it has while etcd confirmed it within the TTL, else a new one.
    async fn lease(&self) -> Result<i64, EtcdError> {
        let mut lease = self.lease.lock().await;
        if let Some(l) = lease.as_ref().filter(|l| l.renewed.elapsed() < self.spec.lease_ttl) {
            return Ok(l.id);
        }
        let id = self.etcd.grant(self.spec.lease_ttl).await?;
        tracing::info!(node = %self.spec.node, "etcd lease {id:x} granted ({}s)", self.spec.lease_ttl.as_secs());
        *lease = Some(Lease { id, renewed: Instant::now() });
        Ok(id)
    }

    /// Campaigns for `group`: takes its leader key if nobody holds it, else reads who does.
    /// One etcd request (a transaction) when the lease is alive.
    pub async fn role(&self, group: &str) -> Role {
        let role = match self.campaign(group).await {
            Ok(role) => role,
            Err(e) => Role::Frozen { why: e.to_string() },
        };
        self.reached(!matches!(role, Role::Frozen { .. }));
        self.observe(group, role)
    }

    async fn campaign(&self, group: &str) -> Result<Role, EtcdError> {
        let lease = self.lease().await?;
        let key = self.key(group, "leader");
        let node = self.spec.node.as_bytes();
        let put = Op::Put { key: &key, value: node, lease };
        let r = self.etcd.txn(&[Compare::CreateRevision(&key, 0)], &[put], &[Op::Get(&key)]).await?;
        if r.succeeded {
            return Ok(Role::Leader { token: r.revision, takeover: true });
        }
        match r.gets.into_iter().next().flatten() {
            // Ours only if it is under this lease: a key left by this node's previous run (an
            // agent restarted within the TTL) is not.
            Some(kv) if kv.lease == lease => Ok(Role::Leader { token: kv.create_revision, takeover: false }),
            // Whatever is in etcd reaches the log, /status and the page: cleaned, bounded.
            Some(kv) => {
                Ok(Role::Follower { leader: crate::text::clean(&String::from_utf8_lossy(&kv.value), 128) })
            }
            // Deleted between the comparison and the read: try again next time.
            None => Ok(Role::Frozen { why: "the leader key changed while it was read".into() }),
        }
    }

    /// Records `role` in the group's view; marks a takeover only when the token is new here.
    fn observe(&self, group: &str, role: Role) -> Role {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let view = views.entry(group.to_string()).or_default();
        let now = crate::store::now_ms();
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

    /// The group's decision state, as the last leader recorded it.
    pub async fn load(&self, group: &str) -> Result<Option<SharedState>, EtcdError> {
        let kv = self.etcd.get(&self.key(group, "state")).await?;
        Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
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
            tracing::warn!(group, node = %self.spec.node, "deposed: the leader key of `{group}` is no longer the one created at revision {token}; not acting");
            let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = views.get_mut(group) {
                *v = GroupView { role: "follower", fencing_revision: None, ..v.clone() };
            }
        }
        Ok(r.succeeded)
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node: self.spec.node.clone(),
            etcd: self.spec.etcd.clone(),
            etcd_reachable: self.reachable.load(std::sync::atomic::Ordering::Relaxed),
            lease_ttl_ms: self.spec.lease_ttl.as_millis() as u64,
            etcd_requests: self.etcd.requests.load(std::sync::atomic::Ordering::Relaxed),
            groups: self.views.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// The view of one group, for `/status`.
    pub fn view(&self, group: &str) -> Option<GroupView> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).get(group).cloned()
    }
}

/// Renews the lease every `renew_every` while the cluster lives. A lease etcd no longer knows is
/// dropped (the next campaign takes a new one); one it cannot confirm lapses after the TTL.
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
        match c.etcd.keepalive(l.id).await {
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
