//! A node's identity in the mesh: name, region, address and a generation that changes on every start.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who a member is. Two identities with the same address are the same node; the higher
/// generation is the newer incarnation (a restart or a rejoin after being declared down).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Unique node name.
    pub name: Arc<str>,
    /// Region code.
    pub region: Arc<str>,
    /// Mesh address peers send to.
    pub addr: SocketAddr,
    /// Backhaul address peers send requests to.
    pub backhaul: SocketAddr,
    /// Changes on every start (and on every `renew`).
    pub generation: u64,
}

impl NodeId {
    /// A stand-in for a seed whose real identity is not known yet; it loses every address
    /// conflict, so the seed's real identity replaces it as soon as the seed answers.
    pub fn seed(addr: SocketAddr) -> Self {
        Self {
            name: "".into(),
            region: "".into(),
            addr,
            backhaul: addr,
            generation: 0,
        }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.generation > other.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins_and_seed_placeholder_loses() {
        let id = NodeId {
            name: "a".into(),
            region: "iad".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            backhaul: "127.0.0.1:2".parse().unwrap(),
            generation: 7,
        };
        let next = id.renew().unwrap();
        assert_eq!(next.generation, 8);
        assert!(next.win_addr_conflict(&id));
        assert!(!id.win_addr_conflict(&next));
        assert!(id.win_addr_conflict(&NodeId::seed(id.addr)));
    }
}
