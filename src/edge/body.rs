//! What the edge records when a response really ends (held in an `http::Tracked` body), and the
//! timing of request bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::AppRoute;
use crate::body::BoxError;
use crate::local::Slot;
use crate::trace::Trace;

/// What to record when a response ends.
pub struct Finish {
    /// The app whose metrics count the request; `None` on an owner node (the edge counts it).
    pub app: Option<Arc<AppRoute>>,
    /// Held until the end.
    pub slot: Option<Slot>,
    /// Status sent to the client.
    pub status: u16,
    /// When the request arrived.
    pub start: Instant,
    /// When the response head arrived from the instance.
    pub head: Instant,
    /// The request's timeline (edge side only).
    pub trace: Option<Trace>,
    /// The request's place in its client's `per_client` count, given back at the end.
    pub client: Option<crate::routes::per_client::ClientSlot>,
}

impl crate::http::OnEnd for Finish {
    fn count_out(&mut self, bytes: usize) {
        if let Some(t) = self.trace.as_mut() {
            t.count_out(bytes);
        }
    }

    fn end(self) {
        let now = Instant::now(); // one clock read for the metrics and the trace
        if let Some(app) = &self.app {
            app.metrics.response_body((now - self.head).as_secs_f64());
            app.metrics
                .request(self.status, (now - self.start).as_secs_f64());
        }
        drop(self.slot);
        if let Some(t) = self.trace {
            t.finish(now, self.status);
        }
    }
}

pin_project_lite::pin_project! {
    /// Times a request body from its first frame to its end (`direction="request"`).
    pub struct TimedUpload<B> {
        #[pin]
        inner: B,
        app: Option<Arc<AppRoute>>,
        first: Option<Instant>,
        bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
        failed: Arc<std::sync::atomic::AtomicBool>,
    }
}

impl<B> TimedUpload<B> {
    /// Wraps a client request body; `bytes`, if given, counts what it reads (access log);
    /// `failed` is set if reading it fails.
    pub fn new(
        inner: B,
        app: Arc<AppRoute>,
        bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
        failed: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            inner,
            app: Some(app),
            first: None,
            bytes,
            failed,
        }
    }
}

impl<B> HttpBody for TimedUpload<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut r {
            if let Some(t) = frame.trailers_mut() {
                crate::http::headers::sanitize_trailers(t);
            }
        }
        if let (Poll::Ready(Some(Ok(frame))), Some(n)) = (&r, this.bytes.as_ref()) {
            if let Some(data) = frame.data_ref() {
                n.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        match &r {
            Poll::Ready(Some(Err(_))) => this
                .failed
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Poll::Ready(Some(_)) if this.first.is_none() => *this.first = Some(Instant::now()),
            Poll::Ready(None) => {
                if let (Some(app), Some(t0)) = (this.app.take(), *this.first) {
                    app.metrics.request_body(t0.elapsed().as_secs_f64());
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
