//! OTLP/HTTP export (JSON encoding) of request spans, batched by one task; off unless
//! `tracing.otlp_endpoint` is set. A full queue drops spans (counted), never slows a request.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{Phases, Trace};
use crate::telemetry::TRACE_SPANS;

const QUEUE: usize = 4096;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const POST_TIMEOUT: Duration = Duration::from_secs(5);

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// The running exporter, if one was started.
pub fn exporter() -> Option<&'static Exporter> {
    EXPORTER.get()
}

/// A W3C `traceparent` the client sent: our spans join its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    trace_id: u128,
    span_id: u64,
}

impl Parent {
    /// Parses `traceparent: 00-<32 hex>-<16 hex>-<2 hex>`; anything else is ignored.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let v = headers.get("traceparent")?.to_str().ok()?;
        let mut parts = v.split('-');
        let (ver, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if ver != "00" || trace.len() != 32 || span.len() != 16 || parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        Some(Self { trace_id, span_id })
    }
}

/// A finished request, ready to become spans.
#[derive(Debug)]
pub struct Record {
    /// Its timeline.
    pub trace: Trace,
    /// Its phases.
    pub phases: Phases,
    /// Status sent to the client.
    pub status: u16,
}

/// Handle to the export task.
pub struct Exporter {
    tx: mpsc::Sender<Record>,
}

impl Exporter {
    /// Queues a record; drops it (counted) when the queue is full.
    pub fn offer(&self, r: Record) {
        if self.tx.try_send(r).is_err() {
            metrics::counter!(TRACE_SPANS, "outcome" => "dropped").increment(1);
        }
    }
}

/// Checks an endpoint: `http://host:port[/base]` (a local collector; https is not spoken here).
pub fn parse_endpoint(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?}: only http:// is supported (run a local collector and let it forward over TLS)"
        ));
    }
    if uri.authority().is_none() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(uri)
}

/// Starts the export task for `endpoint` (already validated); spans carry `node` and `region`.
pub fn start(endpoint: &str, node: &str, region: &str) -> Result<(), String> {
    let uri = parse_endpoint(endpoint)?;
    let base = uri.path().trim_end_matches('/');
    let target: Uri = format!(
        "http://{}{base}/v1/traces",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
    .parse()
    .map_err(|e| format!("{e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    if EXPORTER.set(Exporter { tx }).is_err() {
        return Err("the OTLP exporter is already running".into());
    }
    let resource = json!({"attributes": [
        attr("service.name", json!({"stringValue": "petrel"})),
        attr("petrel.node", json!({"stringValue": node})),
        attr("petrel.region", json!({"stringValue": region})),
    ]});
    tokio::spawn(run(rx, target, resource));
    tracing::info!(endpoint, "exporting request spans over OTLP/HTTP");
    Ok(())
}

async fn run(mut rx: mpsc::Receiver<Record>, target: Uri, resource: Value) {
    let mut batch = Vec::new();
    loop {
        let more = tokio::time::timeout(FLUSH_EVERY, rx.recv_many(&mut batch, BATCH)).await;
        if matches!(more, Ok(0)) && batch.is_empty() {
            return; // every sender is gone
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        let spans: Vec<Value> = batch.drain(..).flat_map(spans).collect();
        let body = json!({"resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{"scope": {"name": "petrel"}, "spans": spans}],
        }]});
        match tokio::time::timeout(POST_TIMEOUT, post(&target, body.to_string())).await {
            Ok(Ok(())) => metrics::counter!(TRACE_SPANS, "outcome" => "exported").increment(n),
            Ok(Err(e)) => {
                metrics::counter!(TRACE_SPANS, "outcome" => "dropped").increment(n);
                tracing::warn!(error = %e, spans = n, "OTLP export failed");
            }
            Err(_) => {
                metrics::counter!(TRACE_SPANS, "outcome" => "dropped").increment(n);
                tracing::warn!(spans = n, "OTLP export timed out");
            }
        }
    }
}

async fn post(target: &Uri, body: String) -> Result<(), String> {
    let authority = target.authority().ok_or("no authority")?.as_str();
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(target.path())
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("collector answered {}", resp.status()))
    }
}

fn attr(key: &str, value: Value) -> Value {
    json!({"key": key, "value": value})
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .to_string()
}

/// One root span ("request") and a child per phase, laid end to end from the start.
fn spans(r: Record) -> Vec<Value> {
    let (trace_id, parent) = match r.trace.parent {
        Some(p) => (p.trace_id, Some(p.span_id)),
        None => (rand::random::<u128>().max(1), None),
    };
    let trace_hex = format!("{trace_id:032x}");
    let root_id = format!("{:016x}", rand::random::<u64>().max(1));
    let start = r.trace.wall();
    let p = &r.phases;
    let (instance, region, remote) = match &r.trace.target {
        Some(t) => (t.instance.to_string(), t.region.to_string(), t.remote),
        None => (String::new(), String::new(), false),
    };
    let mut root = json!({
        "traceId": trace_hex,
        "spanId": root_id,
        "name": "request",
        "kind": 2,
        "startTimeUnixNano": nanos(start),
        "endTimeUnixNano": nanos(start + p.total),
        "attributes": [
            attr("petrel.request_id", json!({"stringValue": r.trace.request_id()})),
            attr("petrel.app", json!({"stringValue": r.trace.app()})),
            attr("http.response.status_code", json!({"intValue": r.status.to_string()})),
            attr("petrel.instance", json!({"stringValue": instance})),
            attr("petrel.instance_region", json!({"stringValue": region})),
            attr("petrel.remote", json!({"boolValue": remote})),
            attr("petrel.attempts", json!({"intValue": r.trace.attempts.to_string()})),
            attr("petrel.slowest_phase", json!({"stringValue": p.slowest()})),
        ],
        "status": {"code": if r.status >= 500 { 2 } else { 0 }},
    });
    if let Some(parent) = parent {
        root["parentSpanId"] = json!(format!("{parent:016x}"));
    }
    let mut out = vec![root];
    let mut cursor = start;
    for (name, d) in p.named() {
        let Some(d) = d else { continue };
        out.push(json!({
            "traceId": trace_hex,
            "spanId": format!("{:016x}", rand::random::<u64>().max(1)),
            "parentSpanId": root_id,
            "name": name,
            "kind": 1,
            "startTimeUnixNano": nanos(cursor),
            "endTimeUnixNano": nanos(cursor + d),
        }));
        cursor += d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let p = Parent::from_headers(&h).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            h.insert("traceparent", bad.parse().unwrap());
            assert_eq!(Parent::from_headers(&h), None, "{bad}");
        }
    }

    #[test]
    fn endpoints_must_be_plain_http_with_a_host() {
        assert!(parse_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(parse_endpoint("https://collector:4318")
            .unwrap_err()
            .contains("only http://"));
        assert!(parse_endpoint("not a url").is_err());
    }
}
