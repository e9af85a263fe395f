//! Operating a node: `/healthz` and `/ready` (503 before the node has joined and from the start of
//! a drain), `petrel drain` and `petrel reload` over the admin API, SIGQUIT's fast shutdown and
//! SIGUSR2's binary upgrade.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{get, get_json};
use common::{app_toml, backend, node};

const SIGQUIT: i32 = 3;
const SIGUSR2: i32 = 12;

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .output()
        .expect("run petrel");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_healthz_drain_and_reload() {
    let be = backend("ops-1");
    let n = node(
        &[("app", app_toml("app", 50, 100, "closest", 3))],
        &[("ops-1", "app", be.addr)],
        "",
    );
    let admin = n.admin.to_string();
    assert_eq!(get(n.admin, "localhost", "/healthz").await.status, 200);
    let r = get(n.admin, "localhost", "/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());

    let (code, out, err) = cli(&["reload", "--admin", &admin]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"reloaded\":true"), "{out}");

    // A slow request is open when the drain starts: /ready says 503 at once, the request
    // finishes, new connections are refused, and the admin API still answers.
    let edge = n.edge;
    let slow = tokio::spawn(async move { get(edge, "app", "/sleep?ms=1500").await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, err) = cli(&["drain", "--admin", &admin]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"draining\":true"), "{out}");
    let r = get(n.admin, "localhost", "/ready").await;
    assert_eq!((r.status.as_u16(), r.text().trim()), (503, "draining"));
    assert_eq!(slow.await.unwrap(), 200, "open work finishes");
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(edge).await.is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(5), "listener still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(get_json(n.admin, "/v1/status").await["draining"] == true);

    // The CLI against nothing: a clear runtime error, exit 1.
    let (code, _, err) = cli(&["drain", "--admin", &common::closed_port().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_joined() {
    let dead_seed = common::free_udp_port();
    let mut s = common::Spec::new("lonely-1", "iad");
    s.seeds = vec![std::net::SocketAddr::from(([127, 0, 0, 1], dead_seed))];
    let n = s.start();
    let r = get(n.admin, "localhost", "/ready").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("not yet joined"), "{}", r.text());
    assert_eq!(get(n.admin, "localhost", "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_exits_at_once_and_sigusr2_hands_over_to_a_new_process() {
    let be = backend("q-1");
    let mut n = node(
        &[("app", app_toml("app", 50, 100, "closest", 3))],
        &[("q-1", "app", be.addr)],
        "",
    );
    // SIGUSR2: a new process takes the sockets; the old one drains and exits; the edge answers
    // throughout from the new one.
    let edge = n.edge;
    let old_generation = get_json(n.admin, "/v1/status").await["generation"].clone();
    n.proc.signal(SIGUSR2);
    let mut new_pid = None;
    let t0 = Instant::now();
    while new_pid.is_none() && t0.elapsed() < Duration::from_secs(10) {
        if let Ok(line) = n.proc.errs.recv_timeout(Duration::from_millis(200)) {
            if line.contains("SIGUSR2: started the new process") {
                new_pid = line
                    .split("pid=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|p| p.parse::<u32>().ok());
            }
        }
    }
    let new_pid = new_pid.expect("the old process says which process it started");
    let killer = scopeguard(new_pid);
    assert_eq!(
        n.proc.wait_exit(Duration::from_secs(15)),
        Some(0),
        "the old one drains and exits"
    );
    let r = get(edge, "app", "/").await;
    assert_eq!(r.status, 200);
    let gen = get_json(n.admin, "/v1/status").await["generation"].clone();
    assert_ne!(gen, old_generation, "served by the new process");

    // SIGQUIT to the new one, with a slow request open: it exits at once, without waiting.
    let slow = tokio::spawn(async move {
        common::http::try_send(
            edge,
            false,
            common::http::request("GET", "app", "/sleep?ms=20000", &[]),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let _ = Command::new("kill")
        .arg(format!("-{SIGQUIT}"))
        .arg(new_pid.to_string())
        .status();
    while std::path::Path::new(&format!("/proc/{new_pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{new_pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "SIGQUIT did not stop it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(slow.await.unwrap().is_err(), "the open request was cut");
    drop(killer);
}

/// Kills `pid` when dropped (the process the test's petrel started is not the test's child).
struct Killer(u32);

fn scopeguard(pid: u32) -> Killer {
    Killer(pid)
}

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.0.to_string())
            .status();
    }
}

/// `TOKIO_WORKER_THREADS` is read by petrel itself (one worker runs on tokio's current-thread
/// runtime): a value that is not a whole number from 1 to 1024 is a clear error, not a panic.
#[test]
fn a_bad_worker_count_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_node_files(dir.path(), &[], &[], "");
    let config = dir.path().join("node.toml");
    for bad in ["0", "two", "", "1025", "99999999999999999999"] {
        let mut child = Command::new(common::bin())
            .args(["run", "--config", config.to_str().expect("utf8 path")])
            .env("TOKIO_WORKER_THREADS", bad)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run petrel");
        // A petrel that took the value would serve on: give it 10 s, then fail.
        let t0 = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("TOKIO_WORKER_THREADS={bad:?}: petrel did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {err}");
        assert!(
            err.contains("TOKIO_WORKER_THREADS") && err.contains("whole number from 1 to 1024"),
            "{bad:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{bad:?}: {err}");
    }
}
