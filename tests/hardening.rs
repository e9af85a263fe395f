//! Hostile clients: malformed and smuggling-shaped requests get the right 4xx and never reach an
//! instance; 500 slowloris connections neither starve normal requests nor outlive the header
//! timeout.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{app_toml, node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything each connection to the instance carried, lowercased.
type Heads = Arc<std::sync::Mutex<Vec<String>>>;

/// A raw instance that counts every connection that delivered at least one byte, and answers 200.
async fn recording_instance() -> (SocketAddr, Arc<AtomicUsize>, Heads) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let r = reached.clone();
    let heads: Heads = Arc::default();
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (r, h) = (r.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                let mut counted = false;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !counted {
                        counted = true;
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        // Let a body that follows the head arrive too.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
                        {
                            seen.extend_from_slice(&buf[..n]);
                        }
                        h.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&seen).to_lowercase());
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (addr, reached, heads)
}

/// Sends raw bytes and returns the status code of the first response (0: closed without one).
async fn raw(edge: SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(2).any(|w| w == b"\r\n") {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let line = String::from_utf8_lossy(&got);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_smuggling_requests_get_4xx_and_never_reach_an_instance() {
    let (inst, reached, heads) = recording_instance().await;
    let n = node(
        &[("app", app_toml("app", 10, 20, "closest", 1))],
        &[("h-1", "app", inst)],
        "max_header_bytes = 16384\nmax_body_bytes = 1024",
    );
    let big = "a".repeat(20_000);
    let body = "b".repeat(2000);
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("two different Content-Lengths", b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), &[400]),
        ("Content-Length list of different values", b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 6\r\n\r\nhello!".to_vec(), &[400]),
        ("non-numeric Content-Length", b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5x\r\n\r\nhello".to_vec(), &[400]),
        ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: -1\r\n\r\n".to_vec(), &[400]),
        ("Transfer-Encoding not ending in chunked", b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(), &[400, 501]),
        ("obs-folded Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        ("obs-fold in another header", b"GET / HTTP/1.1\r\nHost: app\r\nX-Long: a\r\n b\r\n\r\n".to_vec(), &[400]),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost : app\r\n\r\n".to_vec(), &[400]),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(), &[400]),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(), &[400]),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n".to_vec(), &[400]),
        ("control character in the method", b"G\x01T / HTTP/1.1\r\nHost: app\r\n\r\n".to_vec(), &[400]),
        ("unknown HTTP version", b"GET / HTTP/1.2\r\nHost: app\r\n\r\n".to_vec(), &[400, 505]),
        ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: app\r\nX-A: a\x00b\r\n\r\n".to_vec(), &[400]),
        ("quote in a header name", b"GET / HTTP/1.1\r\nHost: app\r\nX\"A: b\r\n\r\n".to_vec(), &[400]),
        ("headers over max_header_bytes", format!("GET / HTTP/1.1\r\nHost: app\r\nX-Big: {big}\r\n\r\n").into_bytes(), &[431]),
        ("Transfer-Encoding twice", b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n".to_vec(), &[400, 501]),
        ("Content-Length over max_body_bytes", format!("POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 2000\r\n\r\n{body}").into_bytes(), &[413]),
        ("request line is garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), &[400]),
    ];
    assert!(cases.len() >= 15);
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for (what, bytes, want) in &cases {
        let before = reached.load(Ordering::SeqCst);
        let got = raw(n.edge, bytes).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let arrived = reached.load(Ordering::SeqCst) - before;
        table.push(format!("{what:<42} {got} (instance saw {arrived})"));
        if !want.contains(&got) || arrived != 0 {
            wrong.push(format!(
                "{what}: got {got} (want {want:?}), reached the instance {arrived} time(s)"
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The same instance does answer a well-formed request.
    assert_eq!(
        raw(n.edge, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await,
        200
    );
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    // A chunked body that grows past max_body_bytes is cut off with 413 too.
    let chunk = "c".repeat(1000);
    let streamed = format!(
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{chunk}\r\n3e8\r\n{chunk}\r\n0\r\n\r\n"
    );
    assert_eq!(raw(n.edge, streamed.as_bytes()).await, 413);

    // The classic CL.TE smuggle: a front end framing by Content-Length would carry the second
    // request inside the body. Here Transfer-Encoding wins (RFC 9112 §6.3), Content-Length is
    // dropped, and the connection closes after the response: the instance gets one chunked
    // request with an empty body, and the smuggled one goes nowhere.
    tokio::time::sleep(Duration::from_millis(300)).await; // the instance records what it got
    heads.lock().unwrap().clear();
    let smuggle = b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(n.edge).await.unwrap();
    s.write_all(smuggle).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the edge closes the connection after the response")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "one response only: {text}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("transfer-encoding: chunked"),
        "{}",
        seen[0]
    );
    assert!(!seen[0].contains("content-length"), "{}", seen[0]);
    assert!(!seen.iter().any(|h| h.contains("smuggled")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_at_the_header_timeout_and_starve_nobody() {
    let be = common::backend("sl-1");
    let n = node(
        &[("app", app_toml("app", 50, 100, "closest", 1))],
        &[("sl-1", "app", be.addr)],
        "header_read_timeout = \"2s\"",
    );
    // 500 connections: half send nothing, half dribble an unfinished head.
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for i in 0..500 {
        let mut s = tokio::net::TcpStream::connect(n.edge).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nX-Slow: ")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    let dribble = tokio::spawn(async move {
        // One more byte per connection every 500 ms, never finishing the head; record when each
        // connection is closed by the server.
        let mut closed_at = vec![None; slow.len()];
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (i, s) in slow.iter_mut().enumerate() {
                if closed_at[i].is_some() {
                    continue;
                }
                let mut b = [0u8; 256];
                let gone =
                    match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => true,
                        Ok(Ok(_)) => true, // a 408 answer, then close
                        Err(_) => i % 2 == 0 && s.write_all(b"a").await.is_err(),
                    };
                if gone {
                    closed_at[i] = Some(t0.elapsed());
                }
            }
        }
        closed_at
    });
    // Meanwhile normal requests are served at once.
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let r = common::http::get(n.edge, "app", "/").await;
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let closed_at = dribble.await.unwrap();
    let closed: Vec<Duration> = closed_at.iter().flatten().copied().collect();
    let last = closed.iter().max().copied().unwrap_or_default();
    let first = closed.iter().min().copied().unwrap_or_default();
    eprintln!(
        "slowloris: {} of 500 closed by the server, between {first:?} and {last:?}; slowest normal request {worst:?}",
        closed.len()
    );
    assert_eq!(closed.len(), 500, "every slow connection is closed");
    // An idle keep-alive connection is closed too, once the next head does not come in time.
    let mut idle = tokio::net::TcpStream::connect(n.edge).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let got = idle.read(&mut buf).await.unwrap();
    assert!(buf[..got].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("idle keep-alive connection closed within 5 s")
        .ok();
    let idle_closed = t.elapsed();
    eprintln!("idle keep-alive connection closed after {idle_closed:?}");
    assert!(
        idle_closed >= Duration::from_millis(1500),
        "{idle_closed:?}"
    );
    assert!(
        last < Duration::from_secs(4),
        "closed at the 2 s header timeout, last at {last:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "normal requests served promptly: {worst:?}"
    );
}

/// The header timer of a keep-alive connection bounds only the wait for a request head: a
/// response slower than `edge.header_read_timeout` arrives whole and keeps its connection, and
/// the next head on that connection is still timed. (petrel's hyper keeps that timer between
/// requests instead of making a new one for each: vendor/PATCHES.md.) Real origin: the strict
/// h11 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_slower_than_the_header_timeout_keeps_its_connection_and_the_next_head_is_timed()
{
    let origin = common::origins::strict("ht-1", 10_000);
    let n = node(
        &[("slow", app_toml("slow", 50, 100, "closest", 0))],
        &[("ht-1", "slow", origin.addr)],
        "header_read_timeout = \"1s\"",
    );
    let mut s = tokio::net::TcpStream::connect(n.edge).await.unwrap();
    // Fast, slow (2.5 s, past the 1 s header timeout: the kept timer fires meanwhile), fast
    // again, slow again: one connection throughout.
    for (path, body) in [
        ("/", "hello from ht-1"),
        ("/slow?ms=2500", "slow ok"),
        ("/", "hello from ht-1"),
        ("/slow?ms=1500", "slow ok"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: slow\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = async {
            while !String::from_utf8_lossy(&got).contains(body) {
                let mut b = [0u8; 4096];
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&b[..k]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| panic!("no whole answer to {path} within 10 s"));
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        assert!(text.contains(body), "{path} ended early: {text}");
    }
    // Now, straight after a response that outlasted the timer, an unfinished head: the connection
    // is closed about 1 s later, not left open.
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .await
        .unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut rest))
        .await
        .expect("the unfinished head's connection is closed within 6 s")
        .ok();
    let closed = t.elapsed();
    assert!(
        closed >= Duration::from_millis(800) && closed < Duration::from_secs(4),
        "closed {closed:?} after the unfinished head (header timeout 1 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_every_admin_path() {
    let token = "s3cret-token-0123456789";
    let mut n = node(&[("app", app_toml("app", 5, 10, "closest", 1))], &[], "");
    let _ = n.proc.child.kill();
    let _ = n.proc.child.wait();
    // Restart the same node with a token set (admin stays on loopback here; the token still applies).
    let path = n.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"),
    );
    assert!(text.contains("token ="));
    std::fs::write(&path, text).unwrap();
    let (proc, addrs) = common::Proc::start(&["run", "--config", path.to_str().unwrap()], 4);
    let admin = addrs.iter().find(|(k, _)| k == "admin").unwrap().1;
    // Readiness and liveness probes carry no credentials: they answer without the token.
    for p in ["/ready", "/healthz"] {
        assert_eq!(
            common::http::get(admin, "localhost", p).await.status,
            200,
            "{p}"
        );
    }
    // The dashboard page itself is public and holds no data: it asks for the token, then polls.
    let page = common::http::get(admin, "localhost", "/").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("admin token") && !page.text().contains("test-1"));
    for p in [
        "/v1/status",
        "/v1/members",
        "/metrics",
        "/v1/explain?host=app",
        "/v1/reload",
    ] {
        let r = common::http::get(admin, "localhost", p).await;
        assert_eq!(r.status, 401, "{p} without a token");
        let r = common::http::send(
            admin,
            false,
            common::http::request(
                "GET",
                "localhost",
                p,
                &[("authorization", "Bearer wrong-token-0123456789")],
            ),
        )
        .await;
        assert_eq!(r.status, 401, "{p} with a wrong token");
    }
    let r = common::http::send(
        admin,
        false,
        common::http::request(
            "GET",
            "localhost",
            "/v1/status",
            &[("authorization", &format!("Bearer {token}"))],
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let out = std::process::Command::new(common::bin())
        .args(["status", "--admin", &admin.to_string()])
        .env("PETREL_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(common::bin())
        .args(["status", "--admin", &admin.to_string()])
        .env_remove("PETREL_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    drop(proc);
}

/// HTTP/2 rapid reset (CVE-2023-44487) after accept: one connection opens streams to a slow path
/// and resets each a few ms later. petrel counts every cancelled request, cancels its upstream
/// request, and closes the connection once it passes `edge.h2_max_resets_per_second` (100), so
/// the instance sees a few hundred requests at most, not hundreds of thousands; an ordinary
/// client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection_and_spares_the_instance() {
    let origin = common::origins::strict("rr-1", 10_000);
    let n = node(
        &[("slow", app_toml("slow", 5000, 10_000, "closest", 0))],
        &[("rr-1", "slow", origin.addr)],
        "",
    );
    let tcp = tokio::net::TcpStream::connect(n.edge).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let t0 = Instant::now();
    let mut sent = 0u32;
    'attack: while t0.elapsed() < Duration::from_secs(5) {
        let mut batch = Vec::new();
        for _ in 0..4 {
            let ready = tokio::time::timeout(Duration::from_secs(1), client.clone().ready()).await;
            let Ok(Ok(mut c)) = ready else { break 'attack };
            let req = http::Request::get("http://slow/slow?ms=3000")
                .body(())
                .unwrap();
            match c.send_request(req, true) {
                Ok((resp, _)) => batch.push(resp),
                Err(_) => break 'attack,
            }
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(batch); // RST_STREAM(CANCEL) for each
        if conn.is_finished() {
            break;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .is_ok();
    let took = t0.elapsed();
    assert!(
        closed,
        "the attacking connection is still open after {took:?} ({sent} streams)"
    );
    assert!(
        took < Duration::from_secs(2),
        "closed only after {took:?} ({sent} streams)"
    );
    // An ordinary client meanwhile.
    let r = common::http::get(n.edge, "slow", "/slow?ms=10").await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = common::http::get_json(origin.addr, "/stats").await["requests"]
        .as_u64()
        .unwrap();
    let metrics = common::http::get(n.admin, "localhost", "/metrics")
        .await
        .text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    eprintln!(
        "rapid reset: {sent} streams sent, connection closed after {took:?}; the instance saw {reached} requests; cancelled counted {}, closed {}",
        value("petrel_requests_cancelled_total"),
        value("petrel_connections_closed_total")
    );
    assert!(reached < 500, "the instance saw {reached} requests");
    // Every attack request that reached the instance was counted as cancelled (the other two
    // it saw are the ordinary request and /stats). Resets that beat the accept never become
    // requests: the h2 crate bounds those itself (`max_pending_accept_reset_streams`) and may
    // close the connection first; else petrel's own limit does.
    let cancelled = value("petrel_requests_cancelled_total");
    assert!(
        cancelled + 2.0 >= reached as f64,
        "{cancelled} counted, {reached} reached"
    );
    assert!(value("petrel_connections_closed_total{reason=\"rapid_reset\"}") <= 1.0);
}

/// Sends one GET for `path` to `edge` from source address `from` and returns the response head.
async fn get_from(from: &str, edge: SocketAddr, path: &str) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(edge).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: limited\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `[http_service.concurrency] per_client = 2`: a client with two requests in flight gets `429`
/// with `Retry-After` for a third, while another client is served, and the client is served again
/// once its requests end. Counted under phase `client_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_limit_answers_429_and_spares_other_clients() {
    let origin = common::origins::strict("pc-1", 10_000);
    let app = app_toml("limited", 50, 100, "closest", 0)
        .replace("hard_limit = 100\n", "hard_limit = 100\nper_client = 2\n");
    let n = node(&[("limited", app)], &[("pc-1", "limited", origin.addr)], "");
    let edge = n.edge;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_from("127.0.0.1", edge, "/slow?ms=1500").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = get_from("127.0.0.1", edge, "/").await;
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    assert!(
        third.to_ascii_lowercase().contains("retry-after: 1"),
        "{third}"
    );
    let other = get_from("127.0.0.2", edge, "/").await;
    assert!(other.starts_with("HTTP/1.1 200"), "another client: {other}");
    for h in held {
        let r = h.await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let again = get_from("127.0.0.1", edge, "/").await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "after its requests ended: {again}"
    );
    let metrics = common::http::get(n.admin, "localhost", "/metrics")
        .await
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("petrel_session_failures_total{")
                && l.contains("phase=\"client_limit\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

/// Clients that declare a body and send none (or drip it) hold no instance slot: the body is read
/// ahead before an instance is picked, and they get `408` at `edge.header_read_timeout`. With a
/// hard limit of 5 and 10 such connections open, ordinary clients are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_no_body_hold_no_instance_slot() {
    let origin = common::origins::strict("nb-1", 10_000);
    let app = app_toml("limited", 3, 5, "closest", 0);
    let n = node(
        &[("limited", app)],
        &[("nb-1", "limited", origin.addr)],
        "header_read_timeout = \"1500ms\"",
    );
    let mut idle = Vec::new();
    for i in 0..10 {
        let mut s = tokio::net::TcpStream::connect(n.edge).await.unwrap();
        let head = if i % 2 == 0 {
            "POST /echo HTTP/1.1\r\nHost: limited\r\nContent-Length: 100\r\n\r\n".to_string()
        } else {
            // A drip: 10 of 100 bytes, then nothing.
            "POST /echo HTTP/1.1\r\nHost: limited\r\nContent-Length: 100\r\n\r\n0123456789"
                .to_string()
        };
        s.write_all(head.as_bytes()).await.unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ok = 0;
    for _ in 0..40 {
        if common::http::get(n.edge, "limited", "/").await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 40,
        "ordinary clients served while 10 connections sent no body"
    );
    for mut s in idle {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }
    let reached = common::http::get_json(origin.addr, "/stats").await["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(
        reached, 41,
        "only the 40 GETs (and /stats) reached the instance"
    );
}

/// The flood: 20 HTTP/2 connections × 256 streams to a slow path from one client. With
/// `per_client = 10` the flood holds 10 of the app's 50 slots, and another client keeps being
/// served (at least 95%; here every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_from_one_client_does_not_starve_another() {
    let origin = common::origins::strict("fl-1", 10_000);
    let app = app_toml("limited", 40, 50, "closest", 0)
        .replace("hard_limit = 50\n", "hard_limit = 50\nper_client = 10\n");
    let n = node(&[("limited", app)], &[("fl-1", "limited", origin.addr)], "");
    let mut held = Vec::new();
    let mut refused = 0u32;
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(n.edge).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        for _ in 0..256 {
            let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
            else {
                break;
            };
            let req = http::Request::get("http://limited/slow?ms=3000")
                .body(())
                .unwrap();
            if let Ok((resp, _)) = c.send_request(req, true) {
                held.push(resp);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = 0;
    for _ in 0..40 {
        if get_from("127.0.0.2", n.edge, "/")
            .await
            .starts_with("HTTP/1.1 200")
        {
            ok += 1;
        }
    }
    for r in held.drain(..) {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), r).await {
            refused += u32::from(r.status() == 429);
        }
    }
    eprintln!(
        "stream flood: {refused} of 5120 streams refused with 429; the other client got {ok}/40"
    );
    assert!(ok >= 38, "the other client got {ok}/40");
    assert!(refused >= 5000, "{refused} refused");
}

/// Row 6, the response side: clients that ask for a large download and read nothing (HTTP/1.1,
/// and HTTP/2 with a zero flow-control window) do not keep the app's 5 slots from an ordinary
/// client: once a client has taken nothing for `response_stall` with petrel's buffer full, the
/// instance is let go; at `send_timeout` the response is cancelled and the instance's connection
/// closed. A client that reads slowly still gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_read_nothing_hold_no_instance_slot() {
    let origin = common::origins::strict("rn-1", 10_000);
    let app = app_toml("limited", 3, 5, "closest", 0);
    let n = node(
        &[("limited", app)],
        &[("rn-1", "limited", origin.addr)],
        "response_stall = \"500ms\"\nsend_timeout = \"4s\"",
    );
    const BIG: usize = 64 << 20;
    let started = Instant::now();
    // HTTP/2 with a window of 0: nothing of any response can be sent.
    let (mut h2_held, mut h2_clients) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(n.edge).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(conn);
        for path in ["/bytes?n=1000", "/bytes?n=4194304"] {
            let mut c = client.clone().ready().await.unwrap();
            let req = http::Request::get(format!("http://limited{path}"))
                .body(())
                .unwrap();
            let (resp, _) = c.send_request(req, true).unwrap();
            h2_held.push(resp);
        }
        h2_clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stuck = Vec::new();
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(n.edge).await.unwrap();
        let head = format!("GET /bytes?n={BIG} HTTP/1.1\r\nHost: limited\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        stuck.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    let mut ok = 0;
    for _ in 0..40 {
        if common::http::get(n.edge, "limited", "/").await.status == 200 {
            ok += 1;
        }
    }
    eprintln!(
        "10 non-reading downloads: an ordinary client got {ok}/40 in {:?}",
        t0.elapsed()
    );
    assert!(
        ok >= 38,
        "ordinary client got {ok}/40 while 10 clients read nothing"
    );

    // A slow reader: 4 MiB taken 256 KiB at a time with pauses longer than the stall.
    let mut slow = tokio::net::TcpStream::connect(n.edge).await.unwrap();
    slow.write_all(b"GET /bytes?n=4194304 HTTP/1.1\r\nHost: limited\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let t1 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
            other => panic!("slow reader: {other:?} after {} bytes", got.len()),
        }
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "slow reader took too long"
        );
    }
    let text = String::from_utf8_lossy(&got[..200.min(got.len())]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        got.len() - body_at,
        4 << 20,
        "the slow reader got every byte"
    );
    assert!(
        got[body_at..]
            .chunks(16)
            .all(|c| c == &b"0123456789abcdef"[..c.len()]),
        "and in order"
    );

    // At send_timeout the non-reading downloads are cancelled and, over HTTP/1.1, their
    // connections closed, before any of those clients reads again.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    let metrics = common::http::get(n.admin, "localhost", "/metrics")
        .await
        .text();
    let value = |prefix: &str, label: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let released = value("petrel_slow_client_responses_total", "outcome=\"released\"");
    let cancelled = value(
        "petrel_slow_client_responses_total",
        "outcome=\"cancelled\"",
    );
    let closed = value("petrel_connections_closed_total", "reason=\"send_timeout\"");
    eprintln!(
        "slow clients: released {released} cancelled {cancelled}, connections closed {closed}"
    );
    // The app's 5 slots were all taken by downloads nobody read; each was let go, then cancelled.
    assert!(released >= 5.0, "{metrics}");
    assert!(cancelled >= 5.0, "{metrics}");
    // Each HTTP/1.1 download that got its 200 was cut short and its connection closed; the others
    // got 503 at once (the slots were taken).
    let mut cut = 0.0;
    for mut s in stuck {
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "a non-reading download still open after send_timeout"
        );
        if got.starts_with(b"HTTP/1.1 200") {
            assert!(
                got.len() < BIG,
                "the cancelled download was cut short ({} bytes)",
                got.len()
            );
            cut += 1.0;
        } else {
            assert!(
                got.starts_with(b"HTTP/1.1 503"),
                "{}",
                String::from_utf8_lossy(&got[..got.len().min(200)])
            );
        }
    }
    assert!(cut >= 1.0, "some HTTP/1.1 download held a slot");
    assert_eq!(
        closed, cut,
        "every cancelled HTTP/1.1 download's connection was closed by petrel"
    );
    drop((h2_held, h2_clients));
}
