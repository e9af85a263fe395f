//! The `[sim]` section of a topology file: nodes, instances, workload and failures, validated with
//! file:line:key errors, and the resolved scenario the simulator runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::topology::Topology;
use crate::config::{ConfigError, ConfigErrors, Source};

#[derive(Debug, Deserialize)]
struct SimFile {
    #[serde(default)]
    sim: Option<SimSection>,
}

/// Everything `petrel sim` reads from a topology file's `[sim]` table (all optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    /// Simulated seconds of client traffic that are measured.
    pub duration_s: f64,
    /// Simulated seconds the mesh runs before clients start (membership and RTTs settle).
    pub warmup_s: f64,
    /// Mesh preset: "wan" or "lan".
    pub profile: String,
    /// Nodes in each region unless the region says otherwise.
    pub nodes_per_region: u32,
    /// Instances on each node unless the region says otherwise.
    pub instances_per_node: u32,
    /// Apps; instances are dealt to apps in turn, clients pick an app uniformly.
    pub apps: u32,
    /// Per-instance soft limit (concurrent requests).
    pub soft_limit: u32,
    /// Per-instance hard limit: petrel rejects above it, baselines queue above it.
    pub hard_limit: u32,
    /// Mean service time, ms (log-normal).
    pub service_ms: f64,
    /// Log-normal sigma of the service time.
    pub service_sigma: f64,
    /// Total client rate as a fraction of global capacity (instances × soft / service time).
    pub demand: f64,
    /// Diurnal swing of each region's rate (0 = flat), phase from the region's longitude.
    pub diurnal_amplitude: f64,
    /// Length of one diurnal cycle, simulated seconds.
    pub diurnal_period_s: f64,
    /// Extra one-way delay per datagram and request leg, uniform in 0..jitter_ms.
    pub jitter_ms: f64,
    /// Probability that a mesh datagram is lost.
    pub loss: f64,
    /// Retries after the first attempt (fly.toml `load_balancing.retries`).
    pub retries: u32,
    /// Backhaul connect timeout toward an unreachable node, ms.
    pub connect_timeout_ms: f64,
    /// Extra mesh-only runs at these cluster sizes, for bytes per node vs cluster size.
    pub sweep_nodes: Vec<u32>,
    /// The region whose overload the curve varies (`overload_sweep`).
    pub overload_region: Option<String>,
    /// Extra runs of every policy with `overload_region`'s demand at these multiples of its own
    /// capacity (its weight set to match), for the excess-over-the-fluid-bound curve.
    pub overload_sweep: Vec<f64>,
    /// Per-region overrides, by region code.
    pub regions: BTreeMap<String, RegionSim>,
    /// Node crashes.
    pub crash: Vec<Crash>,
    /// Network partitions.
    pub partition: Vec<Partition>,
    /// Nodes that handle datagrams late for a while (CPU starved).
    pub slow: Vec<Slow>,
    /// Client traffic: false runs the mesh alone (failure detection), no policy is compared.
    pub traffic: bool,
    /// petrel's RTT pings to every peer. They take no part in failure detection; a
    /// detection-only run may leave them out to simulate ten minutes of 1,000 nodes quickly.
    pub rtt_pings: bool,
    /// Failure detectors to compare in a run without traffic: "lifeguard" (petrel's, the
    /// default) and "swim" (the same timings, plain SWIM).
    pub detectors: Vec<String>,
}

impl Default for SimSection {
    fn default() -> Self {
        Self {
            duration_s: 60.0,
            warmup_s: 10.0,
            profile: "wan".into(),
            nodes_per_region: 2,
            instances_per_node: 2,
            apps: 1,
            soft_limit: 20,
            hard_limit: 25,
            service_ms: 50.0,
            service_sigma: 0.5,
            demand: 0.7,
            diurnal_amplitude: 0.0,
            diurnal_period_s: 60.0,
            jitter_ms: 1.0,
            loss: 0.0,
            retries: 3,
            connect_timeout_ms: 2000.0,
            sweep_nodes: Vec::new(),
            overload_region: None,
            overload_sweep: Vec::new(),
            regions: BTreeMap::new(),
            crash: Vec::new(),
            partition: Vec::new(),
            slow: Vec::new(),
            traffic: true,
            rtt_pings: true,
            detectors: vec!["lifeguard".into()],
        }
    }
}

/// Overrides for one region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSim {
    /// Nodes in this region.
    pub nodes: Option<u32>,
    /// Instances per node in this region.
    pub instances_per_node: Option<u32>,
    /// Share of client demand relative to other regions (default 1).
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// A node that stops at `at_s` (process gone, datagrams dropped) and may come back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    /// Node name, `<region>-<n>` with n from 1.
    pub node: String,
    /// When, seconds after clients start.
    pub at_s: f64,
    /// When it restarts (new generation), seconds after clients start.
    pub recover_s: Option<f64>,
}

/// A node that handles every datagram it receives `delay_ms` late from `at_s` for `for_s`
/// seconds: a CPU-starved process (its timers still fire on time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slow {
    /// Node name, `<region>-<n>` with n from 1.
    pub node: String,
    /// When, seconds after the window starts.
    pub at_s: f64,
    /// For how long, seconds.
    pub for_s: f64,
    /// How late, ms.
    pub delay_ms: f64,
}

/// These regions cannot reach the rest (nor be reached) from `at_s` until `heal_s`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Region codes on one side of the cut.
    pub regions: Vec<String>,
    /// When, seconds after clients start.
    pub at_s: f64,
    /// When the cut heals, seconds after clients start.
    pub heal_s: f64,
}

/// One region as the simulator uses it.
#[derive(Debug, Clone)]
pub struct Region {
    /// Region code.
    pub code: String,
    /// Longitude (diurnal phase); 0 when the file gives none.
    pub lon: f64,
    /// Nodes here.
    pub nodes: u32,
    /// Instances per node here.
    pub instances_per_node: u32,
    /// Demand weight.
    pub weight: f64,
}

/// A validated scenario: regions, the RTT matrix and the `[sim]` parameters.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// File stem, used in report names.
    pub name: String,
    /// Regions in file order.
    pub regions: Vec<Region>,
    /// Region × region round-trip time, ms.
    pub rtt_ms: Vec<Vec<f64>>,
    /// The parameters.
    pub sim: SimSection,
}

impl Scenario {
    /// Reads a topology file and its `[sim]` section.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let src = Source::read(path).map_err(|e| ConfigErrors(vec![e]))?;
        Self::from_source(&src)
    }

    /// Parses and validates topology text with its `[sim]` section.
    pub fn from_source(src: &Source) -> Result<Self, ConfigErrors> {
        let topo = Topology::from_source(src)?;
        let file: SimFile = src.parse().map_err(|e| ConfigErrors(vec![e]))?;
        let sim = file.sim.unwrap_or_default();
        let mut errs: Vec<ConfigError> = Vec::new();
        validate(src, &topo, &sim, &mut errs);
        let regions: Vec<Region> = topo
            .regions()
            .iter()
            .map(|code| {
                let o = sim.regions.get(code);
                Region {
                    code: code.clone(),
                    lon: topo.coords(code).map_or(0.0, |c| c.1),
                    nodes: o.and_then(|o| o.nodes).unwrap_or(sim.nodes_per_region),
                    instances_per_node: o
                        .and_then(|o| o.instances_per_node)
                        .unwrap_or(sim.instances_per_node),
                    weight: o.map_or(1.0, |o| o.weight),
                }
            })
            .collect();
        if regions.iter().map(|r| r.nodes).sum::<u32>() < 1 {
            errs.push(src.error("sim.nodes_per_region", "the scenario has no nodes"));
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let rtt_ms = regions
            .iter()
            .map(|a| {
                regions
                    .iter()
                    .map(|b| topo.rtt_ms(&a.code, &b.code).expect("validated"))
                    .collect()
            })
            .collect();
        let name = src
            .file()
            .file_stem()
            .map_or("topology".into(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            name,
            regions,
            rtt_ms,
            sim,
        })
    }

    /// This scenario with region `code`'s demand set to `factor` × its own capacity (its weight
    /// solved for; the others keep theirs). `None` if that cannot be (unknown region, or a
    /// factor that would need more than all the demand).
    pub fn with_overload(&self, code: &str, factor: f64) -> Option<Self> {
        let r = self.regions.iter().position(|g| g.code == code)?;
        let instances = |g: &Region| f64::from(g.nodes * g.instances_per_node);
        let total: f64 = self.regions.iter().map(instances).sum();
        // demand × weight / Σweight = factor × own / total  ⇒  q = weight / Σweight.
        let q = factor * instances(&self.regions[r]) / total / self.sim.demand;
        let others: f64 = self
            .regions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != r)
            .map(|(_, g)| g.weight)
            .sum();
        if !(0.0..1.0).contains(&q) || others <= 0.0 {
            return None;
        }
        let mut s = self.clone();
        s.regions[r].weight = q * others / (1.0 - q);
        Some(s)
    }

    /// Node names in order: every region's nodes, `<region>-1`, `<region>-2`, …
    pub fn node_names(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (r, reg) in self.regions.iter().enumerate() {
            for k in 1..=reg.nodes {
                out.push((format!("{}-{k}", reg.code), r));
            }
        }
        out
    }

    /// The same scenario with `total` nodes spread over the regions as evenly as possible.
    pub fn with_node_count(&self, total: u32) -> Self {
        let mut s = self.clone();
        let n = s.regions.len() as u32;
        for (i, r) in s.regions.iter_mut().enumerate() {
            r.nodes = total / n + u32::from((i as u32) < total % n);
        }
        s
    }
}

fn validate(src: &Source, topo: &Topology, s: &SimSection, errs: &mut Vec<ConfigError>) {
    let mut check = |ok: bool, key: &str, msg: &str| {
        if !ok {
            errs.push(src.error(&format!("sim.{key}"), msg));
        }
    };
    check(
        s.duration_s > 0.0 && s.duration_s <= 86_400.0,
        "duration_s",
        "must be in (0, 86400]",
    );
    check(
        (0.0..=3600.0).contains(&s.warmup_s),
        "warmup_s",
        "must be in [0, 3600]",
    );
    check(
        s.profile == "wan" || s.profile == "lan",
        "profile",
        "must be \"wan\" or \"lan\"",
    );
    check((1..=10_000).contains(&s.apps), "apps", "must be 1..=10000");
    check(s.soft_limit >= 1, "soft_limit", "must be at least 1");
    check(
        s.hard_limit >= s.soft_limit,
        "hard_limit",
        "must be at least soft_limit",
    );
    check(
        s.service_ms > 0.0 && s.service_ms.is_finite(),
        "service_ms",
        "must be > 0",
    );
    check(
        (0.0..=3.0).contains(&s.service_sigma),
        "service_sigma",
        "must be in [0, 3]",
    );
    check(
        s.demand > 0.0 && s.demand <= 10.0,
        "demand",
        "must be in (0, 10]",
    );
    check(
        (0.0..1.0).contains(&s.diurnal_amplitude),
        "diurnal_amplitude",
        "must be in [0, 1)",
    );
    check(s.diurnal_period_s > 0.0, "diurnal_period_s", "must be > 0");
    check(
        (0.0..=1000.0).contains(&s.jitter_ms),
        "jitter_ms",
        "must be in [0, 1000]",
    );
    check((0.0..1.0).contains(&s.loss), "loss", "must be in [0, 1)");
    if let Some(code) = &s.overload_region {
        check(
            topo.regions().iter().any(|r| r == code),
            "overload_region",
            "must be one of the topology's regions",
        );
    }
    check(
        s.overload_sweep.iter().all(|f| *f > 0.0 && f.is_finite())
            && (s.overload_sweep.is_empty() || s.overload_region.is_some()),
        "overload_sweep",
        "factors must be > 0, and overload_region must be set",
    );
    check(s.retries <= 20, "retries", "at most 20");
    check(
        s.connect_timeout_ms > 0.0,
        "connect_timeout_ms",
        "must be > 0",
    );
    for (i, n) in s.sweep_nodes.iter().enumerate() {
        check(
            (2..=5000).contains(n),
            &format!("sweep_nodes[{i}]"),
            "must be 2..=5000",
        );
    }
    let known = |code: &str| topo.regions().iter().any(|r| r == code);
    for (code, r) in &s.regions {
        check(
            known(code),
            &format!("regions.{code}"),
            "names a region not listed in [[region]]",
        );
        check(
            r.weight >= 0.0 && r.weight.is_finite(),
            &format!("regions.{code}.weight"),
            "must be ≥ 0",
        );
    }
    let total_nodes: u32 = topo
        .regions()
        .iter()
        .map(|c| {
            s.regions
                .get(c)
                .and_then(|r| r.nodes)
                .unwrap_or(s.nodes_per_region)
        })
        .sum();
    check(
        total_nodes <= 5000,
        "nodes_per_region",
        "at most 5000 nodes in all",
    );
    let node_ok = |node: &str| {
        node.rsplit_once('-').is_some_and(|(reg, k)| {
            let n = s
                .regions
                .get(reg)
                .and_then(|r| r.nodes)
                .unwrap_or(s.nodes_per_region);
            known(reg) && k.parse::<u32>().is_ok_and(|k| (1..=n).contains(&k))
        })
    };
    for (i, c) in s.crash.iter().enumerate() {
        check(
            node_ok(&c.node),
            &format!("crash[{i}].node"),
            "must name a node as <region>-<n>, n from 1",
        );
        check(
            c.at_s >= 0.0 && c.recover_s.is_none_or(|r| r > c.at_s),
            &format!("crash[{i}].at_s"),
            "must be ≥ 0 and before recover_s",
        );
    }
    for (i, w) in s.slow.iter().enumerate() {
        check(
            node_ok(&w.node),
            &format!("slow[{i}].node"),
            "must name a node as <region>-<n>, n from 1",
        );
        check(
            w.at_s >= 0.0 && w.for_s > 0.0 && (0.0..=60_000.0).contains(&w.delay_ms),
            &format!("slow[{i}].at_s"),
            "at_s must be ≥ 0, for_s > 0, delay_ms in [0, 60000]",
        );
    }
    for (i, d) in s.detectors.iter().enumerate() {
        check(
            d == "lifeguard" || d == "swim",
            &format!("detectors[{i}]"),
            "must be \"lifeguard\" or \"swim\"",
        );
    }
    check(
        !s.detectors.is_empty(),
        "detectors",
        "must name at least one detector",
    );
    for (i, p) in s.partition.iter().enumerate() {
        check(
            !p.regions.is_empty() && p.regions.iter().all(|r| known(r)),
            &format!("partition[{i}].regions"),
            "must list regions from [[region]]",
        );
        check(
            p.at_s >= 0.0 && p.heal_s > p.at_s,
            &format!("partition[{i}].at_s"),
            "must be ≥ 0 and before heal_s",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ConfigErrors> {
        Scenario::from_source(&Source::from_text(Path::new("t.toml"), text.into()))
    }

    const REGIONS: &str = "[[region]]\ncode = \"aaa\"\n[[region]]\ncode = \"bbb\"\n\
                           [rtt_ms]\n\"aaa-bbb\" = 40\n";

    #[test]
    fn defaults_and_overrides() {
        let s = parse(&format!(
            "{REGIONS}[sim]\nnodes_per_region = 3\n[sim.regions.bbb]\nnodes = 1\nweight = 4\n"
        ))
        .unwrap();
        assert_eq!(s.regions[0].nodes, 3);
        assert_eq!(s.regions[1].nodes, 1);
        assert_eq!(s.regions[1].weight, 4.0);
        assert_eq!(s.rtt_ms[0][1], 40.0);
        assert_eq!(s.node_names().len(), 4);
        assert_eq!(s.with_node_count(5).node_names().len(), 5);
    }

    #[test]
    fn an_overload_factor_sets_the_regions_demand_to_that_multiple_of_its_capacity() {
        // 2 regions × 2 nodes × 2 instances, demand 70%: each region has half the capacity.
        let s = parse(&format!("{REGIONS}[sim]\ndemand = 0.7\n")).unwrap();
        for f in [1.0, 1.2] {
            let o = s.with_overload("bbb", f).unwrap();
            let w: f64 = o.regions.iter().map(|r| r.weight).sum();
            // Region demand ÷ region capacity = demand × share of weight ÷ share of instances.
            let ratio = 0.7 * (o.regions[1].weight / w) / 0.5;
            assert!((ratio - f).abs() < 1e-9, "{f}: {ratio}");
            assert_eq!(o.regions[0].weight, 1.0, "the others keep theirs");
        }
        assert!(
            s.with_overload("bbb", 1.5).is_none(),
            "more than all the demand"
        );
        assert!(s.with_overload("zzz", 1.0).is_none());
        let e = parse(&format!("{REGIONS}[sim]\noverload_sweep = [2.0]\n")).unwrap_err();
        assert!(e.to_string().contains("sim.overload_sweep"), "{e}");
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let e = parse(&format!(
            "{REGIONS}[sim]\nduration_s = 60\nhard_limit = 1\nsoft_limit = 5\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("t.toml:9: sim.hard_limit"), "{e}");
        let e = parse(&format!(
            "{REGIONS}[sim]\n[[sim.crash]]\nnode = \"zzz-1\"\nat_s = 3\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("sim.crash[0].node"), "{e}");
        let e = parse(&format!("{REGIONS}[sim]\nbogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("t.toml:8: sim.bogus"), "{e}");
    }
}
