//! Splices two upgraded byte streams (a WebSocket's client side and instance side), for as long as
//! both live. Either side may be a hyper upgrade or a raw stream (a QUIC backhaul stream).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::wsframe::{close_to_client, close_to_server, FrameTracker};

use super::side::read_some;
use super::side::Side;
#[cfg(test)]
use super::side::RELAY_BUF;
use crate::telemetry::node_metrics;

/// After one side has closed, how long the other direction may still deliver what is in flight
/// (a close frame, the last output) before both are closed.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a splice ends besides either side closing.
#[derive(Clone)]
pub struct Ending {
    /// Cancelled when the drain deadline passes: the splice closes at the next frame boundary.
    pub cut: CancellationToken,
    /// The upgrade is a WebSocket: frames are tracked and a close frame (1001) goes both ways on a cut.
    pub websocket: bool,
}

impl Ending {
    /// The ending for a 101 response with these headers, cut by `shutdown`'s deadline.
    pub fn for_response(headers: &http::HeaderMap, shutdown: &crate::shutdown::Shutdown) -> Self {
        let websocket = headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        Self {
            cut: shutdown.cut_token(),
            websocket,
        }
    }
}

/// Waits for both sides to be ready, then copies bytes both ways until either closes.
/// `hold` (a local instance's admission slot: one unit of its load) is held for the socket's
/// whole life. Returns the bytes relayed from the client and to the client.
pub async fn splice<H: Send + 'static>(
    client: Side,
    instance: Side,
    hold: H,
    request_id: String,
    ending: Ending,
) -> (u64, u64) {
    let (client, instance) = tokio::join!(client.ready(), instance.ready());
    let (client, instance) = match (client, instance) {
        (Ok(c), Ok(i)) => (c, i),
        (c, i) => {
            tracing::warn!(
                request_id,
                client_ok = c.is_ok(),
                instance_ok = i.is_ok(),
                "upgrade did not complete on both sides"
            );
            return (0, 0);
        }
    };
    let gauge = &node_metrics().websockets;
    gauge.increment(1.0);
    let relayed = pipe(client, instance, HALF_CLOSE_GRACE, &ending).await;
    tracing::debug!(
        request_id,
        cut = ending.cut.is_cancelled(),
        "upgraded connection closed"
    );
    gauge.decrement(1.0);
    drop(hold);
    relayed
}

/// Copies both ways; when one direction ends, its write side is shut down and the other direction
/// gets `grace` to finish. A cut ends both directions at their next frame boundary.
pub async fn pipe<A, B>(a: A, b: B, grace: Duration, ending: &Ending) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let frames = || ending.websocket.then(FrameTracker::default);
    // Bytes each way, counted as they go, so a direction cut by the grace still counts.
    let (sent_up, sent_down) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = relay(
        ar,
        bw,
        frames(),
        close_to_server(rand::random()),
        &ending.cut,
        &sent_up,
    );
    let down = relay(br, aw, frames(), close_to_client(), &ending.cut, &sent_down);
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(grace, &mut down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(grace, &mut up).await; }
    }
    (
        sent_up.load(Ordering::Relaxed),
        sent_down.load(Ordering::Relaxed),
    )
}

/// One direction: copy until EOF, an error, or a cut at a frame boundary (then `close`, if frames
/// are tracked); the write side is shut down in every case. Adds the bytes written to `sent`.
async fn relay<R, W>(
    mut r: R,
    mut w: W,
    mut frames: Option<FrameTracker>,
    close: Vec<u8>,
    cut: &CancellationToken,
    sent: &AtomicU64,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let boundary = |f: &Option<FrameTracker>| f.as_ref().is_none_or(FrameTracker::at_boundary);
    'copy: loop {
        let buf = tokio::select! {
            biased;
            _ = cut.cancelled(), if boundary(&frames) => break 'copy,
            read = read_some(&mut r) => match read {
                Ok(b) if !b.is_empty() => b,
                _ => {
                    let _ = w.shutdown().await;
                    return;
                }
            },
        };
        let n = buf.len();
        let mut off = 0;
        while off < n {
            let k = frames.as_mut().map_or(n - off, |f| f.advance(&buf[off..n]));
            if w.write_all(&buf[off..off + k]).await.is_err() {
                return;
            }
            off += k;
            sent.fetch_add(k as u64, Ordering::Relaxed);
            if cut.is_cancelled() && boundary(&frames) {
                break 'copy;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    if frames.is_some() {
        let _ = w.write_all(&close).await;
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn many_pipes_on_one_thread_relay_more_than_a_buffer_each_intact() {
        // Every pipe shares the thread's read buffer; interleaved reads must not mix their bytes.
        let mut tasks = Vec::new();
        for p in 0..8u8 {
            let (client, mut client_peer) = tokio::io::duplex(4096);
            let (inst, mut inst_peer) = tokio::io::duplex(4096);
            tokio::spawn(async move { pipe(client, inst, Duration::from_secs(1), &plain()).await });
            tasks.push(tokio::spawn(async move {
                let sent: Vec<u8> = (0..3 * RELAY_BUF + 17).map(|k| (k as u8) ^ p).collect();
                let expect = sent.clone();
                let writer = tokio::spawn(async move {
                    client_peer.write_all(&sent).await.unwrap();
                    client_peer
                });
                let mut got = vec![0u8; expect.len()];
                inst_peer.read_exact(&mut got).await.unwrap();
                assert!(got == expect, "pipe {p} delivered other bytes");
                writer.await.unwrap();
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("relayed in time")
                .unwrap();
        }
    }

    fn plain() -> Ending {
        Ending {
            cut: CancellationToken::new(),
            websocket: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_side_closing_ends_the_pipe_after_the_grace() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (inst, mut inst_peer) = tokio::io::duplex(1024);
        let task =
            tokio::spawn(async move { pipe(client, inst, Duration::from_secs(2), &plain()).await });
        client_peer.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        inst_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        drop(inst_peer); // the instance goes away; the client never closes
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("pipe ends")
            .unwrap();
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "client sees EOF");
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn a_cut_waits_for_the_frame_then_sends_close_both_ways() {
        let (client, mut client_peer) = tokio::io::duplex(1 << 16);
        let (inst, mut inst_peer) = tokio::io::duplex(1 << 16);
        let ending = Ending {
            cut: CancellationToken::new(),
            websocket: true,
        };
        let cut = ending.cut.clone();
        let task =
            tokio::spawn(async move { pipe(client, inst, Duration::from_secs(2), &ending).await });
        // The instance starts a 10-byte text frame but sends only half of it before the cut.
        inst_peer
            .write_all(&[0x81, 10, b'h', b'e', b'l', b'l', b'o'])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        cut.cancel();
        tokio::time::sleep(Duration::from_millis(10)).await;
        inst_peer.write_all(b"12345").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client_peer.read_to_end(&mut got))
            .await
            .expect("client side closes")
            .unwrap();
        assert_eq!(
            &got[..12],
            &[0x81, 10, b'h', b'e', b'l', b'l', b'o', b'1', b'2', b'3', b'4', b'5']
        );
        assert_eq!(
            &got[12..],
            &close_to_client()[..],
            "then one close frame, 1001"
        );
        let mut to_inst = Vec::new();
        inst_peer.read_to_end(&mut to_inst).await.unwrap();
        assert_eq!(
            &to_inst[..2],
            &[0x88, 0x82],
            "a masked close frame reaches the instance"
        );
        task.await.unwrap();
    }
}
