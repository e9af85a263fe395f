//! Hitless reload: SIGHUP (or POST /v1/reload) applies a changed strategy and limits under load
//! with no failed request; a broken config is refused with file:line and the old one keeps serving.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{get, get_json, send};
use common::{app_toml, backend, node};

const SIGHUP: i32 = 1;

async fn app_view(admin: std::net::SocketAddr) -> serde_json::Value {
    get_json(admin, "/v1/apps").await["apps"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_changes_under_load_and_refuses_broken_configs() {
    let be = backend("r-1");
    let n = node(
        &[("app", app_toml("app", 10, 20, "closest", 3))],
        &[("r-1", "app", be.addr)],
        "",
    );
    let app_file = n.dir.path().join("apps/app.toml");

    // Continuous load: 3 workers, bounded by time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failed, edge) = (stop.clone(), ok.clone(), failed.clone(), n.edge);
        workers.push(tokio::spawn(async move {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(20) {
                let r = get(edge, "app", "/sleep?ms=5").await;
                if r.status == 200 { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. A changed strategy and limits, applied by SIGHUP.
    std::fs::write(&app_file, app_toml("app", 4, 5, "leastload", 2)).unwrap();
    n.proc.signal(SIGHUP);
    let t0 = Instant::now();
    loop {
        let a = app_view(n.admin).await;
        if a["strategy"] == "leastload" && a["hard_limit"] == 5 && a["soft_limit"] == 4 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "reload not applied: {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("reload applied after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. A broken config: refused with file:line and key; the old one keeps serving.
    let broken =
        app_toml("app", 4, 5, "leastload", 2).replace("hard_limit = 5", "hard_limit = \"five\"");
    std::fs::write(&app_file, broken).unwrap();
    n.proc.signal(SIGHUP);
    let t1 = Instant::now();
    let logged = loop {
        if let Some(l) = n
            .proc
            .errs
            .try_iter()
            .find(|l| l.contains("reload refused"))
        {
            break l;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(3),
            "no reload error logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{logged}");
    assert!(
        logged.contains("app.toml:7: http_service.concurrency.hard_limit"),
        "{logged}"
    );
    assert_eq!(
        app_view(n.admin).await["strategy"],
        "leastload",
        "old config still in force"
    );
    // The admin endpoint says the same, as JSON.
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/reload")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = send(n.admin, false, req).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("app.toml:7"),
        "{}",
        r.text()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests during reloads: {ok} ok, {failed} failed");
    assert!(ok > 50);
    assert_eq!(failed, 0);
}
