//! Active health checks (`[[http_service.checks]]`): each local instance is probed on its own
//! schedule; a failing instance takes no new work here and is gossiped unhealthy, so every node
//! stops sending it work; it comes back on the first passing check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::Check;
use crate::local::Instance;
use crate::state::NodeState;

/// How often the scheduler looks for due checks.
const TICK: Duration = Duration::from_millis(100);

/// One check of one instance: true if it answered 2xx/3xx within the timeout. It speaks what
/// the app's requests speak: HTTP/1.1 with `Host: <app>`, or HTTP/2 with prior knowledge and
/// `:authority` `<app>` when `h2` (the app's `h2_backend`), since an h2-only server (gRPC) would
/// refuse an HTTP/1.1 check.
pub async fn probe(inst: &Instance, check: &Check, h2: bool) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(inst.addr).await.ok()?;
        let io = TokioIo::new(stream);
        let req = Request::builder()
            .method(check.method.to_ascii_uppercase().as_str())
            .header("user-agent", "petrel-health-check");
        let resp = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let req = req
                .uri(format!("http://{}{}", inst.app, check.path))
                .body(Empty::<Bytes>::new())
                .ok()?;
            sender.send_request(req).await.ok()?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
            tokio::spawn(conn);
            let req = req
                .uri(check.path.as_str())
                .header("host", &*inst.app)
                .body(Empty::<Bytes>::new())
                .ok()?;
            sender.send_request(req).await.ok()?
        };
        Some(resp.status().is_success() || resp.status().is_redirection())
    };
    tokio::time::timeout(check.timeout.get(), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Runs every local instance's checks until the drain starts.
/// Checks are read from the route table on every tick, so a reload changes them at once.
pub async fn run(node: Arc<NodeState>) {
    // (instance id, check index) → next due time (node clock, ms)
    let mut due: HashMap<(Arc<str>, usize), u64> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            biased;
            _ = node.shutdown.draining() => return,
            _ = tick.tick() => {}
        }
        let now = node.now_ms();
        let local = node.local.load();
        let routes = node.routes.load();
        for inst in local.all() {
            let Some(app) = routes.by_name(&inst.app) else {
                continue;
            };
            let (list, h2) = (&app.checks, app.h2_backend);
            let added = inst.added_ms.load(std::sync::atomic::Ordering::Relaxed);
            if added == u64::MAX {
                inst.added_ms
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            for (i, check) in list.iter().enumerate() {
                let key = (inst.id.clone(), i);
                let next = *due.entry(key.clone()).or_insert(now);
                if now < next {
                    continue;
                }
                due.insert(key, now + check.interval.get().as_millis() as u64);
                let in_grace = now < added + check.grace_period.get().as_millis() as u64;
                let (inst, check) = (inst.clone(), check.clone());
                tokio::spawn(async move {
                    let ok = probe(&inst, &check, h2).await;
                    if in_grace && !ok {
                        return; // failures during the grace period do not count
                    }
                    if inst.set_check_result(ok) {
                        if ok {
                            tracing::info!(instance = %inst.id, "health check passing again: back in service");
                        } else {
                            tracing::warn!(instance = %inst.id, path = %check.path, "health check failing: no new work");
                        }
                    }
                });
            }
        }
        due.retain(|(id, _), _| local.get(id).is_some());
    }
}
