//! Cluster keys over real processes: rotation with rolling reloads under load (its own binary,
//! so its five nodes and request loops do not slow the timing tests in `mesh.rs`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{instance_ids, members, within};
use common::http::{get, get_json};
use common::{app_toml, backend, free_udp_port, Node, Spec};

const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY: &str = "base64:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

/// Rewrites a node's key lines and reloads it; the reload must succeed.
async fn rekey(n: &Node, keys: &[&str]) {
    let path = n.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("cluster_key"))
        .collect();
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let text = kept.join("\n").replace(
        "[mesh]\n",
        &format!("[mesh]\ncluster_keys = [{}]\n", list.join(", ")),
    );
    std::fs::write(&path, text).unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/reload")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = common::http::send(n.admin, false, req).await;
    assert_eq!(r.status, 200, "reload: {}", r.text());
}

/// Key rotation without downtime (memberlist's keyring): three nodes move from key A to key B in
/// two rolling reloads, [A] → [A, B] → [B, A], then drop A. Requests cross the backhaul the whole
/// time (h2 from one edge, QUIC from the other); none fails, no member is ever marked down, and a
/// new node that knows only B joins and is served over the backhaul afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_rotate_with_rolling_reloads() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let be = backend("rot-1");
    let seed_port = free_udp_port();
    let app = || vec![("app", app_toml("app", 50, 100, "closest", 3))];
    let mut nodes = Vec::new();
    for (i, (name, transport)) in [("owner", "h2"), ("edge-h2", "h2"), ("edge-quic", "quic")]
        .into_iter()
        .enumerate()
    {
        let mut s = Spec::new(name, "iad");
        s.key = Some(KEY);
        s.transport = transport;
        s.apps = app();
        if i == 0 {
            s.instances = vec![("rot-1", "app", be.addr)];
        }
        s.seeded(seed_port, i == 0);
        nodes.push(s.start());
    }
    for n in &nodes[1..] {
        assert!(
            within(Duration::from_secs(10), || async {
                instance_ids(n).await == ["rot-1"]
            })
            .await
            .is_some(),
            "the edges see the owner's instance"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, downs) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut workers = Vec::new();
    for edge in [nodes[1].edge, nodes[2].edge] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = tokio::time::timeout(Duration::from_secs(5), get(edge, "app", "/")).await;
                match r {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
    {
        let (stop, downs) = (stop.clone(), downs.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for a in &admins {
                    let v = get_json(*a, "/v1/members").await;
                    let down = v["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|m| m["state"] != "alive")
                        .count();
                    downs.fetch_add(down as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for keys in [[KEY, OTHER_KEY], [OTHER_KEY, KEY]] {
        for n in &nodes {
            rekey(n, &keys).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    for n in &nodes {
        rekey(n, &[OTHER_KEY]).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // A node that only ever knew B: a member, and served by the owner over a new TLS connection.
    let mut late = Spec::new("late", "iad");
    late.key = Some(OTHER_KEY);
    late.apps = app();
    late.seeded(seed_port, false);
    let late = late.start();
    assert!(
        within(Duration::from_secs(10), || async {
            instance_ids(&late).await == ["rot-1"]
        })
        .await
        .is_some(),
        "a node with only the new key joins"
    );
    let r = get(late.edge, "app", "/").await;
    assert_eq!(r.status, 200, "served over the backhaul: {}", r.text());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed, downs) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        downs.load(Ordering::Relaxed),
    );
    eprintln!("key rotation: {ok} requests ok, {failed} failed; members seen not alive: {downs}");
    assert!(ok > 200, "too few requests to mean anything: {ok}");
    assert_eq!((failed, downs), (0, 0));
    // The old key no longer gets in.
    let mut old = Spec::new("old", "iad");
    old.key = Some(KEY);
    old.seeded(seed_port, false);
    let old = old.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(members(&nodes[0]).await.iter().all(|m| m["node"] != "old"));
    drop(old);
}
