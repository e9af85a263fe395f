//! systemd's notify protocol, read from a real notify socket: READY=1 with MAINPID once the node
//! serves, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a SIGHUP reload, STOPPING=1 on
//! SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{app_toml, backend};

/// Notify messages until one contains `want`; fails after 10 s.
fn until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    }
    panic!("no {want:?} from petrel; it sent {seen:?}");
}

#[test]
fn ready_reloading_and_stopping_reach_the_notify_socket() {
    let be = backend("sd-1");
    let dir = tempfile::tempdir().unwrap();
    common::write_node_files(
        dir.path(),
        &[("app", app_toml("app", 5, 10, "closest", 2))],
        &[("sd-1", "app", be.addr)],
        "",
    );
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(dir.path().join("node.toml"))
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = Vec::new();
    let ready = until(&sock, "READY=1", &mut seen);
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready}");

    let _ = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
    let reloading = until(&sock, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    until(&sock, "READY=1", &mut seen);

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    until(&sock, "STOPPING=1", &mut seen);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
