//! What an edge learns from its own traffic to remote instances: the load each owner reported with
//! its last answer, and the requests this edge still has on the wire towards each instance.
//!
//! Gossiped load is up to a ping interval old (a second on a WAN). An owner answers every backhaul
//! request with the instance's load (`petrel-internal-load`), so an edge that sends an instance
//! work has a figure one RTT/2 old instead. Requests this edge sent that have not reached the owner
//! yet are in no figure at all: they are added, each until its expected arrival (send time plus
//! half the RTT). Pure and clock-free: the caller passes time, in any unit, the same throughout.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// How long an owner's figure counts at the edge, ms. A "full" answer skips the instance this long
/// unless a newer answer comes first; after it, gossip (a ping interval old) is used again. Short:
/// a busy instance frees a slot every few ms (`petrel sim` showed a 1 s skip starving small
/// clusters: 3 regions × 4 instances under overload, 80% success at 1 s, 100% at 200 ms).
pub const FEEDBACK_TTL_MS: u64 = 200;

/// One instance's figures.
#[derive(Debug, Default)]
struct Entry {
    /// Load in the owner's last answer and when it arrived; `None` before any.
    told: Option<(u32, u64)>,
    /// Expected arrival times of requests on the wire, in sending order.
    on_wire: VecDeque<u64>,
}

impl Entry {
    /// Drops arrivals passed, from the front (an RTT that grew can leave a later one behind an
    /// earlier one for a while; `estimate` counts by time, so that costs memory only).
    fn prune(&mut self, now: u64) {
        while self.on_wire.front().is_some_and(|&t| t <= now) {
            self.on_wire.pop_front();
        }
    }

    fn is_idle(&self, now: u64, ttl: u64) -> bool {
        self.on_wire.is_empty() && self.told.is_none_or(|(_, at)| at + ttl <= now)
    }
}

/// Per-instance feedback, keyed by whatever names an instance for the caller.
#[derive(Debug)]
pub struct Feedback<K> {
    map: HashMap<K, Entry, foldhash::fast::RandomState>,
    ttl: u64,
}

impl<K: Hash + Eq> Feedback<K> {
    /// An owner's figure is trusted for `ttl` after it arrived (then gossip is used again).
    pub fn new(ttl: u64) -> Self {
        Self {
            map: HashMap::default(),
            ttl,
        }
    }

    /// This edge sent a request to `k` at `now`; it should reach the owner at `arrives`.
    pub fn sent(&mut self, k: K, now: u64, arrives: u64) {
        let e = self.map.entry(k).or_default();
        e.prune(now);
        e.on_wire.push_back(arrives.max(now));
    }

    /// The owner of `k` answered (served or full) and reported `load`, at `now`.
    pub fn answered(&mut self, k: K, load: u32, now: u64) {
        let e = self.map.entry(k).or_default();
        e.prune(now);
        e.told = Some((load, now));
    }

    /// The load to route on: the owner's last figure while fresh, else `gossiped`, plus this
    /// edge's requests still on the wire.
    pub fn estimate<Q>(&self, k: &Q, gossiped: u32, now: u64) -> u32
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(e) = self.map.get(k) else {
            return gossiped;
        };
        let base = match e.told {
            Some((load, at)) if now < at + self.ttl => load,
            _ => gossiped,
        };
        let on_wire = e.on_wire.iter().filter(|&&t| t > now).count();
        base.saturating_add(on_wire as u32)
    }

    /// Forgets instances with nothing fresh and nothing on the wire.
    pub fn sweep(&mut self, now: u64) {
        let ttl = self.ttl;
        self.map.retain(|_, e| {
            e.prune(now);
            !e.is_idle(now, ttl)
        });
    }

    /// Instances with an entry.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_until_the_owner_answers_then_its_figure_until_it_ages() {
        let mut f = Feedback::new(200);
        assert_eq!(f.estimate("a", 7, 0), 7, "nothing known: gossip");
        f.answered("a".to_string(), 19, 1_000);
        assert_eq!(f.estimate("a", 7, 1_100), 19);
        assert_eq!(f.estimate("a", 7, 1_200), 7, "aged out");
    }

    #[test]
    fn requests_on_the_wire_count_until_they_arrive() {
        let mut f = Feedback::new(200);
        f.answered("a".to_string(), 10, 0);
        f.sent("a".to_string(), 10, 36);
        f.sent("a".to_string(), 20, 46);
        assert_eq!(f.estimate("a", 0, 30), 12);
        assert_eq!(f.estimate("a", 0, 40), 11, "the first arrived");
        assert_eq!(f.estimate("a", 0, 50), 10);
    }

    #[test]
    fn a_full_answer_holds_until_a_newer_one_or_it_ages() {
        let mut f = Feedback::new(200);
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
        let mut f = Feedback::new(200);
        f.answered("old".to_string(), 3, 0);
        f.answered("fresh".to_string(), 3, 900);
        f.sent("wire".to_string(), 900, 1_100);
        f.sweep(1_000);
        assert_eq!(f.len(), 2);
        assert_eq!(f.estimate("old", 5, 1_000), 5);
        f.sweep(1_200);
        assert!(f.is_empty());
    }
}
