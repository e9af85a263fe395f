//! `petrel demo` from the outside: it starts, routes a request, and drains to exit 0 on SIGINT.

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
