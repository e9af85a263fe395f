//! TLS on the edge: certificates by SNI (exact and wildcard), ALPN h2 and http/1.1, strict
//! handling of missing or unknown SNI, Host/SNI agreement, and a certificate swap on SIGHUP that
//! drops no connection.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{app_toml, backend, Proc};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::client::TlsStream;

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes `<file>.pem` / `<file>.key` for `san`; returns the leaf's DER.
fn leaf(ca: &Ca, dir: &Path, file: &str, san: &str) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![san.to_string()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

fn connector(ca: &Ca, alpn: &[&[u8]], send_sni: bool) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.enable_sni = send_sni;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Handshake with `sni`; an empty `sni` sends none (and expects a certificate for a.example.com).
async fn tls(
    ca: &Ca,
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let send_sni = !sni.is_empty();
    let name = if send_sni { sni } else { "a.example.com" };
    let name = ServerName::try_from(name.to_string()).unwrap();
    let c = connector(ca, alpn, send_sni);
    tokio::time::timeout(Duration::from_secs(5), c.connect(name, tcp))
        .await
        .expect("handshake in time")
}

fn peer_cert(s: &TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn alpn(s: &TlsStream<tokio::net::TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h1(s: TlsStream<tokio::net::TcpStream>) -> H1 {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut H1, host: &str, path: &str) -> (u16, String) {
    let req = http::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    sender.ready().await.expect("connection still open");
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_alpn_host_agreement_and_a_hitless_certificate_swap() {
    let ca = ca();
    let be_a = backend("tls-a");
    let be_b = backend("tls-b");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let a_der = leaf(&ca, &certs, "a.example.com", "a.example.com");
    let b_der = leaf(&ca, &certs, "_wildcard.b.example.com", "*.b.example.com");
    let mut app_b = app_toml("b", 10, 20, "closest", 1);
    app_b = app_b.replace(
        "hosts = [\"b.example.com\"]",
        "hosts = [\"*.b.example.com\"]",
    );
    let app_a = app_toml("a", 10, 20, "closest", 1);
    common::write_node_files(
        dir.path(),
        &[("a", app_a), ("b", app_b)],
        &[("tls-a", "a", be_a.addr), ("tls-b", "b", be_b.addr)],
        "tls_listen = [\"127.0.0.1:0\"]\ncerts_dir = \"certs\"",
    );
    let path = dir.path().join("node.toml");
    let (proc, addrs) = Proc::start(&["run", "--config", path.to_str().unwrap()], 5);
    let tls_addr = addrs.iter().find(|(k, _)| k == "tls").unwrap().1;
    let admin = addrs.iter().find(|(k, _)| k == "admin").unwrap().1;

    // Exact name, ALPN h2: the a certificate, an h2 connection, served by app a over https.
    let s = tls(&ca, tls_addr, "a.example.com", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_cert(&s), a_der);
    assert_eq!(alpn(&s).as_deref(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://a.example.com/headers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend-id"], "tls-a");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");

    // Wildcard name, ALPN http/1.1.
    let s = tls(&ca, tls_addr, "x.b.example.com", &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(peer_cert(&s), b_der);
    assert_eq!(alpn(&s).as_deref(), Some(&b"http/1.1"[..]));
    let mut c = h1(s).await;
    let (status, body) = get(&mut c, "x.b.example.com", "/").await;
    assert_eq!((status, body.as_str()), (200, "hello from tls-b\n"));

    // A Host of another app than the SNI chose: 421, and nothing reaches that app.
    let (status, body) = get(&mut c, "a.example.com", "/").await;
    assert_eq!(status, 421, "{body}");

    // No SNI and an unknown name: refused at the handshake (no default certificate yet).
    assert!(
        tls(&ca, tls_addr, "", &[]).await.is_err(),
        "no SNI must be refused"
    );
    assert!(tls(&ca, tls_addr, "c.example.com", &[]).await.is_err());
    let metrics = common::http::get(admin, "localhost", "/metrics")
        .await
        .text();
    for reason in ["no_sni", "unknown_sni"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("petrel_tls_failures_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason} counted"
        );
    }

    // Swap a.example.com's certificate (and name a default for clients without SNI) under an
    // open keep-alive connection; SIGHUP.
    let mut before = h1(tls(&ca, tls_addr, "a.example.com", &[b"http/1.1"])
        .await
        .unwrap())
    .await;
    assert_eq!(get(&mut before, "a.example.com", "/").await.0, 200);
    let new_der = leaf(&ca, &certs, "a.example.com", "a.example.com");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "certs_dir = \"certs\"",
        "certs_dir = \"certs\"\ndefault_cert = \"a.example.com\"",
    );
    std::fs::write(&path, text).unwrap();
    proc.signal(1);
    let t0 = Instant::now();
    loop {
        let s = tls(&ca, tls_addr, "a.example.com", &[]).await.unwrap();
        if peer_cert(&s) == new_der {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "new certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&mut before, "a.example.com", "/").await.0,
        200,
        "the connection opened before the swap still works"
    );
    let s = tls(&ca, tls_addr, "", &[])
        .await
        .expect("default certificate without SNI");
    assert_eq!(peer_cert(&s), new_der);
    drop(proc);
}
