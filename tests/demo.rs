//! `petrel demo` from the outside: it starts, routes a request, resumes a `term` WebSocket after
//! its connection drops, and drains to exit 0 on SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_routes_and_drains_on_sigint() {
    let mut child = Command::new(common::bin())
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut edges = Vec::new();
    let t0 = Instant::now();
    while edges.len() < 6 {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("demo banner");
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 4 && cols[2].starts_with("http://") {
            edges.push((
                cols[1].to_string(),
                cols[2]
                    .trim_start_matches("http://")
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
            ));
        }
    }
    assert_eq!(
        edges.iter().filter(|(r, _)| r == "iad").count(),
        2,
        "3 regions × 2 nodes: {edges:?}"
    );
    // Wait until the mesh is up, then a request from iad is served in iad.
    let edge = edges[0].1;
    let mut served = None;
    while t0.elapsed() < Duration::from_secs(30) {
        let r = common::http::get(edge, "hello", "/").await;
        if r.status == 200 {
            served = r.header("petrel-route").map(str::to_string);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("demo serves hello");
    assert!(served.contains("region=iad"), "{served}");
    // The demo's `term` app keeps a WebSocket across a dropped connection.
    resumable_term(edge).await;
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(25);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "demo did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

/// Connects to the demo's `term` app with a session id, reads 3 lines, drops the connection,
/// comes back with the count and gets the next line.
async fn resumable_term(edge: std::net::SocketAddr) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let open = |path: String| async move {
        let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
        let req = format!("ws://term.localhost{path}")
            .into_client_request()
            .unwrap();
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(req, stream),
        )
        .await
        .expect("handshake in time")
        .expect("101");
        ws
    };
    let lines = |mut ws: common::ws::Ws, n: usize| async move {
        let mut out = Vec::new();
        while out.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("a line within 5 s")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = m {
                out.push(t.to_string());
            }
        }
        (ws, out)
    };
    let url = "/term?ms=100&petrel_session=demo-session-0123456789".to_string();
    let (ws, first) = lines(open(url.clone()).await, 3).await;
    assert!(first[0].starts_with("line 0 from term-"), "{first:?}");
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, next) = lines(open(format!("{url}&petrel_resume=3")).await, 1).await;
    assert!(
        next[0].starts_with("line 3 from "),
        "the line after the last one read: {next:?}"
    );
}
