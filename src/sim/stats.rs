//! What one run measures: outcomes, latency, retries, queues, utilisation, mesh bytes, and how
//! long the mesh took to notice failures and to heal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::queue::Nanos;

/// A failure or recovery being watched until every observer has seen it.
pub struct Watch {
    /// "crash", "recover", "partition" or "heal".
    pub kind: &'static str,
    /// What happened, for the report.
    pub label: String,
    /// When.
    pub at: Nanos,
    /// Waiting for "down" notices (true) or "up" notices (false).
    pub down: bool,
    /// (observer node, watched node name) pairs not seen yet.
    pub pending: BTreeSet<(usize, Arc<str>)>,
    /// First notice.
    pub first: Option<Nanos>,
    /// Last notice (every observer saw it).
    pub last: Option<Nanos>,
    /// Each observer's notice, time since `at`.
    pub seen: Vec<Nanos>,
}

/// Counters and samples of one run.
#[derive(Default)]
pub struct Stats {
    /// Requests that arrived in the window.
    pub arrivals: u64,
    /// Requests answered.
    pub ok: u64,
    /// Answered in the nearest region that had capacity when the request reached its edge (or
    /// nearer).
    pub optimal: u64,
    /// Answered in the nearest region that had capacity when the request could have reached it
    /// (or nearer).
    pub optimal_on_arrival: u64,
    /// Failed requests by reason.
    pub failed: BTreeMap<&'static str, u64>,
    /// Latency of each answered request, µs.
    pub latencies_us: Vec<u32>,
    /// Per edge region: (answered, optimal).
    pub by_region: Vec<(u64, u64)>,
    /// Network time of answered requests, ms summed: all, and per edge region.
    pub network_ms: f64,
    /// Per edge region: network time of its answered requests, ms summed.
    pub network_by_region: Vec<f64>,
    /// Attempts after the first.
    pub retries: u64,
    /// First tries sent to a region farther (true RTT from the edge) than the nearest region
    /// that had room (an instance below soft, or below hard when none was) when the request
    /// arrived; by (edge region, chosen region).
    pub misroutes: BTreeMap<(usize, usize), u64>,
    /// First tries sent farther than an instance the edge's own view showed with room: the RTT
    /// figures' doing, given what the edge knew.
    pub misroutes_seen: BTreeMap<(usize, usize), u64>,
    /// "Full" answers.
    pub rejects: u64,
    /// Longest queue at any instance.
    pub max_queue: u32,
    /// Per second, per region: in-flight requests / (instances × soft limit).
    pub region_util: Vec<Vec<f64>>,
    /// Failures and recoveries watched.
    pub watches: Vec<Watch>,
    /// "Down" declared by an observer about a node that was running and reachable, in the window,
    /// the two never cut apart by a partition.
    pub false_downs: u64,
    /// The same once a partition had begun in the run.
    pub downs_after_cut: u64,
    /// Running nodes declared down that took a new identity, in the window, before any partition.
    pub forced_rejoins: u64,
    /// The same once a partition had begun.
    pub rejoins_after_cut: u64,
    /// Suspicions raised about a node that was running and reachable, in the window.
    pub false_suspicions: u64,
    /// Suspicions raised about a running, reachable node while it was CPU-starved, in the window.
    pub starved_suspicions: u64,
    /// Suspicions raised about a node that was gone or cut off, in the window.
    pub true_suspicions: u64,
    /// Events scheduled (a measure of simulation work).
    pub events: u64,
    mesh_start: Option<u64>,
    /// Mesh bytes sent per node per second over the window.
    pub mesh_bytes_per_node_s: f64,
}

impl Stats {
    /// Empty stats for `regions` regions.
    pub fn new(_regions: usize) -> Self {
        Self::default()
    }

    /// A first try sent from edge region `from` to the farther region `to`.
    pub fn misroute(&mut self, from: usize, to: usize) {
        *self.misroutes.entry((from, to)).or_default() += 1;
    }

    /// A success, answered to a client of edge region `region`.
    pub fn ok(&mut self, region: usize, latency: Nanos, optimal: bool, on_arrival: bool) {
        if self.by_region.len() <= region {
            self.by_region.resize(region + 1, (0, 0));
        }
        self.by_region[region].0 += 1;
        self.by_region[region].1 += u64::from(optimal);
        self.ok += 1;
        self.optimal += u64::from(optimal);
        self.optimal_on_arrival += u64::from(on_arrival);
        self.latencies_us
            .push((latency / 1000).min(u64::from(u32::MAX)) as u32);
    }

    /// The network time an answered request paid (every try's RTT), for edge region `region`.
    pub fn network(&mut self, region: usize, ms: f64) {
        if self.network_by_region.len() <= region {
            self.network_by_region.resize(region + 1, 0.0);
        }
        self.network_by_region[region] += ms;
        self.network_ms += ms;
    }

    /// A failure.
    pub fn fail(&mut self, why: &'static str) {
        *self.failed.entry(why).or_default() += 1;
    }

    /// True once the window's starting byte count is taken.
    pub fn mesh_started(&self) -> bool {
        self.mesh_start.is_some()
    }

    /// Mesh bytes sent by all nodes when the window opens.
    pub fn mesh_start(&mut self, bytes: u64) {
        self.mesh_start = Some(bytes);
    }

    /// Mesh bytes when the window closes.
    pub fn mesh_end(&mut self, bytes: u64, nodes: usize, window: Nanos) {
        let sent = bytes.saturating_sub(self.mesh_start.unwrap_or(0));
        self.mesh_bytes_per_node_s = sent as f64 / nodes.max(1) as f64 / (window as f64 / 1e9);
    }

    /// `observer` declared `name` down.
    pub fn saw_down(&mut self, observer: usize, name: &Arc<str>, now: Nanos) {
        self.saw(observer, name, now, true);
    }

    /// `observer` saw `name` up (joined or restarted).
    pub fn saw_up(&mut self, observer: usize, name: &Arc<str>, now: Nanos) {
        self.saw(observer, name, now, false);
    }

    fn saw(&mut self, observer: usize, name: &Arc<str>, now: Nanos, down: bool) {
        for w in self.watches.iter_mut().filter(|w| w.down == down) {
            if w.pending.remove(&(observer, name.clone())) {
                w.first.get_or_insert(now);
                w.seen.push(now - w.at);
                if w.pending.is_empty() {
                    w.last = Some(now);
                }
            }
        }
    }

    /// A crashed node no longer counts as an observer.
    pub fn observer_gone(&mut self, observer: usize, now: Nanos) {
        for w in &mut self.watches {
            let before = w.pending.len();
            w.pending.retain(|(o, _)| *o != observer);
            if before > 0 && w.pending.is_empty() && w.first.is_some() {
                w.last = Some(now);
            }
        }
    }
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Rounds for the report: figures stay readable and identical across platforms.
pub fn round(x: f64, places: i32) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Percentiles of sorted samples (µs) in ms.
pub fn latency(sorted_us: &[u32]) -> Latency {
    let at = |q: f64| {
        if sorted_us.is_empty() {
            return 0.0;
        }
        let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
        round(f64::from(sorted_us[i]) / 1000.0, 3)
    };
    Latency {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
    }
}

/// Coefficient of variation (population) of `xs`.
pub fn cv(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_spread() {
        let xs: Vec<u32> = (1..=1000).map(|x| x * 1000).collect();
        let l = latency(&xs);
        assert_eq!((l.p50_ms, l.p99_ms, l.p999_ms), (500.0, 990.0, 999.0));
        assert_eq!(cv(&[1.0, 1.0, 1.0]), 0.0);
        assert!((cv(&[0.0, 2.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_watch_ends_when_every_observer_saw_it() {
        let mut s = Stats::default();
        let name: Arc<str> = "a-1".into();
        s.watches.push(Watch {
            kind: "crash",
            label: "a-1".into(),
            at: 0,
            down: true,
            pending: [(1, name.clone()), (2, name.clone())].into_iter().collect(),
            first: None,
            last: None,
            seen: Vec::new(),
        });
        s.saw_down(1, &name, 5);
        s.saw_up(2, &name, 6);
        assert_eq!((s.watches[0].first, s.watches[0].last), (Some(5), None));
        s.saw_down(2, &name, 9);
        assert_eq!(s.watches[0].last, Some(9));
    }
}
