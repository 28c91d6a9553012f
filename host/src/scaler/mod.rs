//! Scaling groups: each `[[group]]` runs its own control loop (`group.rs`) — metric windows from
//! the store, the policy plugin, the host's guardrails (`guardrails.rs`, which no plugin can
//! bypass), the backend plugin, and the decision journal.
//!
//! `simulate.rs` replays traces offline through the same guardrails (`agent simulate`), `plot.rs`
//! draws the result.

pub mod group;
pub mod guardrails;
pub mod plot;
pub mod simulate;

use crate::config::GroupSpec;
use crate::plugins::registry::Registry;
use crate::store::Store;
use group::GroupStatus;
use std::sync::{Arc, Mutex};

/// The running groups.
#[derive(Default)]
pub struct Scaler {
    groups: Vec<Arc<Mutex<GroupStatus>>>,
}

impl Scaler {
    /// Starts one loop per group. The loops end when the registry is dropped.
    pub fn start(specs: &[GroupSpec], registry: &Arc<Registry>, store: &Store) -> Scaler {
        let mut groups = Vec::new();
        for spec in specs {
            let status = Arc::new(Mutex::new(GroupStatus {
                name: spec.name.clone(),
                dry_run: spec.dry_run,
                ..Default::default()
            }));
            tokio::spawn(group::run(
                Arc::new(spec.clone()),
                Arc::downgrade(registry),
                store.clone(),
                status.clone(),
            ));
            groups.push(status);
        }
        Scaler { groups }
    }

    pub fn status(&self) -> Vec<GroupStatus> {
        self.groups.iter().map(|g| g.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect()
    }
}
