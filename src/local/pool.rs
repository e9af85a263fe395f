//! Pooled connections to local instances: HTTP/1.1 keep-alive senders and one multiplexed h2 sender each.
//!
//! Connecting is a separate step from sending so that a failed connect leaves the request (and its
//! body) untouched in the caller's hands: retrying it elsewhere is always safe.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::Instance;
use crate::body::Body;

const MAX_IDLE_H1: usize = 256;

/// Idle connections of one instance.
#[derive(Default)]
pub(super) struct ConnPool {
    h1: Mutex<Vec<http1::SendRequest<Body>>>,
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
    H1(http1::SendRequest<Body>, Arc<Instance>),
    /// HTTP/2: shared, multiplexed.
    H2(http2::SendRequest<Body>),
}

/// The outcome of sending on an `Upstream`.
pub enum SendError {
    /// The connection turned out dead before the request went out; here it is back.
    NotSent(Box<Request<Body>>),
    /// The request (or part of it) went out and then the exchange failed.
    Failed(hyper::Error),
}

impl Instance {
    /// A pooled or new connection for HTTP/1.1 (`h2 = false`) or HTTP/2; `fresh` skips the pool.
    pub async fn connect(
        self: &Arc<Self>,
        h2: bool,
        fresh: bool,
        timeout: Duration,
    ) -> Result<Upstream, ConnectError> {
        if !fresh {
            if let Some(up) = self.checkout(h2) {
                return Ok(up);
            }
        }
        // Boxed: the connect and handshake futures are large, and a pooled request never needs them.
        Box::pin(self.dial(h2, timeout)).await
    }

    /// A new connection, handshake done.
    async fn dial(self: &Arc<Self>, h2: bool, timeout: Duration) -> Result<Upstream, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Err(_) => return Err(ConnectError::Timeout(self.addr, timeout)),
            Ok(Err(e)) => return Err(ConnectError::Io(self.addr, e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        if h2 {
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
            Ok(Upstream::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| ConnectError::Handshake(self.addr, e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "h1 instance connection ended");
                }
            });
            Ok(Upstream::H1(sender, self.clone()))
        }
    }

    fn checkout(self: &Arc<Self>, h2: bool) -> Option<Upstream> {
        if h2 {
            let guard = self.pool.h2.lock().expect("pool lock");
            return guard
                .as_ref()
                .filter(|s| !s.is_closed())
                .cloned()
                .map(Upstream::H2);
        }
        let mut idle = self.pool.h1.lock().expect("pool lock");
        while let Some(s) = idle.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(Upstream::H1(s, self.clone()));
            }
        }
        None
    }

    fn checkin(&self, s: http1::SendRequest<Body>) {
        let mut idle = self.pool.h1.lock().expect("pool lock");
        if idle.len() < MAX_IDLE_H1 {
            idle.push(s);
        }
    }
}

impl Upstream {
    /// Sends `req`; an HTTP/1.1 connection returns to the pool once its response has been read.
    pub async fn send(self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let result = match self {
            Upstream::H1(mut s, inst) => {
                let r = s.try_send_request(req).await;
                if matches!(&r, Ok(resp) if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                {
                    tokio::spawn(async move {
                        if s.ready().await.is_ok() {
                            inst.checkin(s);
                        }
                    });
                }
                r
            }
            Upstream::H2(mut s) => s.try_send_request(req).await,
        };
        result.map_err(|mut e| match e.take_message() {
            Some(req) => SendError::NotSent(Box::new(req)),
            None => SendError::Failed(e.into_error()),
        })
    }
}
