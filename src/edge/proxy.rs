//! The proxy handler: Host → app → ordered candidates anywhere in the cluster → admit and send.
//! A reject or a failed connect moves on to the next candidate at once, up to the app's retries.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{Finish, TimedUpload, Tracked};
use super::candidates::{self, Ask, Candidate, Picked, Remote, Target};
use super::error::ProxyError;
use super::headers::{
    add_forwarding, ambiguous_framing, append_via, max_forwards, strip_hop_by_hop, strip_internal,
    wants_upgrade, Forwarded, MaxForwards,
};
use super::routes::normalize_host;
use super::server::ConnCtx;
use super::upgrade::{splice, Ending, Side};
use super::AppRoute;
use crate::backhaul::protocol::{self, Reject};
use crate::backhaul::BackhaulError;
use crate::balance::{Empty, Hints};
use crate::body::{boxed, Body};
use crate::config::LimitType;
use crate::http::ReplayableRequest;
use crate::local::{send_to_instance, ConnectError, Instance, Outcome, Slot};
use crate::state::{EdgeSettings, NodeState};
use crate::telemetry::{node_metrics, RetryReason};
use crate::trace::{ConnectMark, Target as TraceTarget, Trace};

/// Handles one client request end to end; never fails (errors become SPEC §6 responses).
pub async fn handle(
    node: Arc<NodeState>,
    conn: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    let rid = node.request_id();
    let mut trace = {
        let settings = node.settings.load();
        Some(Trace::new(
            start,
            req.headers(),
            rid.to_str().unwrap_or_default(),
            settings.slow_request,
            settings.otlp_sample,
        ))
    };
    if let Some(why) = ambiguous_framing(req.headers()) {
        let err = ProxyError::Malformed(why);
        let m = &node_metrics().unrouted;
        m.failure(err.phase());
        m.request(err.status().as_u16(), start.elapsed().as_secs_f64());
        tracing::info!(request_id = ?rid, peer = %conn.peer, reason = why, "malformed request refused");
        let mut resp = err.to_response(&rid);
        // The rest of the connection's bytes cannot be framed safely.
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    // Methods petrel answers itself, before any routing.
    let method = req.method().clone();
    let here = match (&method, max_forwards(&method, req.headers_mut())) {
        (&http::Method::CONNECT, _) => Some(Err(ProxyError::MethodNotAllowed("CONNECT"))),
        (&http::Method::TRACE, MaxForwards::AnswerHere) => {
            Some(Err(ProxyError::MethodNotAllowed("TRACE")))
        }
        (_, MaxForwards::AnswerHere) => Some(Ok(StatusCode::OK)), // OPTIONS, final recipient
        _ => None,
    };
    if let Some(answer) = here {
        let m = &node_metrics().unrouted;
        let status = answer.as_ref().map_or_else(|e| e.status(), |s| *s);
        m.request(status.as_u16(), start.elapsed().as_secs_f64());
        return match answer {
            Ok(status) => {
                let mut r = Response::new(crate::body::empty());
                *r.status_mut() = status;
                r.headers_mut().insert("petrel-request-id", rid);
                r
            }
            Err(err) => {
                m.failure(err.phase());
                err.to_response(&rid)
            }
        };
    }
    let host = request_host(&req);
    let routes = node.routes.load();
    let routed = match host.as_deref().map(|h| routes.lookup(h)) {
        Some(Some(app)) => Ok(app.clone()),
        other => Err(match (other, &host) {
            (None, _) | (_, None) => ProxyError::NoHost,
            (_, Some(h)) => ProxyError::NoRoute(h.chars().take(255).collect()),
        }),
    };
    // Over TLS the app is chosen by the server name: a Host of another app is refused, so a
    // certificate for one app never carries another app's traffic.
    let routed = routed.and_then(
        |app| match conn.tls.as_ref().and_then(|t| t.sni.as_deref()) {
            Some(sni) if !routes.lookup(sni).is_some_and(|a| Arc::ptr_eq(a, &app)) => {
                Err(ProxyError::Misdirected {
                    host: host.clone().unwrap_or_default().chars().take(255).collect(),
                    sni: sni.chars().take(255).collect(),
                })
            }
            _ => Ok(app),
        },
    );
    let app = match routed {
        Ok(app) => app,
        Err(err) => {
            let m = &node_metrics().unrouted;
            m.failure(err.phase());
            m.request(err.status().as_u16(), start.elapsed().as_secs_f64());
            if let Some(t) = trace {
                t.finish(Instant::now(), err.status().as_u16());
            }
            return err.to_response(&rid);
        }
    };
    drop(routes);
    if let Some(t) = trace.as_mut() {
        t.set_app(&app.name);
    }
    match forward(&node, &conn, &app, req, &rid, start, &mut trace).await {
        Ok(resp) => resp,
        Err(err) => {
            if let Some(t) = trace.take() {
                t.finish(Instant::now(), err.status().as_u16());
            }
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

/// What one candidate did with the request.
enum Step {
    /// It answered (the slot, if local, is held until the response ends).
    Done(Response<Body>, Option<Side>, Option<Slot>),
    /// Nothing reached it: try the next one.
    Next(RetryReason, Miss),
    /// It failed after the request went out.
    Fatal(ProxyError),
}

/// Why a candidate was passed over.
enum Miss {
    Full,
    Instance(ConnectError),
    Backhaul(BackhaulError),
}

async fn forward(
    node: &NodeState,
    conn: &ConnCtx,
    app: &Arc<AppRoute>,
    mut req: Request<Incoming>,
    rid: &HeaderValue,
    start: Instant,
    trace: &mut Option<Trace>,
) -> Result<Response<Body>, ProxyError> {
    let hints = Hints::from_headers(req.headers());
    let now_ms = node.now_ms();
    let settings = node.settings.load();

    // Under `type = "connections"` a client connection keeps the instance it was admitted to.
    let held = (app.kind == LimitType::Connections && hints == Hints::default())
        .then(|| conn.held_instance(&app.name, now_ms))
        .flatten();
    let budget = 1 + app.retries as usize;
    let ask = Ask::of(app);
    let Picked {
        mut candidates,
        mut order,
    } = match held {
        Some(inst) => Picked {
            candidates: vec![Candidate {
                target: Target::Local(inst),
                region: node.region.clone(),
                rtt_ms: 0.0,
                load: 0,
                soft: app.soft,
                hard: app.hard,
                healthy: true,
            }],
            order: vec![0],
        },
        None => {
            let (local, snap) = (node.local.load(), node.cluster.load());
            let src = node.sources(&app.name, &local, &snap, now_ms);
            candidates::pick(&src, ask, &hints, budget, &mut rand::rng())
                .map_err(|e| empty_error(e, app, &hints))?
        }
    };

    if let Some(t) = trace.as_mut() {
        t.routed();
    }
    let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let client_h2 = req.version() == Version::HTTP_2;
    if let Some(max) = settings.max_body_bytes {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::TooLarge(max));
        }
    }
    let mut req = first_chunk(req, settings.header_read_timeout).await?;
    if let Some(max) = settings.max_body_bytes {
        req = req.map(|b| boxed(http_body_util::Limited::new(b, max as usize)));
    }
    let proto = prepare(req, conn, node, app, rid, upgrade, client_h2);

    let (mut full, mut last_instance, mut last_backhaul) = (0usize, None, None);
    let mut previous = None;
    for attempt in 0..order.len().min(budget) {
        if let Some(reason) = previous.take() {
            if !proto.can_replay() {
                break; // the body was partly sent and is too large to send again
            }
            app.metrics.retry(reason);
        }
        if attempt + 1 == budget && hints == Hints::default() {
            // Only a request that reached its last try pays for looking for the last resort.
            let (local, snap) = (node.local.load(), node.cluster.load());
            let src = node.sources(&app.name, &local, &snap, node.now_ms());
            candidates::last_resort(&src, ask, &mut candidates, &mut order, budget);
        }
        let cand = &candidates[order[attempt]];
        let Some(t) = trace.as_mut() else { break };
        t.attempt();
        let mark = &t.mark;
        let step = match &cand.target {
            Target::Local(inst) => {
                attempt_local(conn, app, inst, &proto, upgrade, &settings, now_ms, mark).await
            }
            Target::Remote(r) => {
                // Boxed: its future is the largest in the handler, and every request's would
                // otherwise carry (and move) its space.
                Box::pin(attempt_remote(
                    node,
                    app,
                    r,
                    proto.attempt(),
                    upgrade,
                    &settings,
                    mark,
                ))
                .await
            }
        };
        t.attempt_done();
        match step {
            Step::Done(resp, side, slot) => {
                t.head(TraceTarget {
                    instance: cand.target.id().to_string(),
                    region: cand.region.to_string(),
                    remote: matches!(cand.target, Target::Remote(_)),
                });
                return Ok(respond(
                    node,
                    app,
                    cand,
                    resp,
                    side,
                    slot,
                    client_upgrade,
                    rid,
                    start,
                    attempt + 1,
                    &settings,
                    trace.take(),
                ));
            }
            Step::Fatal(e) => return Err(e),
            Step::Next(reason, miss) => {
                previous = Some(reason);
                match miss {
                    Miss::Full => {
                        full += 1;
                        app.metrics.reject();
                    }
                    Miss::Instance(e) => {
                        tracing::warn!(request_id = ?rid, instance = %cand.target.id(), error = %e, "instance unreachable; trying next");
                        last_instance = Some(e);
                    }
                    Miss::Backhaul(e) => {
                        tracing::warn!(request_id = ?rid, instance = %cand.target.id(), error = %e, "backhaul failed; trying next");
                        last_backhaul = Some(e);
                    }
                }
            }
        }
    }
    let name = app.name.to_string();
    if let Some(forced) = hints.force.as_deref() {
        return Err(ProxyError::ForcedUnavailable(
            forced.chars().take(63).collect(),
        ));
    }
    Err(match (full, last_instance, last_backhaul) {
        (0, Some(last), _) => ProxyError::Connect { app: name, last },
        (0, None, Some(last)) => ProxyError::Backhaul {
            app: name,
            last: last.to_string(),
        },
        _ => ProxyError::AtCapacity(name),
    })
}

#[allow(clippy::too_many_arguments)]
async fn attempt_local(
    conn: &ConnCtx,
    app: &AppRoute,
    inst: &Arc<Instance>,
    req: &ReplayableRequest,
    upgrade: bool,
    settings: &EdgeSettings,
    now_ms: u64,
    mark: &ConnectMark,
) -> Step {
    let Some(slot) = admit(conn, app, inst) else {
        return Step::Next(RetryReason::Full, Miss::Full);
    };
    // HTTP/1.1 unless the app asks for h2 (Fly's `h2_backend`); upgrades only exist in HTTP/1.1.
    let h2 = app.h2_backend && !upgrade;
    match send_to_instance(inst, req, h2, &settings.upstream, mark).await {
        Ok(mut resp) => {
            inst.mark_reachable();
            let side = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| Side::Hyper(hyper::upgrade::on(&mut resp)));
            Step::Done(resp.map(boxed), side, slot)
        }
        Err(Outcome::NotSent(e)) => {
            inst.mark_unreachable(now_ms + settings.unreachable_for.as_millis() as u64);
            Step::Next(RetryReason::Connect, Miss::Instance(e))
        }
        Err(Outcome::Timeout) => Step::Fatal(ProxyError::Timeout(app.name.to_string())),
        Err(Outcome::Failed(e)) => Step::Fatal(failed(app, &e, settings)),
    }
}

/// An exchange that failed after the request went out: the client's body over the limit (413),
/// or the instance's fault.
fn failed(
    app: &AppRoute,
    e: &(dyn std::error::Error + 'static),
    settings: &EdgeSettings,
) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return ProxyError::TooLarge(settings.max_body_bytes.unwrap_or_default());
        }
        cause = c.source();
    }
    ProxyError::Upstream {
        app: app.name.to_string(),
        detail: e.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt_remote(
    node: &NodeState,
    app: &AppRoute,
    r: &Remote,
    mut req: Request<Body>,
    upgrade: bool,
    settings: &EdgeSettings,
    mark: &ConnectMark,
) -> Step {
    if let Ok(v) = HeaderValue::from_str(&r.id) {
        req.headers_mut().insert(protocol::INSTANCE, v);
    }
    let sent_ms = node.now_ms();
    node.feedback.lock().expect("feedback lock").sent(
        r.id.clone(),
        sent_ms,
        sent_ms + (r.rtt_ms / 2.0) as u64,
    );
    let sent = tokio::time::timeout(
        settings.upstream.response,
        node.backhaul
            .send(r.backhaul, &r.region, req, upgrade, mark),
    )
    .await;
    let now_ms = node.now_ms();
    let resp = match sent {
        Err(_) => return Step::Fatal(ProxyError::Timeout(app.name.to_string())),
        Ok(Err(e @ (BackhaulError::Connect(..) | BackhaulError::NotSent(..)))) => {
            node.penalties
                .mark(&r.id, now_ms + settings.unreachable_for.as_millis() as u64);
            return Step::Next(RetryReason::Connect, Miss::Backhaul(e));
        }
        Ok(Err(e @ (BackhaulError::Failed(..) | BackhaulError::Io(..)))) => {
            return Step::Fatal(failed(app, &e, settings))
        }
        Ok(Ok(r)) => r,
    };
    let (resp, side) = resp;
    let reject = Reject::from_headers(resp.headers());
    let told = match reject {
        // An owner that says "full" without a figure is full as far as this edge knows.
        Some((Reject::Full, load)) => Some(load.unwrap_or(u32::MAX)),
        _ => protocol::load(resp.headers()),
    };
    if let Some(load) = told {
        node.feedback
            .lock()
            .expect("feedback lock")
            .answered(r.id.clone(), load, now_ms);
    }
    match reject {
        None => Step::Done(resp, side, None),
        Some((Reject::Full, load)) => {
            tracing::debug!(instance = %r.id, node = %r.node, ?load, "owner rejected: full");
            Step::Next(RetryReason::Full, Miss::Full)
        }
        Some((why, _)) => {
            node.penalties
                .mark(&r.id, now_ms + settings.unreachable_for.as_millis() as u64);
            let e = BackhaulError::Connect(
                r.backhaul,
                format!("owner {} refused: {}", r.node, why.as_str()),
            );
            Step::Next(RetryReason::Connect, Miss::Backhaul(e))
        }
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

/// Rewrites the client's request once: headers per SPEC §5, body made replayable and timed.
fn prepare(
    req: Request<Body>,
    conn: &ConnCtx,
    node: &NodeState,
    app: &Arc<AppRoute>,
    rid: &HeaderValue,
    upgrade: bool,
    client_h2: bool,
) -> ReplayableRequest {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    strip_internal(&mut parts.headers);
    add_forwarding(
        &mut parts.headers,
        &Forwarded {
            peer: conn.peer,
            local_port: conn.local.port(),
            proto: if conn.tls.is_some() { "https" } else { "http" },
            region: &node.region,
            request_id: rid.to_str().unwrap_or_default(),
            via_version: if client_h2 { "2" } else { "1.1" },
        },
    );
    ReplayableRequest::new(Request::from_parts(
        parts,
        boxed(TimedUpload::new(body, app.clone())),
    ))
}

/// A chunked HTTP/1.1 body has its first chunk read before any instance is contacted, so a
/// malformed chunk is refused (400) instead of reaching an instance as half a request.
async fn first_chunk(
    req: Request<Incoming>,
    limit: std::time::Duration,
) -> Result<Request<Body>, ProxyError> {
    let chunked = req.version() == Version::HTTP_11
        && req.headers().contains_key(http::header::TRANSFER_ENCODING);
    if !chunked {
        return Ok(req.map(boxed));
    }
    let (parts, mut body) = req.into_parts();
    let first = match tokio::time::timeout(limit, body.frame()).await {
        Err(_) => return Err(ProxyError::BodyTimeout),
        Ok(Some(Err(_))) => return Err(ProxyError::Malformed("invalid chunked body")),
        Ok(first) => first,
    };
    let rest = http_body_util::BodyStream::new(body);
    let stream = futures_util::stream::iter(first).chain(rest);
    Ok(Request::from_parts(
        parts,
        boxed(http_body_util::StreamBody::new(stream)),
    ))
}

/// Turns the instance's response into the client's: hop-by-hop and internal headers removed,
/// request id (and route, if enabled) added, body tracked; a 101 starts the splice.
#[allow(clippy::too_many_arguments)]
fn respond(
    node: &NodeState,
    app: &Arc<AppRoute>,
    cand: &Candidate,
    resp: Response<Body>,
    instance_side: Option<Side>,
    slot: Option<Slot>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    rid: &HeaderValue,
    start: Instant,
    attempts: usize,
    settings: &EdgeSettings,
    trace: Option<Trace>,
) -> Response<Body> {
    let status = resp.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    strip_internal(&mut parts.headers);
    parts.headers.insert("petrel-request-id", rid.clone());
    // RFC 9110 §7.6.3: a proxy adds itself to `Via` in every message it forwards, responses too
    // (Fly's proxy does: `via: 1.1 fly.io`); the protocol is the one the instance answered in.
    append_via(
        &mut parts.headers,
        if app.h2_backend && !switching {
            "2 petrel"
        } else {
            "1.1 petrel"
        },
    );
    if settings.debug_headers {
        let owner = match &cand.target {
            Target::Local(_) => &node.name,
            Target::Remote(r) => &r.node,
        };
        let route = format!(
            "instance={}; region={}; node={}; strategy={}; attempts={attempts}; rtt_ms={:.1}",
            cand.target.id(),
            cand.region,
            owner,
            app.strategy.as_str(),
            cand.rtt_ms
        );
        if let Ok(v) = HeaderValue::from_str(&route) {
            parts.headers.insert("petrel-route", v);
        }
    }
    let finish = Finish {
        app: Some(app.clone()),
        slot: None,
        status: status.as_u16(),
        start,
        head: Instant::now(),
        trace,
    };
    match (client_upgrade, instance_side) {
        (Some(c), Some(i)) => {
            let rid = rid.to_str().unwrap_or_default().to_string();
            let ending = Ending::for_response(&parts.headers, &node.shutdown);
            node.shutdown
                .spawn(splice(Side::Hyper(c), i, slot, rid, ending));
            Response::from_parts(parts, boxed(Tracked::new(body, finish)))
        }
        _ => Response::from_parts(parts, boxed(Tracked::new(body, Finish { slot, ..finish }))),
    }
}
