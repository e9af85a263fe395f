//! Real origins for the conformance suite, started as child processes: a strict HTTP/1.1 server
//! on Python `h11`, Node's `http` module, and nginx (`tests/origins/`). A missing tool fails the
//! test loudly with the command that installs it; nothing is skipped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running origin, killed when dropped.
pub struct Origin {
    pub addr: SocketAddr,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn origins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/origins")
}

/// Fails with an install hint when `check` does not run.
fn require(what: &str, check: &mut Command, install: &str) {
    let ok = check
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{what} is needed by the conformance suite and is missing: {install} (.ci/run installs it)"
    );
}

fn spawn(mut cmd: Command, what: &str, dir: Option<tempfile::TempDir>) -> Origin {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("{what} did not say where it listens within 20 s");
        }
    };
    let addr = line
        .strip_prefix("origin listening on ")
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what} printed {line:?}"));
    Origin {
        addr,
        child,
        _dir: dir,
    }
}

/// The strict HTTP/1.1 origin (`strict_h11.py`): refuses absolute-form targets, two Hosts or two
/// Cookie fields, connection-specific headers; closes a connection idle for `idle_close_ms`.
pub fn strict(id: &str, idle_close_ms: u64) -> Origin {
    strict_in(None, id, idle_close_ms)
}

/// [`strict`] inside network namespace `netns` (listening on that namespace's loopback).
pub fn strict_in(netns: Option<&str>, id: &str, idle_close_ms: u64) -> Origin {
    require(
        "Python h11 and wsproto",
        Command::new("python3").args(["-c", "import h11, wsproto"]),
        "pip install h11 wsproto",
    );
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    cmd.arg(origins_dir().join("strict_h11.py")).args([
        "--listen",
        "127.0.0.1:0",
        "--id",
        id,
        "--idle-close-ms",
        &idle_close_ms.to_string(),
    ]);
    spawn(cmd, "strict_h11.py", None)
}

/// Node's `http` server (`node_origin.js`) with `keepAliveTimeout = keep_alive_ms`.
pub fn node(id: &str, keep_alive_ms: u64) -> Origin {
    require(
        "Node.js",
        Command::new("node").arg("--version"),
        "apt-get install -y nodejs",
    );
    let mut cmd = Command::new("node");
    cmd.arg(origins_dir().join("node_origin.js")).args([
        "--listen",
        "127.0.0.1:0",
        "--id",
        id,
        "--keep-alive-ms",
        &keep_alive_ms.to_string(),
    ]);
    spawn(cmd, "node_origin.js", None)
}

/// nginx (`nginx_origin.sh`) answering `/`, `/headers`, `/big`, `/limited`, 204 and 304 itself,
/// and proxying `/echo`, `/ws`, `/sse`, `/trailers`, `/early-413` to `upstream` (a strict origin).
pub fn nginx(upstream: SocketAddr) -> Origin {
    require(
        "nginx",
        Command::new("/usr/sbin/nginx").arg("-v"),
        "apt-get install -y nginx",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // nginx cannot report an ephemeral port: take a free one (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = Command::new("bash");
    cmd.arg(origins_dir().join("nginx_origin.sh"))
        .arg(port.to_string())
        .arg(upstream.port().to_string())
        .arg(dir.path());
    spawn(cmd, "nginx", Some(dir))
}
