//! Client listeners: accept, serve HTTP/1.1 and h2c on one port, drain gracefully on the shutdown signal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::proxy;
use crate::local::{Instance, Slot};
use crate::state::NodeState;
use crate::telemetry::node_metrics;

/// Per client connection: addresses, and the instance slots held under `type = "connections"`.
pub struct ConnCtx {
    /// Client address.
    pub peer: SocketAddr,
    /// Our listener address.
    pub local: SocketAddr,
    held: Mutex<Vec<Slot>>,
    /// Set when the first request head has arrived.
    first: tokio::sync::watch::Sender<bool>,
}

impl ConnCtx {
    fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            peer,
            local,
            held: Mutex::new(Vec::new()),
            first: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Marks that a request arrived on this connection.
    fn saw_request(&self) {
        self.first
            .send_if_modified(|seen| !std::mem::replace(seen, true));
    }

    /// Resolves once a request has arrived, or after `limit`.
    async fn first_request(&self, limit: Duration) {
        let mut rx = self.first.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|seen| *seen)).await;
    }

    /// A reachable instance of `app` this connection already holds a slot on.
    pub fn held_instance(&self, app: &str, now_ms: u64) -> Option<Arc<Instance>> {
        let held = self.held.lock().expect("conn lock");
        held.iter()
            .map(Slot::instance)
            .find(|i| &*i.app == app && i.accepts_work(now_ms))
            .cloned()
    }

    /// True if this connection holds a slot on `inst`.
    pub fn holds(&self, inst: &Arc<Instance>) -> bool {
        let held = self.held.lock().expect("conn lock");
        held.iter().any(|s| Arc::ptr_eq(s.instance(), inst))
    }

    /// Keeps `slot` until the connection closes.
    pub fn hold(&self, slot: Slot) {
        self.held.lock().expect("conn lock").push(slot);
    }
}

/// The next accepted connection (nodelay set), or `None` once the drain starts. Accept errors
/// (EMFILE and friends) back off instead of spinning; the listener stays.
pub async fn next_conn(
    listener: &TcpListener,
    shutdown: &crate::shutdown::Shutdown,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.draining() => {
                // Connections the kernel already completed would be reset when the listener
                // closes: take them (their first request is still answered), then stop.
                return match listener.accept().now_or_never() {
                    Some(Ok((s, peer))) => {
                        let _ = s.set_nodelay(true);
                        Some((s, peer))
                    }
                    _ => None,
                };
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

/// Serves `listener` until the drain starts, then lets open connections finish (h1 closes after
/// the current response, h2 sends GOAWAY). Every connection is a counted task of `node.shutdown`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeState>,
    max_header_bytes: usize,
    header_read_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_header_list_size(max_header_bytes as u32)
        .max_concurrent_streams(1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let local = listener.local_addr().ok();
    loop {
        let Some((stream, peer)) = next_conn(&listener, &node.shutdown, "edge").await else {
            break;
        };
        let local_addr = stream.local_addr().ok().or(local).unwrap_or(peer);
        let ctx = Arc::new(ConnCtx::new(peer, local_addr));
        let (svc_node, svc_ctx) = (node.clone(), ctx.clone());
        let svc = service_fn(move |req| {
            let (node, ctx) = (svc_node.clone(), svc_ctx.clone());
            ctx.saw_request();
            async move { Ok::<_, Infallible>(proxy::handle(node, ctx, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let shutdown = node.shutdown.clone();
        node.shutdown.spawn(async move {
            let gauge = &node_metrics().http_connections;
            gauge.increment(1.0);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = shutdown.draining() => None,
            };
            let result = match ended {
                Some(r) => r,
                None => {
                    // A connection accepted just before the drain may not have sent its request
                    // yet: wait for it (briefly) so it is answered, not closed unread.
                    tokio::select! {
                        r = conn.as_mut() => r,
                        _ = ctx.first_request(FIRST_REQUEST_GRACE) => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            gauge.decrement(1.0);
        });
    }
    drop(listener);
    tracing::info!(listener = ?local, "listener closed; draining open connections");
}

/// On drain, how long a connection that has not sent a request yet gets to send one.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
