//! Client listeners: accept, serve HTTP/1.1 and h2c on one port, drain gracefully on the shutdown signal.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::conn::{ConnCtx, Limits, TlsInfo};
use super::proxy;
use crate::state::NodeState;
use crate::telemetry::node_metrics;

/// Serves `listener` (TLS with `tls`) until the drain starts, then lets open connections finish
/// (h1 closes after the current response, h2 sends GOAWAY). Every connection is a counted task
/// of `node.shutdown`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeState>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        // One buffer and one `send` per response instead of `writev` of head and body: measured
        // in benches/per-request.sh (see README, "Benchmarks").
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(limits.h2_max_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let local = listener.local_addr().ok();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut conns = crate::http::Limited::new(limits.max_connections, local);
    while let Some((stream, peer, permit)) = conns.next(&listener, &node.shutdown).await {
        let local_addr = stream.local_addr().ok().or(local).unwrap_or(peer);
        let (node, builder, acceptor) = (node.clone(), builder.clone(), acceptor.clone());
        node.clone().shutdown.spawn(async move {
            let _permit = permit;
            let gauge = &node_metrics().http_connections;
            gauge.increment(1.0);
            match acceptor {
                None => {
                    let ctx = Arc::new(ConnCtx::new(peer, local_addr, None, limits));
                    run_conn(stream, &builder, node, ctx, limits.header_read_timeout).await;
                }
                Some(acceptor) => {
                    // Boxed: TLS state is large, and a plaintext connection's task need not
                    // carry room for it.
                    Box::pin(async move {
                        if let Some((tls, info)) =
                            handshake(&acceptor, stream, limits.header_read_timeout, peer).await
                        {
                            let ctx = Arc::new(ConnCtx::new(peer, local_addr, Some(info), limits));
                            run_conn(tls, &builder, node, ctx, limits.header_read_timeout).await;
                        }
                    })
                    .await
                }
            }
            gauge.decrement(1.0);
        });
    }
    drop(listener);
    tracing::info!(listener = ?local, "listener closed; draining open connections");
}

/// The TLS handshake, bounded by `limit`; failures are counted by reason, never logged per client
/// above debug (a public edge sees scanners all day).
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    limit: Duration,
    peer: SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    TlsInfo,
)> {
    let reason = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            let info = TlsInfo {
                sni: conn.server_name().map(str::to_ascii_lowercase),
                alpn_h2: conn.alpn_protocol() == Some(b"h2"),
            };
            return Some((tls, info));
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            "handshake"
        }
        Err(_) => "timeout",
    };
    metrics::counter!(crate::telemetry::TLS_FAILURES, "reason" => reason).increment(1);
    None
}

/// Counts its request as cancelled unless forgotten once the response head is ready.
struct Cancelled(Option<Arc<ConnCtx>>);

pin_project_lite::pin_project! {
    /// A request's handler, counted as cancelled if dropped before it answers (h2 `RST_STREAM`,
    /// a closed connection), also before its first poll (an HTTP/1.1 client that sent a request
    /// and left at once). A struct, not an `async` block: the block would keep the handler's
    /// arguments beside its future, and the whole is moved into a box per request.
    struct Answering<F> {
        cancel: Cancelled,
        #[pin]
        handler: F,
    }
}

impl<F: Future> Future for Answering<F> {
    type Output = Result<F::Output, Infallible>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.handler.poll(cx));
        this.cancel.0 = None; // answered
        std::task::Poll::Ready(Ok(resp))
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(ctx) = self.0.take() {
            ctx.cancelled();
        }
    }
}

/// Serves HTTP on one accepted connection until it ends or the drain closes it. A connection
/// must deliver its first request head within `first_limit` (slowloris defence before hyper's
/// own header timer starts).
async fn run_conn<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    node: Arc<NodeState>,
    ctx: Arc<ConnCtx>,
    first_limit: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let peer = ctx.peer;
    let shutdown = node.shutdown.clone();
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let (node, ctx) = (node.clone(), svc_ctx.clone());
        ctx.saw_request();
        // Boxed: hyper keeps room for one in-flight request future per connection for as long
        // as the connection lives, so an idle keep-alive connection holds a pointer, not the
        // handler's whole state (several KiB). Built in its box, not copied there.
        crate::http::pin_boxed(Answering {
            cancel: Cancelled(Some(ctx.clone())),
            handler: proxy::handle(node, ctx, req),
        })
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // What ends a connection besides its own end. Each is polled only when its own waker fired
    // (`FuturesUnordered`), not every time the connection's task wakes for a request: a
    // `Notify` takes its lock on every poll, and `tokio::select!` polls every branch each time.
    // Both `Notify`s are woken with `notify_one`, which keeps a permit until these futures are
    // first polled; `notify_waiters` would be lost before that.
    let mut signals: FuturesUnordered<Pin<Box<dyn Future<Output = Signal> + Send + '_>>> =
        FuturesUnordered::new();
    signals.push(Box::pin(async {
        ctx.abusive.notified().await;
        Signal::Abusive
    }));
    signals.push(Box::pin(async {
        ctx.send_stalled.notified().await;
        Signal::SendStalled
    }));
    signals.push(Box::pin(async {
        shutdown.draining().await;
        Signal::Drain
    }));
    signals.push(Box::pin(async {
        // Resolves only if no request head arrived within the limit.
        ctx.first_request(first_limit).await;
        if ctx.has_seen_request() {
            std::future::pending::<()>().await;
        }
        Signal::NoFirstRequest
    }));
    let ended = tokio::select! {
        biased;
        r = conn.as_mut() => Some(r),
        Some(signal) = signals.next() => match signal {
            Signal::Abusive => {
                // Rapid reset: GOAWAY, then a short grace for streams already answered; the
                // cancelled ones have nothing left to say.
                tracing::warn!(%peer, limit = ctx.max_resets, "client cancelled too many requests; closing its connection");
                metrics::counter!(crate::telemetry::CONNS_CLOSED, "reason" => "rapid_reset").increment(1);
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_millis(500), conn.as_mut()).await;
                return;
            }
            Signal::SendStalled => {
                // A response the client took none of within send_timeout was cancelled; the
                // connection goes with it (nginx's send_timeout closes the connection too).
                // (Counted where the response was cancelled: hyper may end the connection
                // first, on the body's error.)
                tracing::info!(%peer, "client took none of a response within send_timeout; closing its connection");
                return;
            }
            Signal::Drain => None,
            Signal::NoFirstRequest => {
                // No request head in time (slowloris, or an idle scanner): close.
                tracing::debug!(%peer, "no request within the header timeout; closing");
                metrics::counter!(crate::telemetry::CONN_TIMEOUTS, "phase" => "first_request").increment(1);
                return;
            }
        },
    };
    drop(signals);
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
}

/// What closes a client connection from outside it (see `run_conn`).
enum Signal {
    /// The client cancelled too many requests (`edge.h2_max_resets_per_second`).
    Abusive,
    /// A response was cancelled at `edge.send_timeout`.
    SendStalled,
    /// The node began to drain.
    Drain,
    /// No request head arrived within the first-request limit.
    NoFirstRequest,
}

/// On drain, how long a connection that has not sent a request yet gets to send one.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_handler_fits_jemallocs_4_kib_fast_path() {
        // jemalloc serves sizes up to 4 KiB from its thread cache's fast path; the handler is
        // boxed per request (`run_conn`). (4,064 bytes in a release build, 4,096 in a test build.)
        fn boxed_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
            std::mem::size_of::<Answering<F>>()
        }
        let size = boxed_size(proxy::handle);
        assert!(size <= 4096, "the boxed handler takes {size} bytes");
    }

    #[tokio::test]
    async fn a_connection_is_told_to_close_past_its_cancel_limit_within_a_second() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let limits = Limits {
            max_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(1),
            max_connections: 1,
            h2_max_streams: 1,
            max_resets_per_second: 3,
        };
        let ctx = ConnCtx::new(addr, addr, None, limits);
        let told =
            |ctx: &ConnCtx| futures_util::FutureExt::now_or_never(ctx.abusive.notified()).is_some();
        for _ in 0..3 {
            ctx.cancelled();
        }
        assert!(!told(&ctx), "3 in a second is within the limit");
        ctx.cancelled();
        assert!(told(&ctx), "the 4th passes it");
        let off = ConnCtx::new(
            addr,
            addr,
            None,
            Limits {
                max_resets_per_second: 0,
                ..limits
            },
        );
        for _ in 0..1000 {
            off.cancelled();
        }
        assert!(!told(&off), "0 turns the check off");
    }
}
