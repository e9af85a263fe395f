//! Estimated coordinates: a Vivaldi embedding (2-D plus height, Dabek et al. 2004) fitted to noisy
//! RTT samples between regions, as Consul-style systems estimate distance instead of measuring it.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Samples each region takes before the estimate is used (several thousand, like a long-running
/// agent).
const ROUNDS: usize = 4000;
/// Relative noise on each RTT sample.
const SAMPLE_NOISE: f64 = 0.15;
const CE: f64 = 0.25;
const CC: f64 = 0.25;

#[derive(Clone, Copy)]
struct Coord {
    x: f64,
    y: f64,
    h: f64,
    err: f64,
}

impl Coord {
    fn dist(&self, o: &Coord) -> f64 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2)).sqrt() + self.h + o.h
    }
}

/// The region × region RTT matrix as the embedding estimates it, ms.
pub fn estimate(rtt_ms: &[Vec<f64>], seed: u64) -> Vec<Vec<f64>> {
    let n = rtt_ms.len();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5649_5641_4c44_4921);
    let mut c: Vec<Coord> = (0..n)
        .map(|_| Coord {
            x: rng.random_range(-1.0..1.0),
            y: rng.random_range(-1.0..1.0),
            h: 1.0,
            err: 1.0,
        })
        .collect();
    if n > 1 {
        for _ in 0..ROUNDS * n {
            let i = rng.random_range(0..n);
            let mut j = rng.random_range(0..n - 1);
            if j >= i {
                j += 1;
            }
            let noise = 1.0 + SAMPLE_NOISE * (rng.random::<f64>() * 2.0 - 1.0);
            let sample = (rtt_ms[i][j] * noise).max(0.1);
            let (ci, cj) = (c[i], c[j]);
            let est = ci.dist(&cj).max(1e-6);
            let w = ci.err / (ci.err + cj.err);
            let es = (est - sample).abs() / sample;
            c[i].err = (es * CE * w + ci.err * (1.0 - CE * w)).clamp(0.01, 1.5);
            let delta = CC * w * (sample - est);
            let (dx, dy) = (ci.x - cj.x, ci.y - cj.y);
            let norm = (dx * dx + dy * dy).sqrt();
            let (ux, uy) = if norm > 1e-9 {
                (dx / norm, dy / norm)
            } else {
                let a: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                (a.cos(), a.sin())
            };
            c[i].x += delta * ux;
            c[i].y += delta * uy;
            c[i].h = (c[i].h + delta * 0.1).max(0.1);
        }
    }
    (0..n)
        .map(|i| (0..n).map(|j| c[i].dist(&c[j])).collect())
        .collect()
}

/// Median relative error of `est` against `truth` over distinct pairs.
pub fn median_error(truth: &[Vec<f64>], est: &[Vec<f64>]) -> f64 {
    let mut e: Vec<f64> = Vec::new();
    for i in 0..truth.len() {
        for j in 0..truth.len() {
            if i != j && truth[i][j] > 0.0 {
                e.push((est[i][j] - truth[i][j]).abs() / truth[i][j]);
            }
        }
    }
    e.sort_by(f64::total_cmp);
    e.get(e.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_embeds_well_and_the_same_seed_gives_the_same_estimate() {
        // Three points on a line: a 2-D embedding can be exact, so the fit must be close.
        let t = vec![
            vec![0.0, 50.0, 100.0],
            vec![50.0, 0.0, 50.0],
            vec![100.0, 50.0, 0.0],
        ];
        let e = estimate(&t, 7);
        assert!(median_error(&t, &e) < 0.2, "{e:?}");
        assert_eq!(e, estimate(&t, 7));
    }
}
