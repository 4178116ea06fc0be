//! What the control plane publishes to the workers: the live keys, their replay filters and
//! the known next hops. Workers pick up a new [`Snapshot`] between batches.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::replay::ReplayFilter;
use crate::sphinx::{NodeKeys, ReplayGuard};

/// The replay filters of the live keys, by rotation id.
#[derive(Clone, Default)]
pub struct ReplaySet {
    filters: Vec<(u32, Arc<ReplayFilter>)>,
}

impl ReplaySet {
    /// A set over these filters.
    pub fn new(filters: Vec<(u32, Arc<ReplayFilter>)>) -> ReplaySet {
        ReplaySet { filters }
    }

    /// The filter for a rotation.
    pub fn get(&self, rotation_id: u32) -> Option<&Arc<ReplayFilter>> {
        self.filters
            .iter()
            .find(|(r, _)| *r == rotation_id)
            .map(|(_, f)| f)
    }

    /// All filters.
    pub fn iter(&self) -> impl Iterator<Item = &(u32, Arc<ReplayFilter>)> {
        self.filters.iter()
    }
}

impl ReplayGuard for ReplaySet {
    fn check_and_set(&self, rotation_id: u32, tag: &[u8; 32]) -> bool {
        // a key without a filter cannot be checked; the control plane always installs one
        self.get(rotation_id).is_some_and(|f| f.check_and_set(tag))
    }
}

/// What the workers read between batches.
pub(crate) struct Snapshot {
    /// The live keys.
    pub keys: Arc<NodeKeys>,
    /// One replay filter per live key.
    pub replay: ReplaySet,
    /// When set, forward hops and SURB-ACKs may only go to these addresses (the known nodes);
    /// others are dropped and counted (`unknown_next_hop`).
    pub next_hops: Option<Arc<std::collections::HashSet<SocketAddr>>>,
}
