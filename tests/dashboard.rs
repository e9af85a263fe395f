//! The admin dashboard in a real browser: headless Chromium loads `/` from a node of a 3-node
//! cluster; the peers table, the app × region grid and the explain view fill, and the page keeps
//! polling. With `PETREL_DASHBOARD_PNG=path` it also saves a screenshot.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::get_json;
use common::{app_toml, backend, free_udp_port, Spec};

const KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn chromium() -> &'static str {
    let ok = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the dashboard test needs Chromium: apt-get install -y chromium (.ci/run installs it)"
    );
    "chromium"
}

/// Chromium, headless, on `url` for `ms` of (virtual) time; extra flags such as `--dump-dom`.
fn browse(url: &str, ms: u32, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            &format!("--virtual-time-budget={ms}"),
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_fills_and_updates_in_chromium() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topology: PathBuf =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/topologies/demo3.toml");
    let seed = free_udp_port();
    let backends: Vec<_> = ["iad", "ord", "fra"]
        .iter()
        .map(|r| backend(&format!("hello-{r}")))
        .collect();
    let mut nodes = Vec::new();
    for (i, region) in ["iad", "ord", "fra"].into_iter().enumerate() {
        let mut s = Spec::new(Box::leak(format!("{region}-1").into_boxed_str()), region);
        s.key = Some(KEY);
        s.topology = Some(&topology);
        s.apps = vec![("hello", app_toml("hello", 5, 10, "closest", 2))];
        s.instances = vec![(
            Box::leak(format!("hello-{region}").into_boxed_str()),
            "hello",
            backends[i].addr,
        )];
        s.seeded(seed, i == 0);
        nodes.push(s.start());
    }
    let admin = nodes[0].admin;
    rt.block_on(async {
        let t0 = Instant::now();
        loop {
            let m = get_json(admin, "/v1/members").await;
            let ok = m["members"]
                .as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|p| p["rtt_ms"].is_number()));
            if ok {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no RTTs: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let url = format!("http://{admin}/?host=hello");
    let dom = browse(&url, 7000, &["--dump-dom"]);
    for want in ["ord-1", "fra-1", "alive", "hello-ord", "serving"] {
        assert!(dom.contains(want), "{want} not on the page:\n{dom}");
    }
    // The grid has a column per region and a row for the app; the explain view shows the order.
    assert!(
        dom.contains("<th>fra</th>") && dom.contains("<th>ord</th>"),
        "{dom}"
    );
    assert!(dom.contains("order hello-iad"), "{dom}");
    // It keeps polling: the refresh counter passed 1.
    let polls: u32 = dom
        .split("<span id=\"polls\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 2, "polled {polls} times:\n{dom}");
    // With admin.token: the page itself loads without it and, given the token in the URL
    // fragment (which never reaches the server), fills as before.
    let token = "dash-token-0123456789";
    let mut s = Spec::new("tok-1", "iad");
    s.apps = vec![("hello", app_toml("hello", 5, 10, "closest", 2))];
    s.instances = vec![("hello-tok", "hello", backends[0].addr)];
    let n = s.start();
    let path = n.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n"),
    );
    drop(n.proc);
    std::fs::write(&path, text).unwrap();
    let (_proc, addrs) = common::Proc::start(&["run", "--config", path.to_str().unwrap()], 4);
    let tok_admin = addrs.iter().find(|(k, _)| k == "admin").unwrap().1;
    let dom = browse(
        &format!("http://{tok_admin}/?host=hello#token={token}"),
        5000,
        &["--dump-dom"],
    );
    assert!(
        dom.contains("hello-tok") && dom.contains("serving"),
        "{dom}"
    );
    if let Some(png) = std::env::var_os("PETREL_DASHBOARD_PNG") {
        let shot = format!("--screenshot={}", PathBuf::from(png).display());
        browse(&url, 7000, &[&shot]);
    }
}
