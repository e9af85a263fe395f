//! Test helpers: real `petrel run` / `petrel backend` processes on ephemeral loopback ports, and small clients.
#![allow(dead_code)]

pub mod cluster;
pub mod http;
pub mod load;
pub mod origins;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The petrel binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_petrel")
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    /// stderr lines (logs) after startup.
    pub errs: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `petrel <args>` and waits for `count` "listening on" lines on stdout.
    pub fn start(args: &[&str], count: usize) -> (Proc, Vec<(String, SocketAddr)>) {
        Self::start_in(None, args, count)
    }

    /// As [`Proc::start`], inside network namespace `netns` (`ip netns exec`, which execs
    /// petrel itself, so signals reach it).
    pub fn start_in(
        netns: Option<&str>,
        args: &[&str],
        count: usize,
    ) -> (Proc, Vec<(String, SocketAddr)>) {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn petrel");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let echo = std::env::var_os("PETREL_TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[petrel] {line}");
                }
                let _ = etx.send(line);
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < count {
            let line = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let err: Vec<String> = erx.try_iter().collect();
                    panic!(
                        "petrel {args:?} did not report its addresses; stderr:\n{}",
                        err.join("\n")
                    );
                }
            };
            if let Some((what, url)) = line.split_once(" listening on ") {
                let addr = url.split_once("://").map_or(url, |(_, a)| a);
                addrs.push((what.to_string(), addr.parse().expect("address")));
            }
        }
        (
            Proc {
                child,
                lines: rx,
                errs: erx,
            },
            addrs,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by number.
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits up to `limit` for exit; returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running built-in backend.
pub struct Backend {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub id: String,
}

/// Starts `petrel backend` on an ephemeral port.
pub fn backend(id: &str) -> Backend {
    let (proc, addrs) = Proc::start(&["backend", "--listen", "127.0.0.1:0", "--id", id], 1);
    Backend {
        proc,
        addr: addrs[0].1,
        id: id.to_string(),
    }
}

/// A running node and the files it was started from.
pub struct Node {
    pub proc: Proc,
    pub edge: SocketAddr,
    pub admin: SocketAddr,
    pub mesh: SocketAddr,
    pub backhaul: SocketAddr,
    /// The TLS edge listener, when the node has `edge.tls_listen`.
    pub tls: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }
}

/// An app file's text with the given limits and strategy.
pub fn app_toml(name: &str, soft: u32, hard: u32, strategy: &str, retries: u32) -> String {
    format!(
        "app = \"{name}\"\n[http_service]\nhosts = [\"{name}.example.com\"]\n\
         [http_service.concurrency]\ntype = \"requests\"\nsoft_limit = {soft}\nhard_limit = {hard}\n\
         [http_service.load_balancing]\nstrategy = \"{strategy}\"\nretries = {retries}\n"
    )
}

/// Writes a node config with ephemeral edge/admin ports, the given apps and instances, and starts it.
/// `instances`: (id, app, address). `extra_edge`: extra lines for `[edge]`.
pub fn node(
    apps: &[(&str, String)],
    instances: &[(&str, &str, SocketAddr)],
    extra_edge: &str,
) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    write_node_files(dir.path(), apps, instances, extra_edge);
    start_node(dir)
}

/// Starts `petrel run` on `dir/node.toml`.
pub fn start_node(dir: tempfile::TempDir) -> Node {
    let path = dir.path().join("node.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines = if text.contains("tls_listen = [\"") {
        5
    } else {
        4
    };
    let (proc, addrs) = Proc::start(
        &["run", "--config", path.to_str().expect("utf8 path")],
        lines,
    );
    let find = |k: &str| {
        addrs
            .iter()
            .find(|(w, _)| w == k)
            .map(|(_, a)| *a)
            .expect("address")
    };
    Node {
        edge: find("edge"),
        admin: find("admin"),
        mesh: find("mesh"),
        backhaul: find("backhaul"),
        tls: addrs.iter().find(|(w, _)| w == "tls").map(|(_, a)| *a),
        proc,
        dir,
    }
}

/// The cluster key test nodes use unless a test sets another (`None`: an open cluster).
pub const TEST_KEY: &str = "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// One node of a test cluster.
pub struct Spec<'a> {
    pub name: &'a str,
    pub region: &'a str,
    /// Fixed mesh port (0 = ephemeral); restarts reuse the address.
    pub mesh_port: u16,
    pub seeds: Vec<SocketAddr>,
    pub key: Option<&'a str>,
    /// Topology file for `[simulate]`.
    pub topology: Option<&'a Path>,
    pub apps: Vec<(&'a str, String)>,
    pub instances: Vec<(&'a str, &'a str, SocketAddr)>,
    /// "h2" or "quic".
    pub transport: &'a str,
    /// Extra lines for `[backhaul]`.
    pub backhaul_extra: String,
    /// Extra lines for `[edge]`.
    pub edge_extra: String,
}

impl<'a> Spec<'a> {
    pub fn new(name: &'a str, region: &'a str) -> Self {
        Spec {
            name,
            region,
            mesh_port: 0,
            seeds: Vec::new(),
            key: Some(TEST_KEY),
            topology: None,
            apps: Vec::new(),
            instances: Vec::new(),
            transport: "h2",
            backhaul_extra: String::new(),
            edge_extra: String::new(),
        }
    }

    /// Joins a test cluster: the seed node binds `seed_port`, every other node seeds from it.
    pub fn seeded(&mut self, seed_port: u16, is_seed: bool) {
        if is_seed {
            self.mesh_port = seed_port;
        } else {
            self.seeds = vec![SocketAddr::from(([127, 0, 0, 1], seed_port))];
        }
    }

    /// Writes the files into a new temp dir and starts the node (lan profile).
    pub fn start(&self) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("apps")).expect("apps dir");
        for (name, text) in &self.apps {
            std::fs::write(dir.path().join("apps").join(format!("{name}.toml")), text)
                .expect("write app");
        }
        let seeds: Vec<String> = self.seeds.iter().map(|s| format!("\"{s}\"")).collect();
        let mut t = format!(
            "[node]\nname = \"{}\"\nregion = \"{}\"\ndrain_timeout = \"10s\"\n\n\
             [edge]\nlisten = [\"127.0.0.1:0\"]\ndebug_headers = true\n{}\n\n\
             [mesh]\nbind = \"127.0.0.1:{}\"\nseeds = [{}]\nprofile = \"lan\"\n",
            self.name,
            self.region,
            self.edge_extra,
            self.mesh_port,
            seeds.join(", ")
        );
        match self.key {
            Some(k) => t.push_str(&format!("cluster_key = \"{k}\"\n")),
            None => t.push_str("open = true\n"),
        }
        t.push_str(&format!(
            "\n[backhaul]\nlisten = \"127.0.0.1:0\"\ntransport = \"{}\"\n{}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            self.transport, self.backhaul_extra
        ));
        if let Some(topo) = self.topology {
            t.push_str(&format!(
                "\n[simulate]\ntopology = \"{}\"\n",
                topo.display()
            ));
        }
        for (id, app, addr) in &self.instances {
            t.push_str(&format!(
                "\n[[instances]]\nid = \"{id}\"\napp = \"{app}\"\naddress = \"{addr}\"\n"
            ));
        }
        std::fs::write(dir.path().join("node.toml"), t).expect("write node");
        start_node(dir)
    }
}

/// A free UDP port on loopback (bound, then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Writes node.toml and apps/*.toml into `dir`.
pub fn write_node_files(
    dir: &Path,
    apps: &[(&str, String)],
    instances: &[(&str, &str, SocketAddr)],
    extra_edge: &str,
) {
    std::fs::create_dir_all(dir.join("apps")).expect("apps dir");
    for (name, text) in apps {
        std::fs::write(dir.join("apps").join(format!("{name}.toml")), text).expect("write app");
    }
    let mut node = format!(
        "[node]\nname = \"test-1\"\nregion = \"iad\"\ndrain_timeout = \"10s\"\n\n\
         [edge]\nlisten = [\"127.0.0.1:0\"]\n{extra_edge}\n\n\
         [mesh]\nbind = \"127.0.0.1:0\"\ncluster_key = \"{TEST_KEY}\"\n\n\
         [backhaul]\nlisten = \"127.0.0.1:0\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    for (id, app, addr) in instances {
        node.push_str(&format!(
            "\n[[instances]]\nid = \"{id}\"\napp = \"{app}\"\naddress = \"{addr}\"\n"
        ));
    }
    std::fs::write(dir.join("node.toml"), node).expect("write node");
}

/// A loopback address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}
