//! `petrel sim`: a deterministic discrete-event simulation of a whole topology on a virtual clock.
//!
//! Every node runs the real `petrel-mesh` core (foca SWIM, the RTT prober, load gossip, sealed
//! datagrams) over simulated links; every edge decides with the real strategies from its own
//! published snapshot. Instances have soft and hard limits; petrel's policies reject at the hard
//! limit and retry elsewhere, the baselines queue. The same seed gives the same report, byte for
//! byte: one event queue ordered by (time, insertion), seeded RNGs, ordered maps where order shows.
//!
//! - [`scenario`]: the `[sim]` section of a topology file.
//! - [`world`]: nodes, links, instances and the event loop; [`requests`] and [`failures`] extend it.
//! - [`policy`]: petrel's strategies and the baselines; [`vivaldi`]: estimated coordinates.
//! - [`stats`], [`report`], [`charts`]: what is measured and how it is written.

pub mod charts;
pub mod detection;
pub mod failures;
pub mod fluid;
pub mod oracle;
pub mod policy;
pub mod queue;
pub mod report;
pub mod requests;
pub mod scenario;
pub mod stats;
pub mod vivaldi;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use policy::Policy;
pub use report::Report;
pub use scenario::Scenario;

use world::World;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The topology file.
    pub topology: PathBuf,
    /// Policies to compare, in order.
    pub policies: Vec<Policy>,
    /// Seed for every random choice.
    pub seed: u64,
    /// Overrides `[sim] duration_s`.
    pub duration_s: Option<f64>,
    /// Where to write `report.json` and the SVG charts.
    pub out: Option<PathBuf>,
}

/// Errors `petrel sim` reports.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The topology file is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("cannot draw {path}: {message}")]
    Chart {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Runs every policy on the scenario, then the mesh-only size sweep; prints progress to stderr.
pub fn run(opts: &Options) -> Result<Report, SimError> {
    let mut sc = Scenario::load(&opts.topology)?;
    if let Some(d) = opts.duration_s {
        sc.sim.duration_s = d;
    }
    let sc = Arc::new(sc);
    // The mesh-only sweep shares nothing with the policy runs: it runs beside them, on the other
    // core. Each world has its own seeded randomness, so the report is the same either way.
    let sweep = {
        let (sc, seed) = (sc.clone(), opts.seed);
        std::thread::spawn(move || sweep_sizes(&sc, seed))
    };
    let node_region: Vec<usize> = sc.node_names().into_iter().map(|(_, r)| r).collect();
    let estimate = vivaldi::estimate(&node_region, &sc.rtt_ms, sc.sim.jitter_ms, opts.seed);
    let codes: Vec<String> = sc.regions.iter().map(|r| r.code.clone()).collect();
    let error = vivaldi::error(&node_region, &sc.rtt_ms, &estimate, &codes);
    let mut report = Report::new(&sc, opts.seed, error);
    if !sc.sim.traffic {
        detect_only(&sc, opts.seed, &mut report);
    }
    let policies: &[Policy] = if sc.sim.traffic { &opts.policies } else { &[] };
    for &p in policies {
        let started = Instant::now();
        let est = (p == Policy::Coordinates).then(|| estimate.clone());
        let mut w = World::new(sc.clone(), p, opts.seed, true, est);
        w.run();
        eprintln!(
            "sim: {:<12} {} nodes, {:.0} simulated s, {} events in {:.1} s",
            p.name(),
            w.nodes.len(),
            sc.sim.warmup_s + sc.sim.duration_s,
            w.stats.events,
            started.elapsed().as_secs_f64()
        );
        report.add_policy(&w);
        // Freeing millions of small allocations takes seconds at 1,000 nodes: not on the way.
        std::thread::spawn(move || drop(w));
    }
    if let Some(code) = sc.sim.overload_region.clone().filter(|_| sc.sim.traffic) {
        for &factor in &sc.sim.overload_sweep {
            let Some(o) = sc.with_overload(&code, factor) else {
                eprintln!(
                    "sim: overload {factor}× of {code} needs more than all the demand; skipped"
                );
                continue;
            };
            let o = Arc::new(o);
            for &p in &opts.policies {
                let est = (p == Policy::Coordinates).then(|| estimate.clone());
                let mut w = World::new(o.clone(), p, opts.seed, true, est);
                w.run();
                report.add_overload(factor, &w);
                std::thread::spawn(move || drop(w));
            }
            eprintln!("sim: overload {factor}× of {code}: every policy run");
        }
    }
    for (n, bytes) in sweep.join().expect("mesh-only sweep thread") {
        report.add_mesh_size(n, bytes);
    }
    report.finish();
    if let Some(dir) = &opts.out {
        write_all(&report, dir)?;
    }
    Ok(report)
}

/// A run without traffic: the mesh alone under each of `[sim] detectors`, side by side on the
/// two cores (each world has its own seeded randomness, so the report is the same either way).
fn detect_only(sc: &Arc<Scenario>, seed: u64, report: &mut Report) {
    let runs: Vec<_> = sc
        .sim
        .detectors
        .iter()
        .map(|d| {
            let (sc, d) = (sc.clone(), d.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut w = World::new(sc.clone(), Policy::Closest, seed, false, None);
                if d == "swim" {
                    w.plain_swim();
                }
                w.run();
                eprintln!(
                    "sim: mesh only, {d:<9} {} nodes, {:.0} simulated s, {} events in {:.1} s",
                    w.nodes.len(),
                    sc.sim.warmup_s + sc.sim.duration_s,
                    w.stats.events,
                    started.elapsed().as_secs_f64()
                );
                (d, w)
            })
        })
        .collect();
    for r in runs {
        let (d, w) = r.join().expect("detection run");
        report.add_detection(&d, &w);
        report.add_failures(&w);
    }
}

/// Mesh bytes per node per second at each `sweep_nodes` size other than the scenario's own.
fn sweep_sizes(sc: &Scenario, seed: u64) -> Vec<(u32, f64)> {
    let own = sc.node_names().len() as u32;
    let mut out = Vec::new();
    for &n in sc.sim.sweep_nodes.iter().filter(|&&n| n != own) {
        let started = Instant::now();
        let mut w = World::new(
            Arc::new(sc.with_node_count(n)),
            Policy::Closest,
            seed,
            false,
            None,
        );
        w.run();
        eprintln!(
            "sim: mesh-only {n} nodes in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        out.push((n, w.stats.mesh_bytes_per_node_s));
    }
    out
}

fn write_all(report: &Report, dir: &Path) -> Result<(), SimError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    let json = dir.join("report.json");
    std::fs::write(&json, report.to_json()).map_err(werr(&json))?;
    if report.policies.is_empty() {
        return Ok(()); // mesh only: nothing to chart
    }
    charts::latency_cdf(report, &dir.join("latency_cdf.svg"))?;
    charts::region_load(report, &dir.join("region_load.svg"))?;
    charts::excess(report, &dir.join("excess.svg"))?;
    charts::mesh_bytes(report, &dir.join("mesh_bytes.svg"))?;
    if !report.overload_curve.is_empty() {
        charts::overload(report, &dir.join("overload.svg"))?;
    }
    Ok(())
}
