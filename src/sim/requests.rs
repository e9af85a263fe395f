//! The request path in the simulator: client arrivals, the edge's decision from its own snapshot,
//! owner-side admission (reject at hard limit, or queue for the baselines), retries, responses.

use rand::RngExt;

use super::oracle;
use super::queue::{ms, secs, Nanos};
use super::world::{Ev, Req, Rid, Stage, World, PUBLISH_EVERY};
use crate::balance::View;
use crate::pick;

use crate::cluster::UNMEASURED_RTT_MS;

impl World {
    /// Client rate of region `r` at the current time, requests per second.
    fn rate(&self, r: usize) -> f64 {
        self.rate_at(r, (self.now - self.window.0) as f64 / 1e9)
    }

    /// Client rate of region `r`, `t` seconds into the measured window, requests per second.
    pub(super) fn rate_at(&self, r: usize, t: f64) -> f64 {
        let s = &self.sc.sim;
        let capacity = self.capacity_rps;
        let total_w: f64 = self.sc.regions.iter().map(|g| g.weight).sum();
        if total_w <= 0.0 {
            return 0.0;
        }
        let reg = &self.sc.regions[r];
        let phase = std::f64::consts::TAU * (t / s.diurnal_period_s + reg.lon / 360.0);
        s.demand * capacity * reg.weight / total_w * (1.0 + s.diurnal_amplitude * phase.sin())
    }

    fn service_time(&mut self) -> Nanos {
        let s = &self.sc.sim;
        // Log-normal with the configured mean: mu = ln(mean) - sigma²/2.
        let sigma = s.service_sigma;
        let mu = s.service_ms.ln() - sigma * sigma / 2.0;
        let (u1, u2): (f64, f64) = (self.load_rng.random(), self.load_rng.random());
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ms((mu + sigma * z).exp())
    }

    pub(super) fn arrival(&mut self, r: usize) {
        let rate = self.rate(r);
        if rate > 0.0 {
            let u: f64 = self.load_rng.random();
            let gap = secs(-(1.0 - u).ln() / rate).max(1);
            if self.now + gap < self.window.1 {
                self.q.push(self.now + gap, Ev::Arrival(r));
            }
        } else if self.now + secs(1.0) < self.window.1 {
            self.q.push(self.now + secs(1.0), Ev::Arrival(r)); // a diurnal trough: look again
            return;
        }
        let app = self.load_rng.random_range(0..self.sc.sim.apps as usize);
        let service = self.service_time();
        let pick: u64 = self.load_rng.random();
        self.stats.arrivals += 1;
        // Anycast: an alive node of the client's region, else of the nearest region that has one.
        let Some((edge, extra)) = self.nearest_edge(r, pick) else {
            self.stats.fail("no_edge");
            return;
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.reqs.push(Req {
                    uid: 0,
                    stage: Stage::Free,
                    arrival: 0,
                    extra: 0,
                    edge: 0,
                    edge_gen: 0,
                    app: 0,
                    service: 0,
                    order: Vec::new(),
                    next: 0,
                    sent_at: 0,
                    oracle_rtt: 0.0,
                    seen_rtt: 0.0,
                    told: 0,
                    net_ms: 0.0,
                });
                (self.reqs.len() - 1) as u32
            }
        };
        self.next_uid = self.next_uid.wrapping_add(1);
        let rid = Rid {
            slot,
            uid: self.next_uid,
        };
        let oracle_rtt = self.oracle_rtt(app, self.nodes[edge].region);
        let req = &mut self.reqs[slot as usize];
        req.uid = rid.uid;
        req.stage = Stage::At(usize::MAX);
        req.arrival = self.now;
        req.extra = extra;
        req.edge = edge;
        req.edge_gen = self.nodes[edge].generation;
        req.app = app;
        req.service = service;
        req.next = 0;
        req.oracle_rtt = oracle_rtt;
        req.net_ms = extra as f64 / 1e6;
        self.in_flight += 1;
        self.decide(rid);
        self.attempt(rid);
    }

    fn nearest_edge(&self, r: usize, pick: u64) -> Option<(usize, Nanos)> {
        for &reg in &self.nearest[r] {
            let here = &self.region_nodes[reg];
            let up = |n: &&usize| self.nodes[**n].mesh.is_some();
            let alive = here.iter().filter(up).count();
            if alive > 0 {
                let k = (pick % alive as u64) as usize;
                let edge = *here.iter().filter(up).nth(k).expect("counted");
                return Some((edge, ms(self.sc.rtt_ms[r][reg])));
            }
        }
        None
    }

    /// RTT from `region` to the nearest region where an instance of `app` is below its soft limit
    /// right now (true loads: the oracle); below hard when none is below soft.
    fn oracle_rtt(&self, app: usize, region: usize) -> f64 {
        let caps = &self.capacity[app];
        let first = |f: &dyn Fn(&(u32, u32)) -> bool| {
            self.nearest[region]
                .iter()
                .find(|&&r| f(&caps[r]))
                .map(|&r| self.sc.rtt_ms[region][r])
        };
        first(&|c| c.0 > 0)
            .or_else(|| first(&|c| c.1 > 0))
            .unwrap_or(f64::INFINITY)
    }

    /// Rebuilds the edge's snapshot of `app` when its mesh changed and the last one is old enough
    /// (the node's driver publishes at most every 50 ms; per app here, so thousands of instances
    /// stay cheap).
    fn refresh_view(&mut self, n: usize, app: usize) {
        let node = &mut self.nodes[n];
        let Some(mesh) = node.mesh.as_ref() else {
            return;
        };
        let changes = mesh.changes();
        let cache = &mut node.remote[app];
        if changes == cache.changes || self.now < cache.at + PUBLISH_EVERY {
            return;
        }
        cache.changes = changes;
        cache.at = self.now;
        cache.list.clear();
        for r in mesh.app_instances(&self.app_names[app]) {
            if let Some(&i) = self.by_id.get(&r.load.id) {
                let rtt = r.rtt_ms.unwrap_or(UNMEASURED_RTT_MS);
                cache.list.push((i, rtt, r.load.load, r.load.healthy));
            }
        }
    }

    /// The edge orders candidates once, from its own snapshot, as the proxy does.
    fn decide(&mut self, rid: Rid) {
        let slot = rid.slot as usize;
        let (edge, app) = (self.reqs[slot].edge, self.reqs[slot].app);
        self.refresh_view(edge, app);
        let (soft, hard) = (self.sc.sim.soft_limit, self.sc.sim.hard_limit);
        let now = self.now;
        let node = &self.nodes[edge];
        let estimate = self.estimate.as_ref();
        let rtt_of = |inst_node: usize, measured: f64| match estimate {
            Some(e) => e[edge][inst_node],
            None => measured,
        };
        let seen = |i: usize, rtt_ms: f64, load: u32, healthy: bool, local: bool| {
            let inst = &self.insts[i];
            let view = View {
                id: &inst.id,
                region: &self.sc.regions[inst.region].code,
                rtt_ms: rtt_of(inst.node, rtt_ms),
                load,
                soft,
                hard,
                healthy,
            };
            pick::Seen {
                key: i,
                local,
                view,
            }
        };
        // What the proxy's pick reads: its own instances live, the others from its snapshot.
        let mut seen_all: Vec<pick::Seen<'_, usize>> = (node.insts.iter())
            .filter(|&&i| self.insts[i].app == app)
            .map(|&i| seen(i, 0.0, self.insts[i].load, self.insts[i].alive, true))
            .collect();
        let remote = &node.remote[app].list;
        seen_all.extend(
            remote
                .iter()
                .map(|&(i, rtt, load, up)| seen(i, rtt, load, up, false)),
        );
        let ids: Vec<usize> = seen_all.iter().map(|s| s.key).collect();
        let views = pick::views(&seen_all, &node.penalties, &node.feedback, now);
        let budget = 1 + self.sc.sim.retries as usize;
        let mut rr = node.rr;
        let order = self
            .policy
            .order(&views, budget, &mut self.pick_rng, &mut rr);
        let edge_region = self.nodes[edge].region;
        let true_rtt = |k: usize| self.sc.rtt_ms[edge_region][self.insts[ids[k]].region];
        let room = |f: &dyn Fn(&View<'_>) -> bool| {
            (0..views.len())
                .filter(|&k| views[k].healthy && f(&views[k]))
                .map(true_rtt)
                .min_by(f64::total_cmp)
        };
        let seen_rtt = room(&|v| v.load < soft)
            .or_else(|| room(&|v| v.load < hard))
            .unwrap_or(f64::INFINITY);
        drop(views);
        self.nodes[edge].rr = rr;
        let req = &mut self.reqs[slot];
        req.seen_rtt = seen_rtt;
        req.order = order.into_iter().map(|k| ids[k]).collect();
    }

    fn live(&self, rid: Rid) -> bool {
        let r = &self.reqs[rid.slot as usize];
        r.uid == rid.uid && r.stage != Stage::Free
    }

    /// Sends the request to its next candidate, or fails it when none is left.
    fn attempt(&mut self, rid: Rid) {
        loop {
            let slot = rid.slot as usize;
            let req = &mut self.reqs[slot];
            let Some(&i) = req.order.get(req.next) else {
                let why = if req.order.is_empty() {
                    "no_candidate"
                } else {
                    "all_full"
                };
                self.fail(rid, why);
                return;
            };
            req.next += 1;
            req.stage = Stage::At(i);
            req.sent_at = self.now;
            if req.next > 1 {
                self.stats.retries += 1;
            }
            let (edge, owner) = (req.edge, self.insts[i].node);
            if req.next == 1 {
                // A misroute: the first try goes farther than a region that had room.
                let (from, to) = (self.nodes[edge].region, self.insts[i].region);
                let rtt = self.sc.rtt_ms[from][to];
                if rtt > req.oracle_rtt + 1e-9 {
                    self.stats.misroute(from, to);
                }
                if rtt > req.seen_rtt + 1e-9 {
                    *self.stats.misroutes_seen.entry((from, to)).or_default() += 1;
                }
            }
            if owner == edge {
                // Local load is exact: a refusal here needs no memory (the proxy keeps none).
                if self.admit(rid, i) {
                    return;
                }
                self.stats.rejects += 1;
                continue;
            }
            if !self.reachable(edge, owner) || self.nodes[owner].mesh.is_none() {
                let at = self.now + ms(self.sc.sim.connect_timeout_ms);
                self.q.push(at, Ev::Unreachable(rid, i));
            } else {
                let one_way =
                    ms(self.sc.rtt_ms[self.nodes[edge].region][self.insts[i].region] / 2.0);
                self.nodes[edge]
                    .feedback
                    .sent(i, self.now, self.now + one_way);
                let at = self.now + self.leg(edge, owner);
                self.q.push(at, Ev::AtOwner(rid, i));
            }
            return;
        }
    }

    /// Owner-side admission: start, queue (baselines) or refuse.
    fn admit(&mut self, rid: Rid, i: usize) -> bool {
        let inst = &self.insts[i];
        if !inst.alive {
            return false;
        }
        if inst.load < self.sc.sim.hard_limit {
            let (epoch, load) = (inst.epoch, inst.load);
            self.set_load(i, load + 1);
            let at = self.now + self.reqs[rid.slot as usize].service;
            self.q.push(at, Ev::Finish(rid, i, epoch));
            return true;
        }
        if self.policy.rejects() {
            return false;
        }
        let inst = &mut self.insts[i];
        inst.queue.push_back(rid);
        let len = inst.queue.len() as u32;
        self.stats.max_queue = self.stats.max_queue.max(len);
        true
    }

    pub(super) fn at_owner(&mut self, rid: Rid, i: usize) {
        if !self.live(rid) {
            return;
        }
        let slot = rid.slot as usize;
        let (edge, owner) = (self.reqs[slot].edge, self.insts[i].node);
        if self.nodes[owner].mesh.is_none() || !self.reachable(edge, owner) {
            let at = self.reqs[slot].sent_at + ms(self.sc.sim.connect_timeout_ms);
            self.q.push(at.max(self.now), Ev::Unreachable(rid, i));
            return;
        }
        if self.admit(rid, i) {
            return;
        }
        self.stats.rejects += 1;
        self.reqs[slot].told = self.insts[i].load;
        let at = self.now + self.leg(owner, edge);
        self.q.push(at, Ev::Rejected(rid, i));
    }

    /// A "full" answer at the edge: the load it carries keeps the instance skipped until a newer
    /// figure; try the next.
    pub(super) fn full(&mut self, rid: Rid, i: usize) {
        if !self.live(rid) {
            return;
        }
        let (edge, told) = (
            self.reqs[rid.slot as usize].edge,
            self.reqs[rid.slot as usize].told,
        );
        let now = self.now;
        self.nodes[edge].feedback.answered(i, told, now);
        self.reqs[rid.slot as usize].net_ms +=
            self.sc.rtt_ms[self.nodes[edge].region][self.insts[i].region];
        self.attempt(rid);
    }

    /// An unreachable instance at the edge: skip it for a while, try the next.
    pub(super) fn rejected(&mut self, rid: Rid, i: usize, penalty: Nanos) {
        if !self.live(rid) {
            return;
        }
        let edge = self.reqs[rid.slot as usize].edge;
        let waited = self
            .now
            .saturating_sub(self.reqs[rid.slot as usize].sent_at);
        self.reqs[rid.slot as usize].net_ms += waited as f64 / 1e6;
        self.nodes[edge].penalties.mark(&i, self.now + penalty);
        self.attempt(rid);
    }

    pub(super) fn finish(&mut self, rid: Rid, i: usize, epoch: u32) {
        if self.insts[i].epoch != epoch {
            return; // the instance died with its node; the request was failed then
        }
        let load = self.insts[i].load;
        self.set_load(i, load - 1);
        if let Some(next) = self.insts[i].queue.pop_front() {
            let load = self.insts[i].load;
            self.set_load(i, load + 1);
            let at = self.now + self.reqs[next.slot as usize].service;
            self.q.push(at, Ev::Finish(next, i, epoch));
        }
        if !self.live(rid) {
            return;
        }
        let (edge, owner) = (self.reqs[rid.slot as usize].edge, self.insts[i].node);
        if owner == edge {
            self.complete(rid);
        } else if self.reachable(owner, edge) {
            self.reqs[rid.slot as usize].told = self.insts[i].load;
            let at = self.now + self.leg(owner, edge);
            self.q.push(at, Ev::Response(rid));
        } else {
            self.fail(rid, "partition");
        }
    }

    /// The response reached the edge: a success, with its latency and where it was served.
    pub(super) fn complete(&mut self, rid: Rid) {
        if !self.live(rid) {
            return;
        }
        let slot = rid.slot as usize;
        let req = &self.reqs[slot];
        if self.nodes[req.edge].generation != req.edge_gen || self.nodes[req.edge].mesh.is_none() {
            self.fail(rid, "edge_crash");
            return;
        }
        let Stage::At(i) = req.stage else {
            return;
        };
        let edge_region = self.nodes[req.edge].region;
        let served_rtt = self.sc.rtt_ms[edge_region][self.insts[i].region];
        let latency = self.now - req.arrival + req.extra;
        let optimal = served_rtt <= req.oracle_rtt + 1e-9;
        let net_ms = req.net_ms + served_rtt;
        let on_arrival = self.optimal_on_arrival(rid, served_rtt);
        self.stats.ok(edge_region, latency, optimal, on_arrival);
        self.stats.network(edge_region, net_ms);
        let req = &self.reqs[slot];
        if self.insts[i].node != req.edge {
            let (edge, told, now) = (req.edge, req.told, self.now);
            self.nodes[edge].feedback.answered(i, told, now);
        }
        self.release(rid);
    }

    /// The oracle's verdict for an answered request: was no region nearer than the one that served
    /// it free (below soft; below hard when no region was below soft) when the request, sent
    /// there from its edge at its arrival, would have reached it?
    fn optimal_on_arrival(&mut self, rid: Rid, served_rtt: f64) -> bool {
        let req = &self.reqs[rid.slot as usize];
        let edge_region = self.nodes[req.edge].region;
        let rtts = &self.sc.rtt_ms[edge_region];
        self.reach.clear();
        let mut nearer = 0;
        for &r in &self.nearest[edge_region] {
            let rtt = rtts[r];
            nearer += usize::from(rtt < served_rtt - 1e-9);
            self.reach.push((r, req.arrival + ms(rtt / 2.0)));
        }
        oracle::optimal(&self.timeline, req.app, &self.reach, nearer)
    }

    /// Ends a request as failed for `why`.
    pub(super) fn fail(&mut self, rid: Rid, why: &'static str) {
        if !self.live(rid) {
            return;
        }
        self.stats.fail(why);
        self.release(rid);
    }

    fn release(&mut self, rid: Rid) {
        let req = &mut self.reqs[rid.slot as usize];
        req.stage = Stage::Free;
        req.order.clear();
        self.free.push(rid.slot);
        self.in_flight -= 1;
    }
}
