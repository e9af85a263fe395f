//! Long-lived WebSockets: `leastload` spreads them over every instance in the cluster by live load
//! (round robin would not, as sockets outlive the rotation), `closest` keeps them local below soft.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::get_json;
use common::{backend, free_udp_port, Backend, Node, Spec};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use common::ws::Ws;

fn app(strategy: &str) -> String {
    format!(
        "app = \"chat\"\n[http_service.concurrency]\ntype = \"requests\"\nsoft_limit = 400\nhard_limit = 600\n\
         [http_service.load_balancing]\nstrategy = \"{strategy}\"\nretries = 3\n"
    )
}

async fn cluster(strategy: &str, simulate: bool) -> (Vec<Node>, Vec<Backend>) {
    let topo: &'static std::path::Path = Box::leak(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/topologies/demo3.toml")
            .into_boxed_path(),
    );
    let seed_port = free_udp_port();
    let backends: Vec<Backend> = (0..3).map(|i| backend(&format!("chat-{i}"))).collect();
    let mut nodes = Vec::new();
    for (i, be) in backends.iter().enumerate() {
        let mut s = Spec::new(
            Box::leak(format!("n{i}").into_boxed_str()),
            ["iad", "ord", "fra"][i],
        );
        s.apps = vec![("chat", app(strategy))];
        if simulate {
            s.topology = Some(topo);
        }
        s.instances = vec![(
            Box::leak(format!("chat-{i}").into_boxed_str()),
            "chat",
            be.addr,
        )];
        s.seeded(seed_port, i == 0);
        nodes.push(s.start());
    }
    let t0 = Instant::now();
    while get_json(nodes[0].admin, "/v1/instances").await["instances"]
        .as_array()
        .unwrap()
        .len()
        < 3
        || get_json(nodes[0].admin, "/v1/members").await["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["rtt_min_ms"].is_null())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "cluster never formed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (nodes, backends)
}

async fn open(edge: SocketAddr) -> Ws {
    let mut ws = common::ws::connect(edge, "chat", &[]).await;
    ws.send(Message::text("hi")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("hi"));
    ws
}

async fn inflight(backends: &[Backend]) -> Vec<u64> {
    let mut v = Vec::new();
    for b in backends {
        v.push(
            get_json(b.addr, "/stats").await["inflight"]
                .as_u64()
                .unwrap(),
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastload_spreads_a_thousand_websockets_evenly() {
    let (nodes, backends) = cluster("leastload", false).await;
    let edge = nodes[0].edge;
    let mut sockets = Vec::new();
    for batch in 0..20 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            tasks.push(tokio::spawn(open(edge)));
        }
        for t in tasks {
            sockets.push(t.await.unwrap());
        }
        // Let gossip carry the new loads between batches, as real arrivals would be spread in time.
        tokio::time::sleep(Duration::from_millis(if batch < 19 { 100 } else { 0 })).await;
    }
    let per = inflight(&backends).await;
    let (max, min) = (*per.iter().max().unwrap(), *per.iter().min().unwrap());
    eprintln!(
        "leastload: 1000 WebSockets per instance {per:?}, max/min {:.2}",
        max as f64 / min as f64
    );
    assert_eq!(per.iter().sum::<u64>(), 1000);
    assert!(min > 0 && max as f64 / min as f64 <= 1.5, "{per:?}");
    drop(sockets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closest_keeps_websockets_local_below_the_soft_limit() {
    let (nodes, backends) = cluster("closest", true).await;
    let mut sockets = Vec::new();
    for _ in 0..6 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            tasks.push(tokio::spawn(open(nodes[0].edge)));
        }
        for t in tasks {
            sockets.push(t.await.unwrap());
        }
    }
    let per = inflight(&backends).await;
    eprintln!("closest: 300 WebSockets per instance {per:?}");
    assert_eq!(
        per,
        [300, 0, 0],
        "all on the local instance while below soft (400)"
    );
    drop(sockets);
}
