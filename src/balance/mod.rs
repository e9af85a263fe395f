//! Strategies: pure functions of (candidate views, routing hints, rng) → an ordered list of candidates.
//!
//! The same code runs in the node, the simulator and the benches. Nothing here reads a clock,
//! locks, awaits or touches a socket.

mod hints;
mod index;
mod resort;

pub use hints::{Hints, ROUTING_HEADERS};
pub use index::{select_closest, ClosestIndex, ClosestWalk};
pub use resort::{last_resort, LAST_RESORT_FROM};

use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::Strategy;

/// RTTs within one bucket count as equally close, so tiny measurement noise never reorders routing.
/// Small enough that two regions a few ms apart (London and Amsterdam) are told apart: `petrel sim`
/// showed 10 ms buckets sending half of London's requests to Amsterdam while London had room.
pub const RTT_BUCKET_MS: f64 = 2.0;

/// How many of the least-loaded instances `leastload` samples at random before taking the closest.
pub const LEASTLOAD_SAMPLE: usize = 2;

/// Instances whose relative load (thousandths of soft limit) is within this of the minimum count
/// as "least loaded" for `leastload` (10% of the soft limit).
pub const LEASTLOAD_TOLERANCE: u64 = 100;

/// What a strategy needs to know about one instance.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// Instance id.
    pub id: &'a str,
    /// Region of the node hosting it.
    pub region: &'a str,
    /// Smoothed RTT from this node to the hosting node (0 for local).
    pub rtt_ms: f64,
    /// Current load (in-flight requests or connections).
    pub load: u32,
    /// Soft limit of the app.
    pub soft: u32,
    /// Hard limit of the app.
    pub hard: u32,
    /// False when failing health checks or recently unreachable.
    pub healthy: bool,
}

impl View<'_> {
    fn can_take(&self) -> bool {
        self.healthy && self.load < self.hard
    }
    fn below_soft(&self) -> bool {
        self.load < self.soft
    }
    fn bucket(&self) -> u64 {
        (self.rtt_ms.max(0.0) / RTT_BUCKET_MS) as u64
    }
    /// Load relative to the soft limit, in thousandths (integer so sorting is total).
    fn rel_load(&self) -> u64 {
        (u64::from(self.load) * 1000) / u64::from(self.soft.max(1))
    }
}

/// Why a selection is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Empty {
    /// The app has no healthy instance at all.
    NoHealthy,
    /// Healthy instances exist but every one is at its hard limit.
    AllFull,
    /// The forced instance does not exist.
    ForcedUnknown,
    /// The forced instance exists but is full or down.
    ForcedUnavailable,
}

/// Orders `views` for one request; returns indexes into `views`, best first, never one at hard
/// limit or unhealthy.
pub fn select<R: Rng + ?Sized>(
    strategy: Strategy,
    views: &[View<'_>],
    hints: &Hints,
    rng: &mut R,
) -> Result<Vec<usize>, Empty> {
    if let Some(force) = hints.force.as_deref() {
        return match views.iter().position(|v| v.id == force) {
            None => Err(Empty::ForcedUnknown),
            Some(i) if views[i].can_take() => Ok(vec![i]),
            Some(_) => Err(Empty::ForcedUnavailable),
        };
    }
    let mut order: Vec<usize> = (0..views.len()).filter(|&i| views[i].can_take()).collect();
    if order.is_empty() {
        return Err(if views.iter().any(|v| v.healthy) {
            Empty::AllFull
        } else {
            Empty::NoHealthy
        });
    }
    // Random first, then stable sorts: equal candidates end up in random order.
    order.shuffle(rng);
    match strategy {
        Strategy::Closest => {
            order.sort_by_key(|&i| (!views[i].below_soft(), views[i].bucket(), views[i].load));
        }
        Strategy::Leastload => {
            order.sort_by_key(|&i| (!views[i].below_soft(), views[i].rel_load()));
            // The least loaded: same tier as the best, relative load within the tolerance.
            let best = &views[order[0]];
            let least = order
                .iter()
                .take_while(|&&i| {
                    views[i].below_soft() == best.below_soft()
                        && views[i].rel_load() <= best.rel_load() + LEASTLOAD_TOLERANCE
                })
                .count();
            // A random few of them (the shuffle above made the order among near-equals random)...
            order[..least].shuffle(rng);
            let k = LEASTLOAD_SAMPLE.min(least);
            // ...the closest of which goes first.
            order[..k].sort_by_key(|&i| views[i].bucket());
        }
    }
    if !hints.prefer_regions.is_empty() {
        // Stable: within each preferred region (in the order given) the strategy's order stays.
        order.sort_by_key(|&i| {
            hints
                .prefer_regions
                .iter()
                .position(|r| r == views[i].region)
                .unwrap_or(usize::MAX)
        });
    }
    if let Some(pref) = hints.prefer_instance.as_deref() {
        if let Some(pos) = order.iter().position(|&i| views[i].id == pref) {
            let i = order.remove(pos);
            order.insert(0, i);
        }
    }
    Ok(order)
}

/// Relative loads above this are treated as equal (they are far over any soft limit).
const REL_MAX: u64 = (1 << 47) - 1;

/// Above this many wanted candidates, [`select_top`] orders everything instead.
const TOP_MAX: usize = 16;

/// The first `limit` candidates of [`select`]'s order (same rules), found in one pass without
/// sorting every instance: the per-request path at thousands of instances. Ties are broken by a
/// per-call random seed instead of a shuffle.
pub fn select_top<R: Rng + ?Sized>(
    strategy: Strategy,
    views: &[View<'_>],
    hints: &Hints,
    rng: &mut R,
    limit: usize,
) -> Result<Vec<usize>, Empty> {
    if hints.force.is_some() || !hints.prefer_regions.is_empty() || limit > TOP_MAX {
        let mut order = select(strategy, views, hints, rng)?;
        order.truncate(limit.max(1));
        return Ok(order);
    }
    let limit = limit.max(1);
    let seed = rng.next_u64();
    let tie = |i: usize| mix(seed ^ i as u64) & 0xffff;
    let mut best = Top::new(limit + LEASTLOAD_SAMPLE);
    let mut any_healthy = false;
    // leastload: the best (tier, relative load) seen, and a reservoir of LEASTLOAD_SAMPLE drawn
    // from the instances within the tolerance of it (restarted whenever a better one appears).
    let mut floor = u64::MAX;
    let mut sample = [usize::MAX; LEASTLOAD_SAMPLE];
    let mut seen_near = 0u64;
    let (mut last_soft, mut inv) = (0u32, 0.0f64);
    for (i, v) in views.iter().enumerate() {
        any_healthy |= v.healthy;
        if !v.can_take() {
            continue;
        }
        let tier = u64::from(!v.below_soft());
        let key = match strategy {
            Strategy::Closest => {
                let bucket = ((v.rtt_ms.max(0.0) * (1.0 / RTT_BUCKET_MS)) as u64).min(0xff_ffff);
                tier << 63 | bucket << 39 | u64::from(v.load.min(0x7f_ffff)) << 16 | tie(i)
            }
            Strategy::Leastload => {
                if v.soft != last_soft {
                    last_soft = v.soft;
                    inv = 1000.0 / f64::from(v.soft.max(1));
                }
                let rel = ((f64::from(v.load) * inv) as u64).min(REL_MAX);
                let lead = tier << 47 | rel;
                if lead + LEASTLOAD_TOLERANCE < floor {
                    // A new, clearly better floor: the old near set no longer counts.
                    sample = [usize::MAX; LEASTLOAD_SAMPLE];
                    seen_near = 0;
                }
                if lead < floor {
                    floor = lead;
                }
                if lead <= floor + LEASTLOAD_TOLERANCE && tier == floor >> 47 {
                    seen_near += 1;
                    let slot = if seen_near as usize <= LEASTLOAD_SAMPLE {
                        Some(seen_near as usize - 1)
                    } else {
                        let r = mix(seed.rotate_left(17) ^ i as u64) % seen_near;
                        (r < LEASTLOAD_SAMPLE as u64).then_some(r as usize)
                    };
                    if let Some(s) = slot {
                        sample[s] = i;
                    }
                }
                lead << 16 | tie(i)
            }
        };
        best.offer(key, i);
    }
    if best.is_empty() {
        return Err(if any_healthy {
            Empty::AllFull
        } else {
            Empty::NoHealthy
        });
    }
    let mut order: Vec<usize> = Vec::with_capacity(limit);
    if strategy == Strategy::Leastload {
        // A sampled instance may have fallen out of tolerance when the floor dropped by less than
        // the tolerance; keep only those still near the final floor.
        let lead = |i: usize| {
            let v = &views[i];
            let rel =
                ((f64::from(v.load) * (1000.0 / f64::from(v.soft.max(1)))) as u64).min(REL_MAX);
            u64::from(!v.below_soft()) << 47 | rel
        };
        let mut picked: Vec<usize> = sample
            .iter()
            .copied()
            .filter(|&i| i != usize::MAX && lead(i) <= floor + LEASTLOAD_TOLERANCE)
            .collect();
        if picked.is_empty() {
            picked.push(best.first());
        }
        picked.sort_by_key(|&i| (views[i].bucket(), tie(i)));
        order.extend(picked);
    }
    for i in best.indexes() {
        if order.len() >= limit {
            break;
        }
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order.truncate(limit);
    if let Some(pref) = hints.prefer_instance.as_deref() {
        if let Some(i) = views.iter().position(|v| v.id == pref && v.can_take()) {
            order.retain(|&j| j != i);
            order.insert(0, i);
            order.truncate(limit);
        }
    }
    Ok(order)
}

/// The `k` smallest (key, index) pairs seen, kept sorted; O(1) for the usual non-contender.
#[derive(Debug)]
struct Top {
    k: usize,
    /// Inline up to [`TOP_INLINE`]: a request's pick keeps its few candidates without an
    /// allocation.
    items: smallvec::SmallVec<[(u64, usize); TOP_INLINE]>,
}

/// Candidates a [`Top`] keeps without allocating (an app's retries rarely ask for more).
const TOP_INLINE: usize = 8;

impl Top {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: smallvec::SmallVec::with_capacity(k + 1),
        }
    }

    fn offer(&mut self, key: u64, i: usize) {
        if self.items.len() == self.k {
            if key >= self.items[self.k - 1].0 {
                return;
            }
            self.items.pop();
        }
        let at = self.items.partition_point(|&(k, _)| k <= key);
        self.items.insert(at, (key, i));
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn is_full(&self) -> bool {
        self.items.len() == self.k
    }

    fn first(&self) -> usize {
        self.items[0].1
    }

    /// The largest key kept (0 when empty).
    fn last_key(&self) -> u64 {
        self.items.last().map_or(0, |&(k, _)| k)
    }

    fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().map(|&(_, i)| i)
    }
}

/// A 64-bit mixer (splitmix64's finaliser): cheap per-candidate randomness from one seed.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn v<'a>(id: &'a str, region: &'a str, rtt: f64, load: u32) -> View<'a> {
        View {
            id,
            region,
            rtt_ms: rtt,
            load,
            soft: 10,
            hard: 20,
            healthy: true,
        }
    }

    fn rng(seed: u64) -> SmallRng {
        SmallRng::seed_from_u64(seed)
    }

    #[test]
    fn closest_prefers_near_below_soft_then_near_below_hard_never_at_hard() {
        let views = [
            v("far", "c", 150.0, 0),
            v("near-busy", "a", 0.0, 15),
            v("mid", "b", 40.0, 3),
            v("near-full", "a", 0.0, 20),
        ];
        let got = select(Strategy::Closest, &views, &Hints::default(), &mut rng(1)).unwrap();
        let ids: Vec<_> = got.iter().map(|&i| views[i].id).collect();
        assert_eq!(ids, ["mid", "far", "near-busy"]);
    }

    #[test]
    fn closest_least_loaded_among_equally_close() {
        let views = [
            v("a1", "a", 0.5, 5),
            v("a2", "a", 1.5, 2),
            v("b", "b", 6.0, 0),
        ];
        let got = select(Strategy::Closest, &views, &Hints::default(), &mut rng(2)).unwrap();
        assert_eq!(
            views[got[0]].id, "a2",
            "same RTT bucket: the less loaded wins"
        );
    }

    #[test]
    fn never_returns_unhealthy_or_full_for_any_seed() {
        for seed in 0..500u64 {
            let mut r = rng(seed);
            let views: Vec<View> = (0..20)
                .map(|_| View {
                    id: "x",
                    region: "r",
                    rtt_ms: r.random_range(0.0..200.0),
                    load: r.random_range(0..25),
                    soft: 10,
                    hard: 20,
                    healthy: r.random_bool(0.8),
                })
                .collect();
            for s in [Strategy::Closest, Strategy::Leastload] {
                if let Ok(order) = select(s, &views, &Hints::default(), &mut r) {
                    let mut seen = std::collections::HashSet::new();
                    for &i in &order {
                        assert!(views[i].healthy && views[i].load < views[i].hard);
                        assert!(seen.insert(i), "no candidate twice");
                    }
                    let eligible = views
                        .iter()
                        .filter(|v| v.healthy && v.load < v.hard)
                        .count();
                    assert_eq!(order.len(), eligible);
                }
            }
        }
    }

    #[test]
    fn all_full_and_no_healthy_are_told_apart() {
        let full = [v("a", "a", 0.0, 20)];
        assert_eq!(
            select(Strategy::Closest, &full, &Hints::default(), &mut rng(0)),
            Err(Empty::AllFull)
        );
        let mut sick = v("a", "a", 0.0, 0);
        sick.healthy = false;
        assert_eq!(
            select(Strategy::Closest, &[sick], &Hints::default(), &mut rng(0)),
            Err(Empty::NoHealthy)
        );
    }

    #[test]
    fn leastload_spreads_equal_instances() {
        let views: Vec<View> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| v(id, "r", 0.0, 0))
            .collect();
        let mut firsts = std::collections::HashMap::new();
        let mut r = rng(7);
        for _ in 0..4000 {
            let o = select(Strategy::Leastload, &views, &Hints::default(), &mut r).unwrap();
            *firsts.entry(views[o[0]].id).or_insert(0) += 1;
        }
        for (id, n) in firsts {
            assert!((800..1200).contains(&n), "{id} first {n} times of 4000");
        }
    }

    #[test]
    fn leastload_picks_least_loaded_first_then_closest_among_equals() {
        for seed in 0..50 {
            let views = [
                v("busy", "a", 0.0, 9),
                v("idle-far", "c", 150.0, 0),
                v("mid", "b", 40.0, 4),
            ];
            let o = select(
                Strategy::Leastload,
                &views,
                &Hints::default(),
                &mut rng(seed),
            )
            .unwrap();
            let ids: Vec<_> = o.iter().map(|&i| views[i].id).collect();
            assert_eq!(ids, ["idle-far", "mid", "busy"], "seed {seed}");
            // Two equally idle: whichever two are sampled, the closer one leads.
            let views = [
                v("idle-near", "a", 0.0, 0),
                v("idle-far", "c", 150.0, 0),
                v("busy", "a", 0.0, 8),
            ];
            let o = select(
                Strategy::Leastload,
                &views,
                &Hints::default(),
                &mut rng(seed),
            )
            .unwrap();
            assert_eq!(views[o[0]].id, "idle-near", "seed {seed}");
            assert_eq!(views[o[2]].id, "busy", "seed {seed}");
        }
    }

    #[test]
    fn force_has_no_fallback() {
        let views = [v("a", "a", 0.0, 0), v("b", "a", 0.0, 20)];
        let h = |id: &str| Hints {
            force: Some(id.into()),
            ..Hints::default()
        };
        assert_eq!(
            select(Strategy::Closest, &views, &h("a"), &mut rng(0)),
            Ok(vec![0])
        );
        assert_eq!(
            select(Strategy::Closest, &views, &h("b"), &mut rng(0)),
            Err(Empty::ForcedUnavailable)
        );
        assert_eq!(
            select(Strategy::Closest, &views, &h("zz"), &mut rng(0)),
            Err(Empty::ForcedUnknown)
        );
    }

    #[test]
    fn prefer_instance_and_region_go_first_with_fallback() {
        let views = [
            v("near", "a", 0.0, 0),
            v("far", "c", 150.0, 0),
            v("mid", "b", 40.0, 0),
        ];
        let h = Hints {
            prefer_instance: Some("far".into()),
            ..Hints::default()
        };
        let o = select(Strategy::Closest, &views, &h, &mut rng(0)).unwrap();
        assert_eq!(views[o[0]].id, "far");
        assert_eq!(o.len(), 3);
        let h = Hints {
            prefer_regions: vec!["c".into(), "b".into()],
            ..Hints::default()
        };
        let o = select(Strategy::Closest, &views, &h, &mut rng(0)).unwrap();
        let ids: Vec<_> = o.iter().map(|&i| views[i].id).collect();
        assert_eq!(ids, ["far", "mid", "near"]);
    }

    fn random_views(r: &mut SmallRng, n: usize) -> Vec<View<'static>> {
        (0..n)
            .map(|_| View {
                id: "x",
                region: "r",
                rtt_ms: r.random_range(0.0..120.0),
                load: r.random_range(0..25),
                soft: 10,
                hard: 20,
                healthy: r.random_bool(0.9),
            })
            .collect()
    }

    #[test]
    fn select_top_matches_the_full_order_for_closest() {
        for seed in 0..300u64 {
            let mut r = rng(seed);
            let n = r.random_range(1..60);
            let views = random_views(&mut r, n);
            let key = |i: usize| (!views[i].below_soft(), views[i].bucket(), views[i].load);
            for limit in [1, 2, 4, 16] {
                let full = select(Strategy::Closest, &views, &Hints::default(), &mut r);
                let top = select_top(Strategy::Closest, &views, &Hints::default(), &mut r, limit);
                match (full, top) {
                    (Ok(full), Ok(top)) => {
                        assert_eq!(top.len(), limit.min(full.len()));
                        let want: Vec<_> = full.iter().take(limit).map(|&i| key(i)).collect();
                        let got: Vec<_> = top.iter().map(|&i| key(i)).collect();
                        assert_eq!(got, want, "seed {seed} limit {limit}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b),
                    (a, b) => panic!("seed {seed}: {a:?} vs {b:?}"),
                }
            }
        }
    }

    #[test]
    fn select_top_leastload_starts_least_loaded_then_orders_by_load() {
        for seed in 0..300u64 {
            let mut r = rng(seed);
            let n = r.random_range(1..60);
            let views = random_views(&mut r, n);
            let lead = |i: usize| (!views[i].below_soft(), views[i].rel_load());
            let Ok(top) = select_top(Strategy::Leastload, &views, &Hints::default(), &mut r, 4)
            else {
                continue;
            };
            let eligible: Vec<usize> = (0..views.len()).filter(|&i| views[i].can_take()).collect();
            assert_eq!(top.len(), 4.min(eligible.len()));
            let floor = eligible.iter().map(|&i| lead(i)).min().unwrap();
            let (t0, l0) = lead(top[0]);
            assert!(
                t0 == floor.0 && l0 <= floor.1 + LEASTLOAD_TOLERANCE,
                "seed {seed}: first is least loaded"
            );
            let mut seen = std::collections::HashSet::new();
            assert!(top.iter().all(|&i| views[i].can_take() && seen.insert(i)));
        }
    }

    #[test]
    fn select_top_spreads_ties_and_honours_hints() {
        let views: Vec<View> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| v(id, "r", 0.0, 0))
            .collect();
        for s in [Strategy::Closest, Strategy::Leastload] {
            let mut firsts = std::collections::HashMap::new();
            let mut r = rng(11);
            for _ in 0..4000 {
                let o = select_top(s, &views, &Hints::default(), &mut r, 3).unwrap();
                *firsts.entry(views[o[0]].id).or_insert(0) += 1;
            }
            for (id, n) in firsts {
                assert!(
                    (800..1200).contains(&n),
                    "{s:?}: {id} first {n} times of 4000"
                );
            }
        }
        let hints = Hints {
            prefer_instance: Some("c".into()),
            ..Hints::default()
        };
        let o = select_top(Strategy::Closest, &views, &hints, &mut rng(1), 2).unwrap();
        assert_eq!(views[o[0]].id, "c");
        assert_eq!(o.len(), 2);
    }
}
