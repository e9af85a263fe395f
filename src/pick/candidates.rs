//! Builds the candidate list for one request: local instances (live load) and remote ones (the
//! owner's last reported load while fresh, else gossiped, plus this edge's requests on the wire),
//! with this edge's recent connect failures applied. Under `closest` it walks the app's RTT index
//! in the mesh snapshot and reads only the nearest instances it needs.

use std::net::SocketAddr;
use std::sync::Arc;

use petrel_mesh::RemoteInstance;
use rand::Rng;

use super::{Feedback, Penalties, Reader};
use crate::balance::{self, ClosestWalk, Empty, Hints, View};
use crate::cluster::{Snapshot, UNMEASURED_RTT_MS};
use crate::config::Strategy;
use crate::local::Instance;
use crate::routes::AppRoute;

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

/// One candidate with the figures the strategy reads.
#[derive(Clone)]
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
    pub feedback: &'a Feedback<Arc<str>>,
    /// Instances recently seen full or unreachable.
    pub penalties: &'a Penalties<Arc<str>>,
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

/// Where the app's instances this edge could not reach are, when that (not their load) is why a
/// pick came back empty: every healthy instance of the app is under this edge's penalty for
/// being unreachable. `None` when some instance is full by its own load, or none is healthy.
pub fn unreachable(src: &Sources<'_>, ask: Ask<'_>) -> Option<Unreachable> {
    let penalized = |id: &str| src.penalties.active(id, src.now_ms);
    let (mut any, mut remote) = (false, false);
    for i in src.locals.iter().filter(|i| i.accepts_work(src.now_ms)) {
        if !penalized(&i.id) {
            return None;
        }
        any = true;
    }
    let instances = &src.snap.view.instances;
    let remotes = src.snap.app(ask.app).into_iter().flat_map(|x| x.runs());
    for &p in remotes.flat_map(|(_, run)| run) {
        let r = &instances[p as usize];
        if r.load.healthy {
            if !penalized(&r.load.id) {
                return None;
            }
            (any, remote) = (true, true);
        }
    }
    any.then_some(Unreachable { remote })
}

/// Every healthy instance of an app was recently unreachable from this edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable {
    /// Some of them are on other nodes (so the backhaul failed), not only local ones.
    pub remote: bool,
}

/// The candidates a request will try, in order.
pub struct Picked {
    /// Candidates; `order` indexes into it.
    pub candidates: Vec<Candidate>,
    /// Best first, at most the budget asked for.
    pub order: Vec<usize>,
}

/// The first `budget` candidates for one request under the app's strategy and the request's hints.
///
/// `closest` without hints walks the app's snapshot index nearest bucket first and stops once
/// nothing farther can change the answer, so a request near room reads a few instances however
/// many the app has. Everything else reads every instance of the app. Either way candidates are
/// built only for the instances returned.
pub fn pick<R: Rng + ?Sized>(
    src: &Sources<'_>,
    ask: Ask<'_>,
    hints: &Hints,
    budget: usize,
    rng: &mut R,
) -> Result<Picked, Empty> {
    if ask.strategy == Strategy::Closest && *hints == Hints::default() {
        return pick_closest(src, ask, budget, rng);
    }
    let all = AppViews::read(src, ask);
    let order = super::order(ask.strategy, &all.views, hints, budget, rng)?;
    Ok(Picked {
        candidates: order.iter().map(|&n| all.candidate(src, ask, n)).collect(),
        order: (0..order.len()).collect(),
    })
}

/// `closest` through the snapshot's per-app index. Locals (RTT 0) are offered first, numbered
/// `0..locals`; remote instances are numbered `locals + position in the snapshot`.
fn pick_closest<R: Rng + ?Sized>(
    src: &Sources<'_>,
    ask: Ask<'_>,
    budget: usize,
    rng: &mut R,
) -> Result<Picked, Empty> {
    let mut walk = ClosestWalk::new(rng, budget);
    let locals = src.locals.len();
    let local_loads: smallvec::SmallVec<[u32; 8]> =
        src.locals.iter().map(|i| local_load(src, ask, i)).collect();
    for (k, i) in src.locals.iter().enumerate() {
        walk.offer(k, &local_view(src, ask, i, local_loads[k]));
    }
    let instances = &src.snap.view.instances;
    let index = src.snap.app(ask.app);
    // One load of the feedback map, over the buckets read and the candidates built.
    let feedback = index.map(|_| src.feedback.read());
    let remote_load = |r: &RemoteInstance| match &feedback {
        Some(f) => remote_load(src, r, f),
        None => r.load.load,
    };
    for (bucket, run) in index.into_iter().flat_map(|x| x.runs()) {
        if walk.settled(bucket) {
            break;
        }
        for &p in run {
            let r = &instances[p as usize];
            walk.offer(locals + p as usize, &remote_view(r, remote_load(r)));
        }
    }
    let chosen = walk.finish()?;
    let candidates = chosen
        .iter()
        .map(|&n| match n.checked_sub(locals) {
            None => local_candidate(src, ask, &src.locals[n], local_loads[n]),
            Some(p) => remote_candidate(&instances[p], remote_load(&instances[p])),
        })
        .collect();
    Ok(Picked {
        order: (0..chosen.len()).collect(),
        candidates,
    })
}

/// A candidate for every instance of the app, locals first, then the remote ones in the app's
/// index order, with the loads a pick would read (for `/v1/explain`; a request builds candidates
/// only for the instances it picks).
pub fn every(src: &Sources<'_>, ask: Ask<'_>) -> Vec<Candidate> {
    let all = AppViews::read(src, ask);
    (0..all.views.len())
        .map(|n| all.candidate(src, ask, n))
        .collect()
}

/// Every instance of the app anywhere, as views borrowed from the snapshot: locals first (live
/// load), then the app's remote instances in index order (the owner's last answer while fresh,
/// else gossiped load). Candidates are built only for the views chosen.
struct AppViews<'a> {
    views: Vec<View<'a>>,
    local_loads: Vec<u32>,
    positions: &'a [u32],
}

impl<'a> AppViews<'a> {
    fn read(src: &'a Sources<'_>, ask: Ask<'_>) -> Self {
        let local_loads: Vec<u32> = src.locals.iter().map(|i| local_load(src, ask, i)).collect();
        let positions = src.snap.app(ask.app).map_or(&[][..], |x| x.positions());
        let mut views = Vec::with_capacity(src.locals.len() + positions.len());
        views.extend(
            src.locals
                .iter()
                .zip(&local_loads)
                .map(|(i, &load)| local_view(src, ask, i, load)),
        );
        if !positions.is_empty() {
            let feedback = src.feedback.read();
            views.extend(positions.iter().map(|&p| {
                let r = &src.snap.view.instances[p as usize];
                remote_view(r, remote_load(src, r, &feedback))
            }));
        }
        Self {
            views,
            local_loads,
            positions,
        }
    }

    /// The candidate for `views[n]`.
    fn candidate(&self, src: &Sources<'_>, ask: Ask<'_>, n: usize) -> Candidate {
        match n.checked_sub(self.local_loads.len()) {
            None => local_candidate(src, ask, &src.locals[n], self.local_loads[n]),
            Some(k) => remote_candidate(
                &src.snap.view.instances[self.positions[k] as usize],
                self.views[n].load,
            ),
        }
    }
}

fn local_load(src: &Sources<'_>, ask: Ask<'_>, i: &Instance) -> u32 {
    super::local_load(src.penalties, &*i.id, i.load(), ask.hard, src.now_ms)
}

fn remote_load(src: &Sources<'_>, r: &RemoteInstance, feedback: &Reader<'_, Arc<str>>) -> u32 {
    let l = &r.load;
    super::remote_load(src.penalties, feedback, &*l.id, l.load, l.hard, src.now_ms)
}

fn local_view<'a>(src: &'a Sources<'_>, ask: Ask<'_>, i: &'a Instance, load: u32) -> View<'a> {
    View {
        id: &i.id,
        region: src.region,
        rtt_ms: 0.0,
        load,
        soft: ask.soft,
        hard: ask.hard,
        healthy: i.accepts_work(src.now_ms),
    }
}

fn remote_view(r: &RemoteInstance, load: u32) -> View<'_> {
    View {
        id: &r.load.id,
        region: &r.region,
        rtt_ms: r.rtt_ms.unwrap_or(UNMEASURED_RTT_MS),
        load,
        soft: r.load.soft,
        hard: r.load.hard,
        healthy: r.load.healthy,
    }
}

fn local_candidate(src: &Sources<'_>, ask: Ask<'_>, i: &Arc<Instance>, load: u32) -> Candidate {
    Candidate {
        target: Target::Local(i.clone()),
        region: src.region.clone(),
        rtt_ms: 0.0,
        load,
        soft: ask.soft,
        hard: ask.hard,
        healthy: i.accepts_work(src.now_ms),
    }
}

fn remote_candidate(r: &RemoteInstance, load: u32) -> Candidate {
    let rtt_ms = r.rtt_ms.unwrap_or(UNMEASURED_RTT_MS);
    Candidate {
        target: Target::Remote(Remote {
            id: r.load.id.clone(),
            node: r.node.clone(),
            region: r.region.clone(),
            backhaul: r.backhaul,
            rtt_ms,
        }),
        region: r.region.clone(),
        rtt_ms,
        load,
        soft: r.load.soft,
        hard: r.load.hard,
        healthy: r.load.healthy,
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
    let all = AppViews::read(src, ask);
    let Some(mut at) = order
        .iter()
        .map(|&k| {
            let id = &**candidates[k].target.id();
            all.views.iter().position(|v| v.id == id)
        })
        .collect::<Option<Vec<usize>>>()
    else {
        return; // an instance picked earlier is gone from the snapshot: keep the order as it is
    };
    let before = at[budget - 1];
    super::last_resort(ask.strategy, &all.views, &mut at, budget, &mut rand::rng());
    if at[budget - 1] != before {
        candidates.push(all.candidate(src, ask, at[budget - 1]));
        order[budget - 1] = candidates.len() - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};
    use std::time::{Duration, Instant};

    fn remote(app: &str, i: usize, rtt: Option<f64>, load: u32, healthy: bool) -> RemoteInstance {
        RemoteInstance {
            node: format!("n{}", i % 9).into(),
            region: format!("r{}", i % 5).into(),
            backhaul: ([127, 0, 0, 1], 9).into(),
            rtt_ms: rtt,
            load: petrel_mesh::InstanceLoad {
                id: format!("{app}-{i}").into(),
                app: app.into(),
                load,
                soft: 10,
                hard: 12,
                healthy,
            },
            received_at: Duration::ZERO,
        }
    }

    /// The reference: a candidate for every instance of the app, built one by one.
    fn collect(src: &Sources<'_>, ask: Ask<'_>) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = src
            .locals
            .iter()
            .map(|i| local_candidate(src, ask, i, local_load(src, ask, i)))
            .collect();
        // Same order as the pick's views (its random tie-breaks are by position): the app's index.
        let positions = src.snap.app(ask.app).map_or(&[][..], |x| x.positions());
        let feedback = src.feedback.read();
        for &p in positions {
            let r = &src.snap.view.instances[p as usize];
            out.push(remote_candidate(r, remote_load(src, r, &feedback)));
        }
        out
    }

    /// The same instances as `petrel sim` hands them to the pick: figures before this edge's
    /// marks, which `super::views` applies.
    fn simulated_views<'a>(src: &'a Sources<'_>, ask: Ask<'_>) -> Vec<View<'a>> {
        let mut seen: Vec<super::super::Seen<'a, Arc<str>>> = src
            .locals
            .iter()
            .map(|i| super::super::Seen {
                key: i.id.clone(),
                local: true,
                view: View {
                    id: &i.id,
                    region: src.region,
                    rtt_ms: 0.0,
                    load: i.load(),
                    soft: ask.soft,
                    hard: ask.hard,
                    healthy: i.accepts_work(src.now_ms),
                },
            })
            .collect();
        let positions = src.snap.app(ask.app).map_or(&[][..], |x| x.positions());
        seen.extend(positions.iter().map(|&p| {
            let r = &src.snap.view.instances[p as usize];
            super::super::Seen {
                key: r.load.id.clone(),
                local: false,
                view: remote_view(r, r.load.load),
            }
        }));
        super::super::views(&seen, src.penalties, src.feedback, src.now_ms)
    }

    /// What decides a candidate's place under `closest`: tier, RTT bucket, load.
    fn rank(c: &Candidate) -> (bool, u64, u32) {
        let b = (c.rtt_ms / balance::RTT_BUCKET_MS) as u64;
        (c.load >= c.soft, b, c.load)
    }

    /// The proxy's pick (the indexed walk, and reading every instance) against the reference, and
    /// the simulator's input to the same pick against the proxy's views.
    #[test]
    fn the_indexed_walk_and_the_simulator_pick_what_reading_every_instance_picks() {
        let mut gen = SmallRng::seed_from_u64(3);
        let region: Arc<str> = "r0".into();
        let locals: Vec<Arc<Instance>> = (0..2)
            .map(|i| Instance::new(&format!("app-l{i}"), "app", ([127, 0, 0, 1], 9).into()))
            .collect();
        let ask = Ask {
            app: "app",
            strategy: Strategy::Closest,
            soft: 10,
            hard: 12,
        };
        for round in 0..300 {
            let n = gen.random_range(0..80);
            let mut instances = Vec::new();
            for i in 0..n {
                let rtt = (gen.random_range(0..8) > 0).then(|| gen.random_range(0.0..200.0));
                let load = gen.random_range(0..14);
                let healthy = gen.random_range(0..10) > 0;
                let app = if gen.random_range(0..3) == 0 {
                    "other"
                } else {
                    "app"
                };
                instances.push(remote(app, i, rtt, load, healthy));
            }
            // The edge knows better about some: an owner's answer, a request on the wire, a penalty.
            let fb = Feedback::new(1_000);
            let penalties = Penalties::default();
            for r in &instances {
                match gen.random_range(0..8) {
                    0 => fb.answered(r.load.id.clone(), gen.random_range(0..14), 50),
                    1 => fb.sent(r.load.id.clone(), 50, 90),
                    2 => penalties.mark(&r.load.id, 500),
                    _ => {}
                }
            }
            if gen.random_range(0..4) == 0 {
                penalties.mark(&locals[0].id, 500);
            }
            let snap = Snapshot::new(
                petrel_mesh::ClusterView {
                    members: Vec::new(),
                    instances,
                    built_at: Duration::ZERO,
                },
                Instant::now(),
            );
            let src = Sources {
                region: &region,
                locals: &locals,
                snap: &snap,
                feedback: &fb,
                penalties: &penalties,
                now_ms: 60,
            };
            let budget = gen.random_range(1..6);
            let walked = pick(&src, ask, &Hints::default(), budget, &mut gen);
            let all = collect(&src, ask);
            // What `petrel sim` gives the pick (`super::Seen`, loads before marks) comes out as
            // the very views the proxy routes on.
            let simulated = simulated_views(&src, ask);
            let proxied: Vec<_> = all.iter().map(Candidate::view).collect();
            assert_eq!(
                format!("{simulated:?}"),
                format!("{proxied:?}"),
                "round {round}"
            );
            let views: Vec<_> = all.iter().map(Candidate::view).collect();
            let read = balance::select_top(
                Strategy::Closest,
                &views,
                &Hints::default(),
                &mut gen,
                budget,
            );
            match (walked, read) {
                (Ok(w), Ok(r)) => {
                    let w: Vec<_> = w.order.iter().map(|&k| rank(&w.candidates[k])).collect();
                    let r: Vec<_> = r.iter().map(|&k| rank(&all[k])).collect();
                    assert_eq!(w, r, "round {round}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "round {round}"),
                (a, b) => panic!(
                    "round {round}: walked {:?}, read {:?}",
                    a.map(|p| p.order),
                    b
                ),
            }
            // leastload and hinted requests read every instance: exactly the same picks, id for
            // id, as building every candidate first, for the same random draws.
            let views: Vec<_> = all.iter().map(Candidate::view).collect();
            let hinted = Hints {
                prefer_regions: vec!["r3".into()],
                ..Hints::default()
            };
            for (strategy, hints) in [
                (Strategy::Leastload, Hints::default()),
                (Strategy::Closest, hinted),
            ] {
                let seed = gen.random_range(0..u64::MAX);
                let ask = Ask { strategy, ..ask };
                let picked = pick(
                    &src,
                    ask,
                    &hints,
                    budget,
                    &mut SmallRng::seed_from_u64(seed),
                );
                let read = balance::select_top(
                    strategy,
                    &views,
                    &hints,
                    &mut SmallRng::seed_from_u64(seed),
                    budget,
                );
                match (picked, read) {
                    (Ok(p), Ok(r)) => {
                        let p: Vec<_> = p
                            .order
                            .iter()
                            .map(|&k| p.candidates[k].target.id().clone())
                            .collect();
                        let r: Vec<_> = r.iter().map(|&k| all[k].target.id().clone()).collect();
                        assert_eq!(p, r, "round {round}, {strategy:?}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "round {round}"),
                    (a, b) => panic!(
                        "round {round}: picked {:?}, read {:?}",
                        a.map(|p| p.order),
                        b
                    ),
                }
            }
        }
    }
}
