//! Splices an upgraded client connection (WebSocket) to the instance's, for as long as both live.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::local::Slot;
use crate::telemetry::node_metrics;

/// After one side has closed, how long the other direction may still deliver what is in flight
/// (a close frame, the last output) before both are closed.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Waits for both sides to finish the upgrade, then copies bytes both ways until either closes.
/// The slot (one unit of the instance's load) is held for the socket's whole life.
pub async fn splice(
    client: OnUpgrade,
    instance: OnUpgrade,
    slot: Option<Slot>,
    request_id: String,
) {
    let (client, instance) = tokio::join!(client, instance);
    let (client, instance) = match (client, instance) {
        (Ok(c), Ok(i)) => (TokioIo::new(c), TokioIo::new(i)),
        (c, i) => {
            tracing::warn!(
                request_id,
                client_ok = c.is_ok(),
                instance_ok = i.is_ok(),
                "upgrade did not complete on both sides"
            );
            return;
        }
    };
    let gauge = &node_metrics().websockets;
    gauge.increment(1.0);
    pipe(client, instance, HALF_CLOSE_GRACE).await;
    tracing::debug!(request_id, "upgraded connection closed");
    gauge.decrement(1.0);
    drop(slot);
}

/// Copies both ways; when one direction ends, its write side is shut down and the other direction
/// gets `grace` to finish.
pub async fn pipe<A, B>(a: A, b: B, grace: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = async {
        let _ = tokio::io::copy(&mut ar, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(grace, &mut down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(grace, &mut up).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn one_side_closing_ends_the_pipe_after_the_grace() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (inst, mut inst_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(pipe(client, inst, Duration::from_secs(2)));
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
