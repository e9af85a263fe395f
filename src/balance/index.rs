//! `closest` without reading every instance: candidates sorted by RTT bucket once per snapshot, so
//! a request reads the nearest buckets until it has its candidates.
//!
//! The order is exactly [`super::select_top`]'s for `closest` (same keys, same tie-breaking from
//! the same rng draw); only the work differs. When every near instance is at its soft limit the
//! walk goes on to farther buckets, and in the worst case (all at soft) it reads everything once.
//! The proxy keeps one index per app in each mesh snapshot and walks it with [`ClosestWalk`].

use rand::Rng;

use super::{mix, select_top, Empty, Hints, Top, View, TOP_MAX};
use crate::config::Strategy;

/// Instance positions grouped by RTT bucket, nearest first. Built from a snapshot's views (or any
/// list of positions and RTTs); valid while their RTTs are (loads may change freely).
#[derive(Debug, Clone, Default)]
pub struct ClosestIndex {
    order: Vec<u32>,
    /// Start of each bucket's run in `order`, plus `order.len()` at the end.
    runs: Vec<u32>,
    /// The bucket of each run.
    keys: Vec<u64>,
}

impl ClosestIndex {
    /// Sorts `views` by RTT bucket.
    pub fn new(views: &[View<'_>]) -> Self {
        Self::from_rtts(views.iter().enumerate().map(|(i, v)| (i as u32, v.rtt_ms)))
    }

    /// Sorts positions by the RTT bucket of their RTT (ms), positions ascending within a bucket.
    pub fn from_rtts(rtts: impl IntoIterator<Item = (u32, f64)>) -> Self {
        let mut keyed: Vec<(u64, u32)> =
            rtts.into_iter().map(|(i, rtt)| (bucket(rtt), i)).collect();
        keyed.sort_unstable();
        let (mut runs, mut keys) = (Vec::new(), Vec::new());
        for (k, &(b, _)) in keyed.iter().enumerate() {
            if keys.last() != Some(&b) {
                runs.push(k as u32);
                keys.push(b);
            }
        }
        runs.push(keyed.len() as u32);
        Self {
            order: keyed.into_iter().map(|(_, i)| i).collect(),
            runs,
            keys,
        }
    }

    /// Positions indexed.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Every position indexed, nearest first.
    pub fn positions(&self) -> &[u32] {
        &self.order
    }

    /// Each bucket with its positions, nearest first.
    pub fn runs(&self) -> impl Iterator<Item = (u64, &[u32])> + '_ {
        self.keys
            .iter()
            .zip(self.runs.windows(2))
            .map(|(&b, w)| (b, &self.order[w[0] as usize..w[1] as usize]))
    }
}

/// The bucket exactly as `select_top` computes it for its keys.
fn bucket(rtt_ms: f64) -> u64 {
    ((rtt_ms.max(0.0) * (1.0 / super::RTT_BUCKET_MS)) as u64).min(0xff_ffff)
}

/// `closest`'s first candidates, found by offering instances nearest bucket first and stopping as
/// soon as no farther one could enter: the same order as [`select_top`] for the same instances
/// (same keys, same tie-breaking from the same rng draw), but a request near room reads only the
/// buckets near it, and the views of the rest are never built.
#[derive(Debug)]
pub struct ClosestWalk {
    seed: u64,
    limit: usize,
    /// Below the soft limit, and at or over it (but below hard), each keyed by bucket, load, tie.
    soft: Top,
    over: Top,
    any_healthy: bool,
}

impl ClosestWalk {
    /// A walk for the first `limit` candidates (at least 1).
    pub fn new<R: Rng + ?Sized>(rng: &mut R, limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            seed: rng.next_u64(),
            limit,
            soft: Top::new(limit),
            over: Top::new(limit),
            any_healthy: false,
        }
    }

    /// True when nothing in `bucket` or farther can change the result: every candidate wanted is
    /// below its soft limit and nearer. Offers must come nearest bucket first.
    pub fn settled(&self, bucket: u64) -> bool {
        self.soft.is_full() && bucket > self.soft.last_key() >> 39
    }

    /// Considers instance `i` (any number that names it to the caller).
    pub fn offer(&mut self, i: usize, v: &View<'_>) {
        self.any_healthy |= v.healthy;
        if !v.can_take() {
            return;
        }
        let key = bucket(v.rtt_ms) << 39
            | u64::from(v.load.min(0x7f_ffff)) << 16
            | (mix(self.seed ^ i as u64) & 0xffff);
        if v.below_soft() {
            self.soft.offer(key, i);
        } else {
            self.over.offer(key, i);
        }
    }

    /// The candidates, best first: those below soft, then those over it (inline up to 8, no
    /// allocation for a request's usual few).
    pub fn finish(self) -> Result<smallvec::SmallVec<[usize; 8]>, Empty> {
        if self.soft.is_empty() && self.over.is_empty() {
            return Err(if self.any_healthy {
                Empty::AllFull
            } else {
                Empty::NoHealthy
            });
        }
        Ok(self
            .soft
            .indexes()
            .chain(self.over.indexes())
            .take(self.limit)
            .collect())
    }
}

/// The first `limit` candidates of `closest` for `views` (which `index` was built from), reading
/// only as many buckets as it takes. Hints that reorder fall back to [`select_top`].
pub fn select_closest<R: Rng + ?Sized>(
    index: &ClosestIndex,
    views: &[View<'_>],
    hints: &Hints,
    rng: &mut R,
    limit: usize,
) -> Result<Vec<usize>, Empty> {
    if *hints != Hints::default() || limit > TOP_MAX || index.len() != views.len() {
        return select_top(Strategy::Closest, views, hints, rng, limit);
    }
    let mut walk = ClosestWalk::new(rng, limit);
    for (bucket, run) in index.runs() {
        if walk.settled(bucket) {
            break;
        }
        for &i in run {
            walk.offer(i as usize, &views[i as usize]);
        }
    }
    walk.finish().map(smallvec::SmallVec::into_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn same_order_as_select_top_for_random_views() {
        let mut gen = SmallRng::seed_from_u64(11);
        let ids: Vec<String> = (0..300).map(|i| format!("i{i}")).collect();
        for round in 0..500 {
            let n = gen.random_range(0..300);
            let views: Vec<View<'_>> = (0..n)
                .map(|i| View {
                    id: &ids[i],
                    region: "r",
                    rtt_ms: gen.random_range(0.0..300.0),
                    load: gen.random_range(0..30),
                    soft: 20,
                    hard: 25,
                    healthy: gen.random_range(0..10) > 0,
                })
                .collect();
            let index = ClosestIndex::new(&views);
            let limit = gen.random_range(1..6);
            let h = Hints::default();
            let (mut a, mut b) = (
                SmallRng::seed_from_u64(round),
                SmallRng::seed_from_u64(round),
            );
            assert_eq!(
                select_closest(&index, &views, &h, &mut a, limit),
                select_top(Strategy::Closest, &views, &h, &mut b, limit),
                "round {round}"
            );
        }
    }
}
