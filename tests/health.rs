//! Active health checks: an instance whose /health fails stops getting requests at every node
//! within two check intervals, and gets them again once it passes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::{get, get_json};
use common::{backend, free_udp_port, Node, Spec};

const APP: &str = "app = \"hc\"\n[http_service.concurrency]\nsoft_limit = 50\nhard_limit = 60\n\
[http_service.load_balancing]\nstrategy = \"leastload\"\nretries = 3\n\
[[http_service.checks]]\ninterval = \"500ms\"\ntimeout = \"300ms\"\ngrace_period = \"0s\"\npath = \"/health\"\n";

async fn healthy_everywhere(nodes: &[&Node], id: &str, want: bool) -> bool {
    for n in nodes {
        let v = get_json(n.admin, "/v1/instances").await;
        let ok = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id && i["healthy"] == want);
        if !ok {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_instance_is_skipped_everywhere_within_two_intervals_and_returns() {
    let (be_a, be_b) = (backend("hc-a"), backend("hc-b"));
    let seed_port = free_udp_port();
    let mut a = Spec::new("a", "iad");
    a.mesh_port = seed_port;
    a.apps = vec![("hc", APP.to_string())];
    a.instances = vec![("hc-a", "hc", be_a.addr)];
    let a = a.start();
    let mut b = Spec::new("b", "iad");
    b.seeds = vec![format!("127.0.0.1:{seed_port}")
        .parse::<SocketAddr>()
        .unwrap()];
    b.apps = vec![("hc", APP.to_string())];
    b.instances = vec![("hc-b", "hc", be_b.addr)];
    let b = b.start();
    let t0 = Instant::now();
    while !healthy_everywhere(&[&a, &b], "hc-a", true).await
        || !healthy_everywhere(&[&a, &b], "hc-b", true).await
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "cluster never formed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fail hc-a's health endpoint.
    assert_eq!(get(be_a.addr, "x", "/health?set=fail").await.status, 503);
    let t1 = Instant::now();
    while !healthy_everywhere(&[&a, &b], "hc-a", false).await {
        assert!(
            t1.elapsed() < Duration::from_secs(3),
            "never marked unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let marked = t1.elapsed();
    eprintln!("hc-a marked unhealthy at both nodes after {marked:?} (interval 500 ms)");
    assert!(
        marked <= Duration::from_secs(1),
        "took {marked:?}, more than 2 intervals"
    );
    let served_before = get_json(be_a.addr, "/stats").await["served"]
        .as_u64()
        .unwrap();
    for n in [&a, &b] {
        for _ in 0..20 {
            let r = get(n.edge, "hc", "/").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-backend-id"), Some("hc-b"));
        }
    }
    assert_eq!(
        get_json(be_a.addr, "/stats").await["served"]
            .as_u64()
            .unwrap(),
        served_before
    );
    // Recover.
    assert_eq!(get(be_a.addr, "x", "/health?set=ok").await.status, 200);
    let t2 = Instant::now();
    while !healthy_everywhere(&[&a, &b], "hc-a", true).await {
        assert!(t2.elapsed() < Duration::from_secs(3), "never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("hc-a back in service after {:?}", t2.elapsed());
    let mut saw_a = false;
    for _ in 0..40 {
        saw_a |= get(a.edge, "hc", "/").await.header("x-backend-id") == Some("hc-a");
    }
    assert!(saw_a, "a recovered instance gets requests again");
}
