//! Scheduled failures: node crashes and restarts, partitions and heals, and the watches that time
//! how long the mesh takes to notice each one everywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::queue::{secs, Nanos};
use super::stats::Watch;
use super::world::{Ev, Stage, World};
use petrel_mesh::NodeId;

impl World {
    pub(super) fn schedule_failures(&mut self) {
        let start = self.window.0;
        let at = |s: f64| start + secs(s);
        let sim = &self.sc.sim;
        let mut evs = Vec::new();
        for c in &sim.crash {
            if let Some(n) = self.nodes.iter().position(|x| *x.name == *c.node) {
                evs.push((at(c.at_s), Ev::Crash(n)));
                if let Some(r) = c.recover_s {
                    evs.push((at(r), Ev::Recover(n)));
                }
            }
        }
        for (p, part) in sim.partition.iter().enumerate() {
            evs.push((at(part.at_s), Ev::Cut(p)));
            evs.push((at(part.heal_s), Ev::Heal(p)));
        }
        for w in &sim.slow {
            if let Some(&n) = self.by_name.get(w.node.as_str()) {
                let from = at(w.at_s);
                let window = (from, from + secs(w.for_s), secs(w.delay_ms / 1000.0));
                self.slow[n].push(window);
            }
        }
        for (t, ev) in evs {
            self.q.push(t, ev);
        }
    }

    /// Runs the mesh with plain SWIM instead of Lifeguard (same timings); before [`World::run`].
    pub fn plain_swim(&mut self) {
        let n = self.nodes.len() as u32;
        self.mesh_cfg = self.mesh_cfg.clone().plain_swim(n);
    }

    /// How late node `n` handles a datagram that reaches it at `at`.
    pub(super) fn slow_delay(&self, n: usize, at: Nanos) -> Nanos {
        self.slow[n]
            .iter()
            .find(|(from, until, _)| (*from..*until).contains(&at))
            .map_or(0, |w| w.2)
    }

    /// True when `id` is the running generation of a node that `observer` can reach.
    fn is_up_for(&self, observer: usize, id: &NodeId) -> bool {
        self.by_name.get(&id.name).is_some_and(|&t| {
            self.nodes[t].mesh.is_some()
                && self.nodes[t].generation == id.generation
                && self.reachable(observer, t)
        })
    }

    /// `observer` declared `id` down: counted as false when it is running and reachable, apart
    /// once a partition has begun (the cut-off side's verdicts, gossiped after the heal, reach
    /// nodes that were never cut from their targets).
    pub(super) fn judge_down(&mut self, observer: usize, id: &NodeId) {
        if self.now < self.window.0 || !self.is_up_for(observer, id) {
            return;
        }
        let target = self.by_name[&id.name];
        if self.partition_begun() || self.were_cut(observer, target) {
            self.stats.downs_after_cut += 1;
        } else {
            self.stats.false_downs += 1;
        }
    }

    /// Node `n` was declared down while running and took a new identity (foca's rejoin): the
    /// decision that cost it its records everywhere, counted once however many nodes saw it.
    pub(super) fn rejoined(&mut self, n: usize, id: &NodeId) {
        self.nodes[n].generation = id.generation;
        if self.now < self.window.0 {
            return;
        }
        if self.partition_begun() {
            self.stats.rejoins_after_cut += 1;
        } else {
            self.stats.forced_rejoins += 1;
        }
    }

    fn partition_begun(&self) -> bool {
        let start = self.window.0;
        self.sc
            .sim
            .partition
            .iter()
            .any(|p| start + secs(p.at_s) <= self.now)
    }

    /// True when a partition that has begun put `a` and `b` on different sides.
    fn were_cut(&self, a: usize, b: usize) -> bool {
        let start = self.window.0;
        self.sc.sim.partition.iter().any(|p| {
            let inside = |n: usize| {
                let code = &self.sc.regions[self.nodes[n].region].code;
                p.regions.iter().any(|r| r == code)
            };
            start + secs(p.at_s) <= self.now && inside(a) != inside(b)
        })
    }

    /// `observer`'s probe of `id` failed: a false suspicion when `id` is running and reachable
    /// (counted apart while `id` is CPU-starved: its acks are late).
    pub(super) fn judge_suspicion(&mut self, observer: usize, id: &NodeId) {
        if self.now < self.window.0 {
            return;
        }
        let starved = self
            .by_name
            .get(&id.name)
            .is_some_and(|&t| self.slow_delay(t, self.now) > 0);
        if self.is_up_for(observer, id) && starved {
            self.stats.starved_suspicions += 1;
        } else if self.is_up_for(observer, id) {
            self.stats.false_suspicions += 1;
        } else {
            self.stats.true_suspicions += 1;
        }
    }

    fn alive_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].mesh.is_some())
            .collect()
    }

    fn watch(&mut self, kind: &'static str, label: String, down: bool, pairs: Vec<(usize, usize)>) {
        let pending: BTreeSet<(usize, Arc<str>)> = pairs
            .into_iter()
            .map(|(o, t)| (o, self.nodes[t].name.clone()))
            .collect();
        self.stats.watches.push(Watch {
            kind,
            label,
            at: self.now,
            down,
            pending,
            first: None,
            last: None,
            seen: Vec::new(),
        });
    }

    pub(super) fn crash(&mut self, n: usize) {
        if self.nodes[n].mesh.is_none() {
            return;
        }
        let node = &mut self.nodes[n];
        node.bytes_before += node.mesh.as_ref().map_or(0, |m| m.counters().bytes_out);
        node.mesh = None;
        node.timer_at = Nanos::MAX;
        node.penalties.clear();
        node.feedback = crate::pick::Feedback::new(super::world::FEEDBACK_TTL);
        for v in node.remote.iter_mut() {
            v.changes = u64::MAX;
            v.list.clear();
        }
        self.stats.observer_gone(n, self.now);
        // Its instances die with it: every request there, queued or running, fails.
        let insts = self.nodes[n].insts.clone();
        for &i in &insts {
            self.set_load(i, 0);
            self.set_alive(i, false);
            self.insts[i].epoch += 1;
            self.insts[i].queue.clear();
        }
        let doomed: Vec<(u32, u32, &'static str)> = self
            .reqs
            .iter()
            .enumerate()
            .filter_map(|(s, r)| match r.stage {
                Stage::At(_) if r.edge == n => Some((s as u32, r.uid, "edge_crash")),
                Stage::At(i) if i != usize::MAX && self.insts[i].node == n => {
                    Some((s as u32, r.uid, "instance_crash"))
                }
                _ => None,
            })
            .collect();
        for (slot, uid, why) in doomed {
            self.fail(super::world::Rid { slot, uid }, why);
        }
        let pairs = self.alive_nodes().into_iter().map(|o| (o, n)).collect();
        let label = self.nodes[n].name.to_string();
        self.watch("crash", label, true, pairs);
    }

    pub(super) fn recover(&mut self, n: usize) {
        if self.nodes[n].mesh.is_some() {
            return;
        }
        self.nodes[n].generation += 1;
        for i in self.nodes[n].insts.clone() {
            self.set_alive(i, true);
        }
        let others = self.alive_nodes();
        self.start_node(n);
        let mut pairs: Vec<(usize, usize)> = others.iter().map(|&o| (o, n)).collect();
        pairs.extend(others.iter().map(|&o| (n, o)));
        let label = self.nodes[n].name.to_string();
        self.watch("recover", label, false, pairs);
    }

    fn cut_pairs(&self, p: usize) -> (Vec<(usize, usize)>, String) {
        let part = &self.sc.sim.partition[p];
        let inside = |n: usize| {
            part.regions
                .iter()
                .any(|r| *r == self.sc.regions[self.nodes[n].region].code)
        };
        let alive = self.alive_nodes();
        let mut pairs = Vec::new();
        for &a in &alive {
            for &b in &alive {
                if inside(a) != inside(b) {
                    pairs.push((a, b));
                }
            }
        }
        (pairs, part.regions.join("+"))
    }

    pub(super) fn cut(&mut self, p: usize) {
        let part = &self.sc.sim.partition[p];
        for (r, reg) in self.sc.regions.iter().enumerate() {
            if part.regions.contains(&reg.code) {
                self.side[r] = p as u32 + 1;
            }
        }
        let (pairs, label) = self.cut_pairs(p);
        self.watch("partition", label, true, pairs);
    }

    pub(super) fn heal(&mut self, p: usize) {
        let (pairs, label) = self.cut_pairs(p);
        // Only pairs that did see each other go down can be seen coming back.
        let never_down: BTreeSet<(usize, Arc<str>)> = self
            .stats
            .watches
            .iter()
            .rev()
            .find(|w| w.kind == "partition" && w.label == label)
            .map(|w| w.pending.clone())
            .unwrap_or_default();
        let pairs: Vec<(usize, usize)> = pairs
            .into_iter()
            .filter(|&(o, t)| !never_down.contains(&(o, self.nodes[t].name.clone())))
            .collect();
        let part = &self.sc.sim.partition[p];
        for (r, reg) in self.sc.regions.iter().enumerate() {
            if part.regions.contains(&reg.code) {
                self.side[r] = 0;
            }
        }
        self.watch("heal", label, false, pairs);
    }
}
