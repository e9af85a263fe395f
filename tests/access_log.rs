//! The access log and the JSON process log (SPEC §11): one JSON line per request with its
//! fields, for a served request, a 404, a reject-and-retry and a WebSocket (at its end); SIGUSR1
//! reopens the file after a rotation.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, request, send};
use common::{app_toml, backend, node};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const SIGUSR1: i32 = 10;

/// The access log's lines, parsed, once at least `n` are there (the writer is a thread).
async fn lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if parsed.len() >= n {
            return parsed;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} lines, not {n}: {text}",
            parsed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_and_websocket_and_sigusr1_reopens() {
    let (a, b) = (backend("al-1"), backend("al-2"));
    let dead = common::closed_port();
    let n = node(
        &[("app", app_toml("app", 1, 1, "closest", 2))],
        &[
            ("al-1", "app", a.addr),
            ("al-2", "app", b.addr),
            ("al-dead", "app", dead),
        ],
        "\n[log]\nformat = \"json\"\naccess = \"access.log\"\n",
    );
    let path = n.dir.path().join("access.log");

    // Served.
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "app",
            "/bytes?n=1234",
            &[("user-agent", "al-test/1")],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let rid = r.header("petrel-request-id").unwrap().to_string();
    // A 404.
    let missing = get(n.edge, "nobody.example", "/x").await;
    assert_eq!(missing.status, 404);
    // The same page to a HEAD: no body goes out, and none is counted.
    let r = send(
        n.edge,
        false,
        request("HEAD", "nobody-head.example", "/x", &[]),
    )
    .await;
    assert_eq!(r.status, 404);
    // Answered by petrel itself (RFC 9110 §7.6.2: OPTIONS whose Max-Forwards is spent).
    let r = send(
        n.edge,
        false,
        request("OPTIONS", "app", "/", &[("max-forwards", "0")]),
    )
    .await;
    assert_eq!(r.status, 200);
    // A retry: the preferred instance refuses the connection, another one answers. (A local
    // instance at its hard limit is never tried: the pick reads its live load.)
    let r = send(
        n.edge,
        false,
        request(
            "GET",
            "app",
            "/",
            &[("petrel-prefer-instance-id", "al-dead")],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    // A WebSocket, logged when it ends.
    let mut ws = common::ws::connect(n.edge, "app", &[]).await;
    ws.send(Message::text("0123456789")).await.unwrap();
    let _ = ws.next().await;
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}

    let all = lines(&path, 6).await;
    let by = |pred: &dyn Fn(&Value) -> bool| {
        all.iter()
            .find(|l| pred(l))
            .unwrap_or_else(|| panic!("no such line in {all:#?}"))
            .clone()
    };
    let served = by(&|l| l["request_id"] == rid.as_str());
    for key in [
        "time",
        "client",
        "host",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "app",
        "instance",
        "node",
        "region",
        "strategy",
        "attempts",
        "phases_ms",
        "user_agent",
    ] {
        assert!(served.get(key).is_some(), "{key} missing: {served}");
    }
    assert_eq!(served["status"], 200);
    assert_eq!(served["path"], "/bytes?n=1234");
    assert_eq!(served["bytes_out"], 1234);
    assert_eq!(served["user_agent"], "al-test/1");
    assert_eq!(served["node"], "test-1");
    assert_eq!(served["strategy"], "closest");
    assert!(served["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(served["phases_ms"]["first_byte"].is_number(), "{served}");

    let missing_line = by(&|l| l["status"] == 404);
    assert_eq!(
        (
            missing_line["host"].as_str(),
            missing_line["failure"].as_str()
        ),
        (Some("nobody.example"), Some("route"))
    );
    // petrel's own error page: its bytes are counted, as a served body's are.
    assert_eq!(
        missing_line["bytes_out"].as_u64(),
        Some(missing.body.len() as u64),
        "{missing_line}"
    );
    assert!(!missing.body.is_empty());
    let head = by(&|l| l["method"] == "HEAD");
    assert_eq!(head["bytes_out"], 0, "{head}");
    let options = by(&|l| l["method"] == "OPTIONS");
    assert_eq!(options["status"], 200, "{options}");

    let retried = by(&|l| l["attempts"] == 2);
    assert_ne!(retried["instance"], "al-dead", "{retried}");
    assert!(retried["phases_ms"]["retries"].is_number(), "{retried}");

    let socket = by(&|l| l["kind"] == "websocket");
    assert_eq!(socket["status"], 101);
    assert!(socket["bytes_in"].as_u64().unwrap() >= 10, "{socket}");
    assert!(socket["bytes_out"].as_u64().unwrap() >= 10, "{socket}");

    // logrotate: move the file, SIGUSR1, and the next line lands in a new file.
    std::fs::rename(&path, n.dir.path().join("access.log.1")).unwrap();
    n.proc.signal(SIGUSR1);
    let t0 = Instant::now();
    loop {
        assert_eq!(get(n.edge, "app", "/").await.status, 200);
        if path.exists() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no new file after SIGUSR1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines(&path, 1).await[0]["status"], 200);

    // The process log is JSON too.
    let logged: Vec<String> = n.proc.errs.try_iter().collect();
    assert!(!logged.is_empty());
    for l in &logged {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{l}"
        );
    }
}

/// A reject and a retry, as the access log tells them: the edge sends a request to an owner
/// whose instance just filled (before gossip says so), the owner rejects it, and the edge's other
/// instance takes it; the line says two tries and a `retries` phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_and_retry_is_one_line_with_two_tries() {
    const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (ra, rb) = (backend("ra-1"), backend("rb-1"));
    let seed = common::free_udp_port();
    let mut b = common::Spec::new("owner-b", "iad");
    b.key = Some(KEY);
    b.apps = vec![("app", app_toml("app", 1, 1, "closest", 2))];
    b.instances = vec![("rb-1", "app", rb.addr)];
    b.seeded(seed, true);
    let b = b.start();
    let mut a = common::Spec::new("edge-a", "iad");
    a.key = Some(KEY);
    a.apps = vec![("app", app_toml("app", 1, 1, "closest", 2))];
    a.instances = vec![("ra-1", "app", ra.addr)];
    a.edge_extra = "\n[log]\naccess = \"access.log\"\n".into();
    a.seeded(seed, false);
    let a = a.start();
    let t0 = Instant::now();
    while common::http::get_json(a.admin, "/v1/instances").await["instances"]
        .as_array()
        .map_or(0, |v| v.len())
        < 2
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "no cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = a.dir.path().join("access.log");
    // The race with gossip is usually won at once; a few rounds make it certain enough.
    for round in 0..5 {
        let b_edge = b.edge;
        let held = tokio::spawn(async move {
            send(
                b_edge,
                false,
                request(
                    "GET",
                    "app",
                    "/sleep?ms=1500",
                    &[("petrel-force-instance-id", "rb-1")],
                ),
            )
            .await
            .status
        });
        let t0 = Instant::now();
        loop {
            let v = common::http::get_json(b.admin, "/v1/instances").await;
            let full = v["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["id"] == "rb-1" && i["load"] == 1);
            if full {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
        let r = send(
            a.edge,
            false,
            request("GET", "app", "/", &[("petrel-prefer-instance-id", "rb-1")]),
        )
        .await;
        assert_eq!(r.status, 200);
        held.await.unwrap();
        let route = r.header("petrel-route").unwrap_or_default().to_string();
        if route.contains("attempts=2") {
            let all = lines(&path, round + 1).await;
            let line = all
                .iter()
                .find(|l| l["attempts"] == 2)
                .unwrap_or_else(|| panic!("{all:#?}"));
            assert_eq!(line["instance"], "ra-1", "{line}");
            assert!(line["phases_ms"]["retries"].is_number(), "{line}");
            let m = get(a.admin, "localhost", "/metrics").await.text();
            assert!(
                m.contains("petrel_rejects_total{app=\"app\"} 1")
                    || m.contains("petrel_retries_total{app=\"app\",reason=\"full\"} 1"),
                "{m}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("gossip outran the request every time: no reject to log");
}

/// A `504` names the instance that did not answer in time, as HAProxy's log names its server and
/// nginx's `$upstream_addr` its upstream: an operator looking at timeouts needs to know where they
/// happen. Real origin: the strict h11 server, slower than the app's response timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_names_the_instance_it_waited_for() {
    let origin = common::origins::strict("to-1", 10_000);
    let n = node(
        &[("app", app_toml("app", 5, 10, "closest", 0))],
        &[("to-1", "app", origin.addr)],
        "response_timeout = \"1s\"\n[log]\nformat = \"json\"\naccess = \"access.log\"\n",
    );
    let path = n.dir.path().join("access.log");
    let r = get(n.edge, "app", "/slow?ms=3000").await;
    assert_eq!(r.status, 504);
    let line = lines(&path, 1).await.remove(0);
    assert_eq!(line["status"], 504, "{line}");
    assert_eq!(line["instance"], "to-1", "{line}");
    assert_eq!(line["attempts"], 1, "{line}");
    assert!(
        !line["region"].as_str().unwrap_or_default().is_empty(),
        "{line}"
    );
}
