//! Admin API, `/metrics` and dashboard, on a runtime of its own so it answers while the edge is saturated.

mod api;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::state::NodeState;

/// Runs the admin server on its own thread with a single-threaded runtime.
pub fn spawn(
    listener: std::net::TcpListener,
    node: Arc<NodeState>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("petrel-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "admin runtime failed to start");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin listener failed");
                        return;
                    }
                };
                loop {
                    let accepted = tokio::select! {
                        biased;
                        _ = node.shutdown.handed_over() => {
                            tracing::info!("admin listener handed over to the new process");
                            return;
                        }
                        a = listener.accept() => a,
                    };
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    };
                    let node = node.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let node = node.clone();
                            async move { Ok::<_, Infallible>(api::handle(&node, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_secs(10))
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        })
}
