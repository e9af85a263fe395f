//! Conformance with real origins: what HTTP requires of a proxy (RFC 9110, 9112, 9113), checked
//! against nginx, a strict HTTP/1.1 origin (Python `h11`) and Node's `http`, never only against
//! petrel's own lenient backend. A matrix of client protocol (HTTP/1.1, h2c, h2 over TLS) × path
//! (one node, two nodes over the h2 backhaul, two nodes over QUIC).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origins::{self, Origin};
use common::{app_toml, free_udp_port, Node, Spec};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The strict origin that closes idle keep-alive connections this soon, for the race rows.
const RACY_IDLE_MS: u64 = 30;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    H1,
    H2c,
    TlsH2,
}

const CLIENTS: [Client; 3] = [Client::H1, Client::H2c, Client::TlsH2];

#[derive(Clone, Copy, Debug)]
enum Path {
    OneNode,
    TwoNodes(&'static str),
}

/// The origins every path serves: one app per origin.
struct Origins {
    strict: Origin,
    nginx: Origin,
    node: Origin,
    racy: Origin,
}

/// A cluster in front of the origins, and what a client needs to reach it.
struct Bed {
    path: Path,
    edge: SocketAddr,
    /// The admin API of the node hosting the instances.
    owner_admin: SocketAddr,
    tls: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    origins: Origins,
    _nodes: Vec<Node>,
    _certs: tempfile::TempDir,
}

/// One app per origin; the three checked ones fail their check within a second if a probe is
/// refused (no grace), so a check that a real origin rejects shows as an unhealthy instance.
fn apps() -> Vec<(&'static str, String)> {
    ["py", "ng", "nd", "racy"]
        .iter()
        .map(|a| {
            let mut t = app_toml(a, 100, 200, "closest", 2);
            if *a != "racy" {
                t.push_str(
                    "[[http_service.checks]]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
                     grace_period = \"0s\"\npath = \"/\"\n",
                );
            }
            (*a, t)
        })
        .collect()
}

/// A CA, and a `*.example.com` certificate for the edge signed by it, in a fresh directory.
fn certs() -> (tempfile::TempDir, rustls::RootCertStore) {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["*.example.com".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let base = dir.path().join("_wildcard.example.com");
    std::fs::write(base.with_extension("com.pem"), leaf.pem()).unwrap();
    std::fs::write(base.with_extension("com.key"), key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_cert.der().to_vec()))
        .unwrap();
    (dir, roots)
}

async fn bed(path: Path) -> Bed {
    let strict = origins::strict("py-1", 5000);
    let origins = Origins {
        nginx: origins::nginx(strict.addr),
        node: origins::node("nd-1", 5000),
        racy: origins::strict("racy-1", RACY_IDLE_MS),
        strict,
    };
    let instances = vec![
        ("py-1", "py", origins.strict.addr),
        ("ng-1", "ng", origins.nginx.addr),
        ("nd-1", "nd", origins.node.addr),
        ("racy-1", "racy", origins.racy.addr),
    ];
    let (certs, roots) = certs();
    let tls_edge = format!(
        "tls_listen = [\"127.0.0.1:0\"]\ncerts_dir = \"{}\"",
        certs.path().display()
    );
    let nodes = match path {
        Path::OneNode => {
            let mut s = Spec::new("solo-1", "iad");
            s.apps = apps();
            s.instances = instances;
            s.edge_extra = tls_edge;
            vec![s.start()]
        }
        Path::TwoNodes(transport) => {
            let seed = free_udp_port();
            let mut owner = Spec::new("owner-1", "iad");
            owner.key = Some(KEY);
            owner.transport = transport;
            owner.apps = apps();
            owner.instances = instances;
            owner.seeded(seed, true);
            let owner = owner.start();
            let mut edge = Spec::new("edge-1", "iad");
            edge.key = Some(KEY);
            edge.transport = transport;
            edge.apps = apps();
            edge.edge_extra = tls_edge;
            edge.seeded(seed, false);
            let edge = edge.start();
            wait_for_instances(edge.admin, 4).await;
            vec![edge, owner]
        }
    };
    let edge = &nodes[0];
    Bed {
        path,
        owner_admin: nodes.last().unwrap().admin,
        edge: edge.edge,
        tls: edge.tls.expect("TLS listener"),
        roots: Arc::new(roots),
        origins,
        _nodes: nodes,
        _certs: certs,
    }
}

async fn wait_for_instances(admin: SocketAddr, n: usize) {
    let t0 = Instant::now();
    loop {
        let v = common::http::get_json(admin, "/v1/instances").await;
        if v["instances"].as_array().map_or(0, |a| a.len()) >= n {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the edge never saw the owner's instances: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A response read to its end, trailers included.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A request as `client` sends it: HTTP/1.1 with a Host; h2 with the host in `:authority`.
fn req(
    client: Client,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method);
    b = match client {
        Client::H1 => b.uri(path).header("host", host),
        Client::H2c => b
            .uri(format!("http://{host}{path}"))
            .version(http::Version::HTTP_2),
        Client::TlsH2 => b
            .uri(format!("https://{host}{path}"))
            .version(http::Version::HTTP_2),
    };
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).expect("request")
}

/// Sends one request over a new connection and returns the response head with its body unread.
async fn open(
    bed: &Bed,
    client: Client,
    r: Request<Full<Bytes>>,
) -> Result<http::Response<Incoming>, String> {
    let resp = tokio::time::timeout(Duration::from_secs(30), async {
        match client {
            Client::H1 | Client::H2c => {
                let tcp = tokio::net::TcpStream::connect(bed.edge)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                if client == Client::H1 {
                    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(conn);
                    s.send_request(r).await.map_err(|e| format!("h1: {e}"))
                } else {
                    let (mut s, conn) = hyper::client::conn::http2::handshake(
                        TokioExecutor::new(),
                        TokioIo::new(tcp),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    tokio::spawn(conn);
                    s.send_request(r).await.map_err(|e| format!("h2c: {e}"))
                }
            }
            Client::TlsH2 => {
                let host = r.uri().host().unwrap_or_default().to_string();
                let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(bed.roots.clone())
                .with_no_client_auth();
                cfg.alpn_protocols = vec![b"h2".to_vec()];
                let tcp = tokio::net::TcpStream::connect(bed.tls)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                    .connect(ServerName::try_from(host).unwrap(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (mut s, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                s.send_request(r).await.map_err(|e| format!("TLS h2: {e}"))
            }
        }
    })
    .await
    .map_err(|_| "no response within 30 s".to_string())??;
    Ok(resp)
}

async fn try_send(bed: &Bed, client: Client, r: Request<Full<Bytes>>) -> Result<Got, String> {
    let resp = open(bed, client, r).await?;
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .map_err(|_| "body not read within 30 s".to_string())?
        .map_err(|e| format!("body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

async fn send(bed: &Bed, client: Client, r: Request<Full<Bytes>>) -> Got {
    let what = format!("{} {}", r.method(), r.uri());
    try_send(bed, client, r)
        .await
        .unwrap_or_else(|e| panic!("{:?} {client:?} {what}: {e}", bed.path))
}

async fn get(bed: &Bed, client: Client, host: &str, path: &str) -> Got {
    send(
        bed,
        client,
        req(client, "GET", host, path, &[], Bytes::new()),
    )
    .await
}

/// Sends `bytes` to the plain edge and asserts the answer's status line; `what` names the case.
async fn expect_status(bed: &Bed, bytes: &[u8], status: u16, what: &str) {
    let out = raw(bed.edge, bytes).await;
    let want = format!("HTTP/1.1 {status}");
    assert!(out.starts_with(&want), "{:?} {what}: {out:.300}", bed.path);
}

/// Sends raw bytes to the plain edge and reads until the peer closes (or `limit` passes).
async fn raw(edge: SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

// ---- the rows of "Real origins" -------------------------------------------------------------

/// Rows 1 and 2: every client gets the nginx app's page, and nginx saw the client's Host.
async fn h2_clients_reach_http1_origins_with_host(bed: &Bed) {
    for c in CLIENTS {
        let r = get(bed, c, "ng.example.com", "/").await;
        assert_eq!(r.status, 200, "{:?} {c:?}: {}", bed.path, r.text());
        assert!(
            r.text().contains("host=ng.example.com"),
            "{:?} {c:?}: {}",
            bed.path,
            r.text()
        );
        let r = get(bed, c, "nd.example.com", "/headers").await;
        assert_eq!(r.status, 200, "{:?} {c:?} node: {}", bed.path, r.text());
        let seen = r.json();
        assert_eq!(seen["httpVersion"], "1.1", "{seen}");
        assert_eq!(seen["url"], "/headers", "{seen}");
        // The strict origin: origin-form target, one Host with the client's authority, HTTP/1.1,
        // the split cookies of an h2 client joined, connection-specific headers gone.
        // A client's word for what petrel adds is replaced, never passed on beside it.
        let mut extra = vec![
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-ssl", "on"),
            ("petrel-client-ip", "6.6.6.6"),
        ];
        if c == Client::H1 {
            extra.extend([
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
            ]);
        }
        let r = send(
            bed,
            c,
            req(
                c,
                "GET",
                "py.example.com",
                "/headers?q=1",
                &extra,
                Bytes::new(),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{:?} {c:?}: {}", bed.path, r.text());
        let seen = r.json();
        assert_eq!(seen["target"], "/headers?q=1", "{seen}");
        assert_eq!(seen["http_version"], "1.1", "{seen}");
        let headers: Vec<(String, String)> = seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let all = |n: &str| -> Vec<&str> {
            headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(all("host"), ["py.example.com"], "{seen}");
        assert_eq!(all("cookie"), ["a=1; b=2"], "{seen}");
        assert!(all("x-secret").is_empty(), "{seen}");
        assert_eq!(all("x-forwarded-for"), ["127.0.0.1"], "{seen}");
        assert_eq!(all("x-forwarded-proto").len(), 1, "{seen}");
        assert_ne!(all("x-forwarded-proto"), ["gopher"], "{seen}");
        assert_eq!(all("x-forwarded-port").len(), 1, "{seen}");
        assert_ne!(all("x-forwarded-port"), ["1"], "{seen}");
        assert!(all("x-forwarded-ssl").is_empty(), "{seen}");
        assert_eq!(all("petrel-client-ip"), ["127.0.0.1"], "{seen}");
        assert_eq!(all("petrel-edge-region"), ["iad"], "{seen}");
        assert!(
            headers
                .iter()
                .all(|(k, _)| !k.starts_with("petrel-internal")),
            "{seen}"
        );
        assert!(r
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("petrel-internal")));
        assert!(!r.header("petrel-request-id").is_empty());
    }
}

/// Row 4: an absolute-form target names the app and becomes the Host the instance sees
/// (RFC 9112 §3.2.2), whatever `Host` said; an HTTP/1.1 request without Host is refused.
async fn absolute_form_rebuilds_host(bed: &Bed) {
    let out = raw(
        bed.edge,
        b"GET http://py.example.com/headers HTTP/1.1\r\nHost: other.example.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{:?}: {out}", bed.path);
    assert!(
        out.contains(r#"["host", "py.example.com"]"#),
        "{:?}: {out}",
        bed.path
    );
    assert!(out.contains(r#""target": "/headers""#), "{out}");
    let out = raw(
        bed.edge,
        b"GET http://ng.example.com/ HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.contains("host=ng.example.com"), "{:?}: {out}", bed.path);
    let out = raw(bed.edge, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // An empty path with a query is `/?query` in origin form (RFC 9112 §3.2.1).
    let out = raw(
        bed.edge,
        b"GET http://py.example.com?x=1 HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    // (The strict origin refuses any target not in origin form.)
    assert!(out.starts_with("HTTP/1.1 200"), "{:?}: {out}", bed.path);
    assert!(out.ends_with("hello from py-1\n"), "{:?}: {out}", bed.path);
    // Userinfo in the target is refused, never routed by it (RFC 9110 §4.2.4).
    let out = raw(
        bed.edge,
        b"GET http://ng.example.com:80@py.example.com/ HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A client naming Host in Connection does not take the Host away from the instance.
    let out = raw(
        bed.edge,
        b"GET / HTTP/1.1\r\nHost: ng.example.com\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert!(out.contains("host=ng.example.com"), "{:?}: {out}", bed.path);
    // curl --http2's h2c upgrade offer is not an upgrade petrel tunnels: an ordinary GET, whole.
    let out = raw(
        bed.edge,
        b"GET /big HTTP/1.1\r\nHost: ng.example.com\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "{:?}: {out:.200}",
        bed.path
    );
    let body = out.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    assert!(body >= 1_000_000, "{:?}: body of {body} bytes", bed.path);
}

/// Request-target forms (RFC 9112 §3.2): the authority form is CONNECT's alone, `OPTIONS *`
/// reaches the origin as `*`, and a target is ASCII; and responses in petrel's own
/// HTTP version (RFC 9110 §6.2), with no `Content-Length` on a 204 (RFC 9110 §8.6).
async fn message_form_rules(bed: &Bed) {
    let p = bed.path;
    expect_status(
        bed,
        b"GET py.example.com:80 HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
        400,
        "authority form",
    )
    .await;
    // `OPTIONS *` reaches the origin as it is.
    let out = raw(
        bed.edge,
        b"OPTIONS * HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.contains("asterisk-form"), "{p:?} OPTIONS *: {out}");
    // And from HTTP/2 clients (`:path *`), on every path.
    for c in [Client::H2c, Client::TlsH2] {
        let scheme = if c == Client::H2c { "http" } else { "https" };
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority("py.example.com")
            .path_and_query("*")
            .build()
            .unwrap();
        let r = Request::builder()
            .method("OPTIONS")
            .uri(uri)
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = send(bed, c, r).await;
        assert_eq!(
            r.header("x-target"),
            "*",
            "{p:?} {c:?} OPTIONS *: {}",
            r.text()
        );
    }
    expect_status(
        bed,
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
        400,
        "non-ASCII target",
    )
    .await;
    expect_status(
        bed,
        b"GET * HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
        400,
        "GET *",
    )
    .await;
    for host in ["py.example.com/evil", "py example.com"] {
        let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let out = raw(bed.edge, head.as_bytes()).await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{p:?} Host {host:?}: {out}"
        );
    }
    // RFC 9112 §3.2: an HTTP/1.1 request needs Host, even in absolute form; an empty port is
    // a valid one (RFC 3986 §3.2.3).
    expect_status(
        bed,
        b"GET http://py.example.com/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        400,
        "no Host",
    )
    .await;
    expect_status(
        bed,
        b"GET / HTTP/1.1\r\nHost: py.example.com:\r\nConnection: close\r\n\r\n",
        200,
        "empty port",
    )
    .await;
    // A bad chunk past the read-ahead is still the client's fault: 400, not 502.
    let mut bad = b"POST /echo HTTP/1.1\r\nHost: py.example.com\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n186a0\r\n"
        .to_vec();
    bad.extend(std::iter::repeat_n(b'x', 100_000));
    bad.extend_from_slice(b"\r\nzz\r\n");
    let out = raw(bed.edge, &bad).await;
    assert!(
        out.starts_with("HTTP/1.1 400"),
        "{p:?} bad chunk after 64 KiB: {out:.300}"
    );
    // An HTTP/1.0 request's Expect is ignored (RFC 9110 §10.1.1), not passed on.
    let out = raw(
        bed.edge,
        b"GET /headers HTTP/1.0\r\nHost: py.example.com\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(
        !out.to_ascii_lowercase().contains(r#"["expect""#),
        "{p:?}: {out}"
    );
    // An HTTP/1.0 client's hop is named as such in Via (RFC 9110 §7.6.3).
    let out = raw(
        bed.edge,
        b"GET /headers HTTP/1.0\r\nHost: py.example.com\r\n\r\n",
    )
    .await;
    assert!(out.contains(r#"["via", "1.0 petrel"]"#), "{p:?}: {out}");
    // A GET may carry content (RFC 9110 §9.3.1): chunked from HTTP/1.1, unsized from HTTP/2.
    let out = raw(
        bed.edge,
        b"GET /headers HTTP/1.1\r\nHost: py.example.com\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.contains(r#""body_len": 3"#), "{p:?} chunked GET: {out}");
    for c in [Client::H2c, Client::TlsH2] {
        let r = send(
            bed,
            c,
            req(
                c,
                "GET",
                "py.example.com",
                "/headers",
                &[],
                Bytes::from_static(b"abcd"),
            ),
        )
        .await;
        assert_eq!(r.json()["body_len"], 4, "{p:?} {c:?} GET with DATA");
    }
    let out = raw(
        bed.edge,
        b"GET /http10 HTTP/1.1\r\nHost: py.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "{p:?} HTTP/1.0 origin: {out}"
    );
    assert!(out.ends_with("from an HTTP/1.0 origin\n"), "{p:?}: {out}");
    for c in CLIENTS {
        let r = get(bed, c, "py.example.com", "/status/204").await;
        assert_eq!(r.status, 204, "{p:?} {c:?}");
        assert!(
            !r.headers.contains_key("content-length"),
            "{p:?} {c:?}: a 204 with {:?}",
            r.headers
        );
        // A large request head (nginx's default is 8 KB a line, 32 KB in all) passes every path.
        let big = "v".repeat(24 * 1024);
        let r = send(
            bed,
            c,
            req(
                c,
                "GET",
                "py.example.com",
                "/headers",
                &[("x-big", &big)],
                Bytes::new(),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{p:?} {c:?} 24 KB header: {}", r.text());
    }
}

/// Row 5: an instance that answers 413 at once and closes without reading a 20 MB upload; the
/// client gets that 413, every time. nginx's own early 413 too. And the sibling: an instance that
/// answers `200` early without wanting the upload (2 MB and 20 MB) is not a failure either.
async fn early_answers_reach_the_client(bed: &Bed) {
    for (path, size, want) in [
        ("/early-413", 20 << 20, 413),
        ("/early-200", 2 << 20, 200),
        ("/early-200", 20 << 20, 200),
    ] {
        let big = Bytes::from(vec![b'u'; size]);
        for c in CLIENTS {
            let mut got = Vec::new();
            for _ in 0..10 {
                let r = try_send(
                    bed,
                    c,
                    req(c, "POST", "py.example.com", path, &[], big.clone()),
                )
                .await;
                got.push(r.map(|r| r.status.as_u16()).unwrap_or_else(|e| {
                    eprintln!("{:?} {c:?} {path} {size}: {e}", bed.path);
                    0
                }));
            }
            assert!(
                got.iter().all(|&s| s == want),
                "{:?} {c:?} {path} {size} bytes: {got:?}",
                bed.path
            );
        }
    }
    let big = Bytes::from(vec![b'u'; 20 << 20]);
    for c in CLIENTS {
        let r = try_send(
            bed,
            c,
            req(c, "POST", "ng.example.com", "/limited", &[], big.clone()),
        )
        .await;
        assert_eq!(
            r.map(|r| r.status.as_u16()),
            Ok(413),
            "{:?} {c:?} nginx",
            bed.path
        );
    }
}

/// An h2 client whose upload is cut short by an early, complete answer is told to stop sending:
/// `RST_STREAM(NO_ERROR)` after the response's `END_STREAM` (RFC 9113 §8.1), as nginx does. A
/// client that waits for that reset (curl does) would otherwise hang with its upload half sent.
async fn h2_early_answer_resets_the_upload(bed: &Bed) {
    for _ in 0..5 {
        let tcp = tokio::net::TcpStream::connect(bed.edge).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let r = Request::post("http://py.example.com/early-200")
            .header("content-length", (2 << 20).to_string())
            .body(())
            .unwrap();
        let (resp, mut upload) = client.send_request(r, false).unwrap();
        upload
            .send_data(Bytes::from(vec![b'u'; 256 << 10]), false)
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("response within 10 s")
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", bed.path);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data())
            .await
            .expect("body within 10 s")
        {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"early 200\n", "{:?}", bed.path);
        let reset = tokio::time::timeout(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| upload.poll_reset(cx)),
        )
        .await;
        assert_eq!(
            reset.map(|r| r.map_err(|e| e.to_string())),
            Ok(Ok(h2::Reason::NO_ERROR)),
            "{:?}: the upload was not reset within 2 s of the complete response",
            bed.path
        );
    }
}

/// A response with no body reaches an HTTP/2 client as one HEADERS frame with `END_STREAM` on
/// every path (a gRPC "trailers-only" answer depends on it), not HEADERS and an empty DATA.
async fn bodiless_responses_end_with_their_headers(bed: &Bed) {
    for (method, path) in [
        ("GET", "/status/204"),
        ("HEAD", "/"),
        ("GET", "/status/304"),
    ] {
        let tcp = tokio::net::TcpStream::connect(bed.edge).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let r = Request::builder()
            .method(method)
            .uri(format!("http://py.example.com{path}"))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(r, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("response within 10 s")
            .unwrap();
        assert!(
            resp.body().is_end_stream(),
            "{:?} {method} {path}: {} headers without END_STREAM",
            bed.path,
            resp.status()
        );
    }
}

/// Row 6 as far as the stack allows: the 103 is not forwarded (hyper's server cannot send one),
/// and the final response arrives intact after it.
async fn early_hints_do_not_break_the_response(bed: &Bed) {
    for c in CLIENTS {
        for host in ["py.example.com", "nd.example.com"] {
            let r = get(bed, c, host, "/early-hints").await;
            assert_eq!(
                (r.status.as_u16(), r.text().trim()),
                (200, "ok"),
                "{c:?} {host}"
            );
        }
    }
}

/// Row 3: an origin that closes idle keep-alive connections after 30 ms, and one request every
/// 25–35 ms for at least 500 requests, so requests meet connections as the origin closes them.
/// Three in seven are `POST`/`PATCH` or a 300 KB `PUT`, which petrel may not resend.
async fn stale_pooled_connections_are_invisible(bed: &Bed) {
    let mut failures = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let n = 520;
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pause = RACY_IDLE_MS - 5 + seed % 11;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let (method, c) = match i % 7 {
            0 => ("HEAD", Client::H1),
            1 => ("GET", Client::H2c),
            2 => ("GET", Client::H1),
            3 => ("POST", Client::H1),
            4 => ("POST", Client::H2c),
            5 => ("PATCH", Client::H1),
            _ => ("PUT", Client::H1),
        };
        // A POST or PATCH may not be resent once it may have reached the instance, so it must
        // not meet the instance's idle close at all; nor may a PUT whose body is too large to
        // keep for a resend.
        let (path, body) = match method {
            "POST" | "PATCH" => ("/echo", Bytes::from(format!("request {i}"))),
            "PUT" => ("/echo", Bytes::from(vec![b'p'; 300_000])),
            _ => ("/", Bytes::new()),
        };
        let len = body.len().to_string();
        match try_send(bed, c, req(c, method, "racy.example.com", path, &[], body)).await {
            Ok(r) if r.status == 200 && (path == "/" || r.header("x-body-len") == len) => {}
            Ok(r) => failures.push(format!("{method} #{i}: {} {}", r.status, r.text())),
            Err(e) => failures.push(format!("{method} #{i}: {e}")),
        }
    }
    let stats = common::http::get_json(bed.origins.racy.addr, "/stats").await;
    eprintln!(
        "{:?}: {n} requests paced around a {RACY_IDLE_MS} ms idle close: {} failed; origin saw {} connections for {} requests",
        bed.path,
        failures.len(),
        stats["connections"],
        stats["requests"]
    );
    assert!(failures.is_empty(), "{:?}: {failures:#?}", bed.path);
}

/// What a proxy must do itself: `Via` on responses too (RFC 9110 §7.6.3), `Max-Forwards` on
/// OPTIONS and TRACE (§7.6.2), and no `CONNECT` tunnels through a reverse proxy.
async fn proxy_duties(bed: &Bed) {
    for c in CLIENTS {
        let r = get(bed, c, "py.example.com", "/").await;
        assert!(
            r.header("via").ends_with("1.1 petrel"),
            "{c:?}: {:?}",
            r.headers
        );
        let r = send(
            bed,
            c,
            req(
                c,
                "OPTIONS",
                "py.example.com",
                "/headers",
                &[("max-forwards", "2")],
                Bytes::new(),
            ),
        )
        .await;
        assert!(
            r.text().contains(r#"["max-forwards", "1"]"#),
            "{:?} {c:?}: {}",
            bed.path,
            r.text()
        );
        let r = send(
            bed,
            c,
            req(
                c,
                "OPTIONS",
                "py.example.com",
                "/",
                &[("max-forwards", "0")],
                Bytes::new(),
            ),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-origin-id"),
            "",
            "answered by petrel, not the origin"
        );
        let r = send(
            bed,
            c,
            req(
                c,
                "TRACE",
                "py.example.com",
                "/",
                &[("max-forwards", "0")],
                Bytes::new(),
            ),
        )
        .await;
        assert_eq!(r.status, 405);
    }
    let out = raw(
        bed.edge,
        b"CONNECT py.example.com:443 HTTP/1.1\r\nHost: py.example.com:443\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
}

/// Health checks reach real origins in a form they accept: every checked instance stayed healthy.
async fn health_checks_pass(bed: &Bed) {
    let v = common::http::get_json(bed.owner_admin, "/v1/instances").await;
    for i in v["instances"].as_array().unwrap() {
        assert_eq!(i["healthy"], true, "{:?}: {i}", bed.path);
    }
}

// ---- the controls ---------------------------------------------------------------------------

/// Server-sent events arrive as the origin writes them (200 ms apart), not all at the end.
async fn sse_streams(bed: &Bed) {
    for c in CLIENTS {
        for host in ["py.example.com", "ng.example.com"] {
            let t0 = Instant::now();
            let resp = open(
                bed,
                c,
                req(c, "GET", host, "/sse?n=4&ms=250", &[], Bytes::new()),
            )
            .await
            .unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            let mut arrivals = Vec::new();
            let mut text = String::new();
            while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("event in time")
            {
                if let Ok(data) = frame.unwrap().into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                    arrivals.push(t0.elapsed());
                }
            }
            assert_eq!(text.matches("data: ").count(), 4, "{c:?} {host}: {text}");
            let spread = *arrivals.last().unwrap() - arrivals[0];
            assert!(
                spread >= Duration::from_millis(600),
                "{:?} {c:?} {host}: events were buffered, arrivals {arrivals:?}",
                bed.path
            );
        }
    }
}

/// HEAD, 204 and 304 have no body, and the connection stays usable after each.
async fn bodiless_responses_keep_framing(bed: &Bed) {
    let out = raw(
        bed.edge,
        b"HEAD /big HTTP/1.1\r\nHost: ng.example.com\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: ng.example.com\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nHost: py.example.com\r\n\r\n\
          GET / HTTP/1.1\r\nHost: ng.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let heads: Vec<&str> = out.matches("HTTP/1.1 ").collect();
    assert_eq!(heads.len(), 4, "{:?}: {out}", bed.path);
    assert!(
        out.to_ascii_lowercase().contains("content-length: 1048576"),
        "{out}"
    );
    let statuses: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "204", "304", "200"], "{out}");
    assert!(out.ends_with("host=ng.example.com\n"), "{out}");
    for c in [Client::H2c, Client::TlsH2] {
        let r = send(
            bed,
            c,
            req(c, "HEAD", "ng.example.com", "/big", &[], Bytes::new()),
        )
        .await;
        assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
        assert_eq!(r.header("content-length"), "1048576");
        for (host, path, status) in [
            ("ng.example.com", "/status/204", 204),
            ("py.example.com", "/status/304", 304),
        ] {
            let r = get(bed, c, host, path).await;
            assert_eq!((r.status.as_u16(), r.body.len()), (status, 0), "{c:?}");
        }
    }
}

/// Trailers of a chunked HTTP/1.1 response reach HTTP/1.1 and h2 clients.
async fn trailers_pass(bed: &Bed) {
    for c in CLIENTS {
        for path in ["/trailers", "/trailers?bad=1"] {
            let r = send(
                bed,
                c,
                req(
                    c,
                    "GET",
                    "py.example.com",
                    path,
                    &[("te", "trailers")],
                    Bytes::new(),
                ),
            )
            .await;
            assert_eq!(r.text(), "hello", "{c:?} {path}");
            let t = r.trailers.unwrap_or_default();
            assert_eq!(
                t.get("x-checksum").map(|v| v.to_str().unwrap()),
                Some("abc123"),
                "{:?} {c:?} {path}: trailers {t:?}",
                bed.path
            );
            assert!(
                !t.contains_key("connection") && !t.contains_key("keep-alive"),
                "{:?} {c:?}: connection-specific trailers passed: {t:?}",
                bed.path
            );
        }
    }
    // A client's trailer section with a connection-specific field: dropped, the request whole.
    let out = raw(
        bed.edge,
        b"POST /echo HTTP/1.1\r\nHost: py.example.com\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n3\r\nabc\r\n0\r\nConnection: close\r\nX-Sum: 1\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{:?}: {out}", bed.path);
    assert!(out.contains("x-body-len: 3"), "{:?}: {out}", bed.path);
}

/// A client that waits for `100 Continue` gets it, and its body reaches the origin.
async fn expect_continue(bed: &Bed) {
    let mut s = tokio::net::TcpStream::connect(bed.edge).await.unwrap();
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: py.example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("100 Continue within 3 s")
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 100"), "{:?}: {first}", bed.path);
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(rest.contains(" 200 "), "{rest}");
    assert!(rest.contains("x-body-len: 5"), "{rest}");
}

/// Bodies arrive intact both ways, through the strict origin and through nginx.
async fn bodies_arrive_intact(bed: &Bed) {
    let body: Bytes = (0..300_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let sum = sha256_hex(&body);
    for c in CLIENTS {
        for host in ["py.example.com", "ng.example.com", "nd.example.com"] {
            let r = send(bed, c, req(c, "POST", host, "/echo", &[], body.clone())).await;
            assert_eq!(r.status, 200, "{c:?} {host}: {}", r.text());
            assert_eq!(
                r.header("x-body-sha256"),
                sum,
                "{:?} {c:?} {host}",
                bed.path
            );
            assert!(r.body == body, "{c:?} {host}: echo differs");
        }
    }
}

/// WebSockets echo through the strict Python origin and through nginx in front of it.
async fn websockets_echo(bed: &Bed) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for host in ["py.example.com", "ng.example.com"] {
        let mut ws = common::ws::connect(bed.edge, host, &[]).await;
        for m in [Message::text("hello"), Message::binary(vec![7u8; 70_000])] {
            ws.send(m.clone()).await.unwrap();
            let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("echo in time")
                .unwrap()
                .unwrap();
            assert_eq!(back, m, "{:?} {host}", bed.path);
        }
        ws.close(None).await.unwrap();
    }
}

async fn conformance(path: Path) {
    let bed = bed(path).await;
    h2_clients_reach_http1_origins_with_host(&bed).await;
    absolute_form_rebuilds_host(&bed).await;
    message_form_rules(&bed).await;
    proxy_duties(&bed).await;
    bodies_arrive_intact(&bed).await;
    bodiless_responses_keep_framing(&bed).await;
    trailers_pass(&bed).await;
    expect_continue(&bed).await;
    early_hints_do_not_break_the_response(&bed).await;
    websockets_echo(&bed).await;
    sse_streams(&bed).await;
    early_answers_reach_the_client(&bed).await;
    h2_early_answer_resets_the_upload(&bed).await;
    bodiless_responses_end_with_their_headers(&bed).await;
    stale_pooled_connections_are_invisible(&bed).await;
    health_checks_pass(&bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_origins_one_node() {
    conformance(Path::OneNode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_origins_two_nodes_h2_backhaul() {
    conformance(Path::TwoNodes("h2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_origins_two_nodes_quic_backhaul() {
    conformance(Path::TwoNodes("quic")).await;
}
