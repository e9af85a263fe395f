//! The backend's WebSockets, each counted as one in-flight request for its whole life: `/ws`
//! echoes; `/term?ms=N` is a terminal-like stream that prints `line K from ID` every N ms
//! (default 500) and answers each text message with `input K: TEXT`.

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::Backend;
use crate::body::{empty, full, Body};

/// What a WebSocket does once open.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Echo every message.
    Echo,
    /// A numbered line every this many ms, and `input K: TEXT` for the K-th text message.
    Term(u64),
}

/// Answers the handshake with 101 and spawns the loop on the upgraded connection.
pub fn accept(b: &Backend, req: &mut Request<Incoming>, mode: Mode) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(accept) = key.filter(|_| is_ws) else {
        let mut r = Response::new(full("expected a WebSocket upgrade\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    let guard = b.stats.enter();
    let id = b.id.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        match mode {
            Mode::Echo => echo(ws).await,
            Mode::Term(ms) => term(ws, ms, &id).await,
        }
    });
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
}

async fn term<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    ms: u64,
    id: &str,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(ms.max(1)));
    let (mut line, mut inputs) = (0u64, 0u64);
    loop {
        let out = tokio::select! {
            _ = tick.tick() => {
                line += 1;
                Message::text(format!("line {} from {id}", line - 1))
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    inputs += 1;
                    Message::text(format!("input {inputs}: {t}"))
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        if ws.send(out).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
}
