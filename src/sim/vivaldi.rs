//! Estimated coordinates as Consul computes them: every node fits its own Vivaldi coordinate
//! (Dabek et al., SIGCOMM 2004) from jittered RTT samples to the nodes it probes, with Consul's
//! additions: an 8-dimensional vector plus height, an adjustment term, a latency filter and
//! gravity (`serf/coordinate`: `config.go` `DefaultConfig`, `client.go` `Update`,
//! `coordinate.go` `ApplyForce` / `DistanceTo`).
//!
//! The `coordinates` baseline routes on these estimates instead of measured RTTs, as a
//! Consul-style system estimates distance instead of measuring it.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// `DefaultConfig().Dimensionality`.
const DIMENSIONS: usize = 8;
/// `VivaldiErrorMax`: the error a coordinate starts with and never exceeds.
const ERROR_MAX: f64 = 1.5;
/// `VivaldiCE`: how fast the error estimate moves.
const CE: f64 = 0.25;
/// `VivaldiCC`: how fast the coordinate moves.
const CC: f64 = 0.25;
/// `AdjustmentWindowSize`: samples averaged into the adjustment term.
const ADJUSTMENT_WINDOW: usize = 20;
/// `HeightMin`, seconds (10 µs).
const HEIGHT_MIN_S: f64 = 10.0e-6;
/// `LatencyFilterSize`: each peer's samples go through a moving median of this many.
const LATENCY_FILTER: usize = 3;
/// `GravityRho`, seconds: the pull back toward the origin.
const GRAVITY_RHO_S: f64 = 150.0;
/// Below this a distance or an RTT counts as zero (`zeroThreshold`).
const ZERO: f64 = 1.0e-6;
/// Probes each node makes before its coordinate is used: memberlist probes one member per probe
/// interval, so 1,000 is about 83 minutes of a WAN agent (5 s interval).
const PROBES_PER_NODE: usize = 1000;
/// RTT between two nodes of one region, ms (as the topology's same-region figure).
const SAME_REGION_MS: f64 = 0.5;

#[derive(Clone)]
struct Coordinate {
    vec: [f64; DIMENSIONS],
    error: f64,
    adjustment: f64,
    height: f64,
}

impl Coordinate {
    fn new() -> Self {
        Self {
            vec: [0.0; DIMENSIONS],
            error: ERROR_MAX,
            adjustment: 0.0,
            height: HEIGHT_MIN_S,
        }
    }

    /// `rawDistanceTo`: Euclidean distance plus both heights, seconds.
    fn raw_distance(&self, o: &Coordinate) -> f64 {
        let d2: f64 = self
            .vec
            .iter()
            .zip(&o.vec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        d2.sqrt() + self.height + o.height
    }

    /// `DistanceTo`: the raw distance plus both adjustments, unless that would be ≤ 0; seconds.
    fn distance(&self, o: &Coordinate) -> f64 {
        let raw = self.raw_distance(o);
        let adjusted = raw + self.adjustment + o.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            raw
        }
    }

    /// `ApplyForce`: move along the unit vector from `o` to `self` by `force` seconds, and the
    /// height in proportion.
    fn apply_force(&mut self, force: f64, o: &Coordinate, rng: &mut SmallRng) {
        let mut diff = [0.0; DIMENSIONS];
        for (d, (a, b)) in diff.iter_mut().zip(self.vec.iter().zip(&o.vec)) {
            *d = a - b;
        }
        let mag = diff.iter().map(|x| x * x).sum::<f64>().sqrt();
        let unit = if mag > ZERO {
            diff.map(|x| x / mag)
        } else {
            // Two coordinates in one place: a random direction (`unitVectorAt`).
            let mut r = [0.0; DIMENSIONS];
            for x in &mut r {
                *x = rng.random::<f64>() - 0.5;
            }
            let m = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(ZERO);
            r.map(|x| x / m)
        };
        for (v, u) in self.vec.iter_mut().zip(unit) {
            *v += u * force;
        }
        if mag > ZERO {
            self.height = ((self.height + o.height) * force / mag + self.height).max(HEIGHT_MIN_S);
        }
    }
}

/// One node's Vivaldi client: its coordinate, adjustment samples and per-peer latency filters.
struct Client {
    coord: Coordinate,
    adjustment_samples: [f64; ADJUSTMENT_WINDOW],
    adjustment_index: usize,
    /// Per peer: its latest samples, seconds (at most `LATENCY_FILTER`).
    filters: Vec<Vec<f64>>,
}

impl Client {
    fn new(peers: usize) -> Self {
        Self {
            coord: Coordinate::new(),
            adjustment_samples: [0.0; ADJUSTMENT_WINDOW],
            adjustment_index: 0,
            filters: vec![Vec::new(); peers],
        }
    }

    /// `Client.Update`: filter the sample, then the Vivaldi step, the adjustment, the gravity.
    fn update(&mut self, peer: usize, other: &Coordinate, rtt_s: f64, rng: &mut SmallRng) {
        let f = &mut self.filters[peer];
        f.push(rtt_s);
        if f.len() > LATENCY_FILTER {
            f.remove(0);
        }
        let mut sorted = f.clone();
        sorted.sort_by(f64::total_cmp);
        let rtt = sorted[sorted.len() / 2].max(ZERO);
        // updateVivaldi
        let dist = self.coord.distance(other);
        let wrongness = (dist - rtt).abs() / rtt;
        let total = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total;
        self.coord.error =
            (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.coord.apply_force(force, other, rng);
        // updateAdjustment
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other);
        self.adjustment_index = (self.adjustment_index + 1) % ADJUSTMENT_WINDOW;
        self.coord.adjustment =
            self.adjustment_samples.iter().sum::<f64>() / (2.0 * ADJUSTMENT_WINDOW as f64);
        // updateGravity
        let origin = Coordinate::new();
        let d = origin.distance(&self.coord);
        let pull = -(d / GRAVITY_RHO_S).powi(2);
        self.coord.apply_force(pull, &origin, rng);
    }
}

/// The node × node RTT matrix, ms, as each node's coordinate estimates it (0 from a node to
/// itself: a node knows its own instances are local).
///
/// `node_region[n]` is node `n`'s region; `rtt_ms` the true region × region RTTs; each sample is
/// the true RTT plus two one-way jitters uniform in `0..jitter_ms`, as the simulator delays
/// datagrams. Every node probes the others in a shuffled round-robin, as memberlist does, and
/// updates its own coordinate from the probed node's current one. Deterministic per `seed`.
pub fn estimate(
    node_region: &[usize],
    rtt_ms: &[Vec<f64>],
    jitter_ms: f64,
    seed: u64,
) -> Vec<Vec<f64>> {
    let n = node_region.len();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5649_5641_4c44_4921);
    let mut clients: Vec<Client> = (0..n).map(|_| Client::new(n)).collect();
    let true_ms = |a: usize, b: usize| {
        let (ra, rb) = (node_region[a], node_region[b]);
        if ra == rb {
            SAME_REGION_MS
        } else {
            rtt_ms[ra][rb]
        }
    };
    if n > 1 {
        let mut order: Vec<Vec<usize>> = (0..n)
            .map(|a| (0..n).filter(|&b| b != a).collect())
            .collect();
        let mut cursor = vec![usize::MAX; n];
        for _ in 0..PROBES_PER_NODE {
            for a in 0..n {
                if cursor[a] >= order[a].len() {
                    order[a].shuffle(&mut rng);
                    cursor[a] = 0;
                }
                let b = order[a][cursor[a]];
                cursor[a] += 1;
                let jitter = if jitter_ms > 0.0 {
                    rng.random_range(0.0..jitter_ms) + rng.random_range(0.0..jitter_ms)
                } else {
                    0.0
                };
                let sample_s = (true_ms(a, b) + jitter) / 1000.0;
                let other = clients[b].coord.clone();
                clients[a].update(b, &other, sample_s, &mut rng);
            }
        }
    }
    (0..n)
        .map(|a| {
            (0..n)
                .map(|b| {
                    if a == b {
                        0.0
                    } else {
                        clients[a].coord.distance(&clients[b].coord) * 1000.0
                    }
                })
                .collect()
        })
        .collect()
}

/// How far an estimate is from the truth, over ordered pairs of distinct nodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EstimateError {
    /// Pairs in different regions: median of |estimate − true| ÷ true.
    pub median: f64,
    /// The same, 90th percentile.
    pub p90: f64,
    /// The same, 99th percentile.
    pub p99: f64,
    /// Pairs in one region (true RTT 0.5 ms): median estimate, ms.
    pub same_region_median_ms: f64,
    /// The same, largest estimate, ms.
    pub same_region_max_ms: f64,
    /// The region pair with the largest relative error, as "a-b", and that error.
    pub worst_pair: (String, f64),
}

/// Error of `est` (from [`estimate`]) against the true RTTs; `codes` names the regions.
pub fn error(
    node_region: &[usize],
    rtt_ms: &[Vec<f64>],
    est: &[Vec<f64>],
    codes: &[String],
) -> EstimateError {
    let (mut rel, mut same) = (Vec::new(), Vec::new());
    let mut worst = (String::new(), 0.0);
    for (a, &ra) in node_region.iter().enumerate() {
        for (b, &rb) in node_region.iter().enumerate() {
            if a == b {
                continue;
            }
            if ra == rb {
                same.push(est[a][b]);
                continue;
            }
            let t = rtt_ms[ra][rb];
            let e = (est[a][b] - t).abs() / t;
            if e > worst.1 {
                worst = (format!("{}-{}", codes[ra], codes[rb]), e);
            }
            rel.push(e);
        }
    }
    rel.sort_by(f64::total_cmp);
    same.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let r4 = |x: f64| (x * 1e4).round() / 1e4;
    EstimateError {
        median: r4(q(&rel, 0.5)),
        p90: r4(q(&rel, 0.9)),
        p99: r4(q(&rel, 0.99)),
        same_region_median_ms: r4(q(&same, 0.5)),
        same_region_max_ms: r4(same.last().copied().unwrap_or(0.0)),
        worst_pair: (worst.0, r4(worst.1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_embeds_well_and_the_same_seed_gives_the_same_estimate() {
        // Three regions on a line, one node each: the fit must be close.
        let t = vec![
            vec![0.0, 50.0, 100.0],
            vec![50.0, 0.0, 50.0],
            vec![100.0, 50.0, 0.0],
        ];
        let nodes = [0, 1, 2];
        let e = estimate(&nodes, &t, 1.0, 7);
        let codes = ["a".to_string(), "b".to_string(), "c".to_string()];
        let err = error(&nodes, &t, &e, &codes);
        assert!(err.median < 0.1, "{err:?} {e:?}");
        assert_eq!(e, estimate(&nodes, &t, 1.0, 7));
    }

    #[test]
    fn a_triangle_violation_cannot_be_embedded() {
        // a–c is far longer than a–b–c: no metric space fits it, so some pair stays off by more
        // than 10% however long the fit runs.
        let t = vec![
            vec![0.0, 20.0, 150.0],
            vec![20.0, 0.0, 20.0],
            vec![150.0, 20.0, 0.0],
        ];
        let nodes = [0, 0, 1, 1, 2, 2];
        let e = estimate(&nodes, &t, 1.0, 3);
        let codes = ["a".to_string(), "b".to_string(), "c".to_string()];
        let err = error(&nodes, &t, &e, &codes);
        assert!(err.p99 > 0.1, "{err:?}");
        assert!(err.same_region_median_ms > 0.0);
    }
}
