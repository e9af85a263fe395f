//! The simulated world: nodes running the real mesh core over simulated links (latency, jitter,
//! loss, partitions), instances with limits, and the event loop that drives them on a virtual clock.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use petrel_mesh::{Event, InstanceLoad, Mesh, MeshConfig, NodeId, Profile};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::oracle::Timeline;
use super::policy::Policy;
use super::queue::{ms, secs, Nanos, Queue};
use super::scenario::Scenario;
use super::stats::Stats;
use crate::pick::{Feedback, Penalties, FEEDBACK_IDLE_MS, FEEDBACK_TTL_MS};

/// How often a node reports its instances' load to its mesh core (the node's driver's constant).
pub const SAMPLE_EVERY: Nanos = crate::cluster::SAMPLE_EVERY.as_nanos() as Nanos;
/// Least time between two snapshots a node routes on (the node's driver's constant).
pub const PUBLISH_EVERY: Nanos = crate::cluster::PUBLISH_EVERY.as_nanos() as Nanos;
/// An owner's load figure counts this long at the edge (as the proxy's FEEDBACK_TTL_MS); a "full"
/// answer therefore skips the instance this long unless a newer answer comes first.
pub const FEEDBACK_TTL: Nanos = FEEDBACK_TTL_MS * 1_000_000;
/// After an unreachable owner the edge skips that instance this long (the proxy's constant).
pub const UNREACHABLE_PENALTY: Nanos = crate::pick::UNREACHABLE_FOR.as_nanos() as Nanos;
/// A node alone in the mesh knocks on the seeds again this often (as the driver does).
pub const REJOIN_EVERY: Nanos = 500_000_000;
/// How often a long run reports its progress on stderr (simulated time).
pub const PROGRESS_EVERY: Nanos = 10_000_000_000;
/// Runs shorter than this (wall time) print no progress.
pub const PROGRESS_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
/// How long requests still in flight at the end of the window may take to finish.
pub const DRAIN: Nanos = 30_000_000_000;
/// How far back the oracle's timeline reaches (no request is in flight longer).
pub const ORACLE_MEMORY: Nanos = DRAIN;

/// A request handle: slot and a per-use id, so events for a finished request are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rid {
    pub(super) slot: u32,
    pub(super) uid: u32,
}

/// Everything that can happen.
#[derive(Debug)]
pub enum Ev {
    /// A node's mesh core asked to be woken.
    MeshTimer(usize),
    /// A mesh datagram arrives.
    Datagram {
        /// Receiving node.
        to: usize,
        /// Sender's mesh address.
        from: SocketAddr,
        /// The sealed datagram.
        data: Vec<u8>,
    },
    /// A node samples its instances' load into its mesh core.
    Sample(usize),
    /// A client request arrives in a region.
    Arrival(usize),
    /// A request reaches the node that owns the instance.
    AtOwner(Rid, usize),
    /// A "full" answer reaches the edge.
    Rejected(Rid, usize),
    /// The connect to the owner timed out at the edge.
    Unreachable(Rid, usize),
    /// The instance finished the request (epoch of the instance when it started).
    Finish(Rid, usize, u32),
    /// The response reaches the edge.
    Response(Rid),
    /// A node stops.
    Crash(usize),
    /// A node starts again.
    Recover(usize),
    /// A partition begins.
    Cut(usize),
    /// A partition heals.
    Heal(usize),
    /// Once a second: per-region utilisation for the report.
    Tick,
}

/// One simulated node.
pub struct Node {
    pub(super) name: Arc<str>,
    pub(super) region: usize,
    pub(super) addr: SocketAddr,
    pub(super) mesh: Option<Mesh>,
    pub(super) generation: u64,
    pub(super) timer_at: Nanos,
    pub(super) insts: Vec<usize>,
    /// Per app, the remote instances of the last published snapshot.
    pub(super) remote: Vec<AppView>,
    /// Instances this edge found unreachable, skipped until then.
    pub(super) penalties: Penalties<usize>,
    /// Owners' load figures and this edge's requests on the wire, as the proxy keeps them.
    pub(super) feedback: Feedback<usize>,
    pub(super) rr: usize,
    pub(super) last_join: Nanos,
    /// Mesh bytes sent by earlier incarnations (a crash resets the core's counters).
    pub(super) bytes_before: u64,
}

/// One app's remote instances as an edge last published them.
#[derive(Clone, Default)]
pub struct AppView {
    /// When built.
    pub(super) at: Nanos,
    /// The mesh's change count it was built from (`u64::MAX`: never).
    pub(super) changes: u64,
    /// (instance, routing RTT ms, gossiped load, healthy).
    pub(super) list: Vec<(usize, f64, u32, bool)>,
}

/// One simulated instance.
pub struct Inst {
    pub(super) id: Arc<str>,
    pub(super) app: usize,
    pub(super) node: usize,
    pub(super) region: usize,
    pub(super) load: u32,
    pub(super) alive: bool,
    pub(super) epoch: u32,
    pub(super) queue: VecDeque<Rid>,
    pub(super) busy: f64,
    pub(super) since: Nanos,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Free slot.
    Free,
    /// Travelling to, queued at, served by or returning from an instance.
    At(usize),
}

/// One client request.
pub struct Req {
    pub(super) uid: u32,
    pub(super) stage: Stage,
    pub(super) arrival: Nanos,
    pub(super) extra: Nanos,
    pub(super) edge: usize,
    pub(super) edge_gen: u64,
    pub(super) app: usize,
    pub(super) service: Nanos,
    pub(super) order: Vec<usize>,
    pub(super) next: usize,
    pub(super) sent_at: Nanos,
    pub(super) oracle_rtt: f64,
    /// True RTT from the edge to the nearest instance its own view showed with room (below soft;
    /// below hard when none was), ms: a first try farther than this was the RTT figures' doing.
    pub(super) seen_rtt: f64,
    /// The load the owner reported with its answer.
    pub(super) told: u32,
    /// Network time paid so far, ms: the client's way to a farther edge, and each try's RTT
    /// (a refusal's round trip, a connect timeout's wait, the serving exchange).
    pub(super) net_ms: f64,
}

/// The whole simulated system for one policy.
pub struct World {
    pub(super) sc: Arc<Scenario>,
    pub(super) policy: Policy,
    pub(super) q: Queue<Ev>,
    pub(super) now: Nanos,
    pub(super) nodes: Vec<Node>,
    pub(super) by_addr: HashMap<SocketAddr, usize>,
    pub(super) insts: Vec<Inst>,
    pub(super) by_id: HashMap<Arc<str>, usize>,
    pub(super) app_names: Vec<Arc<str>>,
    pub(super) reqs: Vec<Req>,
    pub(super) free: Vec<u32>,
    pub(super) next_uid: u32,
    /// Partition side of each region (0 = the main side).
    pub(super) side: Vec<u32>,
    pub(super) net_rng: SmallRng,
    pub(super) pick_rng: SmallRng,
    pub(super) load_rng: SmallRng,
    pub(super) stats: Stats,
    pub(super) window: (Nanos, Nanos),
    /// [app][region] → instances below soft, instances below hard (alive ones).
    pub(super) capacity: Vec<Vec<(u32, u32)>>,
    /// For each region, every region nearest first.
    pub(super) nearest: Vec<Vec<usize>>,
    /// Estimated RTTs, node × node, ms (the coordinates policy).
    pub(super) estimate: Option<Vec<Vec<f64>>>,
    pub(super) traffic: bool,
    pub(super) seeds: Vec<SocketAddr>,
    pub(super) mesh_cfg: MeshConfig,
    pub(super) seed: u64,
    pub(super) in_flight: u64,
    /// Node indexes of each region, in order.
    pub(super) region_nodes: Vec<Vec<usize>>,
    /// Global capacity, requests per second (instances × soft / mean service time).
    pub(super) capacity_rps: f64,
    /// The `capacity` counts over time, for the arrival-time oracle.
    pub(super) timeline: Timeline,
    /// Scratch for judging one request: (region, when the request would have reached it).
    pub(super) reach: Vec<(usize, Nanos)>,
    /// Node index by name.
    pub(super) by_name: HashMap<Arc<str>, usize>,
    /// Per node: (from, until, delay) windows in which it handles datagrams late.
    pub(super) slow: Vec<Vec<(Nanos, Nanos, Nanos)>>,
}

fn node_addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], port))
}

impl World {
    /// Builds the world; `traffic` false runs the mesh alone (cluster-size sweeps).
    pub fn new(
        sc: Arc<Scenario>,
        policy: Policy,
        seed: u64,
        traffic: bool,
        estimate: Option<Vec<Vec<f64>>>,
    ) -> Self {
        let names = sc.node_names();
        let s = &sc.sim;
        let profile = if s.profile == "lan" {
            Profile::Lan
        } else {
            Profile::Wan
        };
        let mut mesh_cfg = MeshConfig::new(profile, names.len() as u32, vec![[7u8; 32]]);
        if !s.rtt_pings {
            mesh_cfg.ping_interval = Duration::from_secs(86_400);
            mesh_cfg.ping_timeout = mesh_cfg.ping_interval * 2;
        }
        let apps = s.apps as usize;
        let mut nodes = Vec::with_capacity(names.len());
        let mut insts = Vec::new();
        let mut by_addr = HashMap::new();
        let mut by_id = HashMap::new();
        for (n, (name, region)) in names.iter().enumerate() {
            let addr = node_addr(n, 7946);
            by_addr.insert(addr, n);
            let mut mine = Vec::new();
            for k in 0..sc.regions[*region].instances_per_node as usize {
                let i = insts.len();
                let id: Arc<str> = format!("{name}-i{k}").into();
                by_id.insert(id.clone(), i);
                insts.push(Inst {
                    id,
                    app: i % apps,
                    node: n,
                    region: *region,
                    load: 0,
                    alive: true,
                    epoch: 0,
                    queue: VecDeque::new(),
                    busy: 0.0,
                    since: 0,
                });
                mine.push(i);
            }
            nodes.push(Node {
                name: name.as_str().into(),
                region: *region,
                addr,
                mesh: None,
                generation: 1,
                timer_at: Nanos::MAX,
                insts: mine,
                remote: vec![
                    AppView {
                        changes: u64::MAX,
                        ..AppView::default()
                    };
                    apps
                ],
                penalties: Penalties::default(),
                feedback: Feedback::new(FEEDBACK_TTL),
                rr: n,
                last_join: 0,
                bytes_before: 0,
            });
        }
        // Seeds: the first node of up to three regions, as an operator would list them.
        let seeds: Vec<SocketAddr> = {
            let mut firsts: Vec<usize> = Vec::new();
            for (n, (_, r)) in names.iter().enumerate() {
                if firsts.len() < 3 && firsts.iter().all(|&f| names[f].1 != *r) {
                    firsts.push(n);
                }
            }
            firsts.iter().map(|&n| nodes[n].addr).collect()
        };
        let mut capacity = vec![vec![(0u32, 0u32); sc.regions.len()]; apps];
        for i in &insts {
            capacity[i.app][i.region].0 += 1;
            capacity[i.app][i.region].1 += 1;
        }
        let nearest = (0..sc.regions.len())
            .map(|a| {
                let mut o: Vec<usize> = (0..sc.regions.len()).collect();
                o.sort_by(|&x, &y| sc.rtt_ms[a][x].total_cmp(&sc.rtt_ms[a][y]).then(x.cmp(&y)));
                o
            })
            .collect();
        let warm = secs(s.warmup_s);
        let n_regions = sc.regions.len();
        let mut region_nodes = vec![Vec::new(); n_regions];
        for (n, node) in nodes.iter().enumerate() {
            region_nodes[node.region].push(n);
        }
        let capacity_rps = insts.len() as f64 * f64::from(s.soft_limit) / (s.service_ms / 1000.0);
        let timeline = Timeline::new(&capacity);
        Self {
            sc: sc.clone(),
            policy,
            q: Queue::default(),
            now: 0,
            nodes,
            by_addr,
            insts,
            by_id,
            app_names: (0..apps).map(|a| format!("app{a}").into()).collect(),
            reqs: Vec::new(),
            free: Vec::new(),
            next_uid: 0,
            side: vec![0; n_regions],
            net_rng: SmallRng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00),
            pick_rng: SmallRng::seed_from_u64(seed ^ 0x7069_636b_0000_0000),
            load_rng: SmallRng::seed_from_u64(seed ^ 0x6c6f_6164_0000_0000),
            stats: Stats::new(n_regions),
            window: (warm, warm + secs(s.duration_s)),
            capacity,
            nearest,
            estimate,
            traffic,
            seeds,
            mesh_cfg,
            seed,
            in_flight: 0,
            region_nodes,
            capacity_rps,
            timeline,
            reach: Vec::new(),
            by_name: names
                .iter()
                .enumerate()
                .map(|(n, (name, _))| (Arc::from(name.as_str()), n))
                .collect(),
            slow: vec![Vec::new(); names.len()],
        }
    }

    /// The fluid bound of this run's scenario (see [`super::fluid`]): demand at the middle of
    /// each simulated second of the window, capacity from the instances as configured (crashes
    /// not taken off: the bound is for the healthy cluster).
    pub(super) fn fluid_bound(&self) -> super::fluid::Bound {
        let s = &self.sc.sim;
        let n = self.sc.regions.len();
        let per_instance = f64::from(s.soft_limit) / (s.service_ms / 1000.0);
        let mut capacity = vec![vec![0.0; n]; s.apps.max(1) as usize];
        for i in &self.insts {
            capacity[i.app][i.region] += per_instance;
        }
        let count = s.duration_s.ceil().max(1.0) as usize;
        let steps: Vec<Vec<f64>> = (0..count)
            .map(|k| {
                let t = (k as f64 + 0.5) * s.duration_s / count as f64;
                (0..n).map(|r| self.rate_at(r, t)).collect()
            })
            .collect();
        super::fluid::bound(&steps, &capacity, &self.sc.rtt_ms)
    }

    /// Starts every node, schedules clients and failures, runs to the end of the window and then
    /// until the requests still in flight are done.
    pub fn run(&mut self) {
        for n in 0..self.nodes.len() {
            self.start_node(n);
            // Spread the samplers over one period so nodes are not in lock step.
            let offset = self.net_rng.random_range(0..SAMPLE_EVERY);
            self.q.push(offset, Ev::Sample(n));
        }
        let (start, end) = self.window;
        if self.traffic {
            for r in 0..self.sc.regions.len() {
                self.q.push(start, Ev::Arrival(r));
            }
        }
        self.q.push(start, Ev::Tick);
        self.schedule_failures();
        let mut measured_bytes = false;
        let started = std::time::Instant::now();
        let mut next_progress: Nanos = PROGRESS_EVERY;
        while let Some((at, ev)) = self.q.pop() {
            if at >= next_progress {
                next_progress += PROGRESS_EVERY;
                self.progress(at, started);
            }
            if at >= start && !self.stats.mesh_started() {
                let b = self.mesh_bytes();
                self.stats.mesh_start(b);
            }
            if at >= end && !measured_bytes {
                measured_bytes = true;
                let b = self.mesh_bytes();
                self.stats.mesh_end(b, self.nodes.len(), end - start);
            }
            if at >= end + DRAIN || (at >= end && self.in_flight == 0) {
                break;
            }
            self.now = at;
            self.handle(ev);
        }
        if !measured_bytes {
            let b = self.mesh_bytes();
            self.stats.mesh_end(b, self.nodes.len(), end - start);
        }
        let now = self.now.min(end);
        for i in 0..self.insts.len() {
            self.account(i, now);
        }
        self.stats.events = self.q.scheduled();
    }

    /// One progress line on stderr, once a run has taken long enough to need one.
    fn progress(&self, at: Nanos, started: std::time::Instant) {
        if started.elapsed() < PROGRESS_AFTER {
            return;
        }
        let fewest = self
            .nodes
            .iter()
            .filter_map(|n| n.mesh.as_ref().map(|m| m.live_members()))
            .min()
            .unwrap_or(0);
        eprintln!(
            "sim:   {:>4.0} simulated s, {} events, {} pending, fewest members known {fewest}, {:.1} s",
            at as f64 / 1e9,
            self.q.scheduled(),
            self.q.len(),
            started.elapsed().as_secs_f64()
        );
    }

    fn mesh_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.bytes_before + n.mesh.as_ref().map_or(0, |m| m.counters().bytes_out))
            .sum()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::MeshTimer(n) => {
                if self.nodes[n].timer_at != self.now {
                    return; // superseded
                }
                self.nodes[n].timer_at = Nanos::MAX;
                if let Some(m) = self.nodes[n].mesh.as_mut() {
                    m.handle_timeout(Duration::from_nanos(self.now));
                }
                self.after_mesh(n);
            }
            Ev::Datagram { to, from, data } => {
                if let Some(m) = self.nodes[to].mesh.as_mut() {
                    m.handle_datagram(from, &data, Duration::from_nanos(self.now));
                    self.after_mesh(to);
                }
            }
            Ev::Sample(n) => {
                self.q.push(self.now + SAMPLE_EVERY, Ev::Sample(n));
                self.sample(n);
            }
            Ev::Arrival(r) => self.arrival(r),
            Ev::AtOwner(rid, i) => self.at_owner(rid, i),
            Ev::Rejected(rid, i) => self.full(rid, i),
            Ev::Unreachable(rid, i) => self.rejected(rid, i, UNREACHABLE_PENALTY),
            Ev::Finish(rid, i, epoch) => self.finish(rid, i, epoch),
            Ev::Response(rid) => self.complete(rid),
            Ev::Crash(n) => self.crash(n),
            Ev::Recover(n) => self.recover(n),
            Ev::Cut(p) => self.cut(p),
            Ev::Heal(p) => self.heal(p),
            Ev::Tick => {
                if self.now < self.window.1 {
                    self.q.push(self.now + secs(1.0), Ev::Tick);
                }
                self.tick();
            }
        }
    }

    /// A fresh mesh core for node `n` (start or restart), joined through the seeds.
    pub(super) fn start_node(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let id = NodeId {
            name: node.name.clone(),
            region: self.sc.regions[node.region].code.as_str().into(),
            addr: node.addr,
            backhaul: node_addr(n, 7947),
            generation: node.generation,
        };
        let now = Duration::from_nanos(self.now);
        let seed = self.seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.generation;
        let mut mesh = Mesh::new(id, self.mesh_cfg.clone(), seed, now);
        let seeds: Vec<SocketAddr> = self
            .seeds
            .iter()
            .copied()
            .filter(|a| *a != node.addr)
            .collect();
        mesh.join(&seeds, now);
        node.mesh = Some(mesh);
        node.timer_at = Nanos::MAX;
        self.after_mesh(n);
    }

    fn sample(&mut self, n: usize) {
        let now = self.now;
        self.nodes[n]
            .feedback
            .sweep(now, FEEDBACK_IDLE_MS * 1_000_000);
        self.nodes[n].penalties.sweep(now);
        let node = &self.nodes[n];
        let Some(_) = node.mesh.as_ref() else {
            return;
        };
        let apps = &self.sc.sim;
        let loads: Vec<InstanceLoad> = node
            .insts
            .iter()
            .map(|&i| {
                let inst = &self.insts[i];
                InstanceLoad {
                    id: inst.id.clone(),
                    app: self.app_names[inst.app].clone(),
                    load: inst.load,
                    soft: apps.soft_limit,
                    hard: apps.hard_limit,
                    healthy: inst.alive,
                }
            })
            .collect();
        let now = Duration::from_nanos(self.now);
        let alone = {
            let m = self.nodes[n].mesh.as_mut().expect("checked");
            m.set_local_instances(loads, now);
            m.live_members() == 0
        };
        // As the driver does: a node that sees nobody alive knocks on the seeds again.
        if alone && self.now >= self.nodes[n].last_join + REJOIN_EVERY {
            self.nodes[n].last_join = self.now;
            let own = self.nodes[n].addr;
            let seeds: Vec<SocketAddr> = self.seeds.iter().copied().filter(|a| *a != own).collect();
            if let Some(m) = self.nodes[n].mesh.as_mut() {
                m.join(&seeds, now);
            }
        }
        self.after_mesh(n);
    }

    /// Sends what node `n`'s mesh core produced, notes its events, re-arms its timer.
    pub(super) fn after_mesh(&mut self, n: usize) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let next = {
            let Some(m) = self.nodes[n].mesh.as_mut() else {
                return;
            };
            while let Some(t) = m.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = m.poll_event() {
                events.push(e);
            }
            m.poll_timeout().as_nanos() as Nanos
        };
        let from = self.nodes[n].addr;
        for t in out {
            let Some(&to) = self.by_addr.get(&t.to) else {
                continue;
            };
            if self.sc.sim.loss > 0.0 && self.net_rng.random::<f64>() < self.sc.sim.loss {
                continue;
            }
            if !self.reachable(n, to) || self.nodes[to].mesh.is_none() {
                continue;
            }
            let at = self.now + self.leg(n, to);
            let at = at + self.slow_delay(to, at);
            self.q.push(
                at,
                Ev::Datagram {
                    to,
                    from,
                    data: t.data,
                },
            );
        }
        for e in events {
            self.mesh_event(n, e);
        }
        let next = next.max(self.now + 1_000);
        if next < self.nodes[n].timer_at {
            self.nodes[n].timer_at = next;
            self.q.push(next, Ev::MeshTimer(n));
        }
    }

    fn mesh_event(&mut self, observer: usize, e: Event) {
        let now = self.now;
        match e {
            Event::MemberDown(id) => {
                self.judge_down(observer, &id);
                self.stats.saw_down(observer, &id.name, now)
            }
            Event::Suspected(id) => self.judge_suspicion(observer, &id),
            Event::Rejoined(id) => self.rejoined(observer, &id),
            Event::MemberUp(id) | Event::Renamed(_, id) => {
                self.stats.saw_up(observer, &id.name, now)
            }
            _ => {}
        }
    }

    /// True when the two nodes' regions are on the same side of every partition.
    pub(super) fn reachable(&self, a: usize, b: usize) -> bool {
        self.side[self.nodes[a].region] == self.side[self.nodes[b].region]
    }

    /// One-way delay from node `a` to node `b`: half the RTT plus jitter.
    pub(super) fn leg(&mut self, a: usize, b: usize) -> Nanos {
        let rtt = self.sc.rtt_ms[self.nodes[a].region][self.nodes[b].region];
        let jitter = if self.sc.sim.jitter_ms > 0.0 {
            self.net_rng.random::<f64>() * self.sc.sim.jitter_ms
        } else {
            0.0
        };
        ms(rtt / 2.0 + jitter)
    }

    /// Adds instance `i`'s busy time up to `now` (window only) to its utilisation integral.
    pub(super) fn account(&mut self, i: usize, now: Nanos) {
        let (start, end) = self.window;
        let inst = &mut self.insts[i];
        let from = inst.since.max(start);
        let to = now.min(end);
        if to > from {
            inst.busy += f64::from(inst.load) * (to - from) as f64 / 1e9;
        }
        inst.since = now;
    }

    /// Changes an instance's in-flight count, keeping the utilisation integral and the oracle's
    /// per-region capacity counts right.
    pub(super) fn set_load(&mut self, i: usize, load: u32) {
        self.account(i, self.now);
        let (soft, hard) = (self.sc.sim.soft_limit, self.sc.sim.hard_limit);
        let inst = &mut self.insts[i];
        let c = &mut self.capacity[inst.app][inst.region];
        if inst.alive {
            c.0 = c.0 + u32::from(load < soft) - u32::from(inst.load < soft);
            c.1 = c.1 + u32::from(load < hard) - u32::from(inst.load < hard);
            self.timeline.record(inst.app, inst.region, self.now, *c);
        }
        inst.load = load;
    }

    /// Takes instance `i` out of (or back into) the oracle's counts.
    pub(super) fn set_alive(&mut self, i: usize, alive: bool) {
        self.account(i, self.now);
        let (soft, hard) = (self.sc.sim.soft_limit, self.sc.sim.hard_limit);
        let inst = &mut self.insts[i];
        if inst.alive == alive {
            return;
        }
        let c = &mut self.capacity[inst.app][inst.region];
        let (s, h) = (u32::from(inst.load < soft), u32::from(inst.load < hard));
        if alive {
            c.0 += s;
            c.1 += h;
        } else {
            c.0 -= s;
            c.1 -= h;
        }
        self.timeline.record(inst.app, inst.region, self.now, *c);
        inst.alive = alive;
    }

    fn tick(&mut self) {
        self.timeline.prune(self.now.saturating_sub(ORACLE_MEMORY));
        if self.now >= self.window.1 {
            return;
        }
        let soft = f64::from(self.sc.sim.soft_limit);
        let mut load = vec![0.0f64; self.sc.regions.len()];
        let mut count = vec![0.0f64; self.sc.regions.len()];
        for inst in &self.insts {
            count[inst.region] += 1.0;
            load[inst.region] += f64::from(inst.load);
        }
        let util = load
            .iter()
            .zip(&count)
            .map(|(l, c)| if *c > 0.0 { l / (c * soft) } else { 0.0 })
            .collect();
        self.stats.region_util.push(util);
    }
}
