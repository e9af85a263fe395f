//! `petrel sim` end to end: the same seed gives byte-identical reports, another seed does not, and
//! the figures users read (success, queues, optimal share) behave as the policies promise.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const REGIONS: &str = r#"
[[region]]
code = "aaa"
[[region]]
code = "bbb"
[[region]]
code = "ccc"
[rtt_ms]
"aaa-bbb" = 30
"aaa-ccc" = 120
"bbb-ccc" = 100
"#;

const TRAFFIC: &str = r#"
[sim]
duration_s = 4
warmup_s = 8
nodes_per_region = 2
instances_per_node = 2
soft_limit = 10
hard_limit = 12
service_ms = 20
demand = 0.6
sweep_nodes = [4]

[sim.regions.aaa]
weight = 3
"#;

fn sim(dir: &Path, seed: u64, out: &str) -> serde_json::Value {
    let topo = dir.join("t.toml");
    std::fs::write(&topo, format!("{REGIONS}{TRAFFIC}")).unwrap();
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["sim", "--topology"])
        .arg(&topo)
        .args(["--strategy", "closest,round_robin,coordinates"])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(dir.join(out))
        .output()
        .expect("petrel sim runs");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "sim took too long"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("round_robin"), "{stdout}");
    for chart in ["latency_cdf.svg", "region_load.svg", "mesh_bytes.svg"] {
        let svg = std::fs::read_to_string(dir.join(out).join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{chart}"
        );
    }
    let text = std::fs::read_to_string(dir.join(out).join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn same_seed_same_bytes_and_policies_behave() {
    let dir = tempfile::tempdir().unwrap();
    let a = sim(dir.path(), 7, "a");
    sim(dir.path(), 7, "b");
    sim(dir.path(), 8, "c");
    let bytes = |d: &str| std::fs::read(dir.path().join(d).join("report.json")).unwrap();
    assert_eq!(bytes("a"), bytes("b"), "same seed: byte-identical JSON");
    assert_ne!(bytes("a"), bytes("c"), "another seed: another run");

    let p = |name: &str| {
        a["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap()
            .clone()
    };
    let (closest, rr) = (p("closest"), p("round_robin"));
    assert!(closest["requests"].as_u64().unwrap() > 1000, "{closest}");
    assert_eq!(closest["requests"], rr["requests"], "same workload");
    assert_eq!(closest["max_queue"], 0, "petrel rejects instead of queuing");
    assert!(
        closest["success_rate"].as_f64().unwrap() > 0.99,
        "{closest}"
    );
    // RTT-blind round robin serves most requests far away; closest keeps them near.
    let opt = |p: &serde_json::Value| p["optimal_share"].as_f64().unwrap();
    assert!(opt(&closest) > opt(&rr) + 0.2, "{closest} vs {rr}");
    // So it does when each nearer region is judged at the moment the request could have got there.
    let on_arrival = |p: &serde_json::Value| p["optimal_share_on_arrival"].as_f64().unwrap();
    assert!(
        on_arrival(&closest) > on_arrival(&rr) + 0.2,
        "{closest} vs {rr}"
    );
    assert!((0.0..=1.0).contains(&on_arrival(&closest)), "{closest}");
    // The fluid bound is the same for every policy (one workload), no policy beats it, and
    // closest pays less above it than round robin.
    let f = |p: &serde_json::Value, k: &str| p[k].as_f64().unwrap();
    assert_eq!(closest["fluid_bound_ms"], rr["fluid_bound_ms"]);
    for p in [&closest, &rr] {
        assert!(f(p, "fluid_bound_ms") > 0.0, "{p}");
        assert!(f(p, "excess_ms") >= -0.5, "nothing beats the bound: {p}");
        let excess = f(p, "network_ms_mean") - f(p, "fluid_bound_ms");
        assert!((excess - f(p, "excess_ms")).abs() < 0.01, "{p}");
    }
    assert!(
        f(&closest, "excess_ms") < f(&rr, "excess_ms"),
        "{closest} vs {rr}"
    );
    let p50 = |p: &serde_json::Value| p["latency"]["p50_ms"].as_f64().unwrap();
    assert!(p50(&closest) < p50(&rr), "{closest} vs {rr}");
    // Round robin sends most first tries past a nearer region with room; closest seldom does,
    // and each misroute is counted under its (edge region → chosen region) pair.
    let misroutes = |p: &serde_json::Value| p["misroutes"].as_u64().unwrap();
    assert!(
        misroutes(&rr) > 3 * misroutes(&closest),
        "{closest} vs {rr}"
    );
    let top = rr["misroutes_top"].as_array().unwrap();
    assert!(!top.is_empty() && top.len() <= 5, "{rr}");
    assert!(top[0][0].as_str().unwrap().contains('→'), "{rr}");
    // On measured RTTs, closest's misroutes come from loads that changed since its edge heard,
    // not from its RTT figures.
    let by_rtt = |p: &serde_json::Value| p["misroutes_by_rtt"].as_u64().unwrap();
    assert!(
        by_rtt(&closest) * 20 <= misroutes(&closest).max(20),
        "{closest}"
    );
    assert!(by_rtt(&rr) > 3 * by_rtt(&closest), "{closest} vs {rr}");
    let share = rr["misroute_share"].as_f64().unwrap();
    let expect = misroutes(&rr) as f64 / rr["requests"].as_f64().unwrap();
    assert!((share - expect).abs() < 1e-5, "{rr}");
    // Consul's Vivaldi fit to this small metric topology: close between regions, and two nodes
    // of one region (0.5 ms apart) are estimated a few ms apart at most.
    let e = &a["coordinates_error"];
    assert!(e["median"].as_f64().unwrap() < 0.25, "{e}");
    assert!(e["same_region_max_ms"].as_f64().unwrap() < 30.0, "{e}");
    // The mesh costs bytes, and the sweep size shows up beside the topology's own size.
    let sizes: Vec<u64> = a["mesh_scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nodes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [4, 6]);
    assert!(closest["mesh_bytes_per_node_s"].as_f64().unwrap() > 100.0);
}

#[test]
fn a_bad_sim_section_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("bad.toml");
    std::fs::write(&topo, "[[region]]\ncode = \"aaa\"\n[sim]\ndemand = -1\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["sim", "--topology"])
        .arg(&topo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:4: sim.demand"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["sim", "--topology"])
        .arg(&topo)
        .args(["--strategy", "fastest"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown strategy"));
}

/// A mesh-only run: 3 regions × 8 nodes, two crashes, a CPU-starved node, 1% loss.
const DETECTION: &str = r#"
[sim]
traffic = false
rtt_pings = false
detectors = ["lifeguard", "swim"]
duration_s = 90
warmup_s = 15
nodes_per_region = 8
loss = 0.01

[[sim.crash]]
node = "bbb-2"
at_s = 5
recover_s = 50

[[sim.crash]]
node = "ccc-7"
at_s = 60

[[sim.slow]]
node = "aaa-3"
at_s = 0
for_s = 60
delay_ms = 2000
"#;

#[test]
fn a_mesh_only_run_times_detection_for_each_detector() {
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("d.toml");
    std::fs::write(&topo, format!("{REGIONS}{DETECTION}")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["sim", "--topology"])
        .arg(&topo)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("petrel sim runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("mesh only"), "{stdout}");
    let text = std::fs::read_to_string(dir.path().join("out/report.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(r["policies"].as_array().unwrap().is_empty());
    for name in ["lifeguard", "swim"] {
        let d = &r["detection"][name];
        assert_eq!(d["crashes"], 2, "{name}: {d}");
        assert_eq!(d["undetected"], 0, "{name}: {d}");
        let max = d["max_s"].as_f64().unwrap();
        assert!(max > 0.5 && max < 30.0, "{name}: {d}");
        // Probes of the crashed nodes failed; the starved node's late acks were suspected.
        assert!(d["true_suspicions"].as_u64().unwrap() > 0, "{name}: {d}");
        assert!(d["starved_suspicions"].as_u64().unwrap() > 0, "{name}: {d}");
    }
    assert_eq!(r["detection"]["lifeguard"]["false_downs"], 0, "{r}");
}
