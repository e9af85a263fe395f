//! Framing on a QUIC backhaul stream: a length-prefixed head (request or response line and
//! headers, postcard-encoded), then the body as raw bytes until the stream ends.

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use quinn::{RecvStream, SendStream};
use serde::{Deserialize, Serialize};

use crate::body::{boxed, Body, BoxError};

/// Largest head accepted (like the edge's header limit).
pub const MAX_HEAD: usize = 128 * 1024;

/// A request or response head as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct Head {
    /// `"METHOD uri"` for requests, `"status"` for responses.
    pub line: String,
    /// Header names and raw values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

fn to_pairs(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn from_pairs(pairs: Vec<(String, Vec<u8>)>) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("bad header name: {e}"))?;
        let value = HeaderValue::from_bytes(&v).map_err(|e| format!("bad header value: {e}"))?;
        h.append(name, value);
    }
    Ok(h)
}

/// Writes a length-prefixed head.
pub async fn write_head(send: &mut SendStream, head: &Head) -> Result<(), String> {
    let bytes = postcard::to_stdvec(head).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_HEAD {
        return Err("head too large".into());
    }
    send.write_all(&(bytes.len() as u32).to_le_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// Reads a length-prefixed head; malformed or oversized heads are errors, never panics.
pub async fn read_head(recv: &mut RecvStream) -> Result<Head, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEAD {
        return Err(format!("head of {len} bytes is too large"));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    postcard::from_bytes(&buf).map_err(|e| format!("undecodable head: {e}"))
}

/// The head of a request.
pub fn request_head<B>(req: &Request<B>) -> Head {
    Head {
        line: format!("{} {}", req.method(), req.uri()),
        headers: to_pairs(req.headers()),
    }
}

/// Rebuilds a request from its head and a body.
pub fn request_from(head: Head, body: Body) -> Result<Request<Body>, String> {
    let (method, uri) = head.line.split_once(' ').ok_or("bad request line")?;
    let mut req = Request::new(body);
    *req.method_mut() = method.parse().map_err(|_| "bad method".to_string())?;
    *req.uri_mut() = uri.parse().map_err(|_| "bad uri".to_string())?;
    *req.headers_mut() = from_pairs(head.headers)?;
    Ok(req)
}

/// The head of a response.
pub fn response_head<B>(resp: &Response<B>) -> Head {
    Head {
        line: resp.status().as_u16().to_string(),
        headers: to_pairs(resp.headers()),
    }
}

/// Rebuilds a response from its head and a body.
pub fn response_from(head: Head, body: Body) -> Result<Response<Body>, String> {
    let status: u16 = head.line.parse().map_err(|_| "bad status".to_string())?;
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).map_err(|_| "bad status".to_string())?;
    *resp.headers_mut() = from_pairs(head.headers)?;
    Ok(resp)
}

/// The rest of a stream as a body.
pub fn body_from(recv: RecvStream) -> Body {
    let stream = futures_util::stream::unfold(Some(recv), |state| async move {
        let mut recv = state?;
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => Some((Ok::<_, BoxError>(Frame::data(chunk.bytes)), Some(recv))),
            Ok(None) => None,
            Err(e) => Some((Err(Box::new(e) as BoxError), None)),
        }
    });
    boxed(StreamBody::new(stream))
}

/// Sends a body down a stream and finishes it; a failing body resets the stream.
pub async fn pump(mut body: Body, mut send: SendStream) {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if send.write_all(&data).await.is_err() {
                        return;
                    }
                }
            }
            Err(_) => {
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return;
            }
        }
    }
    let _ = send.finish();
}

/// A bidirectional QUIC stream as one byte stream (for spliced upgrades).
pub struct Duplex {
    /// Write half.
    pub send: SendStream,
    /// Read half.
    pub recv: RecvStream,
}

impl tokio::io::AsyncRead for Duplex {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Duplex {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.send), cx, buf)
            .map_err(std::io::Error::other)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.send), cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.send), cx)
    }
}
