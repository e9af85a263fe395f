//! A response body that runs its end-of-exchange work (release a load slot, count the request)
//! once, when the body ends or is dropped, and cleans the trailers it passes on.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::BoxError;

/// Work a [`Tracked`] body runs when the exchange ends.
pub trait OnEnd {
    /// `bytes` of response data went toward the client.
    fn count_out(&mut self, _bytes: usize) {}
    /// The body ended, failed or was dropped (runs once).
    fn end(self);
}

/// Nothing to record: the body only gets its trailers cleaned.
impl OnEnd for () {
    fn end(self) {}
}

pin_project_lite::pin_project! {
    /// Streams an instance's response to the client; when it ends (or the client goes away)
    /// `done` runs, so a slow download stays "in flight" until then. Trailers are cleaned of
    /// fields a proxy must not pass on (RFC 9110 §6.5.1).
    pub struct Tracked<B, G: OnEnd> {
        #[pin]
        inner: B,
        done: Option<G>,
    }

    impl<B, G: OnEnd> PinnedDrop for Tracked<B, G> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(f) = this.project().done.take() {
                f.end();
            }
        }
    }
}

impl<B, G: OnEnd> Tracked<B, G> {
    /// Wraps `inner`; `done` runs once at end of stream or drop.
    pub fn new(inner: B, done: G) -> Self {
        Self {
            inner,
            done: Some(done),
        }
    }
}

impl<B, G> HttpBody for Tracked<B, G>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
    G: OnEnd,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut r = this.inner.poll_frame(cx);
        match &mut r {
            Poll::Ready(None) => {
                if let Some(f) = this.done.take() {
                    f.end();
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_mut() {
                    super::headers::sanitize_trailers(t);
                }
                if let (Some(data), Some(f)) = (frame.data_ref(), this.done.as_mut()) {
                    f.count_out(data.len());
                }
            }
            _ => {}
        }
        r.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
