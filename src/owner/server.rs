//! Owner side of the backhaul: authenticate, admit against the instance's hard limit before the
//! instance sees a byte, forward in the app's instance protocol, or answer a reject at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::backhaul::protocol::{self, Reject};
use crate::backhaul::{SharedCredentials, H2_CONN_WINDOW, H2_STREAM_WINDOW};
use crate::body::{boxed, empty, Body};
use crate::cluster::Delays;
use crate::http::headers::{strip_hop_by_hop, wants_upgrade};
use crate::http::Side;
use crate::http::{ExchangeError, ReplayableRequest};
use crate::local::{send_to_instance, Outcome};
use crate::state::NodeState;

/// Serves backhaul requests from other nodes until the drain starts.
/// With `tls`, only peers presenting a certificate from the cluster CA get past the handshake.
pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeState>,
    creds: SharedCredentials,
    delays: Option<Delays>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_header_list_size(crate::backhaul::frame::MAX_HEAD as u32)
        .max_concurrent_streams(10_000)
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let delays = Arc::new(delays);
    loop {
        let Some((stream, peer)) =
            crate::http::next_conn(&listener, &node.shutdown, "backhaul").await
        else {
            break;
        };
        let (svc_node, delays, svc_creds) = (node.clone(), delays.clone(), creds.clone());
        let svc = service_fn(move |req| {
            let (node, delays, key) = (svc_node.clone(), delays.clone(), svc_creds.load());
            // Boxed: hyper spawns a task per h2 stream holding this future, and tokio copies a
            // task's future when it creates it and again when it ends; a pointer copies cheaply.
            // Built in its box, not copied there.
            crate::http::pin_boxed(async move {
                Ok::<_, Infallible>(
                    handle(&node, key.auth.as_ref(), delays.as_ref().as_ref(), req).await,
                )
            })
        });
        let (builder, watcher, tls) = (
            builder.clone(),
            graceful.watcher(),
            creds.load().tls.clone(),
        );
        node.shutdown.spawn(async move {
            let io: Box<dyn crate::http::Io> = match tls {
                None => Box::new(stream),
                Some(tls) => {
                    let accept = tokio_rustls::TlsAcceptor::from(tls.server.clone()).accept(stream);
                    match tokio::time::timeout(Duration::from_secs(10), accept).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "backhaul TLS handshake refused");
                            crate::telemetry::node_metrics()
                                .backhaul
                                .failure(crate::telemetry::Phase::Auth);
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "backhaul TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = watcher.watch(
                builder
                    .serve_connection_with_upgrades(TokioIo::new(io), svc)
                    .into_owned(),
            );
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "backhaul connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// The answer for a request that reached the instance and failed there: the same status and body
/// the edge would give for a local instance (SPEC §6), under the request's id.
fn owner_error(err: ExchangeError, request: &http::HeaderMap) -> Response<Body> {
    let rid = request
        .get("petrel-request-id")
        .cloned()
        .unwrap_or(HeaderValue::from_static("-"));
    err.to_response(&rid)
}

fn reject(r: Reject, load: Option<u32>) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut()
        .insert(protocol::REJECT, HeaderValue::from_static(r.as_str()));
    if let Some(l) = load {
        resp.headers_mut()
            .insert(protocol::LOAD, HeaderValue::from(l));
    }
    resp
}

async fn handle(
    node: &NodeState,
    key: Option<&protocol::AuthKey>,
    delays: Option<&Delays>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let back = reply_delay(delays, req.headers());
    let edge_side = wants_upgrade(req.headers()).then(|| Side::Hyper(hyper::upgrade::on(&mut req)));
    let resp = admit_and_forward(node, key, req.map(boxed), edge_side).await;
    if !back.is_zero() {
        tokio::time::sleep(back).await;
    }
    resp
}

/// Our own `[simulate]` delay for what we send back toward the edge's region.
pub(super) fn reply_delay(delays: Option<&Delays>, h: &http::HeaderMap) -> Duration {
    delays
        .zip(h.get("petrel-edge-region").and_then(|v| v.to_str().ok()))
        .map(|(d, r)| d.toward(r))
        .unwrap_or_default()
}

/// Transport-neutral owner logic: authenticate, admit against the hard limit, forward (HTTP/1.1,
/// or h2 for apps with `h2_backend`, by this node's own app config), or reject at once.
/// `edge_side` is the edge's end of an upgrade, spliced to the instance's if it answers 101.
pub(super) async fn admit_and_forward(
    node: &NodeState,
    key: Option<&protocol::AuthKey>,
    req: Request<Body>,
    edge_side: Option<Side>,
) -> Response<Body> {
    if !protocol::verify(key, req.headers()) {
        tracing::warn!("backhaul request without valid cluster credentials refused");
        crate::telemetry::node_metrics()
            .backhaul
            .failure(crate::telemetry::Phase::Auth);
        return reject(Reject::Auth, None);
    }
    let id = req
        .headers()
        .get(protocol::INSTANCE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Some(app) = id.strip_prefix(protocol::SESSION) {
        return super::attach::attach(node, app, req, edge_side).await;
    }
    let admitted = match admit(node, &id) {
        Ok(a) => a,
        Err((why, load)) => return reject(why, load),
    };
    let upgrade = edge_side.is_some();
    let (mut parts, body) = req.into_parts();
    protocol::strip(&mut parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let out = ReplayableRequest::from_peer(Request::from_parts(parts, body));
    let settings = node.settings.load();
    match forward(node, &admitted, &out, &settings, upgrade).await {
        Ok(resp) => answer(node, admitted, resp, edge_side, &settings),
        Err(Failed::NotSent) => reject(Reject::Connect, None),
        Err(Failed::Exchange(e)) => owner_error(e, out.headers()),
    }
}

/// A request this node took on: its instance, app and the load slot it holds.
struct Admitted {
    inst: Arc<crate::local::Instance>,
    app: Arc<crate::routes::AppRoute>,
    slot: crate::local::Slot,
}

/// Admission before the instance sees a byte: the instance is known, up and below its hard
/// limit; else the reject the edge retries elsewhere on, with the instance's load if full.
fn admit(node: &NodeState, id: &str) -> Result<Admitted, (Reject, Option<u32>)> {
    let local = node.local.load();
    let Some(inst) = local.get(id).cloned() else {
        return Err((Reject::Unknown, None));
    };
    let Some(app) = node.routes.load().by_name(&inst.app).cloned() else {
        return Err((Reject::Unknown, None));
    };
    if !inst.accepts_work(node.now_ms()) {
        return Err((Reject::Down, None));
    }
    let Some(slot) = inst.try_acquire(app.hard) else {
        app.metrics.reject();
        return Err((Reject::Full, Some(inst.load())));
    };
    Ok(Admitted { inst, app, slot })
}

/// How forwarding to the admitted instance failed.
enum Failed {
    /// The connect failed; nothing was sent, so the edge may retry elsewhere (`connect` reject).
    NotSent,
    /// The exchange failed after sending: the instance's `502`/`504`, as the edge would give it
    /// for a local instance.
    Exchange(ExchangeError),
}

/// Sends the request to the admitted instance.
async fn forward(
    node: &NodeState,
    a: &Admitted,
    out: &ReplayableRequest,
    settings: &crate::state::EdgeSettings,
    upgrade: bool,
) -> Result<Response<Body>, Failed> {
    let (inst, app) = (&a.inst, &a.app);
    let form = crate::http::InstanceForm {
        h2: app.h2_backend && !upgrade,
        fly_names: app.fly_names,
    };
    let mark = crate::trace::ConnectMark::new(std::time::Instant::now());
    let mut resp = match send_to_instance(inst, out, form, &settings.upstream, &mark).await {
        Ok(r) => r,
        Err(Outcome::NotSent(e)) => {
            tracing::warn!(instance = %inst.id, error = %e, "instance connect failed (backhaul)");
            inst.mark_unreachable(node.now_ms() + settings.unreachable_for.as_millis() as u64);
            return Err(Failed::NotSent);
        }
        Err(Outcome::Timeout) => {
            return Err(Failed::Exchange(ExchangeError::Timeout(
                app.name.to_string(),
            )))
        }
        Err(Outcome::Failed(e)) => {
            tracing::info!(instance = %inst.id, error = %e, "instance exchange failed (backhaul)");
            let detail = e.to_string();
            return Err(Failed::Exchange(ExchangeError::Upstream {
                app: app.name.to_string(),
                detail,
            }));
        }
    };
    if let Err(why) = crate::http::headers::response_framing(resp.status(), resp.headers_mut()) {
        return Err(Failed::Exchange(ExchangeError::Upstream {
            app: app.name.to_string(),
            detail: why.into(),
        }));
    }
    Ok(resp)
}

/// The instance's answer toward the edge, with the instance's load beside it; a 101 to an
/// upgrade is spliced to the edge's side, anything else read ahead of the edge.
fn answer(
    node: &NodeState,
    a: Admitted,
    mut resp: Response<Body>,
    edge_side: Option<Side>,
    settings: &crate::state::EdgeSettings,
) -> Response<Body> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS && edge_side.is_some();
    let instance_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    protocol::strip(&mut parts.headers);
    // The instance's load besides this request, so the edge routes on a figure one RTT/2 old.
    parts.headers.insert(
        protocol::LOAD,
        HeaderValue::from(a.inst.load().saturating_sub(1)),
    );
    match (edge_side, instance_upgrade) {
        (Some(e), Some(i)) => {
            let rid = parts
                .headers
                .get("petrel-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let ending = crate::http::Ending::for_response(&parts.headers, &node.shutdown);
            node.shutdown.spawn(crate::http::splice(
                e,
                Side::Hyper(i),
                Some(a.slot),
                rid,
                ending,
            ));
            Response::from_parts(parts, boxed(body))
        }
        _ => {
            // Read ahead of the edge, so an edge whose client reads slowly lets the instance go.
            let body =
                crate::http::read_ahead(boxed(body), a.slot, settings.response_buffering, None);
            Response::from_parts(parts, boxed(crate::http::Tracked::new(body, ())))
        }
    }
}
