//! Resumable WebSocket sessions (SPEC §10) against the strict h11 origin's `/term`, a
//! terminal-like WebSocket that prints a numbered line every 10 ms: a client whose connection is
//! cut (or that stops answering pings) resumes with its count and gets every missed line exactly
//! once, in order, then live lines, while the instance saw one WebSocket the whole time; the same
//! through another node of the region with the instance on a third node; expiry (404, the
//! instance closed at `hold`), gaps, takeover (4001), subject binding (403), and drain.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::{get, get_json};
use common::origins::{strict, Origin};
use common::{free_udp_port, Spec};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;
type Head = http::Response<Option<Vec<u8>>>;

const ID: &str = "Zk3J9vQ2mX7pL0sT4wYb1c";

fn app(hold: &str, replay_bytes: u64, ping: &str, extra: &str) -> String {
    format!(
        "app = \"term\"\n[http_service]\nhosts = [\"term.example.com\"]\n\
         [http_service.concurrency]\ntype = \"requests\"\nsoft_limit = 1000\nhard_limit = 2000\n\
         [http_service.sessions]\nresume = true\nhold = \"{hold}\"\nreplay_bytes = {replay_bytes}\n\
         ping_interval = \"{ping}\"\n{extra}"
    )
}

fn one_node(app_text: String, origin: &Origin) -> common::Node {
    common::node(&[("term", app_text)], &[("t-1", "term", origin.addr)], "")
}

/// Opens a WebSocket to `path` through `edge`; `Err` carries a refused handshake's response.
async fn open(edge: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<(Ws, Head), Head> {
    let stream = tokio::net::TcpStream::connect(edge).await.expect("connect");
    let mut req = format!("ws://term.example.com{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("handshake in time");
    match r {
        Ok((ws, head)) => Ok((ws, head)),
        Err(tungstenite::Error::Http(resp)) => Err((*resp).clone()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn term_path(extra: &str) -> String {
    format!("/term?ms=10&petrel_session={ID}{extra}")
}

/// The next `n` text messages (pings are answered by the client library as it reads).
async fn texts(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("message");
        if let Message::Text(t) = m {
            out.push(t.to_string());
        }
    }
    out
}

/// The line numbers of `lines` that are "line N".
fn numbers(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("line ")?.split(' ').next()?.parse().ok())
        .collect()
}

async fn stats(o: &Origin) -> serde_json::Value {
    get_json(o.addr, "/stats").await
}

async fn metric(admin: SocketAddr, name: &str, label: &str) -> f64 {
    let text = get(admin, "localhost", "/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Reads 100 lines, loses the connection (`vanish`), waits 2 s, resumes with the count and
/// checks: every missed line once and in order, then live ones; the instance's socket is the
/// same one; the 101 tells how many client messages the instance got.
async fn vanish_and_resume(
    edge: SocketAddr,
    resume_at: SocketAddr,
    origin: &Origin,
    vanish: Vanish,
) {
    let (mut ws, _) = open(edge, &term_path(""), &[]).await.expect("101");
    ws.send(Message::text("hello")).await.unwrap();
    let first = texts(&mut ws, 101).await;
    assert!(first.iter().any(|l| l == "input 1: hello"), "{first:?}");
    let got = numbers(&first);
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "the first 100 lines in order"
    );
    let kept = match vanish {
        Vanish::Reset => {
            drop(ws); // the TCP connection goes without a close frame
            None
        }
        Vanish::Silent => Some(ws), // open, but it reads nothing and answers no ping
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // 101 messages: 100 lines and the answer to "hello".
    let resume = format!("&petrel_resume={}", first.len());
    let (mut ws2, head) = open(resume_at, &term_path(&resume), &[])
        .await
        .unwrap_or_else(|r| panic!("resume refused: {} {:?}", r.status(), r.body()));
    assert_eq!(
        head.headers()["petrel-session-received"],
        "1",
        "the instance got 1 message"
    );
    assert!(head.headers().get("petrel-session-gap").is_none());
    let after = numbers(&texts(&mut ws2, 400).await);
    let expect: Vec<u64> = (100..500).collect();
    assert_eq!(
        after, expect,
        "every missed line exactly once, in order, then live ones"
    );
    ws2.send(Message::text("again")).await.unwrap();
    let more = texts(&mut ws2, 50).await;
    assert!(more.iter().any(|l| l == "input 2: again"), "{more:?}");
    let s = stats(origin).await;
    assert_eq!(s["term_opened"], 1, "the instance saw one WebSocket: {s}");
    assert_eq!(s["term_open"], 1, "{s}");
    if let Some(mut old) = kept {
        // petrel let the silent client go: its stream ends (after what was buffered).
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match old.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    _ => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the silent client's connection was closed");
    }
    ws2.close(None).await.unwrap();
    let closed = common::cluster::within(Duration::from_secs(5), || async {
        stats(origin).await["term_open"] == 0
    })
    .await;
    assert!(
        closed.is_some(),
        "a close frame from the client ends the session at the instance"
    );
}

#[derive(Clone, Copy)]
enum Vanish {
    Reset,
    Silent,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_resumes_with_every_missed_line_once() {
    let o = strict("t-1", 60_000);
    let n = one_node(app("30s", 1 << 20, "500ms", ""), &o);
    vanish_and_resume(n.edge, n.edge, &o, Vanish::Reset).await;
    assert_eq!(
        metric(n.admin, "petrel_ws_resumes_total", "outcome=\"resumed\"").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_let_go_and_resumes() {
    let o = strict("t-1", 60_000);
    let n = one_node(app("30s", 1 << 20, "300ms", ""), &o);
    vanish_and_resume(n.edge, n.edge, &o, Vanish::Silent).await;
}

/// Two nodes in iad, the instance on a third in ord: the session begins through iad-1, whose
/// WebSocket to the instance crosses the backhaul; the client comes back through iad-2, which
/// finds the holder.
async fn across_the_region(transport: &str) {
    let o = strict("t-1", 60_000);
    let seed = free_udp_port();
    let text = app("30s", 1 << 20, "500ms", "");
    let mut owner = Spec::new("ord-1", "ord");
    owner.transport = transport;
    owner.apps = vec![("term", text.clone())];
    owner.instances = vec![("t-1", "term", o.addr)];
    owner.seeded(seed, true);
    let owner = owner.start();
    let mut edges = Vec::new();
    for name in ["iad-1", "iad-2"] {
        let mut s = Spec::new(name, "iad");
        s.transport = transport;
        s.apps = vec![("term", text.clone())];
        s.seeded(seed, false);
        edges.push(s.start());
    }
    for e in &edges {
        let routed = common::cluster::within(Duration::from_secs(15), || async {
            common::cluster::alive(e).await.len() >= 2
                && get(e.edge, "term.example.com", "/").await.status == 200
        })
        .await;
        assert!(
            routed.is_some(),
            "the edge sees the cluster and routes to ord-1"
        );
    }
    vanish_and_resume(edges[0].edge, edges[1].edge, &o, Vanish::Reset).await;
    let on = |n: &common::Node| metric(n.admin, "petrel_ws_resumes_total", "outcome=\"resumed\"");
    assert_eq!(on(&edges[0]).await, 1.0, "the holder, iad-1, resumed it");
    drop(owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_through_another_node_of_the_region_h2() {
    across_the_region("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_through_another_node_of_the_region_quic() {
    across_the_region("quic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_gaps_takeover_and_bad_ids() {
    let o = strict("t-1", 60_000);
    let n = one_node(app("1s", 1024, "500ms", ""), &o);

    // Malformed ids and counts: 400, nothing reaches the instance.
    for bad in [
        "/term?petrel_session=short".to_string(),
        format!("/term?petrel_session={ID}&petrel_resume=x"),
    ] {
        let r = open(n.edge, &bad, &[])
            .await
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(stats(&o).await["term_opened"], 0);

    // Gap: 1 KiB of replay holds ~80 lines; 2 s away is ~200 missed.
    let (mut ws, _) = open(n.edge, &term_path(""), &[]).await.expect("101");
    assert_eq!(
        numbers(&texts(&mut ws, 10).await),
        (0..10).collect::<Vec<_>>()
    );
    drop(ws);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut ws, head) = open(n.edge, &term_path("&petrel_resume=10"), &[])
        .await
        .expect("resumed within hold");
    let gap: u64 = head.headers()["petrel-session-gap"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(gap > 0, "some missed lines were no longer held");
    let after = numbers(&texts(&mut ws, 30).await);
    assert_eq!(after[0], 10 + gap, "the first line sent is the oldest held");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    assert_eq!(
        metric(n.admin, "petrel_ws_resumes_total", "outcome=\"gap\"").await,
        1.0
    );

    // Takeover: a second client attaching to the live session; the first gets 4001.
    let (mut ws2, _) = open(n.edge, &term_path(""), &[]).await.expect("takes over");
    let code = close_code(&mut ws).await;
    assert_eq!(
        code, 4001,
        "the first client is told the session was taken over"
    );
    assert!(
        !texts(&mut ws2, 5).await.is_empty(),
        "the new client is live"
    );
    assert_eq!(
        metric(n.admin, "petrel_ws_resumes_total", "outcome=\"taken_over\"").await,
        1.0
    );
    assert_eq!(
        stats(&o).await["term_opened"],
        1,
        "still one WebSocket at the instance"
    );

    // Expiry: gone for longer than hold → 404 naming the session; the instance got 1001 at hold.
    drop(ws2);
    drop(ws);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = stats(&o).await;
    assert_eq!(
        s["term_open"], 0,
        "the instance's WebSocket was closed at hold: {s}"
    );
    assert_eq!(s["term_closes"], serde_json::json!([1001]), "{s}");
    let r = open(n.edge, &term_path("&petrel_resume=40"), &[])
        .await
        .map(|_| ())
        .expect_err("404");
    assert_eq!(r.status(), 404);
    let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
    assert!(body.contains(ID), "the 404 names the session: {body}");
    assert_eq!(
        metric(n.admin, "petrel_ws_resumes_total", "outcome=\"expired\"").await,
        1.0
    );
    assert_eq!(
        metric(n.admin, "petrel_ws_sessions", "state=\"held\"").await,
        0.0
    );
    assert_eq!(
        metric(n.admin, "petrel_ws_sessions", "state=\"live\"").await,
        0.0
    );
}

/// Open descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Done-when 3: 1,000 held sessions, each with 80 KiB of output its client never read, cost at
/// most replay_bytes (64 KiB) + 8 KiB each in resident memory, and end on time at `hold`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_sessions_stay_within_their_replay_bytes() {
    const SESSIONS: usize = 1000;
    const REPLAY: u64 = 64 << 10;
    let o = strict("t-1", 120_000);
    let n = one_node(app("8s", REPLAY, "30s", ""), &o);
    let pid = n.proc.pid();
    // Warm up the paths (pools, buffers, the runtime's threads) before the baseline.
    for i in 0..20 {
        let p = format!("/term?ms=0&burst=80&size=1024&petrel_session=warmup-{i:0>20}");
        let (mut ws, _) = open(n.edge, &p, &[]).await.expect("101");
        ws.close(None).await.unwrap();
    }
    let drained = common::cluster::within(Duration::from_secs(10), || async {
        stats(&o).await["term_open"] == 0
    })
    .await;
    assert!(drained.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, fds0) = (n.proc.rss_kib(), fds(pid));
    let started = std::time::Instant::now();
    let edge = n.edge;
    let mut batch = Vec::new();
    for i in 0..SESSIONS {
        batch.push(tokio::spawn(async move {
            let burst: u32 = std::env::var("PROBE_BURST")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(80);
            let p = format!("/term?ms=0&burst={burst}&size=1024&petrel_session=held-{i:0>20}");
            let (ws, _) = open(edge, &p, &[]).await.expect("101");
            drop(ws); // gone without a close frame: the session is held
        }));
        if batch.len() == 50 {
            for t in batch.drain(..) {
                t.await.unwrap();
            }
        }
    }
    for t in batch {
        t.await.unwrap();
    }
    let all_held = common::cluster::within(Duration::from_secs(20), || async {
        metric(n.admin, "petrel_ws_sessions", "state=\"held\"").await == SESSIONS as f64
    })
    .await;
    assert!(all_held.is_some(), "every session is held");
    // Every instance has sent its 80 KiB (the origin wrote it at once; petrel read it into replay).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss = n.proc.rss_kib();
    let per_session = (rss.saturating_sub(rss0)) as f64 / SESSIONS as f64;
    let bound = (REPLAY / 1024 + 8) as f64;
    eprintln!(
        "{SESSIONS} held sessions: RSS {rss0} → {rss} KiB, {per_session:.1} KiB per session (bound {bound} KiB); fds {fds0} → {}",
        fds(pid)
    );
    assert!(
        per_session <= bound,
        "{per_session:.1} KiB per held session"
    );
    assert_eq!(stats(&o).await["term_open"], SESSIONS as u64);
    // They end at hold (8 s after each client left), not before and not much after.
    let ended = common::cluster::within(Duration::from_secs(20), || async {
        metric(n.admin, "petrel_ws_sessions", "state=\"held\"").await == 0.0
    })
    .await
    .expect("every held session ends");
    let at = started.elapsed();
    eprintln!("all ended {at:?} after the first client left");
    assert!(
        at >= Duration::from_secs(8),
        "none ends before hold: {at:?}"
    );
    assert!(
        at <= Duration::from_secs(8) + Duration::from_secs(8),
        "{at:?} ({ended:?})"
    );
    let closed = common::cluster::within(Duration::from_secs(10), || async {
        stats(&o).await["term_open"] == 0
    })
    .await;
    assert!(closed.is_some(), "the instance's WebSockets were closed");
    let gauge = metric(n.admin, "petrel_active_connections", "kind=\"websocket\"").await;
    assert_eq!(gauge, 0.0, "no session task is left");
    let back =
        common::cluster::within(Duration::from_secs(10), || async { fds(pid) <= fds0 + 5 }).await;
    assert!(
        back.is_some(),
        "descriptors back to baseline: {fds0} → {}",
        fds(pid)
    );
}

const SECRET: &str = "petrel-test-secret-0123456789abcdef";

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Done-when 4: a session is bound to its token's `sub`; a resume with another `sub` is refused
/// 403 (counted `refused` and under phase `auth`), the right one resumes; no token is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_bound_to_its_token_subject() {
    let o = strict("t-1", 60_000);
    let auth = "[http_service.auth]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\n\
                secret_file = \"hello.key\"\ntoken_from = [\"query:token\"]\n";
    let dir = tempfile::tempdir().unwrap();
    common::write_node_files(
        dir.path(),
        &[("term", app("30s", 1 << 20, "500ms", auth))],
        &[("t-1", "term", o.addr)],
        "",
    );
    std::fs::write(dir.path().join("apps/hello.key"), SECRET).unwrap();
    let n = common::start_node(dir);
    let (u1, u2) = (token("user-1"), token("user-2"));
    let r = open(n.edge, &term_path(""), &[])
        .await
        .map(|_| ())
        .expect_err("401");
    assert_eq!(r.status(), 401);
    let (mut ws, _) = open(n.edge, &term_path(&format!("&token={u1}")), &[])
        .await
        .expect("101 with a valid token");
    let seen = texts(&mut ws, 5).await;
    drop(ws);
    let other = format!("&token={u2}&petrel_resume={}", seen.len());
    let r = open(n.edge, &term_path(&other), &[])
        .await
        .map(|_| ())
        .expect_err("403");
    assert_eq!(r.status(), 403, "another subject cannot take the session");
    assert_eq!(
        metric(n.admin, "petrel_ws_resumes_total", "outcome=\"refused\"").await,
        1.0
    );
    let auth_failures = metric(
        n.admin,
        "petrel_session_failures_total",
        "app=\"term\",phase=\"auth\"",
    )
    .await;
    assert_eq!(auth_failures, 2.0, "the 401 and the 403");
    let mine = format!("&token={u1}&petrel_resume={}", seen.len());
    let (mut ws, _) = open(n.edge, &term_path(&mine), &[])
        .await
        .expect("its own subject resumes");
    let next = numbers(&texts(&mut ws, 5).await);
    assert_eq!(next[0], seen.len() as u64, "{next:?}");
    assert_eq!(stats(&o).await["term_opened"], 1);
}

/// Done-when 5: SIGTERM with one live and one held session: the live client gets 1001 at the
/// drain deadline, the held session ends then too (the instance gets 1001 on both), and the node
/// exits 0 with nothing left open at the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_live_and_held_sessions_at_its_deadline() {
    let o = strict("t-1", 60_000);
    let dir = tempfile::tempdir().unwrap();
    common::write_node_files(
        dir.path(),
        &[("term", app("60s", 1 << 20, "500ms", ""))],
        &[("t-1", "term", o.addr)],
        "",
    );
    let path = dir.path().join("node.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"2s\"");
    std::fs::write(&path, text).unwrap();
    let mut n = common::start_node(dir);
    let held = format!("/term?ms=10&petrel_session=held-{ID}");
    let (mut h, _) = open(n.edge, &held, &[]).await.expect("101");
    texts(&mut h, 3).await;
    drop(h);
    let (mut live, _) = open(n.edge, &term_path(""), &[]).await.expect("101");
    texts(&mut live, 3).await;
    assert_eq!(stats(&o).await["term_open"], 2);
    let t0 = std::time::Instant::now();
    n.proc.signal(15);
    let code = close_code(&mut live).await;
    let at = t0.elapsed();
    assert_eq!(code, 1001, "going away");
    assert!(
        at >= Duration::from_millis(1800),
        "lines went on until the deadline: {at:?}"
    );
    assert_eq!(n.proc.wait_exit(Duration::from_secs(10)), Some(0));
    let s = stats(&o).await;
    assert_eq!(s["term_open"], 0, "{s}");
    assert_eq!(s["term_closes"], serde_json::json!([1001, 1001]), "{s}");
}

/// The reviewer's finding: the same id begun through two nodes of a region made two sessions
/// (two shells). Now the second node finds the first's session and the client takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_through_two_nodes_of_a_region_is_one_session() {
    let o = strict("t-1", 60_000);
    let (a, b) = two_iad_nodes(&o, "30s").await;
    let (mut first, _) = open(a.edge, &term_path(""), &[]).await.expect("101");
    let seen = numbers(&texts(&mut first, 20).await);
    let (mut second, _) = open(b.edge, &term_path(""), &[]).await.expect("101");
    let code = close_code(&mut first).await;
    assert_eq!(code, 4001, "the first client is told it was taken over");
    let got = numbers(&texts(&mut second, 40).await);
    assert_eq!(
        got[0], 0,
        "a client without a count gets everything still held"
    );
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert!(got.len() > seen.len());
    assert_eq!(
        stats(&o).await["term_opened"],
        1,
        "one WebSocket at the instance"
    );
    drop((first, second));

    // The same while iad-1 is still waiting for the instance's 101 (a shell slow to start): the
    // second begin, through iad-2, waits for it and takes the session over.
    let slow = "/term?ms=10&hs_ms=1500&petrel_session=slow-start-0123456789ab".to_string();
    let (edge_a, edge_b) = (a.edge, b.edge);
    let p = slow.clone();
    let one = tokio::spawn(async move { open(edge_a, &p, &[]).await.expect("101 via iad-1") });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut two, _) = open(edge_b, &slow, &[]).await.expect("101 via iad-2");
    let (mut one, _) = one.await.unwrap();
    assert_eq!(close_code(&mut one).await, 4001);
    assert!(!texts(&mut two, 3).await.is_empty());
    assert_eq!(
        stats(&o).await["term_opened"],
        2,
        "one more WebSocket, not two"
    );
    drop((one, two));

    // Both nodes beginning one id at the same moment: the lower node name keeps it, the other
    // waits for it. Five rounds, each a fresh id.
    for round in 0..5u64 {
        let p = format!("/term?ms=10&hs_ms=300&petrel_session=same-moment-{round:0>12}");
        let q = p.clone();
        let x = tokio::spawn(async move { open(edge_a, &q, &[]).await.expect("101").0 });
        let (mut y, _) = open(edge_b, &p, &[]).await.expect("101");
        let mut x = x.await.unwrap();
        let a_msg = tokio::time::timeout(Duration::from_secs(5), x.next()).await;
        let b_msg = tokio::time::timeout(Duration::from_secs(5), y.next()).await;
        assert!(a_msg.is_ok() && b_msg.is_ok(), "both heard something");
        assert_eq!(
            stats(&o).await["term_opened"],
            3 + round,
            "round {round}: one instance WebSocket per id"
        );
    }
}

/// The reviewer's finding: clients that begin one id while the instance's handshake is still
/// under way each opened their own instance WebSocket. Now they wait for the first 101 and
/// attach to that session in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connects_open_one_instance_websocket() {
    let o = strict("t-1", 60_000);
    let n = one_node(app("30s", 1 << 20, "500ms", ""), &o);
    let edge = n.edge;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = open(edge, &term_path("&hs_ms=500"), &[])
                .await
                .expect("101");
            // Each one hears something: lines, or a 4001 when the next one takes over.
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            assert!(matches!(m, Ok(Some(Ok(_)))), "{m:?}");
            ws
        }));
    }
    let mut open_ws = Vec::new();
    for t in tasks {
        open_ws.push(t.await.unwrap());
    }
    let s = stats(&o).await;
    assert_eq!(
        s["term_opened"], 1,
        "one instance WebSocket for ten clients: {s}"
    );
}

/// The reviewer's finding: a resume through a node whose peer (the holder) does not answer got a
/// definitive 404. Now it is a 503 with Retry-After, and the same resume works once the holder
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_does_not_answer_is_a_503_not_a_404() {
    let o = strict("t-1", 60_000);
    let (a, b) = two_iad_nodes(&o, "60s").await;
    let (mut ws, _) = open(a.edge, &term_path(""), &[]).await.expect("101");
    let seen = texts(&mut ws, 10).await.len();
    drop(ws);
    a.proc.signal(19); // SIGSTOP: the holder stops answering
    let resume = format!("&petrel_resume={seen}");
    let r = open(b.edge, &term_path(&resume), &[])
        .await
        .map(|_| ())
        .expect_err("not attached while the holder is stopped");
    a.proc.signal(18); // SIGCONT
    assert_eq!(r.status(), 503, "{:?}", r.body());
    assert_eq!(r.headers()["retry-after"], "1");
    let back = common::cluster::within(Duration::from_secs(15), || async {
        open(b.edge, &term_path(&resume), &[]).await.is_ok()
    })
    .await;
    assert!(
        back.is_some(),
        "the session is still there once its holder answers"
    );
}

/// The reviewer's finding: an instance that closed while its client was away lost its last
/// output and its close code. Now a client that comes back within `hold` gets what it missed,
/// then the instance's close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_ends_while_the_client_is_away_says_goodbye_on_its_return() {
    let o = strict("t-1", 60_000);
    let n = one_node(app("30s", 1 << 20, "500ms", ""), &o);
    let (mut ws, _) = open(n.edge, &term_path("&close_after=150"), &[])
        .await
        .expect("101");
    let seen = texts(&mut ws, 100).await;
    drop(ws);
    // The instance sends lines 100..149 and closes with 4000 while nobody is attached.
    let closed = common::cluster::within(Duration::from_secs(10), || async {
        stats(&o).await["term_open"] == 0
    })
    .await;
    assert!(closed.is_some(), "the instance closed");
    let resume = format!("&close_after=150&petrel_resume={}", seen.len());
    let (mut ws, _) = open(n.edge, &term_path(&resume), &[]).await.expect("101");
    let mut lines = Vec::new();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => lines.push(t.to_string()),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                break (u16::from(f.code), f.reason.to_string())
            }
            other => panic!("no close frame after {} lines: {other:?}", lines.len()),
        }
    };
    assert_eq!(numbers(&lines), (100..150).collect::<Vec<_>>());
    assert_eq!(code, (4000, "bye".to_string()), "the instance's own close");
    assert_eq!(stats(&o).await["term_opened"], 1);
}

async fn close_code(ws: &mut Ws) -> u16 {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("close in time")
}

/// iad-1 with the instance and iad-2 without, in one region, `hold` as given; returns once
/// iad-2 routes to the instance.
async fn two_iad_nodes(o: &Origin, hold: &str) -> (common::Node, common::Node) {
    let seed = free_udp_port();
    let text = app(hold, 1 << 20, "500ms", "");
    let mut a = Spec::new("iad-1", "iad");
    a.apps = vec![("term", text.clone())];
    a.instances = vec![("t-1", "term", o.addr)];
    a.seeded(seed, true);
    let a = a.start();
    let mut b = Spec::new("iad-2", "iad");
    b.apps = vec![("term", text)];
    b.seeded(seed, false);
    let b = b.start();
    let routed = common::cluster::within(Duration::from_secs(15), || async {
        get(b.edge, "term.example.com", "/").await.status == 200
    })
    .await;
    assert!(routed.is_some(), "iad-2 routes to the instance on iad-1");
    (a, b)
}
