//! One HTTP/1.1 exchange on an instance connection with petrel's own codec: the head written in
//! one system call, the response read in the request's own task (no connection task, no channel),
//! and the connection handed back to the pool the moment its body ends.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::{self, Chunked, Decoded, Framing, OriginError, Parsed, RequestHead};
use crate::body::{Body, BoxError};

/// A read takes at least this much free buffer.
const READ_ROOM: usize = 4096;
/// The buffer's size for a response head (and a body that comes with it). An idle connection
/// keeps a buffer of at most this capacity, so in the steady state a small exchange allocates
/// nothing; a larger one, grown by a large response, goes back to the allocator.
const KEEP_IDLE: usize = 8 * 1024;
/// What the first read of a body that did not come with its head makes room for. Each read that
/// fills all the room it had doubles the next one's, up to [`READ_MAX`], as hyper's adaptive
/// read buffer does: a large body moves in large reads (16 KiB reads cost 18 times the
/// `recvfrom` calls of hyper's on a 50 MB body, a reviewer measured).
const READ_GROW: usize = 16 * 1024;
/// The most room one read makes for a body.
const READ_MAX: usize = 256 * 1024;
/// A `408` that closes a pooled connection this soon after the request went out was written
/// before the request arrived (see `Conn::exchange`); a `408` the instance means as an answer
/// comes after its own request timeout, seconds later.
const STALE_408_WITHIN: Duration = Duration::from_millis(50);

/// An instance connection between exchanges: its socket and buffer (the request head goes out
/// from it, then the response comes in; empty between exchanges).
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Where a connection goes once a response body has been read to its end: back to its
/// instance's pool.
pub trait Checkin: Send + Unpin + 'static {
    /// Takes the connection back.
    fn checkin(self, conn: Conn);
}

impl Conn {
    /// A new connection on a connected socket.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The socket, for the pool's liveness peek.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `req` (which must have an empty body and ask for no upgrade) and reads the response
    /// head; the body is read as the response is polled. The connection goes to `back` when the
    /// body ends on a connection that may be reused; otherwise it is closed.
    ///
    /// `stale_408`: the connection was pooled and the request may be resent. Then a `408 Request
    /// Timeout` that closes the connection within [`STALE_408_WITHIN`] of the request is the
    /// instance's idle timeout that crossed the request on the wire (written before the request
    /// arrived, as Apache and Node do), not an answer to it; Go's HTTP client treats it the same
    /// way. A `408` that keeps the connection, or comes later, is the instance's answer.
    ///
    /// Errors: [`OriginError::ClosedBeforeResponse`] when the connection ended before a byte
    /// of the response, or with `stale_408` (the request may be resent on a fresh connection if
    /// it may be sent twice); the rest as [`codec::parse_head`] and the socket say.
    pub async fn exchange<C: Checkin>(
        mut self,
        req: RequestHead<'_>,
        back: C,
        stale_408: bool,
    ) -> Result<Response<Body>, OriginError> {
        // The head is written from the read buffer, empty between exchanges, which saves an
        // allocation per request.
        debug_assert!(
            self.buf.is_empty(),
            "a connection's buffer is empty between exchanges"
        );
        codec::encode_head(&req, &mut self.buf);
        self.stream.write_all(&self.buf).await?;
        self.buf.clear();
        let sent = stale_408.then(Instant::now);
        let head = loop {
            if !self.buf.is_empty() {
                match codec::parse_head(&mut self.buf, req.method)? {
                    Parsed::Final(head) => break head,
                    Parsed::Interim => continue,
                    Parsed::Partial if self.buf.len() >= codec::MAX_HEAD => {
                        return Err(OriginError::HeadTooLarge)
                    }
                    Parsed::Partial => {}
                }
            }
            let had = self.buf.len();
            let read = std::future::poll_fn(|cx| self.poll_fill(cx, KEEP_IDLE, READ_ROOM)).await?;
            if read.0 == 0 {
                return Err(if had == 0 {
                    OriginError::ClosedBeforeResponse
                } else {
                    OriginError::Truncated
                });
            }
        };
        // The clock is read again only for a closing 408.
        let closing_408 = head.status == http::StatusCode::REQUEST_TIMEOUT && !head.reusable;
        if closing_408 && sent.is_some_and(|t| t.elapsed() < STALE_408_WITHIN) {
            return Err(OriginError::ClosedBeforeResponse);
        }
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        if let Some(r) = head
            .reason
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok())
        {
            resp.extensions_mut().insert(r);
        }
        let state = match head.framing {
            Framing::Empty => {
                finish(Some(self), head.reusable, back);
                return Ok(resp);
            }
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::Close => State::Close,
        };
        *resp.body_mut() = http_body_util::BodyExt::boxed_unsync(InstanceBody {
            conn: Some(self),
            state,
            reusable: head.reusable,
            back: Some(back),
            room: READ_GROW,
        });
        Ok(resp)
    }

    /// Reads what the socket has into the buffer, first making `room` when less than `least` is
    /// free: the bytes read (0 at the end of the connection) and whether they filled all the room
    /// there was. tokio's `TcpStream` clears its readiness after a short read, so the next read
    /// waits for the next edge instead of getting `EAGAIN`.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        least: usize,
    ) -> Poll<std::io::Result<(usize, bool)>> {
        if self.buf.capacity() - self.buf.len() < least {
            self.buf.reserve(room);
        }
        let free = self.buf.capacity() - self.buf.len();
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
            .map_ok(|n| (n, n == free))
    }
}

/// Hands `conn` back when it may carry another request and nothing follows the response in its
/// buffer (an instance that sent more than it framed is not trusted again); closes it otherwise.
fn finish<C: Checkin>(conn: Option<Conn>, reusable: bool, back: C) {
    if let Some(mut c) = conn.filter(|c| reusable && c.buf.is_empty()) {
        if c.buf.capacity() > KEEP_IDLE {
            c.buf = BytesMut::new();
        }
        back.checkin(c);
    }
}

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// A response body read straight off its instance connection. Dropped before its end, it
/// closes the connection (bytes of the body would be left on it).
struct InstanceBody<C: Checkin> {
    conn: Option<Conn>,
    state: State,
    reusable: bool,
    back: Option<C>,
    /// What the next read makes room for (see [`READ_GROW`]).
    room: usize,
}

impl<C: Checkin> InstanceBody<C> {
    fn end(&mut self) {
        self.state = State::Done;
        if let Some(back) = self.back.take() {
            finish(self.conn.take(), self.reusable, back);
        }
    }
}

impl<C: Checkin> Drop for InstanceBody<C> {
    /// A body dropped unread whose rest is already in the buffer (a short answer the edge does
    /// not pass on, such as a `fly-replay` one) leaves nothing on the connection: its bytes go
    /// and the connection goes back, as if it had been read. Any other body dropped before its
    /// end closes the connection.
    fn drop(&mut self) {
        if let (State::Length(left), Some(conn)) = (&self.state, self.conn.as_mut()) {
            if conn.buf.len() as u64 >= *left {
                bytes::Buf::advance(&mut conn.buf, *left as usize);
                self.end();
            }
        }
    }
}

impl<C: Checkin> http_body::Body for InstanceBody<C> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) if !conn.buf.is_empty() => {
                    let take = (*left).min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(take as usize).freeze();
                    *left -= take;
                    if *left == 0 {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(c) => match c.decode(&mut conn.buf) {
                    Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Decoded::Trailers(t)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::End) => {
                        this.end();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::Need) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                State::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Length(_) | State::Close => {}
            }
            // The buffer holds nothing more to give: read.
            let conn = this.conn.as_mut().expect("checked above");
            match conn.poll_fill(cx, this.room, this.room / 2) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((0, _))) if matches!(this.state, State::Close) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok((0, _))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(OriginError::Truncated.into())));
                }
                Poll::Ready(Ok((_, filled))) => {
                    if filled {
                        this.room = (this.room * 2).min(READ_MAX);
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(OriginError::Io(e).into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0)) || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
