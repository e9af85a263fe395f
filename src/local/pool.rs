//! Pooled connections to local instances: HTTP/1.1 keep-alive senders and one multiplexed h2 sender each.
//!
//! Connecting is a separate step from sending so that a failed connect leaves the request (and its
//! body) untouched in the caller's hands: retrying it elsewhere is always safe. An idle HTTP/1.1
//! connection is reused only while it is younger than the pool's idle timeout and, when it has
//! been idle for a while, only if a peek at its socket shows the instance has not closed it.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::io::{idle_and_open, OriginIo};
use super::Instance;
use crate::body::Body;

/// Idle HTTP/1.1 connections kept per instance. An HTTP/2 client can have hundreds of streams in
/// flight, each on its own instance connection: a smaller pool would close and reopen them at
/// that rate (and a connect storm overflows a small origin's accept queue).
const MAX_IDLE_H1: usize = 1024;

/// A connection idle at least this long has its socket peeked before reuse. No origin closes an
/// idle connection sooner; connections reused back to back under load skip the system call.
const PEEK_AFTER: Duration = Duration::from_millis(1);

/// Timeouts for reaching an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Time to open a TCP connection (and finish the h2 handshake).
    pub connect: Duration,
    /// Time from sending the request to the response head.
    pub response: Duration,
    /// An idle pooled HTTP/1.1 connection older than this is closed instead of reused.
    pub pool_idle: Duration,
}

/// An idle HTTP/1.1 connection.
struct Idle {
    sender: http1::SendRequest<Body>,
    stream: Arc<TcpStream>,
    since: Instant,
}

/// Idle connections of one instance.
#[derive(Default)]
pub(super) struct ConnPool {
    h1: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
}

/// Why no connection to an instance could be had; nothing was sent, so a retry elsewhere is safe.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish in time.
    #[error("connect to {0} timed out after {1:?}")]
    Timeout(std::net::SocketAddr, Duration),
    /// The TCP connect failed (refused, unreachable).
    #[error("connect to {0} failed: {1}")]
    Io(std::net::SocketAddr, io::Error),
    /// The HTTP handshake failed (h2 preface refused).
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(std::net::SocketAddr, hyper::Error),
    /// A new connection closed before it took the request.
    #[error("connection to {0} closed before the request was sent")]
    ClosedEarly(std::net::SocketAddr),
}

/// A connection ready to carry one request to an instance.
pub enum Upstream {
    /// HTTP/1.1: exclusive until the response body ends, then back to the pool.
    H1 {
        /// The connection.
        sender: http1::SendRequest<Body>,
        /// A second handle on its socket, for the pool's liveness peek.
        stream: Arc<TcpStream>,
        /// Its instance, whose pool it returns to.
        inst: Arc<Instance>,
        /// Taken from the pool (it carried earlier requests).
        reused: bool,
    },
    /// HTTP/2: shared, multiplexed.
    H2 {
        /// The connection.
        sender: http2::SendRequest<Body>,
        /// It carried earlier requests.
        reused: bool,
    },
}

/// The outcome of sending on an `Upstream`.
pub enum SendError {
    /// The connection turned out dead before the request went out.
    NotSent,
    /// The request (or part of it) went out and then the exchange failed.
    Failed(hyper::Error),
}

impl Instance {
    /// A pooled or new connection for HTTP/1.1 (`h2 = false`) or HTTP/2; `fresh` skips the pool.
    pub async fn connect(
        self: &Arc<Self>,
        h2: bool,
        fresh: bool,
        t: &UpstreamTimeouts,
    ) -> Result<Upstream, ConnectError> {
        if !fresh {
            if let Some(up) = self.checkout(h2, t.pool_idle) {
                return Ok(up);
            }
        }
        // Boxed: the connect and handshake futures are large, and a pooled request never needs them.
        Box::pin(self.dial(h2, t.connect)).await
    }

    /// A new connection, handshake done.
    async fn dial(self: &Arc<Self>, h2: bool, timeout: Duration) -> Result<Upstream, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Err(_) => return Err(ConnectError::Timeout(self.addr, timeout)),
            Ok(Err(e)) => return Err(ConnectError::Io(self.addr, e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        if h2 {
            let io = TokioIo::new(stream);
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10))
                .handshake(io)
                .await
                .map_err(|e| ConnectError::Handshake(self.addr, e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "h2 instance connection ended");
                }
            });
            *self.pool.h2.lock().expect("pool lock") = Some(sender.clone());
            Ok(Upstream::H2 {
                sender,
                reused: false,
            })
        } else {
            let stream = Arc::new(stream);
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(OriginIo::new(stream.clone())))
                .await
                .map_err(|e| ConnectError::Handshake(self.addr, e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "h1 instance connection ended");
                }
            });
            Ok(Upstream::H1 {
                sender,
                stream,
                inst: self.clone(),
                reused: false,
            })
        }
    }

    fn checkout(self: &Arc<Self>, h2: bool, max_idle: Duration) -> Option<Upstream> {
        if h2 {
            let guard = self.pool.h2.lock().expect("pool lock");
            return guard
                .as_ref()
                .filter(|s| !s.is_closed())
                .cloned()
                .map(|sender| Upstream::H2 {
                    sender,
                    reused: true,
                });
        }
        let now = Instant::now();
        let mut idle = self.pool.h1.lock().expect("pool lock");
        while let Some(c) = idle.pop() {
            let age = now.saturating_duration_since(c.since);
            if age >= max_idle {
                // The newest is too old, so every one below it is: close them all.
                idle.clear();
                return None;
            }
            if c.sender.is_closed() || !c.sender.is_ready() {
                continue;
            }
            if age >= PEEK_AFTER && !idle_and_open(&c.stream) {
                continue;
            }
            return Some(Upstream::H1 {
                sender: c.sender,
                stream: c.stream,
                inst: self.clone(),
                reused: true,
            });
        }
        None
    }

    fn checkin(&self, sender: http1::SendRequest<Body>, stream: Arc<TcpStream>) {
        let mut idle = self.pool.h1.lock().expect("pool lock");
        if idle.len() < MAX_IDLE_H1 {
            idle.push(Idle {
                sender,
                stream,
                since: Instant::now(),
            });
        }
    }
}

impl Upstream {
    /// True for a connection that carried earlier requests (so the instance may have closed it
    /// while the request was on its way).
    pub fn reused(&self) -> bool {
        match self {
            Upstream::H1 { reused, .. } | Upstream::H2 { reused, .. } => *reused,
        }
    }

    /// Sends `req`; an HTTP/1.1 connection returns to the pool once its response has been read.
    pub async fn send(self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let result = match self {
            Upstream::H1 {
                mut sender,
                stream,
                inst,
                ..
            } => {
                let r = sender.try_send_request(req).await;
                if matches!(&r, Ok(resp) if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                {
                    tokio::spawn(async move {
                        if sender.ready().await.is_ok() {
                            inst.checkin(sender, stream);
                        }
                    });
                }
                r
            }
            Upstream::H2 { mut sender, .. } => sender.try_send_request(req).await,
        };
        result.map_err(|mut e| match e.take_message() {
            Some(_) => SendError::NotSent,
            None => SendError::Failed(e.into_error()),
        })
    }
}
