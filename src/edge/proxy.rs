//! The proxy handler: Host → app → ordered candidates → admit, connect, send; reject or failed
//! connect moves on to the next candidate without waiting, up to the app's retry budget.

use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::body::{Finish, TimedUpload, Tracked};
use super::error::ProxyError;
use super::headers::{add_forwarding, strip_hop_by_hop, strip_internal, wants_upgrade, Forwarded};
use super::routes::normalize_host;
use super::server::ConnCtx;
use super::upgrade::splice;
use super::AppRoute;
use crate::balance::{self, Empty, Hints, View};
use crate::body::{boxed, Body};
use crate::config::LimitType;
use crate::local::{ConnectError, Instance, SendError, Slot, Upstream};
use crate::state::{EdgeSettings, NodeState};
use crate::telemetry::{node_metrics, RetryReason};

/// Handles one client request end to end; never fails (errors become SPEC §6 responses).
pub async fn handle(
    node: Arc<NodeState>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    let rid = node.request_id();
    let host = request_host(&req);
    let routes = node.routes.load();
    let app = match host.as_deref().map(|h| routes.lookup(h)) {
        Some(Some(app)) => app.clone(),
        other => {
            let err = match (other, host) {
                (None, _) | (_, None) => ProxyError::NoHost,
                (_, Some(h)) => ProxyError::NoRoute(h.chars().take(255).collect()),
            };
            let m = &node_metrics().unrouted;
            m.failure(err.phase());
            m.request(err.status().as_u16(), start.elapsed().as_secs_f64());
            return err.to_response(&rid);
        }
    };
    drop(routes);
    match forward(&node, &conn, &app, req, &rid, start).await {
        Ok(resp) => resp,
        Err(err) => {
            app.metrics.failure(err.phase());
            app.metrics
                .request(err.status().as_u16(), start.elapsed().as_secs_f64());
            if err.status().is_server_error() {
                tracing::info!(request_id = ?rid, app = %app.name, error = %err, "request failed");
            }
            err.to_response(&rid)
        }
    }
}

fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|v| v.to_str().ok()))?;
    normalize_host(raw)
}

/// Tries candidates in order. Returns the instance's response, or why none could answer.
async fn forward(
    node: &NodeState,
    conn: &ConnCtx,
    app: &Arc<AppRoute>,
    mut req: Request<Incoming>,
    rid: &HeaderValue,
    start: Instant,
) -> Result<Response<Body>, ProxyError> {
    let hints = Hints::from_headers(req.headers());
    let local = node.local.load();
    let instances = local.for_app(&app.name);
    let now_ms = node.now_ms();
    let settings = node.settings.load();

    // Under `type = "connections"` a client connection keeps the instance it was admitted to.
    let held = (app.kind == LimitType::Connections && hints == Hints::default())
        .then(|| conn.held_instance(&app.name, now_ms))
        .flatten();

    let order: Vec<Arc<Instance>> = match held {
        Some(inst) => vec![inst],
        None => {
            let views: Vec<View<'_>> = instances
                .iter()
                .map(|i| View {
                    id: &i.id,
                    region: &node.region,
                    rtt_ms: 0.0,
                    load: i.load(),
                    soft: app.soft,
                    hard: app.hard,
                    healthy: i.accepts_work(now_ms),
                })
                .collect();
            match balance::select(app.strategy, &views, &hints, &mut rand::rng()) {
                Ok(order) => order.into_iter().map(|i| instances[i].clone()).collect(),
                Err(e) => return Err(empty_error(e, app, &hints)),
            }
        }
    };

    let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let h2 = req.version() == Version::HTTP_2;
    let mut out = prepare(req, conn, node, app, rid, upgrade, h2);

    let budget = 1 + app.retries as usize;
    let (mut full, mut last_connect) = (0usize, None);
    let mut previous = None;
    for (attempt, inst) in order.iter().take(budget).enumerate() {
        if let Some(reason) = previous.take() {
            app.metrics.retry(reason);
        }
        let slot = match admit(conn, app, inst) {
            Some(s) => s,
            None => {
                full += 1;
                app.metrics.reject();
                previous = Some(RetryReason::Full);
                continue;
            }
        };
        let upstream = match inst.connect(h2, false, settings.connect_timeout).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(request_id = ?rid, instance = %inst.id, error = %e, "instance connect failed; trying next");
                inst.mark_unreachable(now_ms + settings.unreachable_for.as_millis() as u64);
                last_connect = Some(e);
                previous = Some(RetryReason::Connect);
                continue;
            }
        };
        inst.mark_reachable();
        set_target(&mut out, inst, h2);
        match send(upstream, out, inst, h2, &settings, app).await {
            Ok(resp) => {
                let attempts = attempt + 1;
                return Ok(respond(
                    node,
                    app,
                    inst,
                    resp,
                    slot,
                    client_upgrade,
                    rid,
                    start,
                    attempts,
                    &settings,
                ));
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(req, e)) => {
                tracing::warn!(request_id = ?rid, instance = %inst.id, error = %e, "instance connection failed before the request went out; trying next");
                inst.mark_unreachable(now_ms + settings.unreachable_for.as_millis() as u64);
                out = *req;
                last_connect = Some(e);
                previous = Some(RetryReason::Connect);
            }
        }
    }
    match last_connect {
        Some(last) if full == 0 => Err(ProxyError::Connect {
            app: app.name.to_string(),
            last,
        }),
        _ => Err(ProxyError::AtCapacity(app.name.to_string())),
    }
}

fn empty_error(e: Empty, app: &AppRoute, hints: &Hints) -> ProxyError {
    let forced = || {
        hints
            .force
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(63)
            .collect()
    };
    match e {
        Empty::NoHealthy => ProxyError::NoHealthy(app.name.to_string()),
        Empty::AllFull => ProxyError::AtCapacity(app.name.to_string()),
        Empty::ForcedUnknown => ProxyError::ForcedUnknown(forced()),
        Empty::ForcedUnavailable => ProxyError::ForcedUnavailable(forced()),
    }
}

/// Admission against the hard limit. `Some(None)`: admitted on a slot the connection already holds.
fn admit(conn: &ConnCtx, app: &AppRoute, inst: &Arc<Instance>) -> Option<Option<Slot>> {
    match app.kind {
        LimitType::Requests => inst.try_acquire(app.hard).map(Some),
        LimitType::Connections => {
            if conn.holds(inst) {
                return Some(None);
            }
            conn.hold(inst.try_acquire(app.hard)?);
            Some(None)
        }
    }
}

/// Rewrites the client's request for the instance: headers per SPEC §5, body timed and boxed.
fn prepare(
    req: Request<Incoming>,
    conn: &ConnCtx,
    node: &NodeState,
    app: &Arc<AppRoute>,
    rid: &HeaderValue,
    upgrade: bool,
    h2: bool,
) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    strip_internal(&mut parts.headers);
    parts.headers.remove("x-forwarded-proto");
    parts.headers.remove("x-forwarded-port");
    add_forwarding(
        &mut parts.headers,
        &Forwarded {
            peer: conn.peer,
            local_port: conn.local.port(),
            proto: "http",
            region: &node.region,
            request_id: rid.to_str().unwrap_or_default(),
            via_version: if h2 { "2" } else { "1.1" },
        },
    );
    Request::from_parts(parts, boxed(TimedUpload::new(body, app.clone())))
}

/// HTTP/1.1 gets origin-form (`/path?q`) with the client's Host kept; h2 keeps the client's
/// authority in `:authority` (the connection itself already goes to the instance).
fn set_target(req: &mut Request<Body>, inst: &Instance, h2: bool) {
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri = if h2 {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| inst.addr.to_string());
        Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
    } else {
        pq.parse::<Uri>().map_err(http::Error::from)
    };
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
}

/// Why one candidate did not answer.
enum Failure {
    /// Nothing reached the instance; the request is handed back for the next candidate.
    Retry(Box<Request<Body>>, ConnectError),
    /// The request (or part of it) went out: the client gets this error.
    Fatal(ProxyError),
}

/// Sends on `upstream`; if the pooled connection was dead before anything went out, sends once
/// more on a fresh one (still safe: nothing was sent).
async fn send(
    upstream: Upstream,
    req: Request<Body>,
    inst: &Arc<Instance>,
    h2: bool,
    settings: &EdgeSettings,
    app: &AppRoute,
) -> Result<Response<Incoming>, Failure> {
    let failed = |source| {
        Failure::Fatal(ProxyError::Upstream {
            app: app.name.to_string(),
            source,
        })
    };
    let attempt = async {
        let req = match upstream.send(req).await {
            Ok(r) => return Ok(r),
            Err(SendError::Failed(e)) => return Err(failed(e)),
            Err(SendError::NotSent(req)) => req,
        };
        let fresh = match inst.connect(h2, true, settings.connect_timeout).await {
            Ok(f) => f,
            Err(e) => return Err(Failure::Retry(req, e)),
        };
        match fresh.send(*req).await {
            Ok(r) => Ok(r),
            Err(SendError::Failed(e)) => Err(failed(e)),
            Err(SendError::NotSent(req)) => {
                Err(Failure::Retry(req, ConnectError::ClosedEarly(inst.addr)))
            }
        }
    };
    match tokio::time::timeout(settings.response_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Fatal(ProxyError::Timeout(app.name.to_string()))),
    }
}

/// Turns the instance's response into the client's: hop-by-hop and internal headers removed,
/// request id (and route, if enabled) added, body tracked; a 101 starts the splice.
#[allow(clippy::too_many_arguments)]
fn respond(
    node: &NodeState,
    app: &Arc<AppRoute>,
    inst: &Instance,
    mut resp: Response<Incoming>,
    slot: Option<Slot>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    rid: &HeaderValue,
    start: Instant,
    attempts: usize,
    settings: &EdgeSettings,
) -> Response<Body> {
    let status = resp.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let instance_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    strip_internal(&mut parts.headers);
    parts.headers.insert("petrel-request-id", rid.clone());
    if settings.debug_headers {
        let route = format!(
            "instance={}; region={}; node={}; strategy={}; attempts={attempts}; rtt_ms=0.0",
            inst.id,
            node.region,
            node.name,
            app.strategy.as_str()
        );
        if let Ok(v) = HeaderValue::from_str(&route) {
            parts.headers.insert("petrel-route", v);
        }
    }
    let finish = Finish {
        app: app.clone(),
        slot: None,
        status: status.as_u16(),
        start,
        head: Instant::now(),
    };
    match (client_upgrade, instance_upgrade) {
        (Some(c), Some(i)) => {
            let rid = rid.to_str().unwrap_or_default().to_string();
            node.shutdown.spawn(splice(c, i, slot, rid));
            Response::from_parts(parts, boxed(Tracked::new(body, finish)))
        }
        _ => Response::from_parts(parts, boxed(Tracked::new(body, Finish { slot, ..finish }))),
    }
}
