//! The backend's endpoints: hello, sleep, bytes, status, headers, health, stats, ws.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::Backend;
use crate::body::{boxed, full, Body};

const MAX_SLEEP_MS: u64 = 600_000;
const MAX_BYTES: u64 = 1 << 32;
const CHUNK: usize = 64 * 1024;

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Reads and discards the request body, returning its length and a simple checksum.
async fn drain(body: Incoming) -> (u64, u64) {
    let (mut n, mut sum) = (0u64, 0u64);
    let mut body = body;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
            sum = d
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
    }
    (n, sum)
}

/// Routes one request.
pub async fn handle(b: Arc<Backend>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let mut resp = match path.as_str() {
        "/stats" => json(serde_json::json!({
            "id": b.id,
            "inflight": b.stats.inflight.load(Ordering::Acquire),
            "max_inflight": b.stats.max_inflight.load(Ordering::Acquire),
            "served": b.stats.served.load(Ordering::Relaxed),
        })),
        "/health" => {
            // Extension: `?set=fail` / `?set=ok` make the answer sticky, so tests can flip health.
            match query(&req, "set").as_deref() {
                Some("fail") => b.stats.failing.store(true, Ordering::Relaxed),
                Some("ok") => b.stats.failing.store(false, Ordering::Relaxed),
                _ => {}
            }
            let fail = query(&req, "fail").as_deref() == Some("1")
                || b.stats.failing.load(Ordering::Relaxed);
            if fail {
                text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }
        "/ws" => super::ws::accept(&b, &mut req, super::ws::Mode::Echo),
        "/term" => {
            let ms = query(&req, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            super::ws::accept(&b, &mut req, super::ws::Mode::Term(ms))
        }
        _ => {
            let _guard = b.stats.enter();
            counted(&b, req, &path).await
        }
    };
    if let Ok(v) = HeaderValue::from_str(&b.id) {
        resp.headers_mut().insert("x-backend-id", v);
    }
    resp
}

async fn counted(b: &Backend, req: Request<Incoming>, path: &str) -> Response<Body> {
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let sleep_ms = query(&req, "ms").and_then(|v| v.parse::<u64>().ok());
    let n = query(&req, "n").and_then(|v| v.parse::<u64>().ok());
    let code = query(&req, "code").and_then(|v| v.parse::<u16>().ok());
    let headers: BTreeMap<String, String> = {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            m.entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        m.insert(":version".into(), version);
        m.insert(":method".into(), method);
        m.insert(":path".into(), path.to_string());
        if let Some(a) = req.uri().authority() {
            m.insert(":authority".into(), a.to_string());
        }
        m
    };
    let (received, sum) = drain(req.into_body()).await;
    let mut resp = match path {
        "/" => text(StatusCode::OK, format!("hello from {}\n", b.id)),
        "/sleep" => match sleep_ms {
            Some(ms) if ms <= MAX_SLEEP_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, format!("slept {ms}ms\n"))
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                format!("ms must be 0..={MAX_SLEEP_MS}\n"),
            ),
        },
        "/bytes" => match n {
            Some(n) if n <= MAX_BYTES => bytes_body(n),
            _ => text(
                StatusCode::BAD_REQUEST,
                format!("n must be 0..={MAX_BYTES}\n"),
            ),
        },
        "/status" => match code.and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(c) if c.as_u16() >= 200 => text(c, format!("status {}\n", c.as_u16())),
            _ => text(StatusCode::BAD_REQUEST, "code must be 200..=999\n"),
        },
        "/headers" => json(serde_json::to_value(headers).unwrap_or_default()),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint {path:?}\n"),
        ),
    };
    let h = resp.headers_mut();
    h.insert("x-received-bytes", HeaderValue::from(received));
    h.insert("x-received-sum", HeaderValue::from(sum));
    resp
}

/// `n` bytes, produced in 64 KiB chunks so nothing large is ever held.
fn bytes_body(n: u64) -> Response<Body> {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64) as usize;
            Some((
                Ok::<_, std::convert::Infallible>(Frame::data(chunk.slice(..take))),
                left - take as u64,
            ))
        }
    });
    let mut r = Response::new(boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-length", HeaderValue::from(n));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}
