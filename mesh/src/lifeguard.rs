//! Lifeguard: local health awareness, dynamic suspicion timeouts and the buddy system on top of
//! foca's SWIM, as sans-IO parts the mesh core drives.
//!
//! Source: Dadgar, Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate Failure
//! Detection" (2018, arXiv:1707.00788), and HashiCorp memberlist, which ships it (`awareness.go`,
//! `suspicion.go`, `state.go`). foca runs a suspicion timer only at the member whose probe failed
//! and its Suspect updates do not say who suspected, so petrel keeps its own table: every node
//! that hears of a suspicion runs a timer, suspicions carry their suspecter in a [`SuspicionRecord`]
//! broadcast, and each distinct suspecter shortens the timer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Lifeguard's settings (memberlist's names in brackets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifeguardConfig {
    /// α [`SuspicionMult`]: the shortest suspicion lasts α × max(1, log10 n) probe periods, n the
    /// cluster size.
    pub suspicion_mult: f64,
    /// β [`SuspicionMaxTimeoutMult`]: a suspicion nobody confirms lasts β times the shortest.
    pub max_timeout_mult: f64,
    /// K: independent confirmations that bring a suspicion down to the shortest timeout. Zero in
    /// clusters of fewer than K + 2 members, as memberlist does (memberlist sets K to its
    /// `SuspicionMult` − 2: 2 on a LAN, 4 on a WAN).
    pub confirmations: u32,
    /// Local health multipliers go from 1 to this [`AwarenessMaxMultiplier`]: probe timeout and
    /// probe period stretch by up to this factor while this node's own probes fail.
    pub max_health_multiplier: u32,
}

impl Default for LifeguardConfig {
    /// memberlist's LAN α 4 and β 6, the paper's K 3, health up to ×8.
    fn default() -> Self {
        Self {
            suspicion_mult: 4.0,
            max_timeout_mult: 6.0,
            confirmations: 3,
            max_health_multiplier: 8,
        }
    }
}

impl LifeguardConfig {
    /// The shortest and longest suspicion for a cluster of `members` (this node included) probing
    /// every `probe_period` (memberlist `suspicionTimeout`).
    pub fn bounds(&self, members: usize, probe_period: Duration) -> (Duration, Duration) {
        let scale = (members.max(1) as f64).log10().max(1.0);
        let min = probe_period.mul_f64(self.suspicion_mult * scale);
        (min, min.mul_f64(self.max_timeout_mult.max(1.0)))
    }

    /// K for a cluster of `members`: none below K + 2 members (too few to confirm independently).
    pub fn k_for(&self, members: usize) -> u32 {
        if (members as u64) < u64::from(self.confirmations) + 2 {
            0
        } else {
            self.confirmations
        }
    }
}

/// The suspicion timeout after `confirmed` independent confirmations (memberlist
/// `suspicion.remainingSuspicionTime`): `max − (max − min) · log(C + 1) / log(K + 1)`, never below
/// `min`; `min` at once when `k` is 0.
pub fn suspicion_timeout(min: Duration, max: Duration, k: u32, confirmed: u32) -> Duration {
    if k == 0 {
        return min;
    }
    let frac = (f64::from(confirmed) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let span = max.saturating_sub(min).as_secs_f64();
    let t = max.as_secs_f64() - span * frac.min(1.0);
    Duration::from_secs_f64(t.max(min.as_secs_f64()))
}

/// Local health (Lifeguard's "local health multiplier", memberlist `awareness`): a score that a
/// failed probe or a refuted suspicion raises and a successful probe lowers. This node waits
/// `score + 1` times longer for acks and between probes, so a node that is itself slow (CPU
/// starved, its network queue full) suspects others less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    score: u32,
}

impl Health {
    /// Moves the score by `delta`, kept within `0 ..= max_multiplier − 1`.
    pub fn apply(&mut self, delta: i32, max_multiplier: u32) {
        let top = max_multiplier.saturating_sub(1) as i64;
        self.score = (i64::from(self.score) + i64::from(delta)).clamp(0, top) as u32;
    }

    /// The current multiplier, `score + 1` (1 is healthy).
    pub fn multiplier(&self) -> u32 {
        self.score + 1
    }

    /// `d` stretched by the multiplier.
    pub fn scale(&self, d: Duration) -> Duration {
        d * self.multiplier()
    }
}

/// "`from` suspects `target` (at `generation`) of being down at `incarnation`": the gossip that
/// lets every node count independent suspecters. Sent as a foca custom broadcast and, to the
/// suspect itself, as a direct datagram (the buddy system), so it can refute at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SuspicionRecord {
    /// The suspected node's name.
    pub target: Arc<str>,
    /// Its generation (identity).
    pub generation: u64,
    /// The foca incarnation suspected; a refutation raises it.
    pub incarnation: u16,
    /// The suspecter's name.
    pub from: Arc<str>,
}

impl SuspicionRecord {
    /// First byte of an encoded record in the custom-broadcast stream. Load records begin with
    /// their node name's length (1..=63), so no load record begins with this byte.
    pub const MARKER: u8 = 0xFF;

    /// `MARKER` then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![Self::MARKER];
        out.extend(postcard::to_stdvec(self).expect("suspicion records always serialize"));
        out
    }

    /// Decodes what `encode` wrote; `None` for anything else.
    pub fn decode(data: &[u8]) -> Option<Self> {
        match data.split_first() {
            Some((&Self::MARKER, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        }
    }
}

/// One suspicion this node is timing.
#[derive(Debug, Clone)]
struct Suspicion {
    incarnation: u16,
    started: Duration,
    first: Arc<str>,
    confirmed_by: BTreeSet<Arc<str>>,
    min: Duration,
    max: Duration,
    k: u32,
    /// Kept up to date on every confirmation: the core asks for the earliest after every datagram.
    deadline: Duration,
}

impl Suspicion {
    fn update_deadline(&mut self, stretch: u32) {
        let c = self.confirmed_by.len() as u32;
        let timeout = suspicion_timeout(self.min, self.max, self.k, c);
        self.deadline = self.started + timeout * stretch.max(1);
    }
}

/// The suspicions this node times, by (target name, generation).
#[derive(Debug, Default)]
pub struct Suspicions {
    by_target: BTreeMap<(Arc<str>, u64), Suspicion>,
    /// The earliest deadline: asked for after every datagram, so kept rather than searched for
    /// (deadlines only come nearer until `expired` removes them).
    earliest: Option<Duration>,
    /// This node's local health multiplier: every timeout it runs is stretched by it (0 or 1:
    /// none).
    stretch: u32,
}

/// What [`Suspicions::hear`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A suspicion this node was not timing: its timer starts now.
    Started,
    /// A new independent suspecter: the timer shortens.
    Confirmed,
    /// Already counted, or older than what is being timed.
    Known,
}

impl Suspicions {
    /// Counts `rec`, heard at `now`, in a cluster whose timeouts are `bounds` and confirmations
    /// `k`. A higher incarnation restarts the timer (the target refuted and was suspected again).
    pub fn hear(
        &mut self,
        rec: &SuspicionRecord,
        now: Duration,
        bounds: (Duration, Duration),
        k: u32,
    ) -> Heard {
        let key = (rec.target.clone(), rec.generation);
        match self.by_target.get_mut(&key) {
            Some(s) if s.incarnation > rec.incarnation => Heard::Known,
            Some(s) if s.incarnation == rec.incarnation => {
                if s.first == rec.from || !s.confirmed_by.insert(rec.from.clone()) {
                    Heard::Known
                } else {
                    s.update_deadline(self.stretch);
                    let d = s.deadline;
                    self.earliest = Some(self.earliest.map_or(d, |e| e.min(d)));
                    Heard::Confirmed
                }
            }
            _ => {
                let mut s = Suspicion {
                    incarnation: rec.incarnation,
                    started: now,
                    first: rec.from.clone(),
                    confirmed_by: BTreeSet::new(),
                    min: bounds.0,
                    max: bounds.1,
                    k,
                    deadline: now,
                };
                s.update_deadline(self.stretch);
                let d = s.deadline;
                // A restarted suspicion may move a deadline later: search again then.
                if self.by_target.insert(key, s).is_some() {
                    self.earliest = self.by_target.values().map(|s| s.deadline).min();
                } else {
                    self.earliest = Some(self.earliest.map_or(d, |e| e.min(d)));
                }
                Heard::Started
            }
        }
    }

    /// Stretches every suspicion this node times by its local health multiplier `m` (1 is
    /// healthy). Not in memberlist: a node that cannot reach most of the others (it is the one
    /// cut off, or starved) then declares them down only after the cut has lasted `m` times the
    /// timeout, instead of declaring a whole healthy cluster down at once.
    pub fn set_stretch(&mut self, m: u32) {
        if m.max(1) == self.stretch.max(1) {
            return;
        }
        self.stretch = m;
        for s in self.by_target.values_mut() {
            s.update_deadline(m);
        }
        self.earliest = self.by_target.values().map(|s| s.deadline).min();
    }

    /// The earliest deadline, if any suspicion is being timed.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.earliest
    }

    /// Removes and returns every suspicion whose time is up at `now`: (target name, generation,
    /// incarnation). The caller declares each down if it is still suspect at that incarnation.
    pub fn expired(&mut self, now: Duration) -> Vec<(Arc<str>, u64, u16)> {
        let due: Vec<(Arc<str>, u64)> = self
            .by_target
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let out = due
            .into_iter()
            .filter_map(|k| {
                let s = self.by_target.remove(&k)?;
                Some((k.0, k.1, s.incarnation))
            })
            .collect();
        self.earliest = self.by_target.values().map(|s| s.deadline).min();
        out
    }

    /// Suspicions being timed.
    pub fn len(&self) -> usize {
        self.by_target.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn bounds_follow_memberlist() {
        // memberlist: SuspicionMult 4, 1 s probes, 1,000 nodes: 4 × 3 × 1 s = 12 s; max 6×.
        let cfg = LifeguardConfig::default();
        let (min, max) = cfg.bounds(1000, s(1.0));
        assert!((min.as_secs_f64() - 12.0).abs() < 1e-9);
        assert!((max.as_secs_f64() - 72.0).abs() < 1e-9);
        // Below 10 members the log is held at 1.
        assert_eq!(cfg.bounds(3, s(1.0)).0, s(4.0));
        assert_eq!(cfg.k_for(4), 0);
        assert_eq!(cfg.k_for(5), 3);
    }

    #[test]
    fn confirmations_shorten_the_timeout_down_to_the_minimum() {
        let (min, max) = (s(10.0), s(60.0));
        assert_eq!(suspicion_timeout(min, max, 3, 0), max);
        // One of three: 60 − 50 · ln 2 / ln 4 = 35 s.
        let one = suspicion_timeout(min, max, 3, 1).as_secs_f64();
        assert!((one - 35.0).abs() < 1e-9, "{one}");
        assert_eq!(suspicion_timeout(min, max, 3, 3), min);
        assert_eq!(suspicion_timeout(min, max, 3, 9), min);
        assert_eq!(suspicion_timeout(min, max, 0, 0), min);
    }

    #[test]
    fn health_stretches_waits_within_its_bounds() {
        let mut h = Health::default();
        assert_eq!(h.scale(s(1.0)), s(1.0));
        for _ in 0..20 {
            h.apply(1, 8);
        }
        assert_eq!(h.multiplier(), 8);
        h.apply(-1, 8);
        assert_eq!(h.scale(s(1.0)), s(7.0));
        for _ in 0..20 {
            h.apply(-1, 8);
        }
        assert_eq!(h.multiplier(), 1);
    }

    fn rec(from: &str, incarnation: u16) -> SuspicionRecord {
        SuspicionRecord {
            target: "x".into(),
            generation: 1,
            incarnation,
            from: from.into(),
        }
    }

    #[test]
    fn each_distinct_suspecter_counts_once_and_a_refutation_restarts() {
        let mut t = Suspicions::default();
        let b = (s(10.0), s(60.0));
        assert_eq!(t.hear(&rec("a", 0), s(0.0), b, 3), Heard::Started);
        assert_eq!(t.next_deadline(), Some(s(60.0)));
        assert_eq!(t.hear(&rec("a", 0), s(1.0), b, 3), Heard::Known);
        assert_eq!(t.hear(&rec("b", 0), s(1.0), b, 3), Heard::Confirmed);
        assert_eq!(t.hear(&rec("b", 0), s(2.0), b, 3), Heard::Known);
        assert_eq!(t.next_deadline(), Some(s(35.0)));
        t.hear(&rec("c", 0), s(2.0), b, 3);
        t.hear(&rec("d", 0), s(2.0), b, 3);
        assert_eq!(t.next_deadline(), Some(s(10.0)), "K reached: the minimum");
        assert!(t.expired(s(9.9)).is_empty());
        // The target refuted (incarnation 1) and is suspected again: a fresh timer.
        assert_eq!(t.hear(&rec("e", 1), s(5.0), b, 3), Heard::Started);
        assert_eq!(t.hear(&rec("a", 0), s(5.0), b, 3), Heard::Known, "stale");
        assert_eq!(t.next_deadline(), Some(s(65.0)));
        assert_eq!(t.expired(s(65.0)), vec![("x".into(), 1, 1)]);
        assert!(t.is_empty());
    }

    #[test]
    fn poor_local_health_stretches_the_timers_this_node_runs() {
        let mut t = Suspicions::default();
        let b = (s(10.0), s(60.0));
        t.hear(&rec("a", 0), s(0.0), b, 0);
        assert_eq!(t.next_deadline(), Some(s(10.0)));
        t.set_stretch(4);
        assert_eq!(t.next_deadline(), Some(s(40.0)));
        assert!(t.expired(s(39.0)).is_empty());
        t.set_stretch(1);
        assert_eq!(t.expired(s(10.0)).len(), 1);
    }

    #[test]
    fn records_round_trip_and_are_never_taken_for_load_records() {
        let r = rec("a", 7);
        let bytes = r.encode();
        assert_eq!(SuspicionRecord::decode(&bytes), Some(r));
        assert_eq!(SuspicionRecord::decode(&bytes[1..]), None);
        assert!(crate::load::LoadRecordRef::decode(&bytes).is_none());
    }
}
