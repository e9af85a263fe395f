//! The `detection` block of a report: how fast every node declared each crashed node down, and
//! how often the mesh suspected or declared down a node that was running and reachable.

use serde::Serialize;

use super::stats::round;
use super::world::World;

/// One failure detector's figures in one run (report.json `detection.<detector>`).
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// Crashes in the window.
    pub crashes: usize,
    /// Median over crashes of the time until every running node had declared the crashed node
    /// down, seconds.
    pub median_s: f64,
    /// The longest such time, seconds (a crash never declared down everywhere within the run
    /// counts as the rest of the run).
    pub max_s: f64,
    /// Crashes some running node had not declared down by the end of the run.
    pub undetected: usize,
    /// Median over (observer, crash) pairs of the time until that observer declared it down,
    /// seconds.
    pub per_observer_median_s: f64,
    /// Running nodes declared down (each then took a new identity, foca's rejoin, and its records
    /// were re-gossiped), in the window, before any partition: one per decision.
    pub false_downs: u64,
    /// "Down" notices about a running, reachable node, one per node that took it in: a false
    /// down counts once for every node that saw it.
    pub false_down_notices: u64,
    /// The same two once a partition had begun in the run (the cut-off side's verdicts, gossiped
    /// after the heal, reach nodes that were never cut from their targets).
    pub rejoins_after_cut: u64,
    /// See `rejoins_after_cut`.
    pub down_notices_after_cut: u64,
    /// Suspicions raised (a probe failed, direct and indirect) about a node that was running,
    /// reachable and not CPU-starved, in the window.
    pub false_suspicions: u64,
    /// Suspicions raised about a running, reachable node while it was CPU-starved (`[[sim.slow]]`):
    /// its acks were late.
    pub starved_suspicions: u64,
    /// Suspicions raised about a node that had crashed or was cut off.
    pub true_suspicions: u64,
}

impl Detection {
    /// The figures of a finished run.
    pub fn of(w: &World) -> Self {
        let end = w.window.1;
        let crashes: Vec<_> = w
            .stats
            .watches
            .iter()
            .filter(|x| x.kind == "crash")
            .collect();
        let mut everywhere: Vec<f64> = crashes
            .iter()
            .map(|x| match x.last {
                Some(t) if x.pending.is_empty() => (t - x.at) as f64 / 1e9,
                _ => end.saturating_sub(x.at) as f64 / 1e9,
            })
            .collect();
        everywhere.sort_by(f64::total_cmp);
        let mut pairs: Vec<f64> = crashes
            .iter()
            .flat_map(|x| x.seen.iter().map(|&d| d as f64 / 1e9))
            .collect();
        pairs.sort_by(f64::total_cmp);
        let s = &w.stats;
        Self {
            crashes: crashes.len(),
            median_s: round(median(&everywhere), 3),
            max_s: round(everywhere.last().copied().unwrap_or(0.0), 3),
            undetected: crashes
                .iter()
                .filter(|x| x.last.is_none() || !x.pending.is_empty())
                .count(),
            per_observer_median_s: round(median(&pairs), 3),
            false_downs: s.forced_rejoins,
            false_down_notices: s.false_downs,
            rejoins_after_cut: s.rejoins_after_cut,
            down_notices_after_cut: s.downs_after_cut,
            false_suspicions: s.false_suspicions,
            starved_suspicions: s.starved_suspicions,
            true_suspicions: s.true_suspicions,
        }
    }
}

/// The middle of sorted `v` (mean of the two middles for an even count); 0 when empty.
fn median(v: &[f64]) -> f64 {
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[1.0, 5.0, 9.0]), 5.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
    }
}
