//! `[simulate]`: one-way delays (RTT/2 from the topology) added to this node's outgoing traffic.

use std::time::Duration;

use crate::config::topology::Topology;

/// Delay toward each region, from this node's region.
#[derive(Debug, Clone)]
pub struct Delays {
    topology: Topology,
    own: String,
}

impl Delays {
    /// Delays from `own_region` per `topology`.
    pub fn new(topology: Topology, own_region: &str) -> Self {
        Self {
            topology,
            own: own_region.to_string(),
        }
    }

    /// One-way delay toward `region` (zero when unknown).
    pub fn toward(&self, region: &str) -> Duration {
        self.topology
            .rtt_ms(&self.own, region)
            .map(|rtt| Duration::from_secs_f64(rtt / 2000.0))
            .unwrap_or_default()
    }
}
