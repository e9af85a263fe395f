//! `/metrics` after a scripted mix of failures: each is counted under its app and the right phase,
//! and no label carries an instance id, an address or a request id.

mod common;

use std::collections::BTreeMap;

use common::http::get;
use common::{app_toml, backend, closed_port, node};

/// `petrel_session_failures_total` by (app, phase).
fn failures(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("petrel_session_failures_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let get = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        out.insert((get("app"), get("phase")), value.parse::<f64>().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_counted_under_its_phase_and_labels_stay_bounded() {
    let be_full = backend("m-full-1");
    let be_slow = backend("m-slow-1");
    let dead = closed_port();
    let n = node(
        &[
            ("full", app_toml("full", 1, 1, "closest", 2)),
            ("dead", app_toml("dead", 5, 10, "closest", 2)),
            ("slow", app_toml("slow", 5, 10, "closest", 2)),
        ],
        &[
            ("m-full-1", "full", be_full.addr),
            ("m-dead-1", "dead", dead),
            ("m-slow-1", "slow", be_slow.addr),
        ],
        "response_timeout = \"400ms\"",
    );
    let edge = n.edge;

    // route: a Host no app answers to.
    assert_eq!(get(edge, "nobody.example.com", "/").await.status, 404);
    // instance_full: the only instance holds a WebSocket at hard_limit = 1.
    let holder = common::ws::connect(edge, "full", &[]).await;
    for _ in 0..3 {
        let r = get(edge, "full", "/").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    drop(holder);
    // instance_connect: nothing listens at the instance's address. The failed connect marks it
    // bad for a while, so the next request finds no healthy instance (route, 503).
    assert_eq!(get(edge, "dead", "/").await.status, 502);
    let r = get(edge, "dead", "/").await;
    assert_eq!(r.status, 503, "{}", r.text());
    // timeout: the instance answers after the edge's response_timeout.
    assert_eq!(get(edge, "slow", "/sleep?ms=1500").await.status, 504);
    // and successes, which are not failures.
    assert_eq!(get(edge, "slow", "/").await.status, 200);

    let text = get(n.admin, "localhost", "/metrics").await.text();
    let f = failures(&text);
    let at = |app: &str, phase: &str| {
        f.get(&(app.to_string(), phase.to_string()))
            .copied()
            .unwrap_or(0.0)
    };
    let expect = [
        ("_unrouted", "route", 1.0),
        ("full", "instance_full", 3.0),
        ("dead", "instance_connect", 1.0),
        ("dead", "route", 1.0),
        ("slow", "timeout", 1.0),
    ];
    for (app, phase, want) in expect {
        assert_eq!(at(app, phase), want, "{app}/{phase}; all: {f:?}");
    }
    // Nothing was counted anywhere else.
    for ((app, phase), v) in &f {
        if !expect.iter().any(|(a, p, _)| a == app && p == phase) {
            assert_eq!(*v, 0.0, "unexpected failure {app}/{phase} = {v}");
        }
    }
    eprintln!("session failures: {f:?}");

    // Bounded labels: only known label names; no ids, addresses or request ids as values.
    let allowed = [
        "app",
        "region",
        "phase",
        "reason",
        "transport",
        "status_class",
        "direction",
        "kind",
        "state",
        "outcome",
        "version",
        "limit",
        "le",
        "quantile",
    ];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, labels)) = line.split_once('{') {
            let labels = labels.split_once('}').unwrap().0;
            for kv in labels.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap();
                assert!(allowed.contains(&k), "label {k} in {line}");
                for bad in ["m-full-1", "m-dead-1", "m-slow-1", "127.0.0.1", "nobody"] {
                    assert!(!v.contains(bad), "label value {v} in {line}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help_and_type_and_promtool_finds_no_problem() {
    let be = backend("m-help-1");
    let n = node(
        &[("app", app_toml("app", 5, 10, "closest", 2))],
        &[("m-help-1", "app", be.addr)],
        "",
    );
    assert_eq!(get(n.edge, "app", "/").await.status, 200);
    let text = get(n.admin, "localhost", "/metrics").await.text();
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("petrel_"))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    assert!(families.len() >= 5, "{families:?}");
    assert!(
        text.contains("petrel_app_instances{app=\"app\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("petrel_app_capacity{app=\"app\",limit=\"hard\"} 10"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    for f in &families {
        assert!(text.contains(&format!("# HELP {f} ")), "no HELP for {f}");
        assert!(text.contains(&format!("# TYPE {f} ")), "no TYPE for {f}");
    }
    assert!(
        text.contains(&format!(
            "petrel_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // The Prometheus project's own linter (Debian package `prometheus`; .ci/run installs it).
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (apt-get install -y prometheus); .ci/run installs it");
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
