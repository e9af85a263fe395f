//! Active health checks (`[[http_service.checks]]`): each local instance is probed on its own
//! schedule; a failing instance takes no new work here and is gossiped unhealthy, so every node
//! stops sending it work; it comes back on the first passing check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Instance;
use crate::config::Check;
use crate::state::NodeState;

/// How often the scheduler looks for due checks.
const TICK: Duration = Duration::from_millis(100);

/// One check of one instance: true if it answered 2xx/3xx within the timeout.
pub async fn probe(inst: &Instance, check: &Check) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(inst.addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(check.method.as_str())
            .uri(check.path.as_str())
            .header("host", &*inst.app)
            .header("user-agent", "petrel-health-check")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
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
            let Some(list) = routes.by_name(&inst.app).map(|a| &a.checks) else {
                continue;
            };
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
                    let ok = probe(&inst, &check).await;
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
