//! The report: every figure of every policy as JSON (rounded, so the same seed gives the same
//! bytes) and the comparison table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::scenario::Scenario;
use super::stats::{cv, latency, round, Latency};
use super::world::World;

/// One policy's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Requests that arrived.
    pub requests: u64,
    /// Answered / arrived.
    pub success_rate: f64,
    /// Answered in the nearest region that had an instance below its soft limit (or nearer) /
    /// answered.
    pub optimal_share: f64,
    /// The same, with each region's capacity taken when the request, sent there at once from its
    /// edge, would have reached it (slots freed or taken meanwhile count).
    pub optimal_share_on_arrival: f64,
    /// Client latency: network, service and retries.
    pub latency: Latency,
    /// Attempts after the first, per second.
    pub retries_per_s: f64,
    /// "Full" answers per second.
    pub rejects_per_s: f64,
    /// Longest queue at any instance.
    pub max_queue: u32,
    /// Coefficient of variation of instance utilisation.
    pub load_cv: f64,
    /// Failed requests by reason.
    pub failed: BTreeMap<String, u64>,
    /// Mesh (gossip + ping) bytes sent per node per second.
    pub mesh_bytes_per_node_s: f64,
    /// Optimal share by the edge's region.
    pub optimal_by_region: BTreeMap<String, f64>,
    /// Mean network time of an answered request (every try's RTT, retries included), ms.
    pub network_ms_mean: f64,
    /// The fluid bound: the least mean network time any router can pay for this demand, ms.
    pub fluid_bound_ms: f64,
    /// `network_ms_mean - fluid_bound_ms`.
    pub excess_ms: f64,
    /// The excess as a share of the bound.
    pub excess_share: f64,
    /// Per edge region: its requests' mean network time less its demand's share of the bound, ms.
    pub excess_by_region: BTreeMap<String, f64>,
    /// First tries sent farther than a region that had room (see `Stats::misroutes`).
    pub misroutes: u64,
    /// The same as a share of all requests.
    pub misroute_share: f64,
    /// The same by "edge region→chosen region", largest first, at most 5.
    pub misroutes_top: Vec<(String, u64)>,
    /// First tries sent farther than an instance the edge itself saw with room: the RTT figures'
    /// doing, given what the edge knew. Not a subset of `misroutes` (a nearer instance that only
    /// looked free to the edge counts here).
    pub misroutes_by_rtt: u64,
    /// The same by "edge region→chosen region", largest first, at most 5.
    pub misroutes_by_rtt_top: Vec<(String, u64)>,
    /// Latency CDF: (ms, fraction answered within), 100 points.
    pub latency_cdf: Vec<(f64, f64)>,
    /// Per second, per region utilisation (in-flight / (instances × soft)).
    pub region_util: Vec<Vec<f64>>,
}

/// How long the mesh took to see one failure or recovery.
#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    /// "crash", "recover", "partition" or "heal".
    pub kind: String,
    /// The node or regions.
    pub what: String,
    /// When it happened, seconds after clients started.
    pub at_s: f64,
    /// Until the first node noticed, s.
    pub first_notice_s: Option<f64>,
    /// Until every live node noticed (converged), s; null when not within the run.
    pub everywhere_s: Option<f64>,
}

/// One policy at one overload of the swept region.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadPoint {
    /// The swept region's demand ÷ its own capacity.
    pub factor: f64,
    /// Policy name.
    pub policy: String,
    /// Mean network time of an answered request, ms.
    pub network_ms_mean: f64,
    /// The fluid bound for this demand, ms.
    pub fluid_bound_ms: f64,
    /// `network_ms_mean - fluid_bound_ms`.
    pub excess_ms: f64,
    /// Answered / arrived.
    pub success_rate: f64,
}

/// Mesh cost at one cluster size.
#[derive(Debug, Clone, Serialize)]
pub struct MeshSize {
    /// Nodes.
    pub nodes: u32,
    /// Gossip + ping bytes sent per node per second.
    pub bytes_per_node_s: f64,
}

/// Everything `petrel sim` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Topology file stem.
    pub topology: String,
    /// The seed.
    pub seed: u64,
    /// Measured seconds of traffic.
    pub duration_s: f64,
    /// Seconds the mesh ran before traffic.
    pub warmup_s: f64,
    /// Regions.
    pub regions: Vec<String>,
    /// Nodes.
    pub nodes: usize,
    /// Instances.
    pub instances: usize,
    /// Offered load as a fraction of global capacity.
    pub demand: f64,
    /// Global capacity: instances × soft limit / mean service time, requests per second.
    pub capacity_rps: f64,
    /// How far the Vivaldi estimate used by `coordinates` is from the true RTTs.
    pub coordinates_error: super::vivaldi::EstimateError,
    /// Per policy.
    pub policies: Vec<PolicyReport>,
    /// Failures and recoveries (from the first policy's run; the mesh does not depend on policy).
    pub failures: Vec<FailureReport>,
    /// Mesh bytes per node per second by cluster size.
    pub mesh_scaling: Vec<MeshSize>,
    /// Excess over the fluid bound as one region's overload grows (`[sim] overload_sweep`).
    pub overload_curve: Vec<OverloadPoint>,
    /// Failure detection per detector: "lifeguard" (petrel's; from the first policy's run when
    /// there is traffic) and, in runs without traffic, each of `[sim] detectors`.
    pub detection: BTreeMap<String, super::detection::Detection>,
}

impl Report {
    /// An empty report for `sc`.
    pub fn new(sc: &Scenario, seed: u64, vivaldi_error: super::vivaldi::EstimateError) -> Self {
        let instances: u32 = sc
            .regions
            .iter()
            .map(|r| r.nodes * r.instances_per_node)
            .sum();
        let s = &sc.sim;
        Self {
            topology: sc.name.clone(),
            seed,
            duration_s: s.duration_s,
            warmup_s: s.warmup_s,
            regions: sc.regions.iter().map(|r| r.code.clone()).collect(),
            nodes: sc.node_names().len(),
            instances: instances as usize,
            demand: s.demand,
            capacity_rps: round(
                f64::from(instances) * f64::from(s.soft_limit) / (s.service_ms / 1000.0),
                1,
            ),
            coordinates_error: vivaldi_error,
            policies: Vec::new(),
            failures: Vec::new(),
            mesh_scaling: Vec::new(),
            overload_curve: Vec::new(),
            detection: BTreeMap::new(),
        }
    }

    /// The failures and recoveries of a run and how long each took to be noticed (the first run
    /// added only).
    pub fn add_failures(&mut self, w: &World) {
        if !self.failures.is_empty() {
            return;
        }
        let s = &w.stats;
        let start = w.window.0;
        let rel = |t: u64| round((t as f64 - start as f64) / 1e9, 3);
        let dt = |t: Option<u64>, at: u64| t.map(|t| round((t - at) as f64 / 1e9, 3));
        self.failures = s
            .watches
            .iter()
            .map(|x| FailureReport {
                kind: x.kind.into(),
                what: x.label.clone(),
                at_s: rel(x.at),
                first_notice_s: dt(x.first, x.at),
                everywhere_s: dt(x.last, x.at),
            })
            .collect();
    }

    /// Adds a run's failure-detection figures under `detector`.
    pub fn add_detection(&mut self, detector: &str, w: &World) {
        self.detection
            .insert(detector.into(), super::detection::Detection::of(w));
    }

    /// Adds the figures of a finished run.
    pub fn add_policy(&mut self, w: &World) {
        let s = &w.stats;
        let secs = w.sc.sim.duration_s;
        let mut lat = s.latencies_us.clone();
        lat.sort_unstable();
        let cdf = (1..=100)
            .map(|k| {
                let q = f64::from(k) / 100.0;
                let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
                let v = lat.get(i).copied().unwrap_or(0);
                (round(f64::from(v) / 1000.0, 3), q)
            })
            .collect();
        let soft = f64::from(w.sc.sim.soft_limit);
        let util: Vec<f64> = w.insts.iter().map(|i| i.busy / secs / soft).collect();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (network_ms_mean, bound) = network_and_bound(w);
        let misroutes: u64 = s.misroutes.values().sum();
        let excess_by_region = s
            .network_by_region
            .iter()
            .enumerate()
            .filter_map(|(r, &ms)| {
                let ok = s.by_region.get(r)?.0;
                let b = bound.by_region.get(r).copied().flatten()?;
                (ok > 0).then(|| (w.sc.regions[r].code.clone(), round(ms / ok as f64 - b, 3)))
            })
            .collect();
        self.policies.push(PolicyReport {
            policy: w.policy.name().into(),
            requests: s.arrivals,
            success_rate: round(ratio(s.ok, s.arrivals), 6),
            optimal_share: round(ratio(s.optimal, s.ok), 6),
            optimal_share_on_arrival: round(ratio(s.optimal_on_arrival, s.ok), 6),
            latency: latency(&lat),
            retries_per_s: round(s.retries as f64 / secs, 2),
            rejects_per_s: round(s.rejects as f64 / secs, 2),
            max_queue: s.max_queue,
            load_cv: round(cv(&util), 4),
            failed: s.failed.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            mesh_bytes_per_node_s: round(s.mesh_bytes_per_node_s, 1),
            optimal_by_region: s
                .by_region
                .iter()
                .enumerate()
                .map(|(r, &(ok, opt))| (w.sc.regions[r].code.clone(), round(ratio(opt, ok), 4)))
                .collect(),
            network_ms_mean: round(network_ms_mean, 3),
            fluid_bound_ms: round(bound.mean_ms, 3),
            excess_ms: round(network_ms_mean - bound.mean_ms, 3),
            excess_share: round(
                if bound.mean_ms > 0.0 {
                    (network_ms_mean - bound.mean_ms) / bound.mean_ms
                } else {
                    0.0
                },
                4,
            ),
            excess_by_region,
            misroutes,
            misroutes_by_rtt: s.misroutes_seen.values().sum(),
            misroutes_by_rtt_top: top_pairs(&s.misroutes_seen, w),
            misroute_share: round(ratio(misroutes, s.arrivals), 6),
            misroutes_top: top_pairs(&s.misroutes, w),
            latency_cdf: cdf,
            region_util: s
                .region_util
                .iter()
                .map(|r| r.iter().map(|x| round(*x, 3)).collect())
                .collect(),
        });
        if self.policies.len() == 1 {
            self.add_failures(w);
            self.mesh_scaling.push(MeshSize {
                nodes: self.nodes as u32,
                bytes_per_node_s: round(s.mesh_bytes_per_node_s, 1),
            });
            self.add_detection("lifeguard", w);
        }
    }

    /// Adds a run of the overload sweep.
    pub fn add_overload(&mut self, factor: f64, w: &World) {
        let (network, bound) = network_and_bound(w);
        let s = &w.stats;
        self.overload_curve.push(OverloadPoint {
            factor: round(factor, 3),
            policy: w.policy.name().into(),
            network_ms_mean: round(network, 3),
            fluid_bound_ms: round(bound.mean_ms, 3),
            excess_ms: round(network - bound.mean_ms, 3),
            success_rate: round(
                if s.arrivals == 0 {
                    0.0
                } else {
                    s.ok as f64 / s.arrivals as f64
                },
                6,
            ),
        });
    }

    /// Adds a mesh-only run at another size.
    pub fn add_mesh_size(&mut self, nodes: u32, bytes: f64) {
        self.mesh_scaling.push(MeshSize {
            nodes,
            bytes_per_node_s: round(bytes, 1),
        });
    }

    /// Sorts what needs sorting.
    pub fn finish(&mut self) {
        self.mesh_scaling.sort_by_key(|m| m.nodes);
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }

    /// The comparison table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        if self.policies.is_empty() {
            let _ = writeln!(
                t,
                "{} — {} regions, {} nodes, mesh only, {} s after {} s of warm-up, seed {}",
                self.topology,
                self.regions.len(),
                self.nodes,
                self.duration_s,
                self.warmup_s,
                self.seed
            );
        } else {
            let _ = writeln!(
                t,
                "{} — {} regions, {} nodes, {} instances, demand {}% of {:.0} req/s, {} s, seed {}",
                self.topology,
                self.regions.len(),
                self.nodes,
                self.instances,
                round(self.demand * 100.0, 3),
                self.capacity_rps,
                self.duration_s,
                self.seed
            );
            let _ = writeln!(
            t,
            "{:<12} {:>9} {:>9} {:>10} {:>9} {:>10} {:>9} {:>7} {:>9} {:>10} {:>9} {:>9} {:>10} {:>10} {:>9} {:>8}",
            "policy",
            "requests",
            "success",
            "network ms",
            "bound ms",
            "excess ms",
            "misroutes",
            "by RTT",
            "optimal",
            "on arrival",
            "p50 ms",
            "p99 ms",
            "retries/s",
            "rejects/s",
            "max queue",
            "load CV"
        );
        }
        for p in &self.policies {
            let _ = writeln!(
                t,
                "{:<12} {:>9} {:>8.3}% {:>10.2} {:>9.2} {:>10.2} {:>9} {:>7} {:>8.2}% {:>9.2}% {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>9} {:>8.3}",
                p.policy,
                p.requests,
                p.success_rate * 100.0,
                p.network_ms_mean,
                p.fluid_bound_ms,
                p.excess_ms,
                p.misroutes,
                p.misroutes_by_rtt,
                p.optimal_share * 100.0,
                p.optimal_share_on_arrival * 100.0,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.retries_per_s,
                p.rejects_per_s,
                p.max_queue,
                p.load_cv
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(t, "\nmesh: failure detection and convergence");
            let show = |x: Option<f64>| x.map_or("not within run".into(), |v| format!("{v:.2} s"));
            for f in &self.failures {
                let _ = writeln!(
                    t,
                    "  {:<9} {:<14} at {:>6.1} s: first noticed after {}, everywhere after {}",
                    f.kind,
                    f.what,
                    f.at_s,
                    show(f.first_notice_s),
                    show(f.everywhere_s)
                );
            }
        }
        for (name, d) in &self.detection {
            let _ = writeln!(
                t,
                "mesh: {name}: {} crashes declared down everywhere after {:.2} s median, {:.2} s at most \
                 ({} not within the run; per observer {:.2} s median); false downs {} ({} notices; after a cut {}, {} notices), false suspicions {} \
                 (and {} of starved nodes), true suspicions {}",
                d.crashes,
                d.median_s,
                d.max_s,
                d.undetected,
                d.per_observer_median_s,
                d.false_downs,
                d.false_down_notices,
                d.rejoins_after_cut,
                d.down_notices_after_cut,
                d.false_suspicions,
                d.starved_suspicions,
                d.true_suspicions
            );
        }
        if self.policies.is_empty() {
            return t;
        }
        let _ = writeln!(t, "\nmesh: gossip + ping bytes per node per second");
        for m in &self.mesh_scaling {
            let _ = writeln!(
                t,
                "  {:>5} nodes: {:>10.0} B/s",
                m.nodes, m.bytes_per_node_s
            );
        }
        let e = &self.coordinates_error;
        let _ = writeln!(
            t,
            "coordinates: Consul's Vivaldi, error between regions median {:.1}%, p90 {:.1}%, p99 {:.1}% \
             (worst {} {:.1}%); two nodes of one region (0.5 ms) estimated at {:.1} ms median, {:.1} ms at most",
            e.median * 100.0,
            e.p90 * 100.0,
            e.p99 * 100.0,
            e.worst_pair.0,
            e.worst_pair.1 * 100.0,
            e.same_region_median_ms,
            e.same_region_max_ms
        );
        t
    }
}

/// The five largest counts of `pairs` as ("edge region→chosen region", count), ties by name.
fn top_pairs(pairs: &BTreeMap<(usize, usize), u64>, w: &World) -> Vec<(String, u64)> {
    let code = |r: usize| &w.sc.regions[r].code;
    let mut v: Vec<(String, u64)> = pairs
        .iter()
        .map(|(&(a, b), &n)| (format!("{}→{}", code(a), code(b)), n))
        .collect();
    v.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    v.truncate(5);
    v
}

/// A run's mean network time per answered request, ms, and its scenario's fluid bound.
fn network_and_bound(w: &World) -> (f64, super::fluid::Bound) {
    let s = &w.stats;
    let mean = if s.ok == 0 {
        0.0
    } else {
        s.network_ms / s.ok as f64
    };
    (mean, w.fluid_bound())
}
