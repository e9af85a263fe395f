//! `closest` without reading every instance: candidates sorted by RTT bucket once per snapshot, so
//! a request reads the nearest buckets until it has its candidates.
//!
//! The order is exactly [`super::select_top`]'s for `closest` (same keys, same tie-breaking from
//! the same rng draw); only the work differs. When every near instance is at its soft limit the
//! walk goes on to farther buckets, and in the worst case (all at soft) it reads everything once.

use rand::Rng;

use super::{mix, select_top, Empty, Hints, Top, View, TOP_MAX};
use crate::config::Strategy;

/// Instance positions grouped by RTT bucket, nearest first. Built from a snapshot's views; valid
/// while their RTTs are (loads may change freely).
#[derive(Debug, Clone, Default)]
pub struct ClosestIndex {
    order: Vec<u32>,
    /// Start of each bucket's run in `order`, plus `order.len()` at the end.
    runs: Vec<u32>,
}

impl ClosestIndex {
    /// Sorts `views` by RTT bucket.
    pub fn new(views: &[View<'_>]) -> Self {
        let mut keyed: Vec<(u64, u32)> = views
            .iter()
            .enumerate()
            .map(|(i, v)| (bucket(v), i as u32))
            .collect();
        keyed.sort_unstable();
        let mut runs = Vec::new();
        let mut last = None;
        for (k, &(b, _)) in keyed.iter().enumerate() {
            if last != Some(b) {
                runs.push(k as u32);
                last = Some(b);
            }
        }
        runs.push(keyed.len() as u32);
        Self {
            order: keyed.into_iter().map(|(_, i)| i).collect(),
            runs,
        }
    }

    /// Instances indexed.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn buckets(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.runs
            .windows(2)
            .map(|w| &self.order[w[0] as usize..w[1] as usize])
    }
}

/// The bucket exactly as `select_top` computes it for its keys.
fn bucket(v: &View<'_>) -> u64 {
    ((v.rtt_ms.max(0.0) * (1.0 / super::RTT_BUCKET_MS)) as u64).min(0xff_ffff)
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
    let limit = limit.max(1);
    let seed = rng.next_u64();
    let mut best = Top::new(limit);
    // Below soft first (tier 0), then below hard (tier 1): every key of a nearer bucket is smaller
    // than any key of a farther one within a tier, so a full `best` after a bucket is final.
    for tier in [0u64, 1] {
        for run in index.buckets() {
            for &i in run {
                let i = i as usize;
                let v = &views[i];
                if !v.can_take() || u64::from(!v.below_soft()) != tier {
                    continue;
                }
                let key = tier << 63
                    | bucket(v) << 39
                    | u64::from(v.load.min(0x7f_ffff)) << 16
                    | (mix(seed ^ i as u64) & 0xffff);
                best.offer(key, i);
            }
            if best.is_full() {
                return Ok(best.indexes().collect());
            }
        }
    }
    if best.is_empty() {
        return Err(if views.iter().any(|v| v.healthy) {
            Empty::AllFull
        } else {
            Empty::NoHealthy
        });
    }
    Ok(best.indexes().collect())
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
