//! Slow-request tracing: a request slowed at the instance is logged with the phase that was slow,
//! and exported as OTLP/HTTP JSON spans (joined to the caller's W3C trace) to a collector.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::http::{request, send};
use common::{app_toml, backend, node};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// A minimal OTLP/HTTP collector: every POSTed JSON body goes to the channel.
async fn collector() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(serde_json::from_slice(&body).expect("JSON body"));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("{}"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn spans(batch: &serde_json::Value) -> Vec<serde_json::Value> {
    batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn nanos(span: &serde_json::Value, key: &str) -> u128 {
    span[key].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slowed_at_the_instance_is_logged_and_exported_with_its_slow_phase() {
    let (otlp, mut batches) = collector().await;
    let be = backend("t-1");
    let n = node(
        &[("app", app_toml("app", 10, 20, "closest", 3))],
        &[("t-1", "app", be.addr)],
        &format!("\n[tracing]\nslow_request = \"300ms\"\notlp_endpoint = \"http://{otlp}\"\n"),
    );
    let fast = send(n.edge, false, request("GET", "app", "/", &[])).await;
    assert_eq!(fast.status, 200);
    let fast_id = fast.header("petrel-request-id").unwrap().to_string();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let slow = send(
        n.edge,
        false,
        request("GET", "app", "/sleep?ms=600", &[("traceparent", parent)]),
    )
    .await;
    assert_eq!(slow.status, 200);
    let slow_id = slow.header("petrel-request-id").unwrap().to_string();

    // The log line names the request and the slow phase.
    let line = loop {
        let l = n
            .proc
            .errs
            .recv_timeout(Duration::from_secs(5))
            .expect("a slow-request log line within 5 s");
        assert!(!l.contains(&fast_id), "fast request logged as slow: {l}");
        if l.contains("slow request") {
            break l;
        }
    };
    assert!(line.contains(&slow_id), "{line}");
    assert!(
        line.contains("slowest=\"first_byte\"") || line.contains("slowest=first_byte"),
        "{line}"
    );
    assert!(line.contains("instance_connect"), "{line}");
    eprintln!("log: {line}");

    // The collector gets the root span and one span per phase, in the caller's trace.
    let batch = tokio::time::timeout(Duration::from_secs(5), batches.recv())
        .await
        .expect("an OTLP batch within 5 s")
        .unwrap();
    let all = spans(&batch);
    let root = all
        .iter()
        .find(|s| s["name"] == "request")
        .expect("root span");
    assert_eq!(
        attr(root, "petrel.request_id").unwrap()["stringValue"],
        slow_id.as_str()
    );
    assert_eq!(
        attr(root, "petrel.slowest_phase").unwrap()["stringValue"],
        "first_byte"
    );
    assert_eq!(root["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root["parentSpanId"], "00f067aa0ba902b7");
    let first_byte = all
        .iter()
        .find(|s| s["name"] == "first_byte")
        .expect("first_byte span");
    assert_eq!(first_byte["parentSpanId"], root["spanId"]);
    let took = nanos(first_byte, "endTimeUnixNano") - nanos(first_byte, "startTimeUnixNano");
    assert!(
        (550_000_000..5_000_000_000).contains(&took),
        "first_byte lasted {took} ns"
    );
    for s in &all {
        assert_ne!(
            attr(s, "petrel.request_id").map(|v| v["stringValue"].clone()),
            Some(serde_json::Value::from(fast_id.as_str())),
            "fast requests are not exported at otlp_sample = 0"
        );
    }
    let names: Vec<&str> = all.iter().filter_map(|s| s["name"].as_str()).collect();
    eprintln!("exported spans: {names:?}");
}
