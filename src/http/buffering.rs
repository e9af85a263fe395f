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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

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

/// A response body for the client, read ahead of it from `body` (the instance's, or an owner's
/// over the backhaul). `held` (the instance slot) is dropped when the instance is done sending,
/// when the client stalls (see the module note), or when either side goes away.
pub fn read_ahead<H: Send + 'static>(mut body: Body, held: H, cfg: Buffering) -> Body {
    let hint = body.size_hint();
    if body.is_end_stream() {
        drop(held);
        return body;
    }
    // What is already here, without waiting (a small response arrives with its head).
    let mut ahead = VecDeque::new();
    let mut bytes = 0usize;
    while bytes <= cfg.bytes {
        match body.frame().now_or_never() {
            None => break,
            Some(None) => {
                drop(held);
                return Buffered::whole(ahead, hint).boxed();
            }
            Some(Some(Ok(f))) => {
                bytes += f.data_ref().map_or(0, Bytes::len);
                ahead.push_back(f);
                if body.is_end_stream() {
                    drop(held);
                    return Buffered::whole(ahead, hint).boxed();
                }
            }
            Some(Some(Err(e))) => {
                drop(held);
                let mut b = Buffered::whole(ahead, hint);
                b.error = Some(e);
                return b.boxed();
            }
        }
    }
    let room = Arc::new(Semaphore::new(cfg.bytes.max(1)));
    // What was taken above occupies the buffer until the client has taken it.
    let ahead_room = (bytes > 0)
        .then(|| {
            room.clone()
                .try_acquire_many_owned(permits(bytes, cfg.bytes))
                .ok()
        })
        .flatten();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(pump(body, held, cfg, room, tx));
    Buffered {
        ahead,
        ahead_room,
        rx: Some(rx),
        error: None,
        hint,
    }
    .boxed()
}

/// Permits for a frame of `len` bytes in a buffer of `cap`: a frame larger than the buffer
/// takes all of it (it passes alone).
fn permits(len: usize, cap: usize) -> u32 {
    len.clamp(1, cap.max(1)).min(u32::MAX as usize) as u32
}

/// A frame on its way to the client, holding its share of the buffer until the client takes it.
type Queued = Result<(Frame<Bytes>, OwnedSemaphorePermit), BoxError>;

/// Reads the instance's body into the buffer until it ends, the client goes away, or the
/// client's stall passes `send_timeout`.
async fn pump<H>(
    mut body: Body,
    held: H,
    cfg: Buffering,
    room: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Queued>,
) {
    let mut held = Some(held);
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tx.closed() => return, // the client went away: the instance's body is dropped
        };
        let frame = match frame {
            None => return, // the instance is done: `held` and `tx` drop, the client sees the end
            Some(Err(e)) => {
                drop(held.take());
                let _ = tx.send(Err(e));
                return;
            }
            Some(Ok(f)) => f,
        };
        let n = permits(frame.data_ref().map_or(0, Bytes::remaining), cfg.bytes);
        let want = room.clone().acquire_many_owned(n);
        tokio::pin!(want);
        let permit = tokio::select! {
            p = &mut want => p,
            _ = tokio::time::sleep(cfg.stall) => {
                if held.take().is_some() {
                    metrics::counter!(SLOW_CLIENTS, "outcome" => "released").increment(1);
                }
                tokio::select! {
                    p = &mut want => p,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(cfg.send_timeout.saturating_sub(cfg.stall)) => {
                        metrics::counter!(SLOW_CLIENTS, "outcome" => "cancelled").increment(1);
                        let _ = tx.send(Err("the client took none of its response within send_timeout".into()));
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
        };
        let Ok(permit) = permit else { return };
        if tx.send(Ok((frame, permit))).is_err() {
            return;
        }
    }
}

/// The client's side: frames read ahead, then what the pump sends.
struct Buffered {
    ahead: VecDeque<Frame<Bytes>>,
    /// The buffer space `ahead` takes, given back once it is empty.
    ahead_room: Option<OwnedSemaphorePermit>,
    rx: Option<mpsc::UnboundedReceiver<Queued>>,
    error: Option<BoxError>,
    hint: SizeHint,
}

impl Buffered {
    /// A body that is all here.
    fn whole(ahead: VecDeque<Frame<Bytes>>, hint: SizeHint) -> Self {
        Self {
            ahead,
            ahead_room: None,
            rx: None,
            error: None,
            hint,
        }
    }

    fn boxed(self) -> Body {
        crate::body::boxed(self)
    }

    fn yielded(&mut self, f: &Frame<Bytes>) {
        let n = f.data_ref().map_or(0, Bytes::len) as u64;
        let lower = self.hint.lower().saturating_sub(n);
        let upper = self.hint.upper().map(|u| u.saturating_sub(n));
        let mut h = SizeHint::new();
        h.set_lower(lower);
        if let Some(u) = upper {
            h.set_upper(u.max(lower));
        }
        self.hint = h;
    }
}

impl HttpBody for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.ahead.pop_front() {
            if self.ahead.is_empty() {
                self.ahead_room = None;
            }
            self.yielded(&f);
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.rx = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok((f, permit)))) => {
                drop(permit); // the client has it: room for more
                self.yielded(&f);
                Poll::Ready(Some(Ok(f)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && self.error.is_none() && self.rx.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

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
        let out = read_ahead(body, Held(released.clone()), CFG);
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
        let out = read_ahead(body, Held(released.clone()), CFG);
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
        let mut out = read_ahead(body, Held(released.clone()), CFG);
        for _ in 0..4 {
            tx.send(data(1024)).await.unwrap(); // more than the buffer holds
        }
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(!released.load(Ordering::SeqCst), "still inside the stall");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(released.load(Ordering::SeqCst), "let go after the stall");
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            tx.is_closed(),
            "cancelled at send_timeout: the instance's body dropped"
        );
        let mut frames = 0;
        let err = loop {
            match out.frame().await {
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => break e,
                None => panic!("ended cleanly"),
            }
        };
        assert!(frames >= 1, "what was buffered is still delivered first");
        assert!(err.to_string().contains("send_timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_gets_everything_in_order() {
        let (body, tx) = instance();
        let out = read_ahead(body, (), CFG);
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
        let out = read_ahead(body, Held(released.clone()), CFG);
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
