//! `petrel demo`: a small multi-region cluster on loopback with no set-up — real `petrel run` nodes
//! and `petrel backend` instances as child processes, simulated inter-region latency, URLs printed.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;

use crate::config::topology::Topology;

/// The built-in 3-region topology (iad / ord / fra).
pub const DEFAULT_TOPOLOGY: &str = include_str!("../config/topologies/demo3.toml");

/// Regions beyond this many are left out of the demo (a laptop has only so many cores).
const MAX_REGIONS: usize = 6;

struct Kid {
    what: String,
    child: Child,
}

/// A running demo cluster; dropping it kills whatever is left.
pub struct Demo {
    kids: Vec<Kid>,
    /// (node name, region, edge address, admin address)
    pub nodes: Vec<(String, String, SocketAddr, SocketAddr)>,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
    }
}

fn spawn(exe: &Path, args: &[&str], what: &str, want: &[&str]) -> Result<(Kid, Vec<SocketAddr>)> {
    let mut cmd = Command::new(exe);
    if std::env::var_os("RUST_LOG").is_none() {
        // Six nodes logging at info would drown the banner; RUST_LOG=info brings it back.
        cmd.env("RUST_LOG", "warn");
    }
    // Own process group: a terminal's Ctrl-C reaches only the demo, which then sends each child
    // one SIGTERM (a second signal would make a node skip its drain).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout from {what}"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut found = vec![None; want.len()];
    while found.iter().any(Option::is_none) {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| anyhow!("{what} did not start (see its log above)"))?;
        let Some((head, url)) = line.split_once(" listening on ") else {
            continue;
        };
        let first = head.split_whitespace().next().unwrap_or_default();
        if let Some(i) = want.iter().position(|w| *w == first) {
            let addr = url.split_once("://").map_or(url, |(_, a)| a);
            found[i] = Some(
                addr.parse()
                    .with_context(|| format!("bad address from {what}: {line}"))?,
            );
        }
    }
    let kid = Kid {
        what: what.to_string(),
        child,
    };
    Ok((kid, found.into_iter().flatten().collect()))
}

const APPS: [(&str, &str, u32, u32); 3] = [
    ("hello", "closest", 4, 5),
    ("chat", "leastload", 50, 100),
    ("term", "closest", 50, 100),
];

/// Extra app sections: `term` keeps its WebSockets resumable (SPEC §10).
fn app_extra(app: &str) -> &'static str {
    match app {
        "term" => {
            "[http_service.sessions]\nresume = true\nhold = \"60s\"\nping_interval = \"5s\"\n"
        }
        _ => "",
    }
}

/// Starts the cluster described by `topology_text` (regions in file order).
pub fn start(topology_text: &str) -> Result<Demo> {
    let exe = std::env::current_exe().context("finding the petrel binary")?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let topo_path = dir.path().join("topology.toml");
    std::fs::write(&topo_path, topology_text)?;
    let topo = Topology::load(&topo_path).map_err(|e| anyhow!("{e}"))?;
    let mut regions: Vec<String> = topo.regions().to_vec();
    if regions.is_empty() {
        bail!("the topology has no [[region]]");
    }
    if regions.len() > MAX_REGIONS {
        eprintln!(
            "petrel demo: using the first {MAX_REGIONS} of {} regions",
            regions.len()
        );
        regions.truncate(MAX_REGIONS);
    }
    let per_region = if regions.len() <= 3 { 2 } else { 1 };
    let key: [u8; 32] = rand::random();
    let key = format!(
        "base64:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );

    let mut demo = Demo {
        kids: Vec::new(),
        nodes: Vec::new(),
        _dir: dir,
    };
    let root = demo._dir.path().to_path_buf();
    let mut seed: Option<SocketAddr> = None;
    for region in &regions {
        for n in 1..=per_region {
            let name = format!("{region}-{n}");
            let node_dir = root.join(&name);
            std::fs::create_dir_all(node_dir.join("apps"))?;
            let mut instances = String::new();
            for (app, strategy, soft, hard) in APPS {
                std::fs::write(
                    node_dir.join("apps").join(format!("{app}.toml")),
                    format!(
                        "app = \"{app}\"\n[http_service]\nhosts = [\"{app}.localhost\"]\n\
                         [http_service.concurrency]\ntype = \"requests\"\nsoft_limit = {soft}\nhard_limit = {hard}\n\
                         [http_service.load_balancing]\nstrategy = \"{strategy}\"\nretries = 3\n{}",
                        app_extra(app)
                    ),
                )?;
                let id = format!("{app}-{name}");
                let (kid, addrs) = spawn(
                    &exe,
                    &["backend", "--listen", "127.0.0.1:0", "--id", &id],
                    &id,
                    &["backend"],
                )?;
                demo.kids.push(kid);
                instances.push_str(&format!(
                    "\n[[instances]]\nid = \"{id}\"\napp = \"{app}\"\naddress = \"{}\"\n",
                    addrs[0]
                ));
            }
            let seeds = seed.map(|s| format!("\"{s}\"")).unwrap_or_default();
            let node_toml = format!(
                "[node]\nname = \"{name}\"\nregion = \"{region}\"\ndrain_timeout = \"5s\"\n\n\
                 [edge]\nlisten = [\"127.0.0.1:0\"]\ndebug_headers = true\n\n\
                 [mesh]\nbind = \"127.0.0.1:0\"\nseeds = [{seeds}]\ncluster_key = \"{key}\"\nprofile = \"lan\"\n\n\
                 [backhaul]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
                 [simulate]\ntopology = \"{}\"\n{instances}",
                topo_path.display()
            );
            let path = node_dir.join("node.toml");
            std::fs::write(&path, node_toml)?;
            let (kid, addrs) = spawn(
                &exe,
                &[
                    "run",
                    "--config",
                    path.to_str()
                        .ok_or_else(|| anyhow!("non-UTF-8 temp path"))?,
                ],
                &name,
                &["edge", "admin", "mesh"],
            )?;
            demo.kids.push(kid);
            seed.get_or_insert(addrs[2]);
            demo.nodes.push((name, region.clone(), addrs[0], addrs[1]));
        }
    }
    Ok(demo)
}

impl Demo {
    /// Asks every child to drain (SIGTERM) and waits up to `limit`; true if all exited.
    pub fn stop(&mut self, limit: Duration) -> bool {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for k in &mut self.kids {
            if matches!(k.child.try_wait(), Ok(Some(_))) {
                continue; // already gone (a Ctrl-C reaches the whole process group)
            }
            // A direct kill(2), not a helper process that the same Ctrl-C could stop first.
            let pid = Pid::from_raw(k.child.id() as i32);
            if let Err(e) = kill(pid, Signal::SIGTERM) {
                eprintln!("petrel demo: cannot signal {}: {e}", k.what);
            }
        }
        let deadline = std::time::Instant::now() + limit;
        let mut all = true;
        for k in &mut self.kids {
            loop {
                match k.child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if std::time::Instant::now() >= deadline => {
                        eprintln!("petrel demo: {} did not stop in time; killing it", k.what);
                        let _ = k.child.kill();
                        all = false;
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        all
    }

    /// The text printed after start: where to point curl.
    pub fn banner(&self) -> String {
        let mut s = String::new();
        s.push_str("\npetrel demo: a cluster on loopback with simulated inter-region latency.\n\n");
        s.push_str("  node        region  edge                    admin\n");
        for (name, region, edge, admin) in &self.nodes {
            s.push_str(&format!(
                "  {name:<11} {region:<7} http://{edge:<16} http://{admin}\n"
            ));
        }
        let (_, r0, e0, a0) = &self.nodes[0];
        let port = e0.port();
        s.push_str(&format!(
            "\nApps: hello (closest, soft 4 / hard 5 per instance), chat (leastload), term (resumable WebSockets). One instance of each per node.\n\
             Try, from region {r0}:\n\
             \x20 curl -si http://{e0}/ -H 'Host: hello' | grep -i petrel-route\n\
             Watch routing move when {r0} is full (12 slow requests > 2 instances × hard 5):\n\
             \x20 for i in $(seq 12); do curl -s -o /dev/null -H 'Host: hello' 'http://{e0}/sleep?ms=3000' & done; \\\n\
             \x20 sleep 0.5; curl -si http://{e0}/ -H 'Host: hello' | grep -i petrel-route\n\
             Resumable terminal (app term: a line every 500 ms; cut the connection, come back with the count):\n\
             \x20 ws://term.localhost:{port}/term?petrel_session=<22+ chars of A-Za-z0-9_->  then  ...&petrel_resume=<messages received>\n\
             Cluster view: curl -s http://{a0}/v1/members ; curl -s http://{a0}/v1/instances\n\
             Dashboard: http://{a0}/?host=hello (why a request goes where it goes: petrel explain --host hello --admin {a0})\n\
             Ctrl-C drains every node and exits.\n"
        ));
        s
    }
}

/// `petrel demo`: start, print, wait for Ctrl-C or SIGTERM, drain, exit.
pub fn run(topology: Option<PathBuf>) -> Result<()> {
    let text = match &topology {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => DEFAULT_TOPOLOGY.to_string(),
    };
    let mut demo = start(&text)?;
    print!("{}", demo.banner());
    let _ = std::io::stdout().flush();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    eprintln!("petrel demo: draining {} processes", demo.kids.len());
    if demo.stop(Duration::from_secs(15)) {
        eprintln!("petrel demo: stopped cleanly");
    }
    Ok(())
}
