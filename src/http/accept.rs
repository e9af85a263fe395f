//! Accepting client and backhaul connections, and emptying the kernel's accept queue at drain.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::shutdown::Shutdown;

/// The next accepted connection (nodelay set), or `None` once the drain has started and the
/// kernel's accept queue is empty. Accept errors (EMFILE and friends) back off instead of
/// spinning; the listener stays.
///
/// At drain, connections the kernel already completed would be reset when the listener closes,
/// after the client may have sent its request. So once draining, each call takes one queued
/// connection with a direct `accept(2)` (no wait on the reactor's readiness) until the queue is
/// empty. After a hand-over the new process owns the same listening socket and takes the queue,
/// so this returns `None` at once.
pub async fn next_conn(
    listener: &TcpListener,
    shutdown: &Shutdown,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.draining() => {
                if shutdown.is_handed_over() {
                    return None;
                }
                return take_queued(listener, what);
            }
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    return Some((s, peer));
                }
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Accepting under a limit on open connections (SPEC §6 `max_connections`): at the limit,
/// accepting pauses until a connection ends. The permit travels with the connection.
pub struct Limited {
    slots: Arc<Semaphore>,
    max: usize,
    local: Option<SocketAddr>,
}

impl Limited {
    /// At most `max` connections open at once on the listener at `local` (for the log).
    pub fn new(max: usize, local: Option<SocketAddr>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            local,
        }
    }

    /// The next connection and its slot, or `None` once the drain has started and every
    /// connection the kernel had queued was taken. At drain a queued connection beyond the limit
    /// is not waited for: it is reset when the listener closes.
    pub async fn next(
        &mut self,
        listener: &TcpListener,
        shutdown: &Shutdown,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let permit = if shutdown.is_draining() {
            self.slots.clone().try_acquire_owned().ok()?
        } else {
            if self.slots.available_permits() == 0 {
                tracing::warn!(listener = ?self.local, limit = self.max, "connection limit reached; accepting pauses");
            }
            tokio::select! {
                biased;
                _ = shutdown.draining() => self.slots.clone().try_acquire_owned().ok()?,
                p = self.slots.clone().acquire_owned() => p.ok()?,
            }
        };
        let (stream, peer) = next_conn(listener, shutdown, "edge").await?;
        Some((stream, peer, permit))
    }
}

/// One connection already in the accept queue, or `None` when it is empty (or accepting fails).
fn take_queued(listener: &TcpListener, what: &str) -> Option<(TcpStream, SocketAddr)> {
    let sock = socket2::SockRef::from(listener);
    loop {
        match sock.accept() {
            Ok((s, addr)) => {
                let Some(peer) = addr.as_socket() else {
                    continue;
                };
                let stream = s
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(s.into()));
                match stream {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Some((stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(listener = what, %peer, error = %e, "queued connection dropped at drain");
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed at drain; queued connections are reset");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections that wait in the kernel queue when the drain starts are all handed out, with
    /// what their clients already sent, and then the listener reports the end.
    #[tokio::test]
    async fn drain_takes_every_queued_connection_then_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for i in 0..5u8 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&[i]).await.unwrap();
            clients.push(c);
        }
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let mut got = Vec::new();
        for _ in 0..10 {
            let next = tokio::time::timeout(
                Duration::from_secs(5),
                next_conn(&listener, &shutdown, "test"),
            )
            .await
            .expect("next_conn does not wait at drain");
            let Some((mut s, _)) = next else { break };
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
                .await
                .expect("queued client's bytes arrive")
                .unwrap();
            got.push(b[0]);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// Through the limited loop the edge uses: a drain that starts while connections wait in the
    /// queue still serves all of them (the loop used to stop at the drain and reset them), and a
    /// queued one beyond the connection limit is left.
    #[tokio::test]
    async fn limited_drain_takes_the_queue_up_to_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let mut conns = Limited::new(3, Some(addr));
        let mut held = Vec::new();
        for _ in 0..10 {
            let next =
                tokio::time::timeout(Duration::from_secs(5), conns.next(&listener, &shutdown))
                    .await
                    .expect("no wait at drain");
            let Some(c) = next else { break };
            held.push(c);
        }
        assert_eq!(
            held.len(),
            3,
            "every queued connection within the limit of 3"
        );
    }

    /// After a hand-over the queue belongs to the new process: nothing is taken.
    #[tokio::test]
    async fn hand_over_leaves_the_queue() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let shutdown = Shutdown::new();
        shutdown.hand_over();
        assert!(next_conn(&listener, &shutdown, "test").await.is_none());
        let (s, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the connection is still queued")
            .unwrap();
        drop(s);
    }
}
