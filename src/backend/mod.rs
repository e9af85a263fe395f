//! The built-in origin (`petrel backend`, SPEC §7): used by the demo, the tests and the benches.

mod handlers;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Counters shown by `/stats`.
#[derive(Default)]
pub struct Stats {
    inflight: AtomicU64,
    max_inflight: AtomicU64,
    served: AtomicU64,
    /// Set by `/health?set=fail`, cleared by `/health?set=ok`.
    failing: std::sync::atomic::AtomicBool,
}

impl Stats {
    fn enter(self: &Arc<Self>) -> InflightGuard {
        let now = self.inflight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_inflight.fetch_max(now, Ordering::AcqRel);
        InflightGuard(self.clone())
    }
}

/// Counts one request (or one open WebSocket) as in flight until dropped.
pub struct InflightGuard(Arc<Stats>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// One backend: its id and counters.
pub struct Backend {
    /// Put in `X-Backend-Id` and bodies.
    pub id: String,
    stats: Arc<Stats>,
}

/// Binds `addr` and returns the bound address and a future serving it forever.
pub async fn bind(
    addr: SocketAddr,
    id: String,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let backend = Arc::new(Backend {
        id,
        stats: Arc::default(),
    });
    Ok((local, serve(listener, backend)))
}

async fn serve(listener: TcpListener, backend: Arc<Backend>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(4096);
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "backend accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (b, builder) = (backend.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let b = b.clone();
                async move { Ok::<_, Infallible>(handlers::handle(b, req).await) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}
