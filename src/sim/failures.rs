//! Scheduled failures: node crashes and restarts, partitions and heals, and the watches that time
//! how long the mesh takes to notice each one everywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::queue::{secs, Nanos};
use super::stats::Watch;
use super::world::{Ev, Stage, World};

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
        for (t, ev) in evs {
            self.q.push(t, ev);
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
        node.feedback = crate::balance::Feedback::new(super::world::FEEDBACK_TTL);
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
