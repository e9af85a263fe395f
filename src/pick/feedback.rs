//! What an edge learns from its own traffic to remote instances: the load each owner reported with
//! its last answer, and the requests this edge still has on the wire towards each instance.
//!
//! Gossiped load is up to a ping interval old (a second on a WAN). An owner answers every backhaul
//! request with the instance's load (`petrel-internal-load`), so an edge that sends an instance
//! work has a figure one RTT/2 old instead. Requests this edge sent that have not reached the owner
//! yet are in no figure at all: they are added, each until its expected arrival (send time plus
//! half the RTT). Pure and clock-free: the caller passes time, in any unit, the same throughout.
//!
//! Lock-free: the request path reads and writes atomics in a per-instance cell found through an
//! `ArcSwap`ed map; only the first request to an instance (and the sweep) copies the map.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// How long an owner's figure counts at the edge, ms. A "full" answer skips the instance this long
/// unless a newer answer comes first; after it, gossip (a ping interval old) is used again. Short:
/// a busy instance frees a slot every few ms (`petrel sim` showed a 1 s skip starving small
/// clusters: 3 regions × 4 instances under overload, 80% success at 1 s, 100% at 200 ms).
pub const FEEDBACK_TTL_MS: u64 = 200;

/// An instance this edge has neither sent to nor heard from for this long, ms, loses its cell
/// at the next sweep.
pub const FEEDBACK_IDLE_MS: u64 = 10_000;

/// Requests on the wire kept one by one per instance: a ring of expected arrival times. Requests
/// sent while the ring holds only ones still on the wire spill into a counter that lasts until
/// the latest of them arrives (so an app with a hard limit of hundreds is counted in full).
pub const ON_WIRE_SLOTS: usize = 32;

/// "No figure yet" in [`Cell::told_at`].
const NEVER: u64 = u64::MAX;

/// One instance's figures, all atomics: written by the requests that send to it and read them.
#[derive(Debug)]
struct Cell {
    /// Load in the owner's last answer.
    told_load: AtomicU32,
    /// When it arrived; [`NEVER`] before any. Written after `told_load`, so a reader that sees a
    /// new time sees at worst the previous load (both are estimates).
    told_at: AtomicU64,
    /// Expected arrival times of requests on the wire (0: empty slot).
    on_wire: [AtomicU64; ON_WIRE_SLOTS],
    /// Next ring slot to write.
    next: AtomicUsize,
    /// Requests sent while the ring was full of ones still on the wire...
    spilled: AtomicU32,
    /// ...counted until this time, the latest arrival among them (0: none).
    spilled_until: AtomicU64,
    /// Last time anything was written, for the sweep.
    touched: AtomicU64,
}

impl Cell {
    /// A cell made at `now` (so a sweep at the same moment does not take it for idle).
    fn new(now: u64) -> Self {
        Self {
            told_load: AtomicU32::new(0),
            told_at: AtomicU64::new(NEVER),
            on_wire: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicUsize::new(0),
            spilled: AtomicU32::new(0),
            spilled_until: AtomicU64::new(0),
            touched: AtomicU64::new(now),
        }
    }

    /// Records a request expected at the owner at `arrives`. Concurrent senders may race on a
    /// spill reset and miscount by one for a moment: this is an estimate, never an admission.
    fn push(&self, now: u64, arrives: u64) {
        let arrives = arrives.max(now).max(1);
        let slot = &self.on_wire[self.next.fetch_add(1, Relaxed) % ON_WIRE_SLOTS];
        if slot.load(Relaxed) <= now {
            slot.store(arrives, Relaxed);
            return;
        }
        // The oldest in the ring is still on the wire: every slot is.
        if self.spilled_until.load(Relaxed) <= now {
            self.spilled.store(0, Relaxed);
        }
        self.spilled.fetch_add(1, Relaxed);
        self.spilled_until.fetch_max(arrives, Relaxed);
    }

    fn on_wire(&self, now: u64) -> u32 {
        let ring = self
            .on_wire
            .iter()
            .filter(|t| t.load(Relaxed) > now)
            .count() as u32;
        if self.spilled_until.load(Relaxed) > now {
            ring.saturating_add(self.spilled.load(Relaxed))
        } else {
            ring
        }
    }
}

type Map<K> = HashMap<K, Arc<Cell>, foldhash::fast::RandomState>;

/// Per-instance feedback, keyed by whatever names an instance for the caller (`Arc<str>` ids at
/// the edge, instance numbers in `petrel sim`). Shared by reference: every method takes `&self`.
#[derive(Debug)]
pub struct Feedback<K> {
    cells: ArcSwap<Map<K>>,
    ttl: u64,
}

impl<K: Hash + Eq + Clone> Feedback<K> {
    /// An owner's figure is trusted for `ttl` after it arrived (then gossip is used again).
    pub fn new(ttl: u64) -> Self {
        Self {
            cells: ArcSwap::from_pointee(Map::default()),
            ttl,
        }
    }

    /// The cell of `k`, made at `now` on first use (the one write that copies the map).
    fn cell(&self, k: K, now: u64) -> Arc<Cell> {
        if let Some(c) = self.cells.load().get(&k) {
            return c.clone();
        }
        let mut made = None;
        self.cells.rcu(|m| {
            let mut m = Map::clone(m);
            let c = m
                .entry(k.clone())
                .or_insert_with(|| Arc::new(Cell::new(now)));
            made = Some(c.clone());
            m
        });
        made.expect("rcu ran")
    }

    /// This edge sent a request to `k` at `now`; it should reach the owner at `arrives`.
    pub fn sent(&self, k: K, now: u64, arrives: u64) {
        let c = self.cell(k, now);
        c.push(now, arrives);
        c.touched.fetch_max(now, Relaxed);
    }

    /// The owner of `k` answered (served or full) and reported `load`, at `now`.
    pub fn answered(&self, k: K, load: u32, now: u64) {
        let c = self.cell(k, now);
        c.told_load.store(load, Relaxed);
        c.told_at.store(now, std::sync::atomic::Ordering::Release);
        c.touched.fetch_max(now, Relaxed);
    }

    /// The load to route on: the owner's last figure while fresh, else `gossiped`, plus this
    /// edge's requests still on the wire.
    pub fn estimate<Q>(&self, k: &Q, gossiped: u32, now: u64) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.estimate_in(&self.cells.load(), k, gossiped, now)
    }

    /// A view to read many estimates through one load of the map (a pick reads many instances).
    pub fn read(&self) -> Reader<'_, K> {
        Reader {
            feedback: self,
            map: self.cells.load(),
        }
    }

    fn estimate_in<Q>(&self, map: &Map<K>, k: &Q, gossiped: u32, now: u64) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(c) = map.get(k) else {
            return gossiped;
        };
        let at = c.told_at.load(std::sync::atomic::Ordering::Acquire);
        let base = if at != NEVER && now < at.saturating_add(self.ttl) {
            c.told_load.load(Relaxed)
        } else {
            gossiped
        };
        base.saturating_add(c.on_wire(now))
    }

    /// Forgets instances with nothing fresh and nothing on the wire, untouched for `idle` (so a
    /// busy instance's cell is not copied in and out of the map).
    pub fn sweep(&self, now: u64, idle: u64) {
        let ttl = self.ttl;
        let stale = |c: &Cell| {
            c.touched.load(Relaxed).saturating_add(idle) <= now
                && c.on_wire(now) == 0
                && c.told_at
                    .load(Relaxed)
                    .checked_add(ttl)
                    .is_none_or(|end| end <= now)
        };
        if !self.cells.load().values().any(|c| stale(c)) {
            return;
        }
        self.cells.rcu(|m| {
            let mut m = Map::clone(m);
            m.retain(|_, c| !stale(c));
            m
        });
    }

    /// Instances with an entry.
    pub fn len(&self) -> usize {
        self.cells.load().len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.cells.load().is_empty()
    }
}

/// Estimates read through one snapshot of the map ([`Feedback::read`]).
pub struct Reader<'a, K> {
    feedback: &'a Feedback<K>,
    map: arc_swap::Guard<Arc<Map<K>>>,
}

impl<K: Hash + Eq + Clone> Reader<'_, K> {
    /// As [`Feedback::estimate`].
    pub fn estimate<Q>(&self, k: &Q, gossiped: u32, now: u64) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.feedback.estimate_in(&self.map, k, gossiped, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_until_the_owner_answers_then_its_figure_until_it_ages() {
        let f = Feedback::new(200);
        assert_eq!(f.estimate("a", 7, 0), 7, "nothing known: gossip");
        f.answered("a".to_string(), 19, 1_000);
        assert_eq!(f.estimate("a", 7, 1_100), 19);
        assert_eq!(f.estimate("a", 7, 1_200), 7, "aged out");
    }

    #[test]
    fn requests_on_the_wire_count_until_they_arrive() {
        let f = Feedback::new(200);
        f.answered("a".to_string(), 10, 0);
        f.sent("a".to_string(), 10, 36);
        f.sent("a".to_string(), 20, 46);
        assert_eq!(f.estimate("a", 0, 30), 12);
        assert_eq!(f.estimate("a", 0, 40), 11, "the first arrived");
        assert_eq!(f.estimate("a", 0, 50), 10);
    }

    #[test]
    fn a_full_answer_holds_until_a_newer_one_or_it_ages() {
        let f = Feedback::new(200);
        f.answered("a".to_string(), u32::MAX, 0);
        assert_eq!(
            f.estimate("a", 3, 100),
            u32::MAX,
            "full, whatever gossip says"
        );
        f.sent("a".to_string(), 100, 130);
        assert_eq!(f.estimate("a", 3, 110), u32::MAX, "no overflow");
        f.answered("a".to_string(), 24, 150);
        assert_eq!(f.estimate("a", 3, 160), 24);
        f.answered("a".to_string(), 25, 170);
        assert_eq!(f.estimate("a", 3, 370), 3, "aged out");
    }

    #[test]
    fn sweep_keeps_only_what_still_counts() {
        let f = Feedback::new(200);
        f.answered("old".to_string(), 3, 0);
        f.answered("fresh".to_string(), 3, 900);
        f.sent("wire".to_string(), 900, 1_100);
        f.sweep(1_000, 0);
        assert_eq!(f.len(), 2);
        assert_eq!(f.estimate("old", 5, 1_000), 5);
        f.sweep(1_200, 0);
        assert!(f.is_empty());
    }

    #[test]
    fn a_burst_beyond_the_ring_is_counted_whole() {
        // An app with a hard limit of 250: 200 requests sent within half an RTT all count.
        let f = Feedback::new(200);
        for k in 0..200u64 {
            f.sent("a".to_string(), k / 10, 40 + k / 10);
        }
        assert_eq!(f.estimate("a", 0, 20), 200);
        assert_eq!(f.estimate("a", 0, 60), 0, "all arrived");
        // A later burst starts a fresh spill count, not one on top of the old.
        for k in 0..40u64 {
            f.sent("a".to_string(), 100, 150 + k % 2);
        }
        assert_eq!(f.estimate("a", 0, 120), 40);
    }

    #[test]
    fn a_busy_cell_survives_the_sweep_until_idle() {
        let f = Feedback::new(200);
        f.answered("a".to_string(), 3, 0);
        f.sweep(500, 1_000);
        assert_eq!(f.len(), 1, "touched 500 ago, idle needs 1000");
        f.sweep(1_000, 1_000);
        assert!(f.is_empty());
    }

    #[test]
    fn concurrent_edges_share_one_cell_per_instance() {
        // Workers of one edge send to the same instances at once: every instance gets exactly
        // one cell, and each request on the wire is counted (below the ring's size).
        let f = std::sync::Arc::new(Feedback::new(200));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let f = f.clone();
                s.spawn(move || {
                    for i in 0..50u64 {
                        let k = format!("i{}", i % 10);
                        f.sent(k.clone(), 0, 1_000 + t);
                        if i % 7 == 0 {
                            f.answered(k, 3, 0);
                        }
                    }
                });
            }
        });
        assert_eq!(f.len(), 10);
        for i in 0..10 {
            f.answered(format!("i{i}"), 3, 0);
        }
        for i in 0..10 {
            // 4 threads x 5 requests each to every instance, all still on the wire.
            let on_wire = f.estimate(&format!("i{i}"), 0, 10) - 3;
            assert_eq!(on_wire, 20, "instance i{i}");
        }
    }
}
