//! A tiny HTTP client over real sockets for tests: HTTP/1.1 or h2c prior knowledge, one connection per call.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `req` over a new connection, HTTP/1.1 or h2c, with an overall timeout.
pub async fn send(addr: SocketAddr, h2: bool, req: Request<Full<Bytes>>) -> Reply {
    try_send(addr, h2, req)
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Like [`send`], but a failure (refused connection, reset, a body cut short) comes back as an
/// error for tests that count failed requests instead of stopping at the first one.
pub async fn try_send(
    addr: SocketAddr,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    tokio::time::timeout(Duration::from_secs(30), async move {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let io = TokioIo::new(stream);
        let resp = if h2 {
            let (mut s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            s.send_request(req)
                .await
                .map_err(|e| format!("h2 request: {e}"))?
        } else {
            let (mut s, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            s.send_request(req)
                .await
                .map_err(|e| format!("h1 request: {e}"))?
        };
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    })
    .await
    .map_err(|_| "request timed out after 30 s".to_string())?
}

/// GET `path` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    send(addr, false, request("GET", host, path, &[])).await
}

/// Builds a request; for h2 the Host becomes the URI authority.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// The same request for h2 (no Host header: the authority carries it).
pub fn request_h2(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("http://{host}{path}"))
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// GET a JSON document from an admin or backend address.
pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    get(addr, "localhost", path).await.json()
}
