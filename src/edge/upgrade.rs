//! Splices two upgraded byte streams (a WebSocket's client side and instance side), for as long as
//! both live. Either side may be a hyper upgrade or a raw stream (a QUIC backhaul stream).

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::local::Slot;
use crate::telemetry::node_metrics;

/// After one side has closed, how long the other direction may still deliver what is in flight
/// (a close frame, the last output) before both are closed.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Any byte stream a connection can run on (TCP, TLS, an upgraded HTTP connection, a QUIC stream).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One side of a splice.
pub enum Side {
    /// An HTTP/1.1 upgrade that completes once the 101 is through.
    Hyper(OnUpgrade),
    /// A stream that is already raw bytes.
    Stream(Box<dyn Io>),
    /// A stream handed over once the transport has written its own 101 head (QUIC backhaul).
    Later(tokio::sync::oneshot::Receiver<Box<dyn Io>>),
}

impl Side {
    async fn ready(self) -> Result<Box<dyn Io>, String> {
        match self {
            Side::Hyper(on) => Ok(Box::new(TokioIo::new(on.await.map_err(|e| e.to_string())?))),
            Side::Stream(s) => Ok(s),
            Side::Later(rx) => rx.await.map_err(|_| "stream never handed over".to_string()),
        }
    }
}

/// Waits for both sides to be ready, then copies bytes both ways until either closes.
/// The slot (one unit of the instance's load) is held for the socket's whole life.
pub async fn splice(client: Side, instance: Side, slot: Option<Slot>, request_id: String) {
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
