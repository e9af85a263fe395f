//! Mesh metrics: members by state, RTT per region, gossip bytes, dropped datagrams.

use std::collections::HashMap;

use petrel_mesh::{ClusterView, Counters, MemberState};

use crate::telemetry::{GOSSIP_BYTES, MESH_DROPPED, MESH_MEMBERS, PEER_RTT};

/// Remembers what was already counted, so counters only get the deltas.
#[derive(Default)]
pub struct MeshMetrics {
    bytes_in: u64,
    bytes_out: u64,
    dropped: HashMap<petrel_mesh::wire::Drop, u64>,
}

impl MeshMetrics {
    /// Updates every mesh metric from a view and the core's counters.
    pub fn update(&mut self, view: &ClusterView, counters: &Counters) {
        self.update_view(view);
        self.update_counters(counters);
    }

    /// The members and RTT gauges, from a view.
    fn update_view(&mut self, view: &ClusterView) {
        for state in [MemberState::Alive, MemberState::Suspect, MemberState::Down] {
            let n = view.members.iter().filter(|m| m.state == state).count();
            metrics::gauge!(MESH_MEMBERS, "state" => state.as_str()).set(n as f64);
        }
        let mut best: HashMap<&str, f64> = HashMap::new();
        for m in view.members.iter().filter(|m| m.state != MemberState::Down) {
            if let Some(rtt) = m.rtt.rtt_ms {
                let e = best.entry(&m.id.region).or_insert(f64::MAX);
                *e = e.min(rtt);
            }
        }
        for (region, ms) in best {
            metrics::gauge!(PEER_RTT, "region" => region.to_string()).set(ms / 1000.0);
        }
    }

    /// Gossip bytes and dropped datagrams, from the core's counters. Called on every sample
    /// tick as well as with each view, so a scrape sees drops even when no view changes (a
    /// node alone, flooded with garbage).
    pub fn update_counters(&mut self, counters: &Counters) {
        metrics::counter!(GOSSIP_BYTES, "direction" => "in")
            .increment(counters.bytes_in - self.bytes_in);
        metrics::counter!(GOSSIP_BYTES, "direction" => "out")
            .increment(counters.bytes_out - self.bytes_out);
        self.bytes_in = counters.bytes_in;
        self.bytes_out = counters.bytes_out;
        for (reason, n) in &counters.dropped {
            let seen = self.dropped.entry(*reason).or_default();
            metrics::counter!(MESH_DROPPED, "reason" => reason.as_str()).increment(n - *seen);
            *seen = *n;
        }
    }
}
