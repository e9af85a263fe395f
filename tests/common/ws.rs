//! A WebSocket client for tests: connects through an edge with a Host and optional extra headers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A client WebSocket over plain TCP.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `ws://<host>/ws` through `edge`; asserts the 101 and a request id on it.
pub async fn connect(edge: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Ws {
    let stream = tokio::net::TcpStream::connect(edge).await.expect("connect");
    let mut req = format!("ws://{host}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("host", host.parse().expect("host"));
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("petrel-request-id"));
    ws
}
