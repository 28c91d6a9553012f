//! Decisions that need no cloud: a group's capacity from its servers, which servers go on
//! scale-in, and each server's place on the flavor ladder. Pure, unit-tested natively.

use crate::config::DeletionPolicy;
use crate::nova::Server;
use elastic_sdk::Capacity;
use serde::{Deserialize, Serialize};

/// Servers of a group that failed to build (ERROR, or stuck building) in a row. Kept in the
/// plugin's state, so a restart does not forget it and start a create/delete storm again.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct BuildFailures {
    pub count: u32,
    pub last_ms: i64,
    /// What happened last, for the message.
    pub last: String,
}

impl BuildFailures {
    /// How long new creates wait after the last failure: 10 s, doubling with each failure in a
    /// row, at most 5 minutes.
    pub fn backoff_ms(&self) -> i64 {
        match self.count {
            0 => 0,
            n => (10_000i64 << (n - 1).min(5)).min(300_000),
        }
    }

    /// Milliseconds until creating is allowed again; `None` when it is.
    pub fn wait_ms(&self, now_ms: i64) -> Option<i64> {
        let left = self.last_ms + self.backoff_ms() - now_ms;
        (self.count > 0 && left > 0).then_some(left)
    }
}

/// A server's tier: its flavor's place in the ladder; `None` for a flavor not on it.
pub fn tier_of(server: &Server, ladder: &[String]) -> Option<u32> {
    ladder.iter().position(|f| *f == server.flavor).map(|i| i as u32)
}

/// The capacity of `members` (servers not being deleted). The group's tier is the lowest tier
/// of its servers, what every one of them has at least; `fallback` when none has a known tier.
pub fn capacity(members: &[Server], ladder: &[String], fallback: u32) -> Capacity {
    let tier = members.iter().filter_map(|s| tier_of(s, ladder)).min().unwrap_or(fallback);
    Capacity {
        replicas: members.len() as u32,
        ready: members.iter().filter(|s| s.ready()).count() as u32,
        tier,
        tier_name: ladder.get(tier as usize).cloned().unwrap_or_default(),
    }
}

/// The `count` servers to delete. Servers that are not ACTIVE (building, in ERROR) go first
/// whatever the policy; then `newest` / `oldest` by creation time, or `fewest-active-tasks`:
/// servers with no Nova task in progress (no reboot, resize, snapshot…) before those with one,
/// newest first among equals.
pub fn victims(members: &[Server], count: usize, policy: DeletionPolicy) -> Vec<Server> {
    let mut order: Vec<&Server> = members.iter().collect();
    order.sort_by(|a, b| {
        let not_active = (a.status == "ACTIVE").cmp(&(b.status == "ACTIVE"));
        let by_policy = match policy {
            DeletionPolicy::Newest => b.created_ms.cmp(&a.created_ms),
            DeletionPolicy::Oldest => a.created_ms.cmp(&b.created_ms),
            DeletionPolicy::FewestActiveTasks => {
                a.task_state.is_some().cmp(&b.task_state.is_some()).then(b.created_ms.cmp(&a.created_ms))
            }
        };
        not_active.then(by_policy).then(a.id.cmp(&b.id))
    });
    order.into_iter().take(count).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, status: &str, task: Option<&str>, created_ms: i64, flavor: &str) -> Server {
        Server {
            id: id.into(),
            name: format!("web-{id}"),
            status: status.into(),
            task_state: task.map(str::to_string),
            created_ms,
            flavor: flavor.into(),
            fault: None,
            address: None,
        }
    }

    fn ladder() -> Vec<String> {
        vec!["m1.tiny".into(), "m1.small".into(), "m1.medium".into()]
    }

    #[test]
    fn only_active_idle_servers_are_ready_and_the_tier_is_the_lowest() {
        let members = vec![
            server("a", "ACTIVE", None, 1, "m1.small"),
            server("b", "BUILD", Some("spawning"), 2, "m1.small"),
            server("c", "ACTIVE", Some("resize_prep"), 3, "m1.medium"),
        ];
        let c = capacity(&members, &ladder(), 0);
        assert_eq!((c.replicas, c.ready, c.tier, c.tier_name.as_str()), (3, 1, 1, "m1.small"));
        let c = capacity(&[], &ladder(), 2);
        assert_eq!((c.replicas, c.ready, c.tier, c.tier_name.as_str()), (0, 0, 2, "m1.medium"));
    }

    #[test]
    fn build_failures_back_off_exponentially_up_to_five_minutes() {
        let f = |count, last_ms| BuildFailures { count, last_ms, last: String::new() };
        assert_eq!(f(0, 0).wait_ms(0), None);
        assert_eq!(f(1, 1000).wait_ms(5000), Some(6000));
        assert_eq!(f(1, 1000).wait_ms(11_000), None);
        assert_eq!(f(3, 0).backoff_ms(), 40_000);
        assert_eq!(f(30, 0).backoff_ms(), 300_000);
    }

    #[test]
    fn victims_not_ready_first_then_by_policy() {
        let members = vec![
            server("old", "ACTIVE", None, 1, "m1.tiny"),
            server("mid", "ACTIVE", Some("rebooting"), 2, "m1.tiny"),
            server("new", "ACTIVE", None, 3, "m1.tiny"),
            server("err", "ERROR", None, 0, "m1.tiny"),
        ];
        let ids = |p, n| victims(&members, n, p).into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(DeletionPolicy::Newest, 2), ["err", "new"], "not ACTIVE first, then newest");
        assert_eq!(ids(DeletionPolicy::Oldest, 2), ["err", "old"]);
        assert_eq!(ids(DeletionPolicy::Oldest, 3), ["err", "old", "mid"]);
        assert_eq!(ids(DeletionPolicy::Newest, 3), ["err", "new", "mid"]);
        assert_eq!(
            ids(DeletionPolicy::FewestActiveTasks, 3),
            ["err", "new", "old"],
            "the rebooting one last"
        );
    }
}
