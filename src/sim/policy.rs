//! What is being compared: petrel's strategies and the baselines, each an ordering of candidates.
//!
//! petrel's strategies call the proxy's own pick ([`crate::pick::order`],
//! [`crate::pick::last_resort`]). The baselines are what other
//! load balancers do: round robin, random and least-connections ignore RTT and queue at a busy
//! instance; "coordinates" is petrel's `closest` fed estimated RTTs (Consul's Vivaldi coordinates) instead
//! of measured ones, the setup that once sent Tokyo traffic to Hong Kong.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::RngExt;

use crate::balance::{Hints, View};
use crate::config::Strategy;
use crate::pick;

/// One compared policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// petrel `closest` on measured RTTs.
    Closest,
    /// petrel `leastload`.
    Leastload,
    /// Round robin over every healthy instance; queues at a busy one.
    RoundRobin,
    /// Uniformly random healthy instance; queues.
    Random,
    /// Fewest in-flight requests (gossiped), RTT ignored; queues.
    LeastConn,
    /// petrel `closest` on Vivaldi-estimated RTTs.
    Coordinates,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: [Policy; 6] = [
        Policy::Closest,
        Policy::Leastload,
        Policy::Coordinates,
        Policy::LeastConn,
        Policy::RoundRobin,
        Policy::Random,
    ];

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Closest => "closest",
            Policy::Leastload => "leastload",
            Policy::RoundRobin => "round_robin",
            Policy::Random => "random",
            Policy::LeastConn => "least_conn",
            Policy::Coordinates => "coordinates",
        }
    }

    /// Parses a `--strategy` entry.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// True for policies that reject at the hard limit and retry elsewhere (petrel's admission);
    /// false for those that queue at the instance like a classic proxy.
    pub fn rejects(self) -> bool {
        matches!(
            self,
            Policy::Closest | Policy::Leastload | Policy::Coordinates
        )
    }

    /// Orders `views` for one request (indexes into `views`), at most `budget` of them.
    /// `rr` is the edge's round-robin counter.
    pub fn order(
        self,
        views: &[View<'_>],
        budget: usize,
        rng: &mut SmallRng,
        rr: &mut usize,
    ) -> Vec<usize> {
        let hints = Hints::default();
        let petrel = |s: Strategy, rng: &mut SmallRng| {
            let mut order = pick::order(s, views, &hints, budget, rng).unwrap_or_default();
            pick::last_resort(s, views, &mut order, budget, rng);
            order
        };
        match self {
            Policy::Closest | Policy::Coordinates => petrel(Strategy::Closest, rng),
            Policy::Leastload => petrel(Strategy::Leastload, rng),
            Policy::RoundRobin => {
                let up: Vec<usize> = (0..views.len()).filter(|&i| views[i].healthy).collect();
                if up.is_empty() {
                    return up;
                }
                *rr = rr.wrapping_add(1);
                (0..budget.min(up.len()))
                    .map(|k| up[(*rr + k) % up.len()])
                    .collect()
            }
            Policy::Random => {
                let mut up: Vec<usize> = (0..views.len()).filter(|&i| views[i].healthy).collect();
                up.shuffle(rng);
                up.truncate(budget);
                up
            }
            Policy::LeastConn => {
                let mut up: Vec<(u32, u32, usize)> = (0..views.len())
                    .filter(|&i| views[i].healthy)
                    .map(|i| (views[i].load, rng.random::<u32>(), i))
                    .collect();
                up.sort_unstable();
                up.into_iter().take(budget).map(|(_, _, i)| i).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn v<'a>(id: &'a str, rtt: f64, load: u32, healthy: bool) -> View<'a> {
        View {
            id,
            region: "x",
            rtt_ms: rtt,
            load,
            soft: 10,
            hard: 20,
            healthy,
        }
    }

    #[test]
    fn baselines_skip_unhealthy_and_ignore_rtt() {
        let views = [
            v("a", 1.0, 9, true),
            v("b", 200.0, 0, true),
            v("c", 0.0, 0, false),
        ];
        let mut rng = SmallRng::seed_from_u64(1);
        let mut rr = 0;
        assert_eq!(
            Policy::LeastConn.order(&views, 1, &mut rng, &mut rr),
            vec![1]
        );
        assert_eq!(Policy::Closest.order(&views, 1, &mut rng, &mut rr), vec![0]);
        let a = Policy::RoundRobin.order(&views, 1, &mut rng, &mut rr);
        let b = Policy::RoundRobin.order(&views, 1, &mut rng, &mut rr);
        assert_ne!(a, b);
        for _ in 0..20 {
            assert!(!Policy::Random
                .order(&views, 3, &mut rng, &mut rr)
                .contains(&2));
        }
    }

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Some(p));
        }
        assert!(Policy::Closest.rejects() && !Policy::RoundRobin.rejects());
    }
}
