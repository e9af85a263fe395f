//! The cluster as one node sees it: members with RTT/loss, and remote instances with load.

use std::sync::Arc;
use std::time::Duration;

use crate::identity::NodeId;
use crate::load::InstanceLoad;
use crate::prober::RttSummary;

/// A member's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Suspected down; still routed to until declared down.
    Suspect,
    /// Declared down (or left).
    Down,
}

impl MemberState {
    /// The spelling used in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

/// One other node.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Its identity.
    pub id: NodeId,
    /// Liveness.
    pub state: MemberState,
    /// This node's measurements toward it.
    pub rtt: RttSummary,
}

/// An instance hosted on another node.
#[derive(Debug, Clone)]
pub struct RemoteInstance {
    /// Owner node name.
    pub node: Arc<str>,
    /// Owner node region.
    pub region: Arc<str>,
    /// Owner node backhaul address.
    pub backhaul: std::net::SocketAddr,
    /// This node's routing RTT to the owner (windowed minimum behind hysteresis), ms.
    pub rtt_ms: Option<f64>,
    /// The load record.
    pub load: InstanceLoad,
    /// When its newest record arrived (mesh clock).
    pub received_at: Duration,
}

/// An immutable snapshot; the request path reads it without locks.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Every other node known, any state.
    pub members: Vec<MemberView>,
    /// Instances on alive or suspect members, current generation only.
    pub instances: Vec<RemoteInstance>,
    /// Mesh clock when this was built.
    pub built_at: Duration,
}
