//! The cluster as the request path reads it: the immutable snapshot of members, RTTs and remote
//! load that the mesh owner task (`crate::node::mesh`) publishes, its metrics and the `[simulate]`
//! delays.

mod metrics;
mod simulate;

use std::sync::Arc;
use std::time::Instant;

use foldhash::HashMap;

use crate::balance::ClosestIndex;

pub use metrics::MeshMetrics;
pub use simulate::Delays;

/// How often local loads are sampled and fed to the mesh (the node's mesh task and `petrel sim`).
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// Least time between two published snapshots (the node's mesh task and `petrel sim`).
pub const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// RTT assumed for a member not measured yet: far enough that measured ones win.
pub const UNMEASURED_RTT_MS: f64 = 1_000.0;

/// What the request path and the admin API read: the mesh view and when it was published.
pub struct Snapshot {
    /// Members and remote instances.
    pub view: petrel_mesh::ClusterView,
    /// When the owner task published it.
    pub at: Instant,
    /// Per app, its instances' positions in `view.instances`, nearest RTT bucket first.
    apps: HashMap<Arc<str>, ClosestIndex>,
}

impl Snapshot {
    /// A snapshot of `view`, published at `at`, with each app's instances indexed by RTT.
    pub fn new(view: petrel_mesh::ClusterView, at: Instant) -> Self {
        let mut by_app: HashMap<Arc<str>, Vec<(u32, f64)>> = HashMap::default();
        for (i, r) in view.instances.iter().enumerate() {
            let rtt = r.rtt_ms.unwrap_or(UNMEASURED_RTT_MS);
            match by_app.get_mut(&*r.load.app) {
                Some(v) => v.push((i as u32, rtt)),
                None => {
                    by_app.insert(r.load.app.clone(), vec![(i as u32, rtt)]);
                }
            }
        }
        let apps = by_app
            .into_iter()
            .map(|(app, rtts)| (app, ClosestIndex::from_rtts(rtts)))
            .collect();
        Self { view, at, apps }
    }

    /// How long `node` has not answered this node's RTT pings, as of now (the mesh's last pong
    /// from it, plus the snapshot's age); `None` if it never answered one or is unknown.
    pub fn silent_for(&self, node: &str) -> Option<std::time::Duration> {
        let m = self.view.members.iter().find(|m| &*m.id.name == node)?;
        let last = m.rtt.last_seen?;
        Some(self.view.built_at.saturating_sub(last) + self.at.elapsed())
    }

    /// The remote instances of `app`, by RTT bucket (positions in `view.instances`).
    pub fn app(&self, app: &str) -> Option<&ClosestIndex> {
        self.apps.get(app)
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
