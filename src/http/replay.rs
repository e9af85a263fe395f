//! A request that can be sent again: its head is kept, and what was read of its body (up to a
//! bound), so a request the owner rejected, or one a stale pooled connection lost, can be sent
//! once more. Beyond the bound the body streams and cannot be replayed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::headers::Forwarding;
use crate::body::{Body, BoxError};
use http_body_util::BodyExt;

/// Bodies up to this size stay replayable.
pub const REPLAY_LIMIT: usize = 256 * 1024;

struct Inner {
    source: Body,
    kept: Vec<Bytes>,
    kept_bytes: usize,
    /// Bytes read from the client so far.
    total: usize,
    overflow: bool,
    ended: bool,
    /// Read the rest after every attempt let go (an HTTP/1.x client's body; see `Drop`).
    linger: bool,
}

/// How long the rest of a client's body is read and dropped after every attempt let go of it
/// (nginx's `lingering_time`), and the longest pause in it (`lingering_timeout`).
const LINGER_TOTAL: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);

impl Drop for Inner {
    /// The instance answered before the client's upload ended (a `413`, a `401`, a failure), and
    /// no attempt reads the body any more. Closing now would reset the client mid-upload, and a
    /// client that writes before it reads (most do) would never see the answer. So the rest is
    /// read and dropped, within bounds, as nginx's lingering close does; a body read to its end
    /// also lets the client's connection be reused.
    ///
    /// Only an HTTP/1.x client needs this. An HTTP/2 stream's body is dropped at once: once the
    /// response is complete, h2 resets the stream with `NO_ERROR`, which tells the client to stop
    /// sending (RFC 9113 §8.1); reading on instead would leave a client that waits for that reset
    /// (curl does) hanging until the linger ran out. A backhaul peer's stream is reset the same way.
    fn drop(&mut self) {
        if !self.linger || self.ended || self.source.is_end_stream() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rest = std::mem::replace(&mut self.source, crate::body::empty());
        rt.spawn(async move {
            let work = async {
                while let Ok(Some(Ok(_))) = tokio::time::timeout(LINGER_IDLE, rest.frame()).await {}
            };
            let _ = tokio::time::timeout(LINGER_TOTAL, work).await;
        });
    }
}

/// The client's body, shared by successive attempts. A body that was over before it was kept
/// (a `GET` as most clients send it) is `None`: nothing to share, lock or box.
#[derive(Clone)]
pub struct Replayable(Option<Arc<Mutex<Inner>>>);

impl Replayable {
    /// Wraps a body; `linger`: read the rest after the last attempt let go (HTTP/1.x clients).
    pub fn new(source: Body, linger: bool) -> Self {
        if source.is_end_stream() {
            return Self(None);
        }
        Self(Some(Arc::new(Mutex::new(Inner {
            source,
            kept: Vec::new(),
            kept_bytes: 0,
            total: 0,
            overflow: false,
            ended: false,
            linger,
        }))))
    }

    /// False once more than `REPLAY_LIMIT` bytes were read: a new attempt could not resend them.
    pub fn can_replay(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|s| !s.lock().expect("body lock").overflow)
    }

    /// True when the body is known to be over: read to its end within the bound, or empty.
    fn known_complete(&self) -> bool {
        self.0.as_ref().is_none_or(|s| {
            let inner = s.lock().expect("body lock");
            !inner.overflow && (inner.ended || inner.source.is_end_stream())
        })
    }

    /// True when the body is known to hold nothing: none read, none left to read.
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|s| {
            let inner = s.lock().expect("body lock");
            inner.total == 0 && !inner.overflow && (inner.ended || inner.source.is_end_stream())
        })
    }

    /// A body for one attempt: replays what was read so far, then reads on.
    pub fn attempt(&self) -> Body {
        match &self.0 {
            None => crate::body::empty(),
            Some(shared) => http_body_util::BodyExt::boxed_unsync(Attempt {
                shared: shared.clone(),
                pos: 0,
                sent: 0,
            }),
        }
    }
}

/// True for an idempotent method (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or a
/// request with an `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header).
pub fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// A request kept so that each attempt gets its own copy: the head cloned, the body replayed.
/// A clone shares the body.
#[derive(Clone)]
pub struct ReplayableRequest {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The edge's forwarding fields, added to every attempt after `headers`; `None` for a
    /// request that came over the backhaul (the edge already added them).
    forwarding: Option<Forwarding>,
    body: Replayable,
}

impl ReplayableRequest {
    /// Keeps a client's `req`; its body is read only as attempts send it. An HTTP/1.x client's
    /// unread upload is read and dropped after the answer (see `Inner`'s `Drop`).
    pub fn from_client(req: Request<Body>, forwarding: Forwarding) -> Self {
        let linger = req.version() < Version::HTTP_2;
        let mut r = Self::new(req, linger);
        r.forwarding = Some(forwarding);
        r
    }

    /// Keeps a request that came over the backhaul: its stream is reset, not drained, when no
    /// attempt reads it any more.
    pub fn from_peer(req: Request<Body>) -> Self {
        Self::new(req, false)
    }

    fn new(req: Request<Body>, linger: bool) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            forwarding: None,
            body: Replayable::new(body, linger),
        }
    }

    /// A copy to send: the same head with the forwarding fields, and a body that replays what
    /// was read, then reads on.
    pub fn attempt(&self) -> Request<Body> {
        let mut r = Request::new(self.body.attempt());
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        if let Some(f) = &self.forwarding {
            f.apply(r.headers_mut());
        }
        r
    }

    /// False once the body outgrew the replay buffer (see [`Replayable::can_replay`]).
    pub fn can_replay(&self) -> bool {
        self.body.can_replay()
    }

    /// True when the whole body will fit the replay buffer, before any of it is read: its
    /// `Content-Length` is at most [`REPLAY_LIMIT`], or there is none to read. A body of unknown
    /// length may outgrow it.
    pub fn fits_replay(&self) -> bool {
        match self.headers.get(http::header::CONTENT_LENGTH) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n <= REPLAY_LIMIT as u64),
            None => self.body.known_complete(),
        }
    }

    /// True when the request has no body at all (none read, none left to read): a `GET` as
    /// most clients send it.
    pub fn body_is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request's target as the client sent it.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The request's headers, as every attempt gets them, but for the forwarding fields.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The edge's forwarding fields, written after [`Self::headers`] in every attempt.
    pub fn forwarding(&self) -> Option<&Forwarding> {
        self.forwarding.as_ref()
    }

    /// The headers of every later attempt (a replay adds `fly-replay-src`, for one).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// True when sending it twice has the effect of sending it once: an idempotent method
    /// (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or an `Idempotency-Key`
    /// header (draft-ietf-httpapi-idempotency-key-header), as Go's `net/http` also counts it.
    /// Only such a request is sent again after it may have reached an instance.
    pub fn is_idempotent(&self) -> bool {
        is_idempotent(&self.method, &self.headers)
    }
}

struct Attempt {
    shared: Arc<Mutex<Inner>>,
    pos: usize,
    sent: usize,
}

impl HttpBody for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let mut inner = shared.lock().expect("body lock");
        if !inner.overflow && self.pos < inner.kept.len() {
            let b = inner.kept[self.pos].clone();
            self.pos += 1;
            self.sent += b.len();
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.sent != inner.total {
            // Another attempt read past the replay limit: this one cannot resend those bytes.
            return Poll::Ready(Some(Err(
                "request body was partly sent elsewhere and cannot be replayed".into(),
            )));
        }
        if inner.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut inner.source).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    inner.total += data.len();
                    self.sent += data.len();
                    if !inner.overflow && inner.kept_bytes + data.len() <= REPLAY_LIMIT {
                        inner.kept_bytes += data.len();
                        inner.kept.push(data.clone());
                        self.pos = inner.kept.len();
                    } else {
                        inner.overflow = true;
                        inner.kept = Vec::new();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                inner.ended = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    /// True when this attempt has nothing left to send: the client's body ended (or never had
    /// anything) and every kept byte was sent. Without it an empty body looks open, so HTTP/2
    /// sends HEADERS and then an empty DATA frame to end the stream, for every GET.
    fn is_end_stream(&self) -> bool {
        let inner = self.shared.lock().expect("body lock");
        !inner.overflow
            && self.pos >= inner.kept.len()
            && self.sent == inner.total
            && (inner.ended || inner.source.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.shared.lock().expect("body lock");
        if (inner.ended || inner.source.is_end_stream()) && !inner.overflow {
            SizeHint::with_exact(inner.kept_bytes as u64)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn small_bodies_replay_in_full() {
        let r = Replayable::new(crate::body::full("hello world"), true);
        let first = r.attempt().collect().await.unwrap().to_bytes();
        let second = r.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(first, "hello world");
        assert_eq!(second, "hello world");
        assert!(r.can_replay());
    }

    #[tokio::test]
    async fn an_attempt_ends_as_soon_as_nothing_is_left_to_send() {
        use http_body::Body as _;
        let empty = Replayable::new(crate::body::empty(), true);
        let a = empty.attempt();
        assert!(a.is_end_stream(), "an empty body ends before it is read");
        assert_eq!(a.size_hint().exact(), Some(0));

        let r = Replayable::new(crate::body::full("abc"), true);
        let mut a = r.attempt();
        assert!(!a.is_end_stream(), "bytes are still to be sent");
        assert_eq!(
            a.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert!(a.is_end_stream(), "everything was sent");
        let b = r.attempt();
        assert!(!b.is_end_stream(), "a new attempt resends the kept bytes");
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abc");
    }

    #[tokio::test]
    async fn a_partly_read_body_replays_then_continues() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Ok(Frame::data(Bytes::from("cd"))),
        ];
        let src = crate::body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )));
        let r = Replayable::new(src, true);
        let mut a = r.attempt();
        let f = a.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        drop(a); // rejected after one chunk
        assert_eq!(r.attempt().collect().await.unwrap().to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn large_bodies_stream_once_and_a_second_attempt_fails() {
        let big = vec![1u8; REPLAY_LIMIT + 1];
        let r = Replayable::new(crate::body::full(big), true);
        assert_eq!(
            r.attempt().collect().await.unwrap().to_bytes().len(),
            REPLAY_LIMIT + 1
        );
        assert!(!r.can_replay());
        assert!(
            r.attempt().collect().await.is_err(),
            "must not send a truncated body"
        );
    }
}
