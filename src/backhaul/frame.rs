//! Framing on a QUIC backhaul stream: a length-prefixed head (request or response line and
//! headers, postcard-encoded), then the body: raw bytes until the stream ends, or, when the head
//! carries `petrel-internal-framed` (both ends of this release), frames of
//! `kind: u8, length: u32 LE, payload`: kind 0 is data, kind 1 the trailer fields (postcard
//! pairs, like a head), which raw bytes cannot carry. A node of the previous release neither sends
//! nor answers the marker, so the two talk raw bytes during a rolling deploy.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use quinn::{RecvStream, SendStream};
use serde::{Deserialize, Serialize};

use crate::body::{boxed, Body, BoxError};

/// Largest head a node accepts from a peer, in bytes: the most any edge may accept from a client
/// (`edge.max_header_bytes` is at most 1 MiB), and room for petrel's own headers, so a request
/// that one node took is never refused by the next (over h2 this is `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub const MAX_HEAD: usize = (1 << 20) + 64 * 1024;

/// A request or response head as it arrives.
#[derive(Debug, Deserialize)]
pub struct Head {
    /// `"METHOD uri"` for requests, `"status"` for responses.
    pub line: String,
    /// The header fields, in the order sent.
    #[serde(deserialize_with = "super::fields::deserialize")]
    pub headers: HeaderMap,
}

/// A head to send, encoded as [`Head`] is read; the fields are the message's own, borrowed.
#[derive(Debug, Serialize)]
pub struct HeadOut<'a> {
    /// `"METHOD uri"` for requests, `"status"` for responses.
    pub line: String,
    /// The header fields, in order.
    #[serde(serialize_with = "super::fields::serialize")]
    pub headers: Cow<'a, HeaderMap>,
}

/// Writes a length-prefixed head, prefix and head in one write. Errors: a head over
/// [`MAX_HEAD`], or the stream's (reset, connection lost).
pub async fn write_head(send: &mut SendStream, head: &HeadOut<'_>) -> Result<(), String> {
    let mut bytes = postcard::to_extend(head, vec![0u8; 4]).map_err(|e| e.to_string())?;
    let len = bytes.len() - 4;
    if len > MAX_HEAD {
        return Err("head too large".into());
    }
    bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
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
pub fn request_head<B>(req: &Request<B>) -> HeadOut<'_> {
    let uri = req.uri();
    let mut headers = Cow::Borrowed(req.headers());
    // `OPTIONS *` from an HTTP/2 client: its URI prints as `http://host*`, which would parse
    // back as a host named `host*`. The asterisk travels as the target, the authority as Host.
    let line = if uri.path_and_query().is_some_and(|p| p.as_str() == "*") {
        if let (Some(a), false) = (
            uri.authority(),
            req.headers().contains_key(http::header::HOST),
        ) {
            if let Ok(host) = HeaderValue::from_str(a.as_str()) {
                headers.to_mut().insert(http::header::HOST, host);
            }
        }
        format!("{} *", req.method())
    } else {
        format!("{} {}", req.method(), uri)
    };
    HeadOut { line, headers }
}

/// Rebuilds a request from its head and a body.
pub fn request_from(head: Head, body: Body) -> Result<Request<Body>, String> {
    let (method, uri) = head.line.split_once(' ').ok_or("bad request line")?;
    let mut req = Request::new(body);
    *req.method_mut() = method.parse().map_err(|_| "bad method".to_string())?;
    *req.uri_mut() = uri.parse().map_err(|_| "bad uri".to_string())?;
    *req.headers_mut() = head.headers;
    Ok(req)
}

/// The head of a response.
pub fn response_head<B>(resp: &Response<B>) -> HeadOut<'_> {
    HeadOut {
        line: resp.status().as_u16().to_string(),
        headers: Cow::Borrowed(resp.headers()),
    }
}

/// Rebuilds a response from its head and a body.
pub fn response_from(head: Head, body: Body) -> Result<Response<Body>, String> {
    let status: u16 = head.line.parse().map_err(|_| "bad status".to_string())?;
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).map_err(|_| "bad status".to_string())?;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// Marks a head whose body follows in frames (see the module doc).
pub const FRAMED: &str = "petrel-internal-framed";

/// Marks a head that no body follows (a GET, a 204, a gRPC trailers-only answer), so the
/// receiver ends the message with its head: HTTP/2 then sends one HEADERS frame with
/// `END_STREAM`, as the sender got it, instead of HEADERS and an empty DATA frame.
pub const EMPTY: &str = "petrel-internal-empty";

/// Marks `h` as a head with no body when `body` is already over.
pub fn mark_empty(h: &mut HeaderMap, body: &Body) {
    use http_body::Body as _;
    if body.is_end_stream() {
        h.insert(EMPTY, HeaderValue::from_static("1"));
    }
}

/// The body that follows `head` on `recv`: none if the head says so, else the stream's rest.
pub fn body_after(head: &Head, recv: RecvStream, framing: Framing) -> Body {
    if head.headers.contains_key(EMPTY) {
        crate::body::empty()
    } else {
        body_from(recv, framing)
    }
}

const DATA: u8 = 0;
const TRAILERS: u8 = 1;

/// How a stream's body travels after its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Raw bytes until the stream ends (no trailers); what the previous release speaks.
    Raw,
    /// Data and trailer frames.
    Framed,
}

impl Framing {
    /// The framing a head announces.
    pub fn of(head: &Head) -> Self {
        if head.headers.contains_key(FRAMED) {
            Framing::Framed
        } else {
            Framing::Raw
        }
    }

    /// Announces framed bodies in `h`.
    pub fn announce(h: &mut HeaderMap) {
        h.insert(FRAMED, HeaderValue::from_static("1"));
    }
}

/// The rest of a stream as a body, in `framing`.
pub fn body_from(recv: RecvStream, framing: Framing) -> Body {
    match framing {
        Framing::Raw => raw_body_from(recv),
        Framing::Framed => framed_body_from(recv),
    }
}

/// Sends a body down a stream in `framing` and finishes it; a failing body resets the stream.
pub async fn pump(body: Body, send: SendStream, framing: Framing) {
    match framing {
        Framing::Raw => raw_pump(body, send).await,
        Framing::Framed => framed_pump(body, send).await,
    }
}

fn framed_body_from(recv: RecvStream) -> Body {
    // State: the stream, and the bytes of the current data frame still to read.
    let stream = futures_util::stream::unfold(Some((recv, 0usize)), |state| async move {
        let (mut recv, mut left) = state?;
        loop {
            if left > 0 {
                return match recv.read_chunk(left.min(64 * 1024), true).await {
                    Ok(Some(chunk)) => {
                        left -= chunk.bytes.len();
                        Some((Ok(Frame::data(chunk.bytes)), Some((recv, left))))
                    }
                    Ok(None) => Some((Err("stream ended inside a data frame".into()), None)),
                    Err(e) => Some((Err(Box::new(e) as BoxError), None)),
                };
            }
            let mut hdr = [0u8; 5];
            match recv.read_exact(&mut hdr).await {
                Ok(()) => {}
                Err(quinn::ReadExactError::FinishedEarly(0)) => return None,
                Err(e) => return Some((Err(Box::new(e) as BoxError), None)),
            }
            let len = u32::from_le_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
            match hdr[0] {
                DATA => left = len,
                TRAILERS if len <= MAX_HEAD => {
                    let mut buf = vec![0u8; len];
                    if let Err(e) = recv.read_exact(&mut buf).await {
                        return Some((Err(Box::new(e) as BoxError), None));
                    }
                    let trailers = super::fields::decode(&buf)
                        .map_err(|e| format!("undecodable trailers: {e}"));
                    return Some((trailers.map(Frame::trailers).map_err(Into::into), None));
                }
                kind => {
                    return Some((
                        Err(format!("bad body frame (kind {kind}, {len} bytes)").into()),
                        None,
                    ))
                }
            }
        }
    });
    boxed(StreamBody::new(stream))
}

/// The body's next frame; `Err(())` once the peer stopped reading the stream (`STOP_SENDING`,
/// RFC 9000 §3.5: the owner answered early and reset its side). The pump then lets the body go,
/// so whoever feeds it (the client's upload) learns nobody reads it any more, instead of waiting
/// for a frame that may never come.
async fn next_frame(
    body: &mut Body,
    stopped: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<Option<Result<Frame<Bytes>, BoxError>>, ()> {
    tokio::select! {
        biased;
        f = body.frame() => Ok(f),
        () = stopped.as_mut() => Err(()),
    }
}

fn stopped(send: &SendStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let stopped = send.stopped();
    Box::pin(async move {
        let _ = stopped.await;
    })
}

/// Ends the stream, then holds it until the peer acknowledged all of it (`gone`: or stopped
/// it, or the connection ended). quinn closes a connection at once when its last handle goes,
/// and bytes not yet acknowledged then are lost: a draining owner drops its connection handles,
/// and its last responses lost their tails before (tests/drain.rs). The drain counts this task.
async fn finish_and_hold(mut send: SendStream, gone: Pin<Box<dyn Future<Output = ()> + Send>>) {
    if send.finish().is_ok() {
        gone.await;
    }
}

async fn framed_pump(mut body: Body, mut send: SendStream) {
    let mut gone = stopped(&send);
    let header = |kind: u8, len: usize| {
        let mut h = [kind, 0, 0, 0, 0];
        h[1..].copy_from_slice(&(len as u32).to_le_bytes());
        Bytes::copy_from_slice(&h)
    };
    loop {
        let frame = match next_frame(&mut body, &mut gone).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(()) => return,
        };
        let mut chunks = match frame.map(Frame::into_data) {
            Ok(Ok(data)) if data.is_empty() => continue,
            Ok(Ok(data)) => [header(DATA, data.len()), data],
            Ok(Err(frame)) => match frame.into_trailers() {
                Ok(t) => match super::fields::encode(&t) {
                    Ok(b) if b.len() <= MAX_HEAD => [header(TRAILERS, b.len()), Bytes::from(b)],
                    _ => break, // trailers too large to send: the body ends without them
                },
                Err(_) => continue,
            },
            Err(_) => {
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return;
            }
        };
        if send.write_all_chunks(&mut chunks).await.is_err() {
            return;
        }
    }
    finish_and_hold(send, gone).await;
}

fn raw_body_from(recv: RecvStream) -> Body {
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

async fn raw_pump(mut body: Body, mut send: SendStream) {
    let mut gone = stopped(&send);
    loop {
        let frame = match next_frame(&mut body, &mut gone).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(()) => return,
        };
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
    finish_and_hold(send, gone).await;
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
