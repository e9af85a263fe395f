//! The last resort: under `closest`, the final attempt of a request's budget goes to the instance
//! with the most room, not the next-closest one, so a burst that fills a whole neighbourhood at
//! once does not fail requests while far regions are idle.

use rand::Rng;

use super::{mix, View};
use crate::config::Strategy;

/// The fewest attempts for which the last one is given to the last resort: with fewer, the
/// closest order is kept whole.
pub const LAST_RESORT_FROM: usize = 3;

/// Replaces the last of `order` (a full budget of `budget` attempts, from [`super::select_top`])
/// with the least-loaded instance that can take a request and is not already in it, if there is
/// one with a lower relative load. Ties are broken at random, so edges that all see the same idle
/// instances (a cold start, stale gossip) do not all pick the same one.
pub fn last_resort<R: Rng + ?Sized>(
    strategy: Strategy,
    views: &[View<'_>],
    order: &mut [usize],
    budget: usize,
    rng: &mut R,
) {
    if strategy != Strategy::Closest || budget < LAST_RESORT_FROM || order.len() < budget {
        return;
    }
    let Some((&last, kept)) = order.split_last() else {
        return;
    };
    let seed = rng.next_u64();
    let best = (0..views.len())
        .filter(|&i| views[i].can_take() && !kept.contains(&i))
        .min_by_key(|&i| (views[i].rel_load(), mix(seed ^ i as u64)));
    if let Some(b) = best {
        if views[b].rel_load() < views[last].rel_load() {
            order[budget - 1] = b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(5)
    }

    fn v(id: &str, rtt: f64, load: u32) -> View<'_> {
        View {
            id,
            region: "r",
            rtt_ms: rtt,
            load,
            soft: 20,
            hard: 25,
            healthy: true,
        }
    }

    /// Three near instances that look almost full, then `rest`.
    fn near_then<'a>(rest: &[View<'a>]) -> Vec<View<'a>> {
        let mut views = vec![v("a", 1.0, 19), v("b", 2.0, 19), v("c", 3.0, 19)];
        views.extend_from_slice(rest);
        views
    }

    #[test]
    fn the_last_attempt_goes_where_the_room_is() {
        let views = near_then(&[v("d", 40.0, 19), v("far", 200.0, 2)]);
        let mut order = vec![0, 1, 2, 3];
        last_resort(Strategy::Closest, &views, &mut order, 4, &mut rng());
        assert_eq!(order, vec![0, 1, 2, 4]);
    }

    #[test]
    fn keeps_the_closest_order_when_it_already_ends_with_the_most_room() {
        let views = [
            v("a", 1.0, 3),
            v("b", 20.0, 3),
            v("c", 30.0, 1),
            v("x", 90.0, 5),
        ];
        let mut order = vec![0, 1, 2];
        last_resort(Strategy::Closest, &views, &mut order, 3, &mut rng());
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn leaves_short_budgets_short_orders_and_other_strategies_alone() {
        let views = near_then(&[v("far", 200.0, 0)]);
        for (strategy, budget, order) in [
            (Strategy::Closest, 2, vec![0, 1]),
            (Strategy::Closest, 4, vec![0, 1, 2]),
            (Strategy::Leastload, 3, vec![0, 1, 2]),
        ] {
            let mut o = order.clone();
            last_resort(strategy, &views, &mut o, budget, &mut rng());
            assert_eq!(o, order, "{strategy:?} budget {budget}");
        }
    }

    #[test]
    fn spreads_ties_among_equally_idle_instances() {
        let views = near_then(&[v("x", 50.0, 0), v("y", 60.0, 0), v("z", 70.0, 0)]);
        let mut seen = [0u32; 6];
        let mut r = rng();
        for _ in 0..300 {
            let mut order = vec![0, 1, 2];
            last_resort(Strategy::Closest, &views, &mut order, 3, &mut r);
            seen[order[2]] += 1;
        }
        assert!(seen[3..].iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn never_picks_an_instance_that_cannot_take_the_request() {
        let mut sick = v("sick", 100.0, 0);
        sick.healthy = false;
        let views = near_then(&[v("full", 200.0, 25), sick]);
        let mut order = vec![0, 1, 2];
        last_resort(Strategy::Closest, &views, &mut order, 3, &mut rng());
        assert_eq!(order, vec![0, 1, 2]);
    }
}
