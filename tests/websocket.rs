//! WebSockets through the proxy: echo round trips, close propagation both ways, load held for the socket's life.

mod common;

use std::time::Duration;

use common::http::get_json;
use common::{app_toml, backend, node};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn connect(edge: std::net::SocketAddr, host: &str) -> common::ws::Ws {
    common::ws::connect(edge, host, &[]).await
}

async fn admin_load(admin: std::net::SocketAddr) -> u64 {
    let v = get_json(admin, "/v1/instances").await;
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["load"].as_u64().unwrap())
        .sum()
}

async fn wait_for<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_round_trip_and_client_close_reaches_the_instance() {
    let be = backend("ws-1");
    let n = node(
        &[("live", app_toml("live", 10, 20, "closest", 3))],
        &[("ws-1", "live", be.addr)],
        "",
    );
    let mut ws = connect(n.edge, "live").await;
    for i in 0..1000 {
        let msg = format!("message {i}");
        ws.send(Message::text(msg.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(msg));
    }
    assert_eq!(
        admin_load(n.admin).await,
        1,
        "an open WebSocket is one unit of load"
    );
    assert_eq!(get_json(be.addr, "/stats").await["inflight"], 1);
    ws.close(None).await.unwrap();
    let closed = wait_for(|| async { get_json(be.addr, "/stats").await["inflight"] == 0 }).await;
    assert!(closed, "client close must reach the instance");
    assert!(
        wait_for(|| async { admin_load(n.admin).await == 0 }).await,
        "load released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_going_away_closes_the_client_side() {
    let be = backend("ws-2");
    let n = node(
        &[("live", app_toml("live", 10, 20, "closest", 3))],
        &[("ws-2", "live", be.addr)],
        "",
    );
    let mut ws = connect(n.edge, "live").await;
    ws.send(Message::text("ping")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    drop(be); // kills the backend process
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "client side must close when the instance goes away"
    );
    assert!(
        wait_for(|| async { admin_load(n.admin).await == 0 }).await,
        "load released"
    );
}
