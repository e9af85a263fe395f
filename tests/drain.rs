//! SIGTERM drains: listeners close at once, requests and WebSockets already open run on, exit 0.

mod common;

use std::time::{Duration, Instant};

use common::http::get;
use common::{app_toml, backend, node};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const SIGTERM: i32 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_work_finish_and_refuses_new_connections() {
    let be = backend("d-1");
    let mut n = node(
        &[("app", app_toml("app", 10, 20, "closest", 3))],
        &[("d-1", "app", be.addr)],
        "",
    );
    let edge = n.edge;

    // An open WebSocket and a slow request, both started before the signal.
    let mut ws = common::ws::connect(edge, "app", &[]).await;
    let slow = tokio::spawn(async move { get(edge, "app", "/sleep?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t0 = Instant::now();
    n.proc.signal(SIGTERM);
    // New connections are refused once the listener closed.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(edge).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");

    // The WebSocket keeps echoing during the drain.
    for i in 0..10 {
        ws.send(Message::text(format!("during drain {i}")))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(format!("during drain {i}")));
    }
    let r = slow.await.unwrap();
    assert_eq!(
        r.status, 200,
        "request started before SIGTERM must complete"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let code = n.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit 0 after the drain");
    eprintln!("drained and exited {:?} after SIGTERM", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_what_is_left() {
    let be = backend("d-2");
    let dir = tempfile::tempdir().unwrap();
    common::write_node_files(
        dir.path(),
        &[("app", app_toml("app", 10, 20, "closest", 3))],
        &[("d-2", "app", be.addr)],
        "",
    );
    let path = dir.path().join("node.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"1s\"");
    std::fs::write(&path, text).unwrap();
    let (mut proc, addrs) = common::Proc::start(&["run", "--config", path.to_str().unwrap()], 2);
    let edge = addrs.iter().find(|(k, _)| k == "edge").unwrap().1;
    let mut ws = common::ws::connect(edge, "app", &[]).await;
    let t0 = Instant::now();
    proc.signal(SIGTERM);
    // Echo goes on until the deadline; then a close frame "going away" (1001) arrives.
    ws.send(Message::text("before the deadline")).await.unwrap();
    let mut echoed = false;
    let close = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message or a close frame within 5 s")
            .expect("stream open")
            .expect("no protocol error");
        match msg {
            Message::Text(t) if t == "before the deadline" => echoed = true,
            Message::Close(frame) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(echoed, "the socket echoed during the drain");
    let frame = close.expect("close frame carries a code");
    assert_eq!(
        u16::from(frame.code),
        1001,
        "close code is going away: {frame:?}"
    );
    let code = proc.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(code, Some(0));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "exited after {took:?}"
    );
}
