//! `GET /v1/explain` and `petrel explain` agree with the route requests actually take
//! (`Petrel-Route`), for a local instance, a full one, an unhealthy one and a remote one.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http::{get, get_json, request, send};
use common::{app_toml, backend, free_udp_port, Spec};
use serde_json::Value;

const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn explain(admin: SocketAddr, host: &str) -> Value {
    get_json(admin, &format!("/v1/explain?host={host}")).await
}

fn routed_to(r: &common::http::Reply) -> String {
    let route = r.header("petrel-route").unwrap_or_default();
    route
        .split("; ")
        .find_map(|kv| kv.strip_prefix("instance="))
        .unwrap_or_default()
        .to_string()
}

fn candidate<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not among the candidates: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_route_taken() {
    let topology: PathBuf =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/topologies/demo3.toml");
    let seed = free_udp_port();
    let backends: Vec<_> = ["e-iad", "e-ord", "s-iad", "s-ord"]
        .iter()
        .map(|id| backend(id))
        .collect();
    let mut nodes = Vec::new();
    for (i, region) in ["iad", "ord"].into_iter().enumerate() {
        let mut s = Spec::new(if i == 0 { "iad-1" } else { "ord-1" }, region);
        s.key = Some(KEY);
        s.topology = Some(&topology);
        // `sick` fails its check on iad only (each node checks its own instances).
        let check = if region == "iad" {
            "/health?fail=1"
        } else {
            "/health"
        };
        s.apps = vec![
            ("hello", app_toml("hello", 2, 2, "closest", 2)),
            (
                "sick",
                app_toml("sick", 5, 10, "closest", 2)
                    + &format!(
                        "[[http_service.checks]]\ninterval = \"300ms\"\ntimeout = \"200ms\"\n\
                         grace_period = \"0s\"\npath = \"{check}\"\n"
                    ),
            ),
        ];
        s.instances = vec![
            (
                if i == 0 { "e-iad" } else { "e-ord" },
                "hello",
                backends[i].addr,
            ),
            (
                if i == 0 { "s-iad" } else { "s-ord" },
                "sick",
                backends[2 + i].addr,
            ),
        ];
        s.seeded(seed, i == 0);
        nodes.push(s.start());
    }
    let (iad, admin) = (nodes[0].edge, nodes[0].admin);
    let t0 = Instant::now();
    loop {
        let m = get_json(admin, "/v1/members").await;
        let measured = m["members"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["rtt_min_ms"].is_number());
        let n = get_json(admin, "/v1/instances").await["instances"]
            .as_array()
            .map_or(0, |a| a.len());
        let sick = explain(admin, "sick").await;
        if measured && n == 4 && candidate(&sick, "s-iad")["tier"] == "unhealthy" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "cluster not ready: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Local: the closest, below its soft limit; the request goes there.
    let v = explain(admin, "hello").await;
    assert_eq!(v["app"], "hello");
    assert_eq!(v["order"][0], "e-iad", "{v}");
    assert_eq!(candidate(&v, "e-iad")["tier"], "below_soft");
    let ord = candidate(&v, "e-ord");
    assert_eq!(
        (ord["node"].as_str(), ord["region"].as_str()),
        (Some("ord-1"), Some("ord"))
    );
    assert!(ord["rtt_ms"].as_f64().unwrap() > 40.0, "{ord}");
    let r = get(iad, "hello", "/").await;
    assert_eq!(routed_to(&r), "e-iad");
    assert!(
        r.header("petrel-route")
            .unwrap()
            .ends_with("reason=closest-below-soft"),
        "{:?}",
        r.header("petrel-route")
    );

    // Full: e-iad at its hard limit; explain and the next request both go to ord.
    let held: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                send(
                    iad,
                    false,
                    request(
                        "GET",
                        "hello",
                        "/sleep?ms=3000",
                        &[("petrel-force-instance-id", "e-iad")],
                    ),
                )
                .await
                .status
            })
        })
        .collect();
    let t0 = Instant::now();
    let v = loop {
        let v = explain(admin, "hello").await;
        if candidate(&v, "e-iad")["tier"] == "full" {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never full: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["order"][0], "e-ord", "{v}");
    assert!(
        candidate(&v, "e-iad")["reason"]
            .as_str()
            .unwrap()
            .contains("hard limit"),
        "{v}"
    );
    assert_eq!(
        routed_to(&get(iad, "hello", "/").await),
        "e-ord",
        "remote, as explained"
    );
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }

    // Unhealthy: explained as such, never tried; the request goes to the healthy remote one.
    let v = explain(admin, "sick").await;
    assert_eq!(candidate(&v, "s-iad")["tier"], "unhealthy");
    assert_eq!(v["order"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["order"][0], "s-ord");
    assert_eq!(routed_to(&get(iad, "sick", "/").await), "s-ord");

    // The CLI prints the same, and an unknown host is a clear 404.
    let out = std::process::Command::new(common::bin())
        .args(["explain", "--host", "sick", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("unhealthy") && text.contains("order: s-ord"),
        "{text}"
    );
    let r = get(admin, "localhost", "/v1/explain?host=nobody.example").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nobody.example"), "{}", r.text());
}
