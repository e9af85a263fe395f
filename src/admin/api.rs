//! Admin endpoints (SPEC §4): status, instances, apps, metrics, and a small dashboard page.

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{full, Body};
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

/// Routes one admin request.
pub async fn handle(node: &NodeState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/v1/status") => ok_json(status(node)),
        (&Method::GET, "/v1/apps") => ok_json(apps(node)),
        (&Method::GET, "/v1/instances") => ok_json(instances(node)),
        (&Method::GET, "/metrics") => {
            let h = prometheus();
            h.run_upkeep();
            reply(StatusCode::OK, "text/plain; version=0.0.4", h.render())
        }
        (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", dashboard(node)),
        (_, "/v1/status" | "/v1/apps" | "/v1/instances" | "/metrics" | "/") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint {path:?}")),
    }
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

fn instances(node: &NodeState) -> serde_json::Value {
    let routes = node.routes.load();
    let local = node.local.load();
    let now = node.now_ms();
    let mut list: Vec<_> = local
        .all()
        .map(|i| {
            let app = routes.apps().iter().find(|a| a.name == i.app);
            json!({
                "id": &*i.id,
                "app": &*i.app,
                "node": &*node.name,
                "region": &*node.region,
                "load": i.load(),
                "soft_limit": app.map(|a| a.soft),
                "hard_limit": app.map(|a| a.hard),
                "healthy": i.reachable(now),
                "age_ms": 0,
            })
        })
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json!({ "instances": list })
}

fn dashboard(node: &NodeState) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let local = node.local.load();
    let mut rows: Vec<_> = local.all().collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let rows: String = rows
        .iter()
        .map(|i| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.id),
                esc(&i.app),
                i.addr,
                i.load()
            )
        })
        .collect();
    format!(
        "<!doctype html><title>petrel {name}</title><h1>petrel node {name} ({region})</h1>\
         <p>draining: {draining}. JSON: <a href=/v1/status>status</a> · <a href=/v1/apps>apps</a> · \
         <a href=/v1/instances>instances</a> · <a href=/metrics>metrics</a></p>\
         <table border=1 cellpadding=4><tr><th>instance</th><th>app</th><th>address</th><th>load</th></tr>{rows}</table>",
        name = esc(&node.name),
        region = esc(&node.region),
        draining = node.shutdown.is_draining(),
    )
}
