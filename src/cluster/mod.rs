//! The cluster: one owner task drives the sans-IO mesh core from a UDP socket and timers, and
//! publishes an immutable snapshot of members, RTTs and remote load for the request path.

mod driver;
mod metrics;
mod simulate;

use std::sync::Arc;
use std::time::Instant;

pub use driver::{spawn, MeshSetup};
pub use simulate::Delays;

/// What the request path and the admin API read: the mesh view and when it was published.
pub struct Snapshot {
    /// Members and remote instances.
    pub view: petrel_mesh::ClusterView,
    /// When the owner task published it.
    pub at: Instant,
}

impl Snapshot {
    /// A snapshot of `view`, published at `at`.
    pub fn new(view: petrel_mesh::ClusterView, at: Instant) -> Self {
        Self { view, at }
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new(petrel_mesh::ClusterView::default(), Instant::now())
    }
}

/// A shareable snapshot handle.
pub type SharedSnapshot = arc_swap::ArcSwap<Snapshot>;

/// A fresh, empty snapshot handle.
pub fn empty() -> SharedSnapshot {
    arc_swap::ArcSwap::from_pointee(Snapshot::default())
}

/// Shorthand used by readers.
pub type SnapshotRef = Arc<Snapshot>;
