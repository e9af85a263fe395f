//! An owner node killed mid-traffic: requests that had not reached an instance are retried
//! elsewhere; once the mesh declares it down, no attempt goes to it any more.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, get_json, request, try_send};
use common::{app_toml, backend, free_udp_port, Spec};

fn connect_retries(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("petrel_retries_total{")
                && l.contains("app=\"hello\"")
                && l.contains("reason=\"connect\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_costs_only_requests_already_at_its_instances() {
    let bes: Vec<_> = ["a-1", "b-1", "c-1"].iter().map(|id| backend(id)).collect();
    let seed_port = free_udp_port();
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let mut s = Spec::new(name, "iad");
        s.apps = vec![("hello", app_toml("hello", 50, 50, "leastload", 3))];
        s.instances = vec![(["a-1", "b-1", "c-1"][i], "hello", bes[i].addr)];
        s.seeded(seed_port, i == 0);
        nodes.push(s.start());
    }
    let a = nodes[0].edge;
    let admin = nodes[0].admin;
    let t0 = Instant::now();
    while get_json(admin, "/v1/instances").await["instances"]
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // leastload spreads a's traffic over a, b and c (all in one region).
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(tokio::spawn(async move {
            let mut log = Vec::new();
            while start.elapsed() < Duration::from_secs(14) {
                let req = request("GET", "hello", "/sleep?ms=50", &[]);
                // A body cut short by the kill counts as a failed request (status 0).
                let (status, id) = match try_send(a, false, req).await {
                    Ok(r) => (
                        r.status.as_u16(),
                        r.header("x-backend-id").unwrap_or("").to_string(),
                    ),
                    Err(_) => (0, String::new()),
                };
                log.push((start.elapsed(), status, id));
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = start.elapsed();
    let b = nodes.remove(1);
    drop(b); // kill -9 of node b (its backend keeps running: only the node dies)
             // Detection: b's instance leaves a's view.
    let mut detected_at = None;
    while start.elapsed() < Duration::from_secs(12) {
        let ids: Vec<String> = get_json(admin, "/v1/instances").await["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        if !ids.contains(&"b-1".to_string()) {
            detected_at = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let detected_at = detected_at.expect("b declared down within 10 s");
    let retries_at_detection = connect_retries(&get(admin, "localhost", "/metrics").await.text());
    let mut log = Vec::new();
    for w in workers {
        log.extend(w.await.unwrap());
    }
    let retries_end = connect_retries(&get(admin, "localhost", "/metrics").await.text());
    let failed: Vec<_> = log.iter().filter(|(_, s, _)| *s != 200).collect();
    let after_detection_on_b = log
        .iter()
        .filter(|(t, _, id)| *t > detected_at + Duration::from_millis(500) && id == "b-1")
        .count();
    eprintln!(
        "owner killed at {killed_at:?}, detected at {detected_at:?}; {} requests, {} failed {failed:?}; connect retries {retries_at_detection} at detection, {retries_end} at end",
        log.len(),
        failed.len()
    );
    assert!(
        failed.len() <= 4,
        "only requests already at b's instance (≤ 4 in flight) may fail: {failed:?}"
    );
    assert_eq!(after_detection_on_b, 0);
    assert_eq!(
        retries_end, retries_at_detection,
        "attempts went to b after it was declared down"
    );
    assert!(
        log.iter().any(|(t, s, _)| *t > killed_at && *s == 200),
        "traffic continued"
    );
}
