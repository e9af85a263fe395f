//! `petrel run --upgrade`: the listening sockets pass to a new process under load; no connection
//! is refused, no request fails, and WebSockets on the old process live on until they end.

mod common;

use std::time::{Duration, Instant};

use common::http::{get_json, send};
use common::load::Load;
use common::{app_toml, backend, node, Proc};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const SIGTERM: i32 = 15;

async fn echo(ws: &mut common::ws::Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("open")
        .expect("frame");
    assert_eq!(back, Message::text(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_refuses_nothing_and_keeps_old_websockets() {
    let be = backend("u-1");
    let be2 = backend("u-2");
    let mut old = node(
        &[("app", app_toml("app", 50, 100, "closest", 3))],
        &[("u-1", "app", be.addr)],
        "",
    );
    let (edge, admin) = (old.edge, old.admin);
    // A run-time instance: no config file holds it, the new process must still have it.
    let put = http::Request::builder()
        .method("PUT")
        .uri("/v1/instances/u-2")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "{{\"app\":\"app\",\"address\":\"{}\"}}",
            be2.addr
        ))))
        .unwrap();
    assert_eq!(send(admin, false, put).await.status, 201);
    let old_generation = get_json(admin, "/v1/status").await["generation"].clone();

    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(common::ws::connect(edge, "app", &[]).await);
    }
    let load = Load::start(edge, "app", "/", 4, 1_000_000);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Instant::now();
    let path = old.config_path();
    let (mut new, addrs) =
        Proc::start(&["run", "--config", path.to_str().unwrap(), "--upgrade"], 4);
    let took = t0.elapsed();
    let find = |k: &str| addrs.iter().find(|(w, _)| w == k).unwrap().1;
    assert_eq!(
        find("edge"),
        edge,
        "the new process serves the same edge socket"
    );
    assert_eq!(find("admin"), admin);
    assert_eq!(find("mesh"), old.mesh);
    assert_eq!(find("backhaul"), old.backhaul);

    // The old process drains: its WebSockets go on echoing while the new one takes the load.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..3 {
        for (i, ws) in sockets.iter_mut().enumerate() {
            echo(ws, &format!("after the upgrade {round}/{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        old.proc.child.try_wait().unwrap().is_none(),
        "the old process waits for its WebSockets"
    );
    let new_generation = get_json(admin, "/v1/status").await["generation"].clone();
    assert_ne!(
        new_generation, old_generation,
        "admin answers from the new process"
    );
    let ids: Vec<String> = get_json(admin, "/v1/instances").await["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.contains(&"u-2".to_string()),
        "run-time instance carried over: {ids:?}"
    );

    for mut ws in sockets {
        ws.close(None).await.unwrap();
    }
    let code = old.proc.wait_exit(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "the old process exits 0 once its work is done"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sum = load.stop().await;
    eprintln!(
        "upgrade: new process ready after {took:?}; requests ok={} refused={} failed={}",
        sum.ok, sum.refused, sum.failed
    );
    assert!(sum.errors.is_empty(), "failed requests: {:?}", sum.errors);
    assert_eq!(sum.refused, 0, "no connection refused across the switch");
    assert!(sum.ok > 100, "load ran: {}", sum.ok);

    new.signal(SIGTERM);
    assert_eq!(new.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn upgrade_without_a_running_process_says_so() {
    let dir = tempfile::tempdir().unwrap();
    common::write_node_files(
        dir.path(),
        &[("app", app_toml("app", 5, 10, "closest", 1))],
        &[],
        "",
    );
    let out = std::process::Command::new(common::bin())
        .args([
            "run",
            "--config",
            dir.path().join("node.toml").to_str().unwrap(),
            "--upgrade",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running petrel to take over from"), "{err}");
}
