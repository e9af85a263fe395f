//! Builds the candidate list for one request: local instances (live load) and remote ones (the
//! owner's last reported load while fresh, else gossiped, plus this edge's requests on the wire),
//! with this edge's recent connect failures applied.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::View;
use crate::edge::AppRoute;
use crate::local::Instance;
use crate::state::NodeState;

/// Where an instance lives.
#[derive(Clone)]
pub enum Target {
    /// On this node.
    Local(Arc<Instance>),
    /// On another node, reached over the backhaul.
    Remote(Remote),
}

/// An instance on another node.
#[derive(Clone)]
pub struct Remote {
    /// Instance id.
    pub id: Arc<str>,
    /// Owner node.
    pub node: Arc<str>,
    /// Owner region.
    pub region: Arc<str>,
    /// Owner backhaul address.
    pub backhaul: SocketAddr,
    /// RTT to the owner, ms: a request sent now reaches it in about half.
    pub rtt_ms: f64,
}

impl Target {
    /// Instance id.
    pub fn id(&self) -> &Arc<str> {
        match self {
            Target::Local(i) => &i.id,
            Target::Remote(r) => &r.id,
        }
    }
}

/// RTT assumed for a member not measured yet: far enough that measured ones win.
const UNMEASURED_RTT_MS: f64 = 1_000.0;

/// One candidate with the figures the strategy reads.
pub struct Candidate {
    /// Where it is.
    pub target: Target,
    /// Its region.
    pub region: Arc<str>,
    /// RTT from this node to its node.
    pub rtt_ms: f64,
    /// Current load, as best this edge knows it (a recent "full" answer counts as full).
    pub load: u32,
    /// Soft limit the owner applies.
    pub soft: u32,
    /// Hard limit the owner enforces.
    pub hard: u32,
    /// May be given work.
    pub healthy: bool,
}

impl Candidate {
    /// The strategy's view of it.
    pub fn view(&self) -> View<'_> {
        View {
            id: self.target.id(),
            region: &self.region,
            rtt_ms: self.rtt_ms,
            load: self.load,
            soft: self.soft,
            hard: self.hard,
            healthy: self.healthy,
        }
    }
}

/// Every instance of `app` anywhere: local ones with live load, remote ones with gossiped load.
pub fn collect(node: &NodeState, app: &AppRoute, now_ms: u64) -> Vec<Candidate> {
    let mut out = Vec::new();
    for i in node.local.load().for_app(&app.name) {
        out.push(Candidate {
            target: Target::Local(i.clone()),
            region: node.region.clone(),
            rtt_ms: 0.0,
            load: i.load(),
            soft: app.soft,
            hard: app.hard,
            healthy: i.accepts_work(now_ms),
        });
    }
    let snap = node.cluster.load();
    let first_remote = out.len();
    for r in snap
        .view
        .instances
        .iter()
        .filter(|r| *r.load.app == *app.name)
    {
        let rtt_ms = r.rtt_ms.unwrap_or(UNMEASURED_RTT_MS);
        out.push(Candidate {
            target: Target::Remote(Remote {
                id: r.load.id.clone(),
                node: r.node.clone(),
                region: r.region.clone(),
                backhaul: r.backhaul,
                rtt_ms,
            }),
            region: r.region.clone(),
            rtt_ms,
            load: r.load.load,
            soft: r.load.soft,
            hard: r.load.hard,
            healthy: r.load.healthy,
        });
    }
    if out.len() > first_remote {
        // One short hold of the lock, only over this app's remote candidates.
        let feedback = node.feedback.lock().expect("feedback lock");
        for c in &mut out[first_remote..] {
            c.load = feedback.estimate(&**c.target.id(), c.load, now_ms);
        }
    }
    for c in out.iter_mut() {
        if node.penalties.active(c.target.id(), now_ms) {
            c.load = c.load.max(c.hard);
        }
    }
    out
}
