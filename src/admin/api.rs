//! Admin endpoints (SPEC §4): status, instances, apps, readiness, drain and reload, metrics, and a
//! small dashboard page.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{full, Body};
use crate::local::RegisterError;
use crate::state::NodeState;
use crate::telemetry::prometheus;

fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(ctype));
    r
}

fn ok_json(v: serde_json::Value) -> Response<Body> {
    reply(StatusCode::OK, "application/json", v.to_string())
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    reply(
        status,
        "application/json",
        json!({ "error": msg }).to_string(),
    )
}

/// Largest admin request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Routes one admin request.
pub async fn handle(node: &Arc<NodeState>, req: Request<Incoming>) -> Response<Body> {
    // The dashboard page holds no data of its own (it polls the API, sending the token it asks
    // for once), so a browser can load it before it knows the token.
    if req.method() == Method::GET && req.uri().path() == "/" {
        let mut r = reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.into());
        r.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        );
        return r;
    }
    // Probes from a load balancer or kubelet carry no credentials; these two tell nothing secret.
    if req.method() == Method::GET && matches!(req.uri().path(), "/ready" | "/healthz") {
        return probe(node, req.uri().path());
    }
    if let Some(token) = &node.admin_token {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(given.as_bytes(), token.as_bytes()) {
            tracing::debug!(path = %req.uri().path(), "admin request without the right token");
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let path = req.uri().path().to_string();
    if let Some(id) = path.strip_prefix("/v1/instances/") {
        let id = id.to_string();
        return match *req.method() {
            Method::PUT => register(node, &id, req).await,
            Method::DELETE => deregister(node, &id),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "use PUT or DELETE"),
        };
    }
    let path = path.as_str();
    match (req.method(), path) {
        (&Method::GET, "/v1/status") => ok_json(status(node)),
        (&Method::GET, "/v1/apps") => ok_json(apps(node)),
        (&Method::GET, "/v1/members") => ok_json(members(node)),
        (&Method::POST, "/v1/reload") => match crate::reload::reload_logged(node) {
            Ok(r) => ok_json(
                json!({"reloaded": true, "apps": r.apps, "instances": r.instances, "needs_restart": r.needs_restart}),
            ),
            Err(errs) => error(StatusCode::BAD_REQUEST, &errs.to_string()),
        },
        (&Method::GET, "/v1/instances") => ok_json(instances(node)),
        (&Method::GET, "/v1/explain") => {
            let q = req.uri().query().unwrap_or_default();
            let param = |k: &str| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| {
                        let v = v.replace('+', " ");
                        percent_encoding::percent_decode_str(&v)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
            };
            match param("host") {
                None => error(StatusCode::BAD_REQUEST, "give ?host=H (and &region=R)"),
                Some(host) => {
                    match crate::edge::explain::explain(node, &host, param("region").as_deref()) {
                        Ok(v) => ok_json(v),
                        Err(e) => error(StatusCode::NOT_FOUND, &e),
                    }
                }
            }
        }
        (&Method::POST, "/v1/drain") => {
            let already = node.shutdown.is_draining();
            tracing::info!(already, "drain asked for over the admin API");
            node.shutdown.trigger();
            crate::systemd::draining();
            let mut r = ok_json(json!({"draining": true, "already": already}));
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
        (&Method::GET, "/metrics") => {
            crate::telemetry::before_scrape();
            capacity(node);
            let h = prometheus();
            h.run_upkeep();
            reply(StatusCode::OK, "text/plain; version=0.0.4", h.render())
        }
        (
            _,
            "/v1/status" | "/v1/apps" | "/v1/members" | "/v1/instances" | "/v1/reload" | "/metrics"
            | "/" | "/healthz" | "/ready" | "/v1/drain" | "/v1/explain",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint {path:?}")),
    }
}

/// Sets each app's capacity gauges from this node's view: its own instances and the remote ones.
fn capacity(node: &NodeState) {
    let routes = node.routes.load();
    let (local, snap) = (node.local.load(), node.cluster.load());
    let now = node.now_ms();
    for app in routes.apps() {
        let (mut n, mut load, mut soft, mut hard) = (0usize, 0u64, 0u64, 0u64);
        for i in local
            .all()
            .filter(|i| *i.app == *app.name && i.accepts_work(now))
        {
            n += 1;
            load += u64::from(i.load());
            soft += u64::from(app.soft);
            hard += u64::from(app.hard);
        }
        for r in snap
            .view
            .instances
            .iter()
            .filter(|r| *r.load.app == *app.name && r.load.healthy)
        {
            n += 1;
            load += u64::from(r.load.load);
            soft += u64::from(r.load.soft);
            hard += u64::from(r.load.hard);
        }
        crate::telemetry::app_capacity(&app.name, n, load, soft, hard);
    }
}

/// `/healthz` (the process runs) and `/ready` (it serves: 503 with the reason otherwise).
fn probe(node: &NodeState, path: &str) -> Response<Body> {
    if path == "/healthz" {
        return reply(StatusCode::OK, "text/plain", "ok\n".into());
    }
    match not_ready(node) {
        None => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        Some(why) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{why}\n"),
        ),
    }
}

/// Why the node should get no new traffic from a load balancer in front of it, if it should not:
/// it is draining (listeners closing), or it was given seeds and has not joined any peer yet.
fn not_ready(node: &NodeState) -> Option<&'static str> {
    if node.shutdown.is_draining() {
        return Some("draining");
    }
    let snap = node.cluster.load();
    let joined = snap
        .view
        .members
        .iter()
        .any(|m| m.state.as_str() == "alive");
    (node.expects_peers && !joined).then_some("not yet joined: no peer answered")
}

fn status(node: &NodeState) -> serde_json::Value {
    json!({
        "node": &*node.name,
        "region": &*node.region,
        "generation": node.generation,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": node.uptime_s(),
        "draining": node.shutdown.is_draining(),
    })
}

fn apps(node: &NodeState) -> serde_json::Value {
    let routes = node.routes.load();
    let apps: Vec<_> = routes
        .apps()
        .iter()
        .map(|a| {
            json!({
                "name": &*a.name,
                "hosts": a.hosts,
                "strategy": a.strategy.as_str(),
                "soft_limit": a.soft,
                "hard_limit": a.hard,
                "type": a.kind.as_str(),
            })
        })
        .collect();
    json!({ "apps": apps })
}

fn ms(v: Option<f64>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |x| {
        json!((x * 1000.0).round() / 1000.0)
    })
}

fn members(node: &NodeState) -> serde_json::Value {
    let snap = node.cluster.load();
    let list: Vec<_> = snap
        .view
        .members
        .iter()
        .map(|m| {
            json!({
                "node": &*m.id.name,
                "region": &*m.id.region,
                "addr": m.id.addr.to_string(),
                "state": m.state.as_str(),
                "generation": m.id.generation,
                "rtt_ms": ms(m.rtt.rtt_ms),
                "rtt_min_ms": ms(m.rtt.rtt_min_ms),
                "jitter_ms": ms(m.rtt.jitter_ms),
                "loss": m.rtt.loss,
            })
        })
        .collect();
    json!({ "members": list })
}

fn instances(node: &NodeState) -> serde_json::Value {
    let routes = node.routes.load();
    let local = node.local.load();
    let now = node.now_ms();
    let mut list: Vec<_> = local
        .all()
        .map(|i| {
            let app = routes.by_name(&i.app);
            json!({
                "id": &*i.id,
                "app": &*i.app,
                "node": &*node.name,
                "region": &*node.region,
                "load": i.load(),
                "soft_limit": app.map(|a| a.soft),
                "hard_limit": app.map(|a| a.hard),
                "healthy": i.accepts_work(now),
                "age_ms": 0,
            })
        })
        .collect();
    let snap = node.cluster.load();
    let since_publish = snap.at.elapsed();
    for r in &snap.view.instances {
        let age = snap.view.built_at.saturating_sub(r.received_at) + since_publish;
        list.push(json!({
            "id": &*r.load.id,
            "app": &*r.load.app,
            "node": &*r.node,
            "region": &*r.region,
            "load": r.load.load,
            "soft_limit": r.load.soft,
            "hard_limit": r.load.hard,
            "healthy": r.load.healthy,
            "age_ms": age.as_millis() as u64,
        }));
    }
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json!({ "instances": list })
}

async fn register(node: &Arc<NodeState>, id: &str, req: Request<Incoming>) -> Response<Body> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Registration {
        app: String,
        address: String,
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            )
        }
    };
    let body: Registration = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"app\",\"address\"}}: {e}"),
            )
        }
    };
    let addr = match body.address.parse() {
        Ok(a) => a,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid socket address {:?}", body.address),
            )
        }
    };
    match crate::node::registry::register(node, id, &body.app, addr) {
        Ok(()) => reply(
            StatusCode::CREATED,
            "application/json",
            json!({"id": id, "app": body.app, "address": body.address}).to_string(),
        ),
        Err(e @ RegisterError::Taken(_)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn deregister(node: &Arc<NodeState>, id: &str) -> Response<Body> {
    let limit = node.drain_timeout;
    if crate::node::registry::deregister(node, id, limit) {
        reply(
            StatusCode::ACCEPTED,
            "application/json",
            json!({"id": id, "draining": true}).to_string(),
        )
    } else {
        error(StatusCode::NOT_FOUND, &format!("no local instance {id:?}"))
    }
}

/// The live dashboard: one static page compiled in (no build step, no CDN: it works offline).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
