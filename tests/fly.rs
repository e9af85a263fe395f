//! Coming from Fly: `fly-replay` across three regions (over the h2 and the QUIC backhaul),
//! `force_https`, response header rules, `pristine`, Fly's header names and the
//! preferred-instance marker, each against the strict HTTP/1.1 origin (`tests/origins`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::{get_json, send, Reply};
use common::origins::{self, Origin};
use common::{app_toml, free_udp_port, Node, Spec};
use http::Request;
use http_body_util::Full;

const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A request to app `db` whose first pick is the `ord` replica (the nodes have no simulated
/// distance between them, so without the hint any could be first).
fn req(method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "db.example.com")
        .header("petrel-prefer-region", "ord");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).unwrap()
}

/// The `headers` the strict origin saw, as (name, value) pairs.
fn seen(r: &Reply) -> Vec<(String, String)> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect()
}

fn value<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Three regions, one node and one strict origin each; every node routes app `db`.
struct World {
    nodes: Vec<Node>,
    _origins: Vec<Origin>,
}

async fn world(transport: &'static str) -> World {
    let seed = free_udp_port();
    let mut nodes = Vec::new();
    let mut origins = Vec::new();
    for (i, region) in ["iad", "ord", "fra"].into_iter().enumerate() {
        let id: &'static str = Box::leak(format!("{region}-1").into_boxed_str());
        let origin = origins::strict(id, 5000);
        let mut s = Spec::new(Box::leak(format!("node-{region}").into_boxed_str()), region);
        s.key = Some(KEY);
        s.transport = transport;
        s.apps = vec![("db", app_toml("db", 50, 100, "closest", 2))];
        s.instances = vec![(id, "db", origin.addr)];
        s.seeded(seed, i == 0);
        nodes.push(s.start());
        origins.push(origin);
    }
    let t0 = Instant::now();
    for n in &nodes {
        loop {
            let v = get_json(n.admin, "/v1/instances").await;
            if v["instances"].as_array().map_or(0, |a| a.len()) == 3 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no cluster: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    World {
        nodes,
        _origins: origins,
    }
}

async fn replay_across_regions(transport: &'static str) {
    let w = world(transport).await;
    let ord = w.nodes[1].edge;

    // A replica answers writes with `fly-replay: region=iad`: the write is served by the primary,
    // its body intact, and the client sees only the primary's answer.
    let body: Bytes = (0..200_000u32)
        .map(|i| (i * 7 % 256) as u8)
        .collect::<Vec<_>>()
        .into();
    let sum = {
        use sha2::Digest;
        sha2::Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let r = send(
        ord,
        false,
        req(
            "POST",
            "/echo",
            &[("x-test-replay", "region=iad;state=write-42")],
            body.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-origin-id"), Some("iad-1"));
    assert_eq!(r.header("x-body-sha256"), Some(sum.as_str()), "{transport}");
    assert!(r.headers.get("fly-replay").is_none());
    assert!(r.body == body);

    // The primary learns where the request came from, and the state.
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/headers",
            &[("x-test-replay", "region=iad;state=s1")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.header("x-origin-id"), Some("iad-1"));
    let src = value(&seen(&r), "fly-replay-src")
        .unwrap_or_default()
        .to_string();
    assert!(
        src.starts_with("instance=ord-1;region=ord;t=") && src.ends_with(";state=s1"),
        "fly-replay-src: {src}"
    );

    // instance=, elsewhere=true.
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[("x-test-replay", "instance=fra-1")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.header("x-origin-id"), Some("fra-1"));
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[("x-test-replay", "elsewhere=true")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-origin-id"), Some("ord-1"), "elsewhere");

    // An app that replays every replay: the 11th is a loop.
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[
                ("x-test-replay", "elsewhere=true"),
                ("x-test-replay-loop", "1"),
            ],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 508, "{}", r.text());
    assert!(r.text().contains("loop"), "{}", r.text());
    let stats = get_json(w._origins[0].addr, "/stats").await;
    assert!(stats["requests"].as_u64().unwrap() < 40, "{stats}");

    // No instance where the replay points: an error naming it, or, with a fallback, back to
    // the instance that asked, told why.
    let r = send(
        ord,
        false,
        req("GET", "/", &[("x-test-replay", "region=syd")], Bytes::new()),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("syd"), "{}", r.text());
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/headers",
            &[("x-test-replay", "region=syd;fallback=prefer_self")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-origin-id"), Some("ord-1"));
    let failed = value(&seen(&r), "fly-replay-failed")
        .unwrap_or_default()
        .to_string();
    assert!(failed.contains("syd"), "fly-replay-failed: {failed:?}");
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[("x-test-replay", "region=syd;fallback=force_self")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.header("x-origin-id"), Some("ord-1"), "{}", r.text());
    // A replay's timeout bounds reaching the target, not its answer: a slow primary is waited
    // for, and the request runs once.
    let t0 = Instant::now();
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/slow?ms=1500",
            &[(
                "x-test-replay",
                "region=iad;timeout=300ms;fallback=force_self",
            )],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.header("x-origin-id"), Some("iad-1"), "{}", r.text());
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );

    // Fly's quoted lists, and `any` after a region: that region first, else anywhere.
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[("x-test-replay", "region=\"fra,any\"")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.header("x-origin-id"), Some("fra-1"), "{}", r.text());
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[("x-test-replay", "region=\"syd,any\"")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A WebSocket handshake is replayed before it is accepted: the 101 comes from the primary,
    // and the socket echoes.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut wr = "ws://db.example.com/ws".into_client_request().unwrap();
        for (k, v) in [
            ("x-test-replay", "region=iad"),
            ("petrel-prefer-region", "ord"),
        ] {
            wr.headers_mut().insert(k, v.parse().unwrap());
        }
        let tcp = tokio::net::TcpStream::connect(ord).await.unwrap();
        let (mut ws, resp) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(wr, tcp),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["x-origin-id"], "iad-1", "{transport}");
        ws.send("over the replay".into()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap(), "over the replay");
    }

    // A malformed replay is the instance's fault.
    let r = send(
        ord,
        false,
        req(
            "GET",
            "/",
            &[("x-test-replay", "colour=blue")],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_replay_across_three_regions_h2_backhaul() {
    replay_across_regions("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_replay_across_three_regions_quic_backhaul() {
    replay_across_regions("quic").await;
}

/// An app file with `extra` written into its `[http_service]` table.
fn app(name: &str, extra: &str) -> (&'static str, String) {
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let text =
        format!("app = \"{name}\"\n[http_service]\nhosts = [\"{name}.example.com\"]\n{extra}");
    (name, text)
}

async fn get(edge: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut r = common::http::request("GET", host, path, headers);
    *r.uri_mut() = path.parse().unwrap();
    send(edge, false, r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_https_response_rules_and_fly_header_names_with_a_real_origin() {
    let o = origins::strict("py-1", 5000);
    let dead = common::closed_port();
    let apps = [
        app("secure", "force_https = true\n"),
        app(
            "shaped",
            "[http_service.http_options.response]\n\
             headers = { X-Frame-Options = \"DENY\", X-Origin-Id = false, Cache-Control = [\"public\", \"max-age=60\"] }\n",
        ),
        app(
            "bare",
            "[http_service.http_options.response]\npristine = true\n",
        ),
        app(
            "flyapp",
            "[http_service.http_options]\nheader_names = \"fly\"\n",
        ),
        app("pref", ""),
    ];
    let n = common::node(
        &apps,
        &[
            ("secure-1", "secure", o.addr),
            ("shaped-1", "shaped", o.addr),
            ("bare-1", "bare", o.addr),
            ("flyapp-1", "flyapp", o.addr),
            ("pref-1", "pref", o.addr),
            ("pref-dead", "pref", dead),
        ],
        "",
    );

    // force_https: a redirect to the same host and target, but ACME challenges pass.
    let r = get(n.edge, "secure.example.com", "/a/b?c=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://secure.example.com/a/b?c=1")
    );
    let r = get(
        n.edge,
        "secure.example.com",
        "/.well-known/acme-challenge/tok",
        &[],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-origin-id")),
        (200, Some("py-1"))
    );
    let climb = "/.well-known/acme-challenge/../../admin";
    let r = get(n.edge, "secure.example.com", climb, &[]).await;
    assert_eq!(
        r.status, 301,
        "a dot segment does not ride the ACME exception"
    );

    // Response header rules: set, remove, several values.
    let r = get(n.edge, "shaped.example.com", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r.headers.get("x-origin-id").is_none(), "removed");
    let cc: Vec<_> = r.headers.get_all("cache-control").iter().collect();
    assert_eq!(cc, ["public", "max-age=60"]);
    assert!(r.headers.contains_key("petrel-request-id"));

    // pristine: none of petrel's own headers.
    let r = get(n.edge, "bare.example.com", "/", &[]).await;
    assert_eq!(r.header("x-origin-id"), Some("py-1"));
    assert!(r.headers.get("petrel-request-id").is_none() && r.headers.get("via").is_none());

    // Fly's header names, to the instance and on the response; a client's copies are replaced.
    let r = get(
        n.edge,
        "flyapp.example.com",
        "/headers",
        &[
            ("fly-client-ip", "6.6.6.6"),
            ("fly-replay-src", "instance=forged"),
            ("x-forwarded-ssl", "on"),
        ],
    )
    .await;
    let h = seen(&r);
    assert_eq!(
        value(&h, "x-forwarded-ssl"),
        Some("off"),
        "plain HTTP, whatever the client said"
    );
    assert_eq!(value(&h, "fly-client-ip"), Some("127.0.0.1"));
    assert_eq!(value(&h, "fly-region"), Some("iad"));
    assert!(value(&h, "fly-forwarded-port").is_some());
    assert_eq!(value(&h, "fly-request-id"), r.header("fly-request-id"));
    assert!(
        value(&h, "fly-replay-src").is_none(),
        "forged replay source"
    );
    assert!(h.iter().all(|(k, _)| !k.starts_with("petrel-")), "{h:?}");
    assert!(r.headers.get("petrel-request-id").is_none());

    // The preferred instance cannot take the request: the one that does is told.
    let r = get(
        n.edge,
        "pref.example.com",
        "/headers",
        &[("fly-prefer-instance-id", "pref-dead")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = seen(&r);
    assert_eq!(
        value(&h, "fly-preferred-instance-unavailable"),
        Some("pref-dead")
    );
    assert_eq!(
        value(&h, "petrel-preferred-instance-unavailable"),
        Some("pref-dead")
    );
    let r = get(
        n.edge,
        "pref.example.com",
        "/headers",
        &[("fly-prefer-instance-id", "pref-1")],
    )
    .await;
    assert!(value(&seen(&r), "fly-preferred-instance-unavailable").is_none());
}
