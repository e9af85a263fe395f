//! Hard-limit admission and failover on one node: reject at once instead of queuing, skip dead instances.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, get_json};
use common::{app_toml, backend, closed_port, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_hard_limit_gets_503_at_once_and_no_instance_exceeds_it() {
    let (a, b) = (backend("slow-a"), backend("slow-b"));
    let n = node(
        &[("slow", app_toml("slow", 4, 5, "closest", 3))],
        &[("slow-a", "slow", a.addr), ("slow-b", "slow", b.addr)],
        "",
    );
    let edge = n.edge;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = get(edge, "slow", "/sleep?ms=500").await;
            (
                r.status.as_u16(),
                r.header("retry-after").map(str::to_string),
                r.text(),
                t0.elapsed(),
            )
        }));
    }
    let mut ok = 0;
    let mut rejected = Vec::new();
    for t in tasks {
        let (status, retry_after, body, took) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert!(took >= Duration::from_millis(500));
            }
            503 => {
                assert_eq!(
                    retry_after.as_deref(),
                    Some("1"),
                    "503 at capacity carries Retry-After"
                );
                assert!(body.contains("slow") && body.contains("capacity"), "{body}");
                rejected.push(took);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok, 10, "two instances × hard limit 5");
    assert_eq!(rejected.len(), 20);
    let slowest = rejected.iter().max().unwrap();
    eprintln!("rejections: 20, slowest took {slowest:?}");
    assert!(
        *slowest < Duration::from_millis(250),
        "a reject must not wait for capacity: {slowest:?}"
    );
    for be in [&a, &b] {
        let stats = get_json(be.addr, "/stats").await;
        assert_eq!(stats["max_inflight"], 5, "{}: {stats}", be.id);
    }
    // Capacity is back once the slow requests finished.
    assert_eq!(get(edge, "slow", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_costs_no_client_errors() {
    let live = backend("live");
    let dead = closed_port();
    let n = node(
        &[("app", app_toml("app", 10, 20, "leastload", 3))],
        &[("dead", "app", dead), ("live", "app", live.addr)],
        "",
    );
    for i in 0..200 {
        let r = get(n.edge, "app", "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-backend-id"), Some("live"));
    }
    let served = get_json(live.addr, "/stats").await["served"]
        .as_u64()
        .unwrap();
    assert_eq!(served, 200);
    let metrics = get(n.admin, "localhost", "/metrics").await.text();
    let retries = metrics
        .lines()
        .find(|l| {
            l.starts_with("petrel_retries_total{")
                && l.contains("reason=\"connect\"")
                && l.contains("app=\"app\"")
        })
        .expect("connect retries are counted");
    assert!(!retries.ends_with(" 0"), "{retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_instances_down_is_502_naming_the_app() {
    let n = node(
        &[("app", app_toml("app", 10, 20, "closest", 3))],
        &[("d1", "app", closed_port()), ("d2", "app", closed_port())],
        "",
    );
    let r = get(n.edge, "app", "/").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("\"app\""), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_and_prefer_instance_headers() {
    let (a, b) = (backend("one"), backend("two"));
    let n = node(
        &[("app", app_toml("app", 10, 20, "closest", 3))],
        &[("one", "app", a.addr), ("two", "app", b.addr)],
        "",
    );
    for _ in 0..10 {
        let r = common::http::send(
            n.edge,
            false,
            common::http::request("GET", "app", "/", &[("fly-force-instance-id", "two")]),
        )
        .await;
        assert_eq!(r.header("x-backend-id"), Some("two"));
        let r = common::http::send(
            n.edge,
            false,
            common::http::request("GET", "app", "/", &[("petrel-prefer-instance-id", "one")]),
        )
        .await;
        assert_eq!(r.header("x-backend-id"), Some("one"));
    }
    let r = common::http::send(
        n.edge,
        false,
        common::http::request("GET", "app", "/", &[("petrel-force-instance-id", "nope")]),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_count_client_connections_not_requests() {
    use http_body_util::BodyExt;
    let be = backend("conn-1");
    let app = app_toml("conns", 2, 2, "closest", 3)
        .replace("type = \"requests\"", "type = \"connections\"");
    let n = node(&[("conns", app)], &[("conn-1", "conns", be.addr)], "");
    // Two keep-alive client connections each send several requests: all admitted.
    let mut senders = Vec::new();
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(n.edge).await.unwrap();
        let (s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        senders.push(s);
    }
    for round in 0..3 {
        for s in senders.iter_mut() {
            let req = common::http::request("GET", "conns", "/", &[]);
            s.ready().await.unwrap(); // the previous response must be fully done first
            let resp = s.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200, "round {round}");
            let _ = resp.into_body().collect().await;
        }
    }
    let load = get_json(n.admin, "/v1/instances").await["instances"][0]["load"]
        .as_u64()
        .unwrap();
    assert_eq!(load, 2, "one unit per open client connection");
    // A third connection finds the instance at its hard limit.
    let r = get(n.edge, "conns", "/").await;
    assert_eq!(r.status, 503);
    // Closing a connection frees its unit.
    senders.pop();
    let mut freed = false;
    for _ in 0..100 {
        if get(n.edge, "conns", "/").await.status == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "closing a client connection must release its slot");
}
