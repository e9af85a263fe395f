//! Global routing over real processes with simulated inter-region latency (iad/ord/fra, RTT 80/300/240
//! ms): closest first, spill-over to the nearer region at hard limit, reject-and-retry, routing
//! headers, HTTP versions kept across the backhaul, nothing internal leaking, the last resort.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http::{get, get_json, request, request_h2, send};
use common::{app_toml, backend, free_udp_port, Backend, Node, Spec};

const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct World {
    nodes: Vec<Node>,
    backends: Vec<Backend>,
}

fn topology() -> &'static std::path::Path {
    let p: PathBuf =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/topologies/demo3.toml");
    Box::leak(p.into_boxed_path())
}

/// One node per region, each hosting one instance `<region>-1` of app "hello" (soft = hard = `hard`).
async fn world(hard: [u32; 3], transport: &'static str) -> World {
    world_with(hard, transport, &[]).await
}

/// [`world`], with `iad_extra` instances (id, address) on the iad node besides `iad-1`.
async fn world_with(
    hard: [u32; 3],
    transport: &'static str,
    iad_extra: &[(&'static str, SocketAddr)],
) -> World {
    let regions = ["iad", "ord", "fra"];
    let seed_port = free_udp_port();
    let backends: Vec<Backend> = regions.iter().map(|r| backend(&format!("{r}-1"))).collect();
    let mut nodes = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let mut s = Spec::new(Box::leak(format!("node-{r}").into_boxed_str()), r);
        s.key = Some(KEY);
        s.transport = transport;
        s.topology = Some(topology());
        // Each node sees the app with its own instance's limits; limits are per app, so give
        // each node the same app file with the limit of its instance.
        s.apps = vec![("hello", app_toml("hello", hard[i], hard[i], "closest", 3))];
        s.instances = vec![(
            Box::leak(format!("{r}-1").into_boxed_str()),
            "hello",
            backends[i].addr,
        )];
        if i == 0 {
            s.instances
                .extend(iad_extra.iter().map(|&(id, addr)| (id, "hello", addr)));
        }
        s.seeded(seed_port, i == 0);
        nodes.push(s.start());
    }
    // Ready when the iad edge sees all three instances and has RTTs to both peers.
    let t0 = Instant::now();
    loop {
        let inst = get_json(nodes[0].admin, "/v1/instances").await["instances"]
            .as_array()
            .unwrap()
            .len();
        let members = get_json(nodes[0].admin, "/v1/members").await["members"]
            .as_array()
            .unwrap()
            .clone();
        let measured = members.len() == 2 && members.iter().all(|m| m["rtt_min_ms"].is_number());
        if inst == 3 + iad_extra.len() && measured {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "world never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    World { nodes, backends }
}

fn route(r: &common::http::Reply) -> String {
    r.header("petrel-route").unwrap_or_default().to_string()
}

/// Holds `n` slow requests on `instance` through `edge` (forced), returning their handles.
fn hold(edge: SocketAddr, instance: &str, n: usize, ms: u64) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            let inst = instance.to_string();
            tokio::spawn(async move {
                let req = request(
                    "GET",
                    "hello",
                    &format!("/sleep?ms={ms}"),
                    &[("petrel-force-instance-id", &inst)],
                );
                send(edge, false, req).await.status.as_u16()
            })
        })
        .collect()
}

async fn wait_load(admin: SocketAddr, id: &str, want: u64) {
    let t0 = Instant::now();
    loop {
        let v = get_json(admin, "/v1/instances").await;
        let load = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .and_then(|i| i["load"].as_u64());
        if load == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{id} never reached load {want} (now {load:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closest_first_then_the_nearer_region_when_full_h2() {
    closest_first_then_the_nearer_region_when_full("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closest_first_then_the_nearer_region_when_full_quic() {
    closest_first_then_the_nearer_region_when_full("quic").await;
}

async fn closest_first_then_the_nearer_region_when_full(transport: &'static str) {
    let w = world([2, 2, 2], transport).await;
    let edge = w.nodes[0].edge;
    for _ in 0..5 {
        let r = get(edge, "hello", "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend-id"), Some("iad-1"), "{}", route(&r));
    }
    let held = hold(edge, "iad-1", 2, 3000);
    wait_load(w.nodes[0].admin, "iad-1", 2).await;
    for _ in 0..5 {
        let t0 = Instant::now();
        let r = get(edge, "hello", "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-backend-id"),
            Some("ord-1"),
            "B (ord, 80 ms) not C (fra, 300 ms): {}",
            route(&r)
        );
        assert!(route(&r).contains("region=ord"), "{}", route(&r));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(75),
            "simulated RTT applies to the backhaul: {took:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "did not wait for iad's capacity: {took:?}"
        );
    }
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // The backhaul really used the configured transport.
    let metrics = get(w.nodes[0].admin, "localhost", "/metrics").await.text();
    let want = format!("petrel_backhaul_connect_seconds_count{{transport=\"{transport}\"}}");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no {want} in metrics"));
    assert!(!line.ends_with(" 0"), "{line}");
    drop(w.backends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_region_spills_over_with_rejects_and_no_instance_exceeds_its_limit() {
    let w = world([3, 3, 40], "h2").await;
    let (a, b) = (&w.nodes[0], &w.nodes[1]);
    // iad-1 and ord-1 full of slow requests (ord's held from its own edge).
    let mut held = hold(a.edge, "iad-1", 3, 15000);
    held.extend(hold(b.edge, "ord-1", 3, 15000));
    wait_load(a.admin, "iad-1", 3).await;
    wait_load(b.admin, "ord-1", 3).await;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let edge = a.edge;
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for _ in 0..20 {
                let t = Instant::now();
                let r = get(edge, "hello", "/").await;
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(r.header("x-backend-id"), Some("fra-1"));
                worst = worst.max(t.elapsed());
            }
            worst
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.unwrap());
    }
    let took = t0.elapsed();
    let metrics = get(a.admin, "localhost", "/metrics").await.text();
    let retries: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("petrel_retries_total{") && l.contains("app=\"hello\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!(
        "200 requests via fra in {took:?} (slowest {worst:?}); retries {retries} ({:.1}/s)",
        retries / took.as_secs_f64()
    );
    assert!(
        worst < Duration::from_secs(2),
        "a request waited for capacity: {worst:?}"
    );
    for (be, hard) in w.backends.iter().zip([3, 3, 40]) {
        let max = get_json(be.addr, "/stats").await["max_inflight"]
            .as_u64()
            .unwrap();
        assert!(max <= hard, "{} max_inflight {max} > hard {hard}", be.id);
    }
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_headers_versions_and_no_internal_leaks_across_the_backhaul_h2() {
    routing_headers_versions_and_no_internal_leaks("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_headers_versions_and_no_internal_leaks_across_the_backhaul_quic() {
    routing_headers_versions_and_no_internal_leaks("quic").await;
}

async fn routing_headers_versions_and_no_internal_leaks(transport: &'static str) {
    let w = world([2, 2, 2], transport).await;
    let edge = w.nodes[0].edge;
    // Force to a remote instance; HTTP/1.1 stays 1.1, h2 stays h2.
    let r = send(
        edge,
        false,
        request(
            "GET",
            "hello",
            "/headers",
            &[("fly-force-instance-id", "fra-1")],
        ),
    )
    .await;
    assert_eq!(r.header("x-backend-id"), Some("fra-1"));
    let h = r.json();
    assert_eq!(h[":version"], "HTTP/1.1");
    assert_eq!(h["petrel-edge-region"], "iad");
    assert_eq!(h["petrel-client-ip"], "127.0.0.1");
    let mut req = request_h2("hello", "/headers");
    req.headers_mut()
        .insert("petrel-force-instance-id", "fra-1".parse().unwrap());
    let r2 = send(edge, true, req).await;
    // An h2 client's request reaches the HTTP/1.1 instance with its authority as Host.
    assert_eq!(r2.json()[":version"], "HTTP/1.1");
    assert_eq!(r2.json()["host"], "hello");
    for reply in [&r, &r2] {
        let instance_side = reply.json();
        for (k, v) in instance_side.as_object().unwrap() {
            assert!(
                !k.starts_with("petrel-internal"),
                "internal header reached the instance: {k}: {v}"
            );
        }
        for k in reply.headers.keys() {
            assert!(
                !k.as_str().starts_with("petrel-internal"),
                "internal header reached the client: {k}"
            );
        }
    }
    // Prefer region with fallback; prefer instance.
    let r = send(
        edge,
        false,
        request("GET", "hello", "/", &[("petrel-prefer-region", "fra")]),
    )
    .await;
    assert_eq!(r.header("x-backend-id"), Some("fra-1"));
    let r = send(
        edge,
        false,
        request(
            "GET",
            "hello",
            "/",
            &[("petrel-prefer-instance-id", "ord-1")],
        ),
    )
    .await;
    assert_eq!(r.header("x-backend-id"), Some("ord-1"));
    // A forced instance that is full: 503 naming it, never another instance.
    let held = hold(w.nodes[2].edge, "fra-1", 2, 3000);
    wait_load(w.nodes[2].admin, "fra-1", 2).await;
    let r = send(
        edge,
        false,
        request(
            "GET",
            "hello",
            "/",
            &[("petrel-force-instance-id", "fra-1")],
        ),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("fra-1"), "{}", r.text());
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_across_the_backhaul_h2() {
    websocket_across_the_backhaul("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_across_the_backhaul_quic() {
    websocket_across_the_backhaul("quic").await;
}

async fn websocket_across_the_backhaul(transport: &'static str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let w = world([5, 5, 5], transport).await;
    let mut ws = common::ws::connect(
        w.nodes[0].edge,
        "hello",
        &[("petrel-force-instance-id", "ord-1")],
    )
    .await;
    for i in 0..50 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(format!("m{i}")));
    }
    // The WebSocket holds one unit of ord-1's load, as its owner counts it.
    wait_load(w.nodes[1].admin, "ord-1", 1).await;
    ws.close(None).await.unwrap();
    drop(ws);
    wait_load(w.nodes[1].admin, "ord-1", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backhaul_refuses_peers_without_the_cluster_key() {
    use petrel::backhaul::tls::ClusterTls;
    use tokio::io::AsyncWriteExt;
    let be = backend("k-1");
    let mut s = Spec::new("keyed", "iad");
    s.key = Some(KEY);
    s.apps = vec![("hello", app_toml("hello", 5, 5, "closest", 3))];
    s.instances = vec![("k-1", "hello", be.addr)];
    let n = s.start();
    // 1. Plaintext HTTP/2 straight at the backhaul port: not even a TLS handshake.
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let tcp = tokio::net::TcpStream::connect(n.backhaul).await.unwrap();
        let (mut s, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("http://hello/")
            .header("petrel-internal-instance", "k-1")
            .body(http_body_util::Empty::new())
            .unwrap();
        s.send_request(req).await.ok()
    })
    .await
    .unwrap();
    assert!(r.is_none(), "plaintext request reached the backhaul");
    // 2. TLS with a certificate from another cluster's key: refused in the handshake.
    let outsider = ClusterTls::derive(&[[0x42; 32]], "outsider").unwrap();
    let tcp = tokio::net::TcpStream::connect(n.backhaul).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(outsider.client_h2.clone());
    let refused = match connector.connect(ClusterTls::server_name(), tcp).await {
        Err(_) => true,
        Ok(mut t) => {
            // TLS 1.3 clients finish first; the server's verdict arrives on the next I/O.
            let _ = t.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 1];
            matches!(
                tokio::io::AsyncReadExt::read(&mut t, &mut buf).await,
                Err(_) | Ok(0)
            )
        }
    };
    assert!(refused, "a foreign cluster's certificate was accepted");
    assert_eq!(
        get_json(be.addr, "/stats").await["served"],
        0,
        "nothing reached the instance"
    );
    let metrics = get(n.admin, "localhost", "/metrics").await.text();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("petrel_session_failures_total{")
                && l.contains("_backhaul")
                && l.contains("phase=\"auth\"")
        })
        .expect("auth failures counted");
    eprintln!("{line}");
    assert!(!line.ends_with(" 0"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petrel_certs_files_secure_a_quic_backhaul() {
    let certs = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "certs",
            "--out",
            certs.path().to_str().unwrap(),
            "--nodes",
            "c-a,c-b",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem", "ca.key", "c-a.pem", "c-a.key", "c-b.pem", "c-b.key",
    ] {
        assert!(certs.path().join(f).is_file(), "{f} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.path().join("c-a.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "private keys are private");
    let again = std::process::Command::new(common::bin())
        .args([
            "certs",
            "--out",
            certs.path().to_str().unwrap(),
            "--nodes",
            "c-a",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success(), "must not overwrite existing files");

    let be = backend("cb-1");
    let seed_port = free_udp_port();
    let files = |n: &str| {
        let p = |f: String| certs.path().join(f).display().to_string();
        format!(
            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
            p("ca.pem".into()),
            p(format!("{n}.pem")),
            p(format!("{n}.key"))
        )
    };
    let mut a = Spec::new("c-a", "iad");
    a.mesh_port = seed_port;
    a.transport = "quic";
    a.backhaul_extra = files("c-a");
    a.apps = vec![("hello", app_toml("hello", 5, 5, "closest", 3))];
    let a = a.start();
    let mut b = Spec::new("c-b", "iad");
    b.seeds = vec![format!("127.0.0.1:{seed_port}").parse().unwrap()];
    b.transport = "quic";
    b.backhaul_extra = files("c-b");
    b.apps = vec![("hello", app_toml("hello", 5, 5, "closest", 3))];
    b.instances = vec![("cb-1", "hello", be.addr)];
    let _b = b.start();
    let t0 = Instant::now();
    loop {
        let r = get(a.edge, "hello", "/").await;
        if r.status == 200 {
            assert_eq!(r.header("x-backend-id"), Some("cb-1"));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never routed: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get(a.admin, "localhost", "/metrics").await.text();
    assert!(metrics.contains("petrel_backhaul_connect_seconds_count{transport=\"quic\"}"));
}

/// An edge counts the requests it has on the wire towards a remote instance: gossip still says the
/// far instance is idle, yet once this edge has sent it as many requests as its hard limit, the
/// next one is refused at once (503) instead of crossing the 300 ms round trip to be told "full".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_the_wire_count_before_gossip_or_the_owner_says_so() {
    let w = world([3, 3, 3], "h2").await;
    let (a, b) = (&w.nodes[0], &w.nodes[1]);
    let mut held = hold(a.edge, "iad-1", 3, 6000);
    held.extend(hold(b.edge, "ord-1", 3, 6000));
    wait_load(a.admin, "iad-1", 3).await;
    // iad's own view of ord-1 (gossiped) shows it full; fra-1 stays idle in it.
    wait_load(a.admin, "ord-1", 3).await;
    let edge = a.edge;
    let mut sends = Vec::new();
    for _ in 0..5 {
        sends.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = get(edge, "hello", "/sleep?ms=1500").await;
            (
                r.status.as_u16(),
                r.header("x-backend-id").map(str::to_string),
                t.elapsed(),
            )
        }));
        // Well inside fra's 150 ms one-way time: every earlier request is still on the wire.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut outcomes = Vec::new();
    for s in sends {
        outcomes.push(s.await.unwrap());
    }
    eprintln!("outcomes: {outcomes:?}");
    let served = outcomes.iter().filter(|o| o.0 == 200).count();
    assert_eq!(served, 3, "fra-1 takes its hard limit: {outcomes:?}");
    assert!(outcomes
        .iter()
        .filter(|o| o.0 == 200)
        .all(|o| o.1.as_deref() == Some("fra-1")));
    for o in outcomes.iter().filter(|o| o.0 != 200) {
        assert_eq!(o.0, 503, "{outcomes:?}");
        assert!(
            o.2 < Duration::from_millis(250),
            "refused without a round trip to fra (300 ms): {outcomes:?}"
        );
    }
    let max = get_json(w.backends[2].addr, "/stats").await["max_inflight"]
        .as_u64()
        .unwrap();
    assert!(max <= 3, "fra-1 max_inflight {max}");
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

/// The last of a full retry budget goes where the room is. iad-1 is full and iad-2..4 refuse
/// connections (but are not known to be down yet), so `closest` would try those three and then
/// ord-1, which is busy; the fourth try goes to idle fra-1 instead, and the request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_try_goes_to_the_instance_with_the_most_room() {
    let dead: Vec<SocketAddr> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap() // closed when `l` drops: connects are refused
        })
        .collect();
    let extra = [("iad-2", dead[0]), ("iad-3", dead[1]), ("iad-4", dead[2])];
    let w = world_with([2, 10, 10], "h2", &extra).await;
    let (a, b) = (&w.nodes[0], &w.nodes[1]);
    let mut held = hold(a.edge, "iad-1", 2, 5000);
    held.extend(hold(b.edge, "ord-1", 3, 5000));
    wait_load(a.admin, "iad-1", 2).await;
    wait_load(a.admin, "ord-1", 3).await;

    let r = get(a.edge, "hello", "/").await;
    assert_eq!(r.status.as_u16(), 200, "{}", route(&r));
    assert_eq!(
        r.header("x-backend-id"),
        Some("fra-1"),
        "the last resort, not the next-closest ord-1: {}",
        route(&r)
    );
    assert!(route(&r).contains("attempts=4"), "{}", route(&r));
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

/// The failure phase tells the truth: when the only node hosting an app dies, clients are told
/// its instances are unreachable (and the metrics count `backhaul_connect`), never that the app
/// is "at capacity" (`instance_full`), which would send an operator looking at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_is_unreachable_not_full() {
    let be = backend("dead-1");
    let seed_port = free_udp_port();
    let mut owner = Spec::new("owner", "iad");
    owner.apps = vec![("hello", app_toml("hello", 5, 10, "closest", 3))];
    owner.instances = vec![("dead-1", "hello", be.addr)];
    owner.seeded(seed_port, true);
    let owner = owner.start();
    let mut edge = Spec::new("edge", "iad");
    edge.apps = vec![("hello", app_toml("hello", 5, 10, "closest", 3))];
    edge.seeded(seed_port, false);
    let edge = edge.start();
    let t0 = std::time::Instant::now();
    while get(edge.edge, "hello", "/").await.status != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never routed to the owner"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(owner); // SIGKILL
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let r = get(edge.edge, "hello", "/").await;
        bodies.push(format!("{} {}", r.status, r.text().trim()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("capacity") && !b.starts_with("200")),
        "{bodies:#?}"
    );
    assert!(
        bodies.iter().any(|b| b.contains("no reachable instance")),
        "{bodies:#?}"
    );
    let metrics = get(edge.admin, "localhost", "/metrics").await.text();
    let phase = |p: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("petrel_session_failures_total{")
                    && l.contains("app=\"hello\"")
                    && l.contains(&format!("phase=\"{p}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(phase("instance_full"), 0.0, "{metrics}");
    assert!(phase("backhaul_connect") >= 20.0, "{bodies:#?}");
}
