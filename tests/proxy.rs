//! Single-node proxying over real loopback sockets: routing by Host, h1/h2, headers, streaming bodies.

mod common;

use bytes::Bytes;
use common::http::{get, request, request_h2, send};
use common::{app_toml, backend, node};
use http_body_util::{BodyExt, StreamBody};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_over_http1_and_h2_and_404s_unknown_hosts() {
    let (a, b) = (backend("alpha-1"), backend("beta-1"));
    let n = node(
        &[
            ("alpha", app_toml("alpha", 10, 20, "closest", 3)),
            (
                "beta",
                app_toml("beta", 10, 20, "closest", 3)
                    + "[http_service.http_options]\nh2_backend = true\n",
            ),
        ],
        &[("alpha-1", "alpha", a.addr), ("beta-1", "beta", b.addr)],
        "",
    );
    for host in [
        "alpha",
        "alpha.localhost",
        "alpha.example.com",
        "ALPHA.example.com:8080",
    ] {
        let r = get(n.edge, host, "/").await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.text(), "hello from alpha-1\n", "{host}");
    }
    let r = get(n.edge, "beta", "/").await;
    assert_eq!(r.header("x-backend-id"), Some("beta-1"));

    // h2c prior knowledge: routed by :authority; the instance gets HTTP/1.1 with that Host, or
    // h2 when its app sets `h2_backend` (Fly's rule).
    let r = send(n.edge, true, request_h2("alpha.example.com", "/headers")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[":version"], "HTTP/1.1");
    assert_eq!(r.json()["host"], "alpha.example.com");
    let r = send(n.edge, true, request_h2("beta.example.com", "/headers")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[":version"], "HTTP/2.0");
    let r = send(n.edge, false, request("GET", "beta", "/headers", &[])).await;
    assert_eq!(r.json()[":version"], "HTTP/2.0");
    let r = send(n.edge, false, request("GET", "alpha", "/headers", &[])).await;
    assert_eq!(r.json()[":version"], "HTTP/1.1");

    let r = get(n.edge, "nobody.example.org", "/").await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("nobody.example.org"),
        "404 names the host: {}",
        r.text()
    );
    assert!(r.header("petrel-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_spoofed_copies_removed() {
    let a = backend("alpha-1");
    let n = node(
        &[("alpha", app_toml("alpha", 10, 20, "closest", 3))],
        &[("alpha-1", "alpha", a.addr)],
        "",
    );
    let spoof = [
        ("petrel-client-ip", "1.2.3.4"),
        ("petrel-edge-region", "evil"),
        ("petrel-request-id", "forged"),
        ("petrel-internal-hop", "9"),
        ("x-forwarded-for", "10.9.8.7"),
        ("x-forwarded-proto", "https"),
        ("connection", "keep-alive, x-drop-me"),
        ("x-drop-me", "1"),
        ("keep-alive", "timeout=5"),
    ];
    let r = send(n.edge, false, request("GET", "alpha", "/headers", &spoof)).await;
    assert_eq!(r.status, 200);
    let rid = r
        .header("petrel-request-id")
        .expect("request id on response")
        .to_string();
    assert_eq!(rid.len(), 16);
    let h = r.json();
    assert_eq!(
        h["petrel-client-ip"], "127.0.0.1",
        "client-sent value must not reach the instance"
    );
    assert_eq!(h["petrel-edge-region"], "iad");
    assert_eq!(
        h["petrel-request-id"],
        rid.as_str(),
        "instance and client see the same id"
    );
    assert_eq!(
        h["x-forwarded-for"], "10.9.8.7, 127.0.0.1",
        "appended, not replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], n.edge.port().to_string());
    assert_eq!(h["via"], "1.1 petrel");
    for gone in [
        "petrel-internal-hop",
        "x-drop-me",
        "keep-alive",
        "connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
    // Every response carries a request id, errors included, and ids differ.
    let r2 = get(n.edge, "alpha", "/status?code=500").await;
    assert_eq!(r2.status, 500);
    assert_ne!(r2.header("petrel-request-id"), Some(rid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_up_and_down_stream_with_bounded_proxy_memory() {
    const MIB: usize = 1 << 20;
    let a = backend("alpha-1");
    let n = node(
        &[("alpha", app_toml("alpha", 10, 20, "closest", 3))],
        &[("alpha-1", "alpha", a.addr)],
        "",
    );
    let baseline = n.proc.rss_kib();

    // 10 MiB download, h1 and h2.
    for h2 in [false, true] {
        let req = if h2 {
            request_h2("alpha", "/bytes?n=10485760")
        } else {
            request("GET", "alpha", "/bytes?n=10485760", &[])
        };
        let r = send(n.edge, h2, req).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 10 * MIB, "h2={h2}");
    }

    // 10 MiB upload streamed in 64 KiB chunks; the backend reports what it received.
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let stream =
        futures_util::stream::iter((0..160).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        }));
    let req = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "alpha")
        .body(StreamBody::new(stream))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(n.edge).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-received-bytes"], (10 * MIB).to_string());
    let _ = resp.into_body().collect().await;

    // 100 MiB more through: if the proxy buffered bodies, its peak RSS would grow by ~100 MiB.
    let r = send(
        n.edge,
        false,
        request("GET", "alpha", "/bytes?n=104857600", &[]),
    )
    .await;
    assert_eq!(r.body.len(), 100 * MIB);
    let peak = n.proc.peak_rss_kib();
    let grew_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("proxy RSS baseline {baseline} KiB, peak {peak} KiB (+{grew_mib} MiB) after 130 MiB of bodies");
    assert!(
        grew_mib < 32,
        "proxy memory grew by {grew_mib} MiB: bodies are being buffered"
    );
}
