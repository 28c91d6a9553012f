//! Spread: the groups' leadership shared out over the fleet, instead of all landing on the
//! first agent up. Pure rules, on what the watch knows (the agents registered under
//! `PREFIX/agents/`, who holds each leader key); the requests are the Cluster's.
//!
//! An agent's **share** is its cluster groups divided by the agents alive, rounded up.
//! - **Defer**: an agent leading at least its share lets a vacant key go for a while (two of
//!   the group's intervals) to the agents leading fewer than their share, if there is one — the
//!   agent that just left the key (stopped, died, handed it over) not counted; after that it
//!   campaigns like any other, so a group never waits long for a leader. Of the agents under
//!   their share only the first [`FIRST`] by rendezvous hashing of (group, agent) campaign at
//!   once, so a vacancy in a fleet of thousands costs a few transactions, not one per agent.
//! - **Hand over**: an agent leading more than its groups over the agents rounded *down*, while
//!   another leads at least two fewer, resigns one group (fenced, its state written first) — at
//!   most one per two intervals — and leaves it for two intervals, so an agent leading fewer
//!   takes it. (Rounded down, not up: 4 groups over 3 agents end 2/1/1, not 2/2/0.)
//!
//! Without the agents' list (etcd refused it, the watch not in step) neither rule applies: the
//! fleet behaves as it did before, first come first served.

use std::collections::BTreeMap;

/// How many agents under their share campaign at once for a vacant key.
pub const FIRST: usize = 3;

/// What one agent knows of the fleet when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// Agents alive (their registration keys), this one included.
    pub agents: Vec<String>,
    /// Groups led, per agent (agents leading none absent).
    pub leads: BTreeMap<String, usize>,
    /// This agent.
    pub me: String,
    /// This agent's cluster groups.
    pub groups: usize,
}

impl Fleet {
    /// The groups this agent should lead at most: its groups over the agents, rounded up.
    pub fn share(&self) -> usize {
        self.groups.div_ceil(self.agents.len().max(1))
    }

    pub fn mine(&self) -> usize {
        self.leads.get(&self.me).copied().unwrap_or(0)
    }

    /// The fewest groups another agent alive leads, `left` (the one that just vacated a key)
    /// not counted; `None` without another.
    fn fewest_but(&self, left: Option<&str>) -> Option<usize> {
        self.agents
            .iter()
            .filter(|a| **a != self.me && Some(a.as_str()) != left)
            .map(|a| self.leads.get(a).copied().unwrap_or(0))
            .min()
    }

    /// Whether to let the key of `group` that `left` just vacated go to another agent this
    /// time: this agent leads its share or more and another leads less; or it leads less, but
    /// [`FIRST`] others under their share come before it for this group.
    pub fn defers(&self, group: &str, left: Option<&str>) -> bool {
        if left == Some(self.me.as_str()) {
            return true; // handed over by this agent: for another to take
        }
        let share = self.share();
        if self.mine() >= share {
            return self.fewest_but(left).is_some_and(|f| f < share);
        }
        let mine = rendezvous(group, &self.me);
        let before = self
            .agents
            .iter()
            .filter(|a| **a != self.me && Some(a.as_str()) != left)
            .filter(|a| self.leads.get(*a).copied().unwrap_or(0) < share)
            .filter(|a| (rendezvous(group, a), a.as_str()) > (mine, self.me.as_str()))
            .count();
        before >= FIRST
    }

    /// Whether to hand one of this agent's groups over: it leads more than the groups over the
    /// agents rounded down, and another agent leads at least two fewer (one fewer would only
    /// move the imbalance). Each hand-over narrows the spread, so it ends.
    pub fn hands_over(&self) -> bool {
        let mine = self.mine();
        let floor = self.groups / self.agents.len().max(1);
        mine > floor && self.fewest_but(None).is_some_and(|f| f + 1 < mine)
    }
}

/// The weight of `agent` for `group` (FNV-1a, the same on every agent): the highest go first.
fn rendezvous(group: &str, agent: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.bytes().chain([0]).chain(agent.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(agents: &[&str], leads: &[(&str, usize)], groups: usize) -> Fleet {
        Fleet {
            agents: agents.iter().map(|a| a.to_string()).collect(),
            leads: leads.iter().map(|(a, n)| (a.to_string(), *n)).collect(),
            me: "a".into(),
            groups,
        }
    }

    #[test]
    fn the_first_agent_up_hands_groups_over_until_the_fleet_is_even() {
        // Alone: everything is its share.
        assert!(!fleet(&["a"], &[("a", 6)], 6).hands_over());
        // Two more came: its share is 2, they lead none.
        let f = fleet(&["a", "b", "c"], &[("a", 6)], 6);
        assert_eq!(f.share(), 2);
        assert!(f.hands_over());
        // And it defers on what it handed over (it left the key itself).
        assert!(f.defers("g", Some("a")));
        // Even: nothing moves.
        let f = fleet(&["a", "b", "c"], &[("a", 2), ("b", 2), ("c", 2)], 6);
        assert!(!f.hands_over());
        assert!(!f.defers("g", None));
        // 7 over 3: 3, 2, 2 is as even as it gets.
        assert!(!fleet(&["a", "b", "c"], &[("a", 3), ("b", 2), ("c", 2)], 7).hands_over());
        // 4 over 3: 2/2/0 is not the end (the share rounded up would leave c idle); 2/1/1 is.
        assert!(fleet(&["a", "b", "c"], &[("a", 2), ("b", 2)], 4).hands_over());
        assert!(!fleet(&["a", "b", "c"], &[("a", 2), ("b", 1), ("c", 1)], 4).hands_over());
        // One fewer only moves the imbalance.
        assert!(!fleet(&["a", "b"], &[("a", 4), ("b", 3)], 6).hands_over());
    }

    #[test]
    fn a_vacancy_goes_first_to_an_agent_under_its_share_but_never_waits_for_the_one_that_left() {
        // b leads less than its share: a (at its share) lets b take the key.
        assert!(fleet(&["a", "b", "c"], &[("a", 2), ("b", 1), ("c", 2)], 6).defers("g", Some("x")));
        // c stopped and resigned its groups: nobody else is under its share but c itself.
        let f = fleet(&["a", "b", "c"], &[("a", 2), ("b", 2)], 6);
        assert!(!f.defers("g", Some("c")), "the agent that left the key does not count");
        // Under its share itself: campaigns at once.
        assert!(!fleet(&["a", "b"], &[("a", 1)], 6).defers("g", Some("b")));
        // Alone: never defers.
        assert!(!fleet(&["a"], &[("a", 6)], 6).defers("g", None));
    }

    #[test]
    fn of_many_agents_under_their_share_a_few_campaign_at_once_and_not_always_the_same() {
        let agents: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
        let names: Vec<&str> = agents.iter().map(String::as_str).collect();
        let campaigners = |group: &str| -> Vec<String> {
            names
                .iter()
                .filter(|me| {
                    let mut f = fleet(&names, &[("n000", 1)], 20);
                    f.me = me.to_string();
                    !f.defers(group, Some("n000"))
                })
                .map(|me| me.to_string())
                .collect()
        };
        let first = campaigners("g00");
        assert_eq!(first.len(), FIRST, "{first:?}");
        assert!(!first.contains(&"n000".to_string()), "not the one that left");
        assert_ne!(campaigners("g01"), first, "another group, other agents first");
    }
}
