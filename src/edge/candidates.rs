//! Builds the candidate list for one request: local instances (live load) and remote ones (the
//! owner's last reported load while fresh, else gossiped, plus this edge's requests on the wire),
//! with this edge's recent connect failures applied.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::balance::{self, Empty, Feedback, Hints, View};
use crate::cluster::Snapshot;
use crate::config::Strategy;
use crate::edge::{AppRoute, Penalties};
use crate::local::{Instance, LocalTable};
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

/// What a pick reads: this node's instances, the mesh snapshot and this edge's fresher marks.
pub struct Sources<'a> {
    /// This node's region (its instances' region).
    pub region: &'a Arc<str>,
    /// This node's instances of the app.
    pub locals: &'a [Arc<Instance>],
    /// The mesh snapshot.
    pub snap: &'a Snapshot,
    /// Owners' load figures from answers, and this edge's requests on the wire.
    pub feedback: &'a Mutex<Feedback<Arc<str>>>,
    /// Instances recently seen full or unreachable.
    pub penalties: &'a Penalties,
    /// Node clock, ms.
    pub now_ms: u64,
}

/// The app figures a pick needs.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// App name.
    pub app: &'a str,
    /// Its strategy.
    pub strategy: Strategy,
    /// Soft limit of its local instances.
    pub soft: u32,
    /// Hard limit of its local instances.
    pub hard: u32,
}

impl<'a> Ask<'a> {
    /// The figures of a routed app.
    pub fn of(app: &'a AppRoute) -> Self {
        Self {
            app: &app.name,
            strategy: app.strategy,
            soft: app.soft,
            hard: app.hard,
        }
    }
}

/// The candidates a request will try, in order.
pub struct Picked {
    /// Candidates; `order` indexes into it.
    pub candidates: Vec<Candidate>,
    /// Best first, at most the budget asked for.
    pub order: Vec<usize>,
}

/// The first `budget` candidates for one request under the app's strategy and the request's hints.
pub fn pick<R: Rng + ?Sized>(
    src: &Sources<'_>,
    ask: Ask<'_>,
    hints: &Hints,
    budget: usize,
    rng: &mut R,
) -> Result<Picked, Empty> {
    let candidates = collect(src, ask);
    let views: Vec<_> = candidates.iter().map(Candidate::view).collect();
    let order = balance::select_top(ask.strategy, &views, hints, rng, budget)?;
    drop(views);
    Ok(Picked { candidates, order })
}

/// Every instance of the app anywhere: local ones with live load, remote ones with gossiped load.
pub fn collect(src: &Sources<'_>, ask: Ask<'_>) -> Vec<Candidate> {
    let now_ms = src.now_ms;
    let mut out = Vec::new();
    for i in src.locals {
        out.push(Candidate {
            target: Target::Local(i.clone()),
            region: src.region.clone(),
            rtt_ms: 0.0,
            load: i.load(),
            soft: ask.soft,
            hard: ask.hard,
            healthy: i.accepts_work(now_ms),
        });
    }
    let first_remote = out.len();
    for r in src
        .snap
        .view
        .instances
        .iter()
        .filter(|r| *r.load.app == *ask.app)
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
        let feedback = src.feedback.lock().expect("feedback lock");
        for c in &mut out[first_remote..] {
            c.load = feedback.estimate(&**c.target.id(), c.load, now_ms);
        }
    }
    for c in out.iter_mut() {
        if src.penalties.active(c.target.id(), now_ms) {
            c.load = c.load.max(c.hard);
        }
    }
    out
}

impl NodeState {
    /// What a pick for `app` reads on this node now.
    pub fn sources<'a>(
        &'a self,
        app: &str,
        local: &'a LocalTable,
        snap: &'a Snapshot,
        now_ms: u64,
    ) -> Sources<'a> {
        Sources {
            region: &self.region,
            locals: local.for_app(app),
            snap,
            feedback: &self.feedback,
            penalties: &self.penalties,
            now_ms,
        }
    }
}

/// Before a request's last try under `closest`: replaces the last of `order` with the instance
/// that has the most room anywhere, if it has more than that one ([`balance::last_resort`]). Reads
/// every instance of the app afresh, so it sees what the earlier tries learned.
pub fn last_resort(
    src: &Sources<'_>,
    ask: Ask<'_>,
    candidates: &mut Vec<Candidate>,
    order: &mut [usize],
    budget: usize,
) {
    if ask.strategy != Strategy::Closest
        || budget < balance::LAST_RESORT_FROM
        || order.len() < budget
    {
        return;
    }
    let mut all = collect(src, ask);
    let Some(mut at) = order
        .iter()
        .map(|&k| {
            let id = candidates[k].target.id();
            all.iter().position(|c| c.target.id() == id)
        })
        .collect::<Option<Vec<usize>>>()
    else {
        return; // an instance picked earlier is gone from the snapshot: keep the order as it is
    };
    let before = at[budget - 1];
    let views: Vec<_> = all.iter().map(Candidate::view).collect();
    balance::last_resort(ask.strategy, &views, &mut at, budget, &mut rand::rng());
    drop(views);
    if at[budget - 1] != before {
        candidates.push(all.swap_remove(at[budget - 1]));
        order[budget - 1] = candidates.len() - 1;
    }
}
