//! One pooled connection per peer node, read without a lock: the map is swapped whole
//! (`ArcSwap`) when a connection is made or dropped, which happens per peer, not per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Peer backhaul address → its connection handle (`h2` sender, QUIC connection).
pub(super) struct Peers<C> {
    map: ArcSwap<HashMap<SocketAddr, C>>,
}

impl<C: Clone> Peers<C> {
    pub(super) fn new() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// A clone of the handle to `to` that `usable` accepts.
    pub(super) fn get(&self, to: &SocketAddr, usable: impl Fn(&C) -> bool) -> Option<C> {
        self.map.load().get(to).filter(|c| usable(c)).cloned()
    }

    /// Pools `conn` as the connection to `to` (replacing one that broke).
    pub(super) fn insert(&self, to: SocketAddr, conn: C) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(to, conn.clone());
            Arc::new(m)
        });
    }

    /// Forgets the connection to `to`.
    pub(super) fn remove(&self, to: &SocketAddr) {
        if self.map.load().contains_key(to) {
            self.map.rcu(|m| {
                let mut m = HashMap::clone(m);
                m.remove(to);
                Arc::new(m)
            });
        }
    }
}
