//! Response buffering: an instance's response is read ahead of a slow client into a bounded
//! buffer, so a client that reads slowly, or not at all, does not keep the instance's slot.
//!
//! Three outcomes, as nginx's `proxy_buffering` and `send_timeout` give them:
//! - the whole response fits in the buffer: it is read at once and the slot is let go, however
//!   slowly the client then takes it;
//! - it does not fit and the client takes nothing for `stall` while the buffer is full: the
//!   instance is now waiting on the client, not working, so its slot is let go (it stops counting
//!   against the hard limit) and the response goes on;
//! - the client takes nothing for `send_timeout`: the response is cancelled (the instance's
//!   stream or connection is closed, and the client's response ends in an error).
//!
//! A response already complete when its head arrives (the common small one) costs no task: it
//! is taken whole at once. Anything else gets one pump task that owns the instance's body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::FutureExt;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::Notify;

use crate::body::{Body, BoxError};
use crate::telemetry::SLOW_CLIENTS;

/// How responses are buffered for their clients (`[edge]` `response_buffer_bytes`,
/// `response_stall`, `send_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Buffering {
    /// Most response bytes held per request ahead of its client; a response that fits is read
    /// whole and its instance let go at once.
    pub bytes: usize,
    /// A client that takes nothing for this long while the buffer is full no longer holds the
    /// instance's slot.
    pub stall: Duration,
    /// A client that takes nothing for this long has its response cancelled.
    pub send_timeout: Duration,
}

/// Notified when a response is cancelled at `send_timeout`: the edge closes an HTTP/1.x client's
/// connection with it (nothing else can be sent on it, and the client may not read again to find
/// out). Counted in `petrel_connections_closed_total{reason="send_timeout"}`.
pub type OnCancel = Arc<Notify>;

/// A response body for the client, read ahead of it from `body` (the instance's, or an owner's
/// over the backhaul). `held` (the instance slot) is dropped when the instance is done sending,
/// when the client stalls (see the module note), or when either side goes away; `on_cancel` is
/// notified if the response is cancelled at `send_timeout` (cloned only then: a response that is
/// all here at once costs no allocation for it).
pub fn read_ahead<H: Send + 'static>(
    mut body: Body,
    held: H,
    cfg: Buffering,
    on_cancel: Option<&OnCancel>,
) -> Body {
    let hint = body.size_hint();
    if body.is_end_stream() {
        drop(held);
        return body;
    }
    // What is already here, without waiting (a small response arrives with its head). The
    // first frame is kept apart: a response that comes in one costs no queue.
    let mut first = None;
    let mut ahead = VecDeque::new();
    let mut bytes = 0usize;
    let (complete, error) = loop {
        if bytes > cfg.bytes {
            break (false, None);
        }
        match body.frame().now_or_never() {
            None => break (false, None),
            Some(None) => break (true, None),
            Some(Some(Err(e))) => break (true, Some(e)),
            Some(Some(Ok(f))) => {
                bytes += f.data_ref().map_or(0, Bytes::len);
                match first {
                    None => first = Some(f),
                    Some(_) => ahead.push_back(f),
                }
                if body.is_end_stream() {
                    break (true, None);
                }
            }
        }
    };
    if complete {
        drop(held); // the instance is done: its slot goes now, whatever the client does
        return crate::body::boxed(Whole {
            first,
            frames: ahead,
            error,
            hint,
        });
    }
    if let Some(f) = first {
        ahead.push_front(f);
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: ahead,
            bytes,
            end: None,
            client_gone: false,
        }),
        client: AtomicWaker::new(),
        changed: Notify::new(),
    });
    tokio::spawn(pump(body, held, cfg, shared.clone(), on_cancel.cloned()));
    crate::body::boxed(Buffered { shared, hint })
}

/// The buffer between the pump (instance side) and the client's body.
struct Shared {
    state: Mutex<State>,
    /// The client's task, woken when a frame or the end arrives.
    client: AtomicWaker,
    /// The pump, woken when the client takes a frame or goes away.
    changed: Notify,
}

struct State {
    queue: VecDeque<Frame<Bytes>>,
    /// Data bytes in `queue`.
    bytes: usize,
    /// Set once the instance's body ended (`Ok`), failed, or the response was cancelled.
    end: Option<Result<(), BoxError>>,
    /// The client's body was dropped.
    client_gone: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a queue of frames, still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end(&self, how: Result<(), BoxError>) {
        let mut st = self.lock();
        if how.is_err() {
            // Cancelled or failed: what was buffered is never sent, so it is freed now (an
            // HTTP/2 client with a zero window would otherwise keep it for its connection's life).
            st.queue.clear();
            st.bytes = 0;
        }
        st.end = Some(how);
        drop(st);
        self.client.wake();
    }
}

/// Reads the instance's body into the buffer until it ends, the client goes away, or the
/// client's stall passes `send_timeout`.
async fn pump<H>(
    mut body: Body,
    held: H,
    cfg: Buffering,
    shared: Arc<Shared>,
    on_cancel: Option<OnCancel>,
) {
    let mut held = Some(held);
    loop {
        // Room first: wait while the buffer is full, letting the instance go at `stall` and
        // cancelling at `send_timeout`.
        let mut since = tokio::time::Instant::now();
        let mut last = usize::MAX;
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let st = shared.lock();
                if st.client_gone {
                    return; // the instance's body is dropped with the pump
                }
                if st.bytes < cfg.bytes {
                    break;
                }
                if st.bytes < last {
                    since = tokio::time::Instant::now(); // the client took something
                    last = st.bytes;
                }
            }
            let waited = since;
            let next = if held.is_some() {
                waited + cfg.stall
            } else {
                waited + cfg.send_timeout
            };
            if tokio::time::timeout_at(next, changed).await.is_err() {
                if held.take().is_some() {
                    metrics::counter!(SLOW_CLIENTS, "outcome" => "released").increment(1);
                    continue;
                }
                metrics::counter!(SLOW_CLIENTS, "outcome" => "cancelled").increment(1);
                tracing::info!(
                    send_timeout = ?cfg.send_timeout,
                    "response cancelled: the client took none of it within send_timeout"
                );
                shared.end(Err(
                    "the client took none of its response within send_timeout".into(),
                ));
                if let Some(n) = on_cancel {
                    metrics::counter!(crate::telemetry::CONNS_CLOSED, "reason" => "send_timeout")
                        .increment(1);
                    n.notify_one();
                }
                return;
            }
        }
        let frame = loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if shared.lock().client_gone {
                return;
            }
            tokio::select! {
                f = body.frame() => break f,
                _ = changed => {} // a frame taken, or the client gone: look again
            }
        };
        match frame {
            None => {
                drop(held.take()); // the instance is done
                shared.end(Ok(()));
                return;
            }
            Some(Err(e)) => {
                drop(held.take());
                shared.end(Err(e));
                return;
            }
            Some(Ok(f)) => {
                let mut st = shared.lock();
                st.bytes += f.data_ref().map_or(0, Bytes::len);
                st.queue.push_back(f);
                drop(st);
                shared.client.wake();
            }
        }
    }
}

/// A response that was all here when its head arrived.
struct Whole {
    first: Option<Frame<Bytes>>,
    frames: VecDeque<Frame<Bytes>>,
    error: Option<BoxError>,
    hint: SizeHint,
}

impl HttpBody for Whole {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.first.take().or_else(|| self.frames.pop_front()) {
            self.hint = less(self.hint, &f);
            return Poll::Ready(Some(Ok(f)));
        }
        Poll::Ready(self.error.take().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.frames.is_empty() && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// The client's side of a pumped response.
struct Buffered {
    shared: Arc<Shared>,
    hint: SizeHint,
}

impl Drop for Buffered {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.client_gone = true;
        st.queue.clear();
        drop(st);
        self.shared.changed.notify_one();
    }
}

impl HttpBody for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let taken = {
            let mut st = shared.lock();
            match st.queue.pop_front() {
                Some(f) => {
                    st.bytes -= f.data_ref().map_or(0, Bytes::len);
                    Some(Ok(f))
                }
                None => match st.end.take() {
                    Some(Ok(())) => {
                        st.end = Some(Ok(()));
                        return Poll::Ready(None);
                    }
                    Some(Err(e)) => {
                        st.end = Some(Ok(())); // reported once
                        Some(Err(e))
                    }
                    None => {
                        shared.client.register(cx.waker());
                        None
                    }
                },
            }
        };
        match taken {
            Some(Ok(f)) => {
                shared.changed.notify_one(); // room for more
                self.hint = less(self.hint, &f);
                Poll::Ready(Some(Ok(f)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let st = self.shared.lock();
        st.queue.is_empty() && matches!(st.end, Some(Ok(())))
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// `hint` less the data in `f`.
fn less(hint: SizeHint, f: &Frame<Bytes>) -> SizeHint {
    let n = f.data_ref().map_or(0, Bytes::len) as u64;
    let lower = hint.lower().saturating_sub(n);
    let mut h = SizeHint::new();
    h.set_lower(lower);
    if let Some(u) = hint.upper() {
        h.set_upper(u.saturating_sub(n).max(lower));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::mpsc;

    /// Set when dropped: stands for the instance slot.
    struct Held(Arc<AtomicBool>);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    const CFG: Buffering = Buffering {
        bytes: 1024,
        stall: Duration::from_secs(2),
        send_timeout: Duration::from_secs(10),
    };

    /// An instance body fed by the test, and the handle feeding it.
    fn instance() -> (Body, mpsc::Sender<Result<Frame<Bytes>, BoxError>>) {
        let (tx, rx) = mpsc::channel(64);
        let frames =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let body = http_body_util::StreamBody::new(frames);
        (crate::body::boxed(body), tx)
    }

    fn data(n: usize) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from(vec![b'x'; n])))
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_that_fits_lets_the_instance_go_before_the_client_reads() {
        let (body, tx) = instance();
        let released = Arc::new(AtomicBool::new(false));
        let out = read_ahead(body, Held(released.clone()), CFG, None);
        tx.send(data(500)).await.unwrap();
        tx.send(data(500)).await.unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            released.load(Ordering::SeqCst),
            "instance done: slot let go"
        );
        let all = out.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 1000, "and the client still gets every byte");
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_response_costs_no_task_and_frees_the_slot_at_once() {
        let (body, tx) = instance();
        tx.send(data(100)).await.unwrap();
        drop(tx);
        let released = Arc::new(AtomicBool::new(false));
        let out = read_ahead(body, Held(released.clone()), CFG, None);
        assert!(
            released.load(Ordering::SeqCst),
            "released without any await"
        );
        assert!(!out.is_end_stream());
        assert_eq!(out.collect().await.unwrap().to_bytes().len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_let_go_at_stall_and_cancelled_at_send_timeout() {
        let (body, tx) = instance();
        let released = Arc::new(AtomicBool::new(false));
        let cancelled = Arc::new(AtomicBool::new(false));
        let on_cancel: OnCancel = Arc::new(Notify::new());
        let (told, flag) = (on_cancel.clone(), cancelled.clone());
        tokio::spawn(async move {
            told.notified().await;
            flag.store(true, Ordering::SeqCst);
        });
        let mut out = read_ahead(body, Held(released.clone()), CFG, Some(&on_cancel));
        for _ in 0..4 {
            tx.send(data(1024)).await.unwrap(); // more than the buffer holds
        }
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(!released.load(Ordering::SeqCst), "still inside the stall");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(released.load(Ordering::SeqCst), "let go after the stall");
        assert!(!cancelled.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            tx.is_closed(),
            "cancelled at send_timeout: the instance's body dropped"
        );
        assert!(cancelled.load(Ordering::SeqCst), "the connection is told");
        // What was buffered is freed, not kept for a client that may never read.
        let err = out.frame().await.expect("an error").expect_err("not data");
        assert!(err.to_string().contains("send_timeout"), "{err}");
        assert!(out.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_slowly_is_never_cancelled() {
        let (body, tx) = instance();
        let mut out = read_ahead(body, (), CFG, None);
        tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(data(1024)).await.is_err() {
                    return;
                }
            }
        });
        let mut got = 0;
        while let Some(f) = out.frame().await {
            got += f.expect("never cancelled").into_data().unwrap().len();
            tokio::time::sleep(Duration::from_secs(5)).await; // one frame per 5 s < send_timeout
        }
        assert_eq!(got, 40 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_gets_everything_in_order() {
        let (body, tx) = instance();
        let out = read_ahead(body, (), CFG, None);
        tokio::spawn(async move {
            for i in 0..50u8 {
                tx.send(Ok(Frame::data(Bytes::from(vec![i; 700]))))
                    .await
                    .unwrap();
            }
        });
        let mut out = out;
        let mut seen = Vec::new();
        while let Some(f) = out.frame().await {
            tokio::time::sleep(Duration::from_millis(500)).await; // slower than the stall
            seen.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert_eq!(seen.len(), 50 * 700);
        assert!(seen
            .chunks(700)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_goes_away_drops_the_instance_body() {
        let (body, tx) = instance();
        let released = Arc::new(AtomicBool::new(false));
        let out = read_ahead(body, Held(released.clone()), CFG, None);
        tx.send(data(10)).await.unwrap();
        drop(out);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(released.load(Ordering::SeqCst));
        assert!(
            tx.is_closed(),
            "the instance's body is dropped with the client"
        );
    }
}
