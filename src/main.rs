//! The `petrel` command line: run a node, check configs, run the built-in backend.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use petrel::app::App;
use petrel::config;
use petrel::handoff;
use petrel::shutdown::Shutdown;
use petrel::telemetry;
use tokio::signal::unix::{signal, SignalKind};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// petrel: a global edge load balancer.
///
/// One binary per node. Each node is an edge (clients connect to it) and a host of app instances.
/// Requests go to the best instance of their app; an instance at its hard limit is never queued
/// on: the request goes to another instance, or gets 503 + Retry-After.
#[derive(Parser)]
#[command(name = "petrel", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node: edge proxy, mesh membership and admin API. Logs go to stderr; bound
    /// addresses are printed on stdout.
    ///
    /// SIGTERM or SIGINT starts a drain: the node leaves the mesh, listeners close, open requests
    /// and WebSockets run on for up to node.drain_timeout; then WebSockets get a close frame (1001)
    /// and the process exits 0. A second signal exits at once.
    ///
    /// SIGHUP reloads the node and app configs (an invalid config is refused, the old one stays).
    /// SIGQUIT is a fast shutdown: open connections are cut and the process exits at once.
    /// SIGUSR2 starts a binary upgrade, as `petrel run --config FILE --upgrade` would. SIGUSR1
    /// reopens the access log file (logrotate).
    ///
    /// With --upgrade, the new process takes every listening socket from the running one through
    /// node.upgrade_socket (no connection is refused), and the old process then drains.
    ///
    /// TOKIO_WORKER_THREADS sets the worker threads (1 to 1024; default: one per CPU). With one,
    /// the node runs on a single-threaded runtime, the cheapest per request. RUST_LOG sets the log
    /// level (default info).
    Run {
        /// The node config file (node.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Take over from the petrel already running with this config (zero-downtime binary
        /// upgrade): its sockets pass to this process, then it drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate configs without starting anything: exit 0 with a summary, or 2 with every error
    /// as FILE:LINE: KEY: MESSAGE.
    Check {
        /// A node config; also checks every app file it names.
        #[arg(
            long,
            short,
            value_name = "FILE",
            required_unless_present = "app",
            conflicts_with = "app"
        )]
        config: Option<PathBuf>,
        /// A single app config (fly.toml format).
        #[arg(long, value_name = "FILE")]
        app: Option<PathBuf>,
    },
    /// Print this node's view: members with RTT/loss, and instances with load (from its admin API).
    Status {
        /// The node's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090", value_parser = admin_addr)]
        admin: SocketAddr,
        /// The admin token, if the node sets admin.token.
        #[arg(long, env = "PETREL_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Start a drain on a running node without stopping its process: /ready answers 503, the
    /// node leaves the mesh and closes its listeners, open requests run on. Send SIGTERM when you
    /// want the process to exit (it then waits for what is open, up to node.drain_timeout).
    Drain {
        /// The node's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090", value_parser = admin_addr)]
        admin: SocketAddr,
        /// The admin token, if the node sets admin.token.
        #[arg(long, env = "PETREL_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// What a node would do now for a request to HOST: every instance of its app with its tier
    /// (below_soft, below_hard, full, unhealthy, penalised), RTT, load and the load's age, the
    /// order of tries, and the reason for each (GET /v1/explain).
    Explain {
        /// The request's Host.
        #[arg(long)]
        host: String,
        /// As if the request preferred this region (Petrel-Prefer-Region).
        #[arg(long)]
        region: Option<String>,
        /// The node's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090", value_parser = admin_addr)]
        admin: SocketAddr,
        /// The admin token, if the node sets admin.token.
        #[arg(long, env = "PETREL_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Reload a running node's configs (as SIGHUP does): an invalid config is refused with
    /// file:line:key and the old one keeps serving (exit 2).
    Reload {
        /// The node's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090", value_parser = admin_addr)]
        admin: SocketAddr,
        /// The admin token, if the node sets admin.token.
        #[arg(long, env = "PETREL_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Make a cluster CA and a certificate and key per node for backhaul mutual TLS. Point each
    /// node's [backhaul] ca, cert and key at ca.pem, <node>.pem and <node>.key. (Without them, nodes
    /// derive a CA from mesh.cluster_key.)
    Certs {
        /// Directory to write into (created if missing; existing files are not overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Node names, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
    },
    /// Start a small multi-region cluster on loopback (default: 3 regions × 2 nodes, built-in
    /// backends, simulated inter-region latency), print the URLs to try, run until Ctrl-C, drain.
    Demo {
        /// A topology file (config/topologies/*.toml); regions are taken in file order.
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
    },
    /// Simulate a whole topology on a virtual clock: every node runs the real mesh core and the
    /// real strategies over simulated links. Compares policies on the same workload and seed,
    /// prints a table, and with --out writes report.json and SVG charts. Same seed, same report.
    ///
    /// The topology's [sim] section sets nodes, instances, limits, service time, demand, jitter,
    /// loss, crashes and partitions (config/topologies/README.md).
    Sim {
        /// A topology file (config/topologies/*.toml).
        #[arg(long, value_name = "FILE")]
        topology: PathBuf,
        /// Policies to compare: closest, leastload, coordinates, least_conn, round_robin, random.
        #[arg(
            long = "strategy",
            value_delimiter = ',',
            value_name = "LIST",
            default_value = "closest,leastload,coordinates,least_conn,round_robin,random"
        )]
        strategies: Vec<String>,
        /// Seed for every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated traffic time, e.g. 60s or 5m (default: the file's sim.duration_s).
        #[arg(long, value_name = "D")]
        duration: Option<config::Dur>,
        /// Directory for report.json, latency_cdf.svg, region_load.svg and mesh_bytes.svg.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The built-in origin: GET / (hello), /sleep?ms=N, /bytes?n=N, /status?code=N, /headers,
    /// /health[?fail=1], /ws (WebSocket echo), /stats. Every response carries X-Backend-Id.
    Backend {
        /// Address to listen on (port 0 picks a free one; the bound address is printed).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Id reported in X-Backend-Id and bodies.
        #[arg(long)]
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_log = match &cli.cmd {
        Cmd::Run { config, .. } => wants_json_log(config),
        _ => false,
    };
    telemetry::init_logging(json_log);
    // Every proxied connection costs two descriptors (more for WebSockets over the backhaul):
    // raise the soft limit to the hard one, as HAProxy and Envoy do.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    match cli.cmd {
        Cmd::Check { config, app } => check(config, app),
        Cmd::Run { config, upgrade } => run(config, upgrade),
        Cmd::Backend { listen, id } => backend(listen, id),
        Cmd::Certs { out, nodes } => certs(&out, &nodes),
        Cmd::Explain {
            host,
            region,
            admin,
            token,
        } => explain(admin, token, &host, region.as_deref()),
        Cmd::Drain { admin, token } => admin_post(admin, token, "/v1/drain", "drain"),
        Cmd::Reload { admin, token } => admin_post(admin, token, "/v1/reload", "reload"),
        Cmd::Status { admin, token } => {
            let Some(rt) = client_runtime("status") else {
                return ExitCode::from(1);
            };
            match rt.block_on(petrel::status::render(admin, token.as_deref())) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("petrel status: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Sim {
            topology,
            strategies,
            seed,
            duration,
            out,
        } => sim(topology, &strategies, seed, duration, out),
        Cmd::Demo { topology } => match petrel::demo::run(topology) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("petrel demo: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn sim(
    topology: PathBuf,
    strategies: &[String],
    seed: u64,
    duration: Option<config::Dur>,
    out: Option<PathBuf>,
) -> ExitCode {
    let mut policies = Vec::new();
    for s in strategies {
        match petrel::sim::Policy::parse(s.trim()) {
            Some(p) if !policies.contains(&p) => policies.push(p),
            Some(_) => {}
            None => {
                eprintln!(
                    "petrel sim: unknown strategy {s:?}; choose from closest, leastload, \
                     coordinates, least_conn, round_robin, random"
                );
                return ExitCode::from(2);
            }
        }
    }
    let opts = petrel::sim::Options {
        topology,
        policies,
        seed,
        duration_s: duration.map(|d| d.get().as_secs_f64()),
        out: out.clone(),
    };
    match petrel::sim::run(&opts) {
        Ok(report) => {
            print!("{}", report.table());
            if let Some(dir) = out {
                println!("report: {}", dir.join("report.json").display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("petrel sim: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(node: Option<PathBuf>, app: Option<PathBuf>) -> ExitCode {
    let result = match (node, app) {
        (Some(path), _) => config::load_node(&path).map(|c| {
            let mut out = format!(
                "ok: {}: node {} (region {}), {} app(s), {} instance(s)",
                path.display(),
                c.node.node.name,
                c.node.node.region,
                c.apps.len(),
                c.node.instances.len()
            );
            for (app, file) in c.apps.iter().zip(&c.app_paths) {
                out.push_str(&ignored_line(&file.display().to_string(), &app.ignored));
            }
            for w in c.node.mesh.warnings() {
                out.push_str(&format!("\nWARNING: {}: {w}", path.display()));
            }
            out
        }),
        (None, Some(path)) => config::load_app(&path).map(|a| {
            let svc = &a.http_service;
            let ignored = ignored_line(&path.display().to_string(), &a.ignored);
            format!(
                "ok: {}: app {}, strategy {}, soft {} / hard {} {}, instances spoken to in {}",
                path.display(),
                a.app,
                svc.load_balancing.strategy.as_str(),
                svc.concurrency.soft_limit,
                svc.concurrency.hard_limit,
                svc.concurrency.kind.as_str(),
                if svc.http_options.h2_backend {
                    "HTTP/2 (h2_backend)"
                } else {
                    "HTTP/1.1"
                }
            ) + &extensions(svc)
                + &ignored
        }),
        (None, None) => unreachable!("clap requires --config or --app"),
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
            ExitCode::from(2)
        }
    }
}

/// The petrel extensions an app turns on, one line each: its token check and its sessions.
fn extensions(svc: &config::HttpService) -> String {
    let mut out = String::new();
    if let Some(a) = &svc.auth {
        out.push_str(&format!(
            "\n  auth: jwt ({}), token from {}",
            a.algorithms.join(", "),
            a.token_from.join(", ")
        ));
    }
    let s = &svc.sessions;
    if s.resume {
        out.push_str(&format!(
            "\n  sessions: resumable WebSockets, held {:?} after a client vanishes, {} bytes of replay, ping every {:?}",
            s.hold.get(),
            s.replay_bytes,
            s.ping_interval.get()
        ));
    }
    out
}

/// `\n<file>: ignored (Fly keys petrel does not use): a, b`, or nothing.
fn ignored_line(file: &str, ignored: &[String]) -> String {
    if ignored.is_empty() {
        return String::new();
    }
    format!(
        "\n{file}: ignored (Fly keys petrel does not use): {}",
        ignored.join(", ")
    )
}

fn certs(out: &std::path::Path, nodes: &[String]) -> ExitCode {
    if let Some(bad) = nodes.iter().find(|n| !config::valid_name(n)) {
        eprintln!(
            "petrel certs: invalid node name {bad:?} (use a-z, 0-9 and '-', at most 63 characters)"
        );
        return ExitCode::from(2);
    }
    let files = match petrel::backhaul::tls::make_cluster_files(nodes) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("petrel certs: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("petrel certs: cannot create {}: {e}", out.display());
        return ExitCode::from(1);
    }
    for (name, _) in &files {
        if out.join(name).exists() {
            eprintln!(
                "petrel certs: {} exists; not overwriting anything",
                out.join(name).display()
            );
            return ExitCode::from(1);
        }
    }
    for (name, text) in &files {
        let path = out.join(name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        if name.ends_with(".key") {
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        }
        if let Err(e) = opts
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
        {
            eprintln!("petrel certs: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

/// An admin address as `ip:port`, or as `petrel run` prints it (`http://ip:port`).
fn admin_addr(s: &str) -> Result<SocketAddr, String> {
    let bare = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    bare.parse()
        .map_err(|_| format!("invalid admin address {s:?} (write ip:port, e.g. 127.0.0.1:9090)"))
}

/// `petrel explain`: the node's answer to /v1/explain as a table and the order of tries.
fn explain(admin: SocketAddr, token: Option<String>, host: &str, region: Option<&str>) -> ExitCode {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut path = format!("/v1/explain?host={}", enc(host));
    if let Some(r) = region {
        path.push_str(&format!("&region={}", enc(r)));
    }
    let Some(rt) = client_runtime("explain") else {
        return ExitCode::from(1);
    };
    let call = petrel::status::call(admin, token.as_deref(), http::Method::GET, &path);
    let v = match rt.block_on(call) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("petrel explain: {e:#}");
            return ExitCode::from(1);
        }
    };
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    println!("app {} ({})", s(&v["app"]), s(&v["strategy"]));
    let rows: Vec<Vec<String>> = v["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            [
                "id",
                "node",
                "region",
                "tier",
                "rtt_ms",
                "load",
                "load_age_ms",
                "reason",
            ]
            .iter()
            .map(|k| s(&c[*k]))
            .collect()
        })
        .collect();
    print!(
        "{}",
        petrel::status::table(
            &["instance", "node", "region", "tier", "rtt ms", "load", "age ms", "reason"],
            &rows
        )
    );
    let order: Vec<String> = v["order"].as_array().into_iter().flatten().map(s).collect();
    if order.is_empty() {
        println!(
            "no instance can take such a request now ({})",
            s(&v["empty"])
        );
    } else {
        println!("order: {}", order.join(" -> "));
    }
    ExitCode::SUCCESS
}

/// The small runtime the admin-client commands (`status`, `explain`, `drain`, `reload`) run on;
/// `None` after saying why it could not start.
fn client_runtime(what: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("petrel {what}: cannot start a runtime: {e}");
            None
        }
    }
}

/// `petrel drain` / `petrel reload`: POST to the admin API and print its answer.
fn admin_post(admin: SocketAddr, token: Option<String>, path: &str, what: &str) -> ExitCode {
    let Some(rt) = client_runtime(what) else {
        return ExitCode::from(1);
    };
    let call = petrel::status::call(admin, token.as_deref(), http::Method::POST, path);
    match rt.block_on(call) {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("petrel {what}: {e:#}");
            // A refused config (the node answered 400) is a config error; the rest are runtime.
            if e.to_string().contains("HTTP 400") {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `log.format = "json"` in the node file, read before the config is (so its errors are already
/// logged in the chosen format); an unreadable file says text, and the real load reports it.
fn wants_json_log(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("log")?.get("format")?.as_str().map(|f| f == "json"))
        .unwrap_or(false)
}

/// Starts the access log `cfg` asks for (`log.access`, relative to the node file).
fn start_access_log(cfg: &config::Config) -> std::io::Result<()> {
    let log = &cfg.node.log;
    let target = match log.access.as_str() {
        "off" => return Ok(()),
        "stderr" => petrel::access::Target::Stderr,
        path => petrel::access::Target::File(
            cfg.path
                .parent()
                .map(|d| d.join(path))
                .unwrap_or_else(|| path.into()),
        ),
    };
    let format = match log.access_format {
        config::AccessFormat::Json => petrel::access::Format::Json,
        config::AccessFormat::Combined => petrel::access::Format::Combined,
    };
    petrel::access::install(target, format)
}

/// Most worker threads a node takes from `TOKIO_WORKER_THREADS`: far past any core count, and
/// short of what makes tokio panic (a capacity overflow) or the OS refuse threads mid-start.
const MAX_WORKERS: usize = 1024;

/// How many worker threads the node's runtime gets: `TOKIO_WORKER_THREADS` when set, else one per
/// CPU. Errors (a sentence naming the variable): a value that is not a whole number from 1 to
/// [`MAX_WORKERS`] (tokio itself would panic on 0 or on text).
fn worker_count() -> Result<usize, String> {
    let bad = |v: &dyn std::fmt::Debug| {
        format!("TOKIO_WORKER_THREADS={v:?}: must be a whole number from 1 to {MAX_WORKERS}")
    };
    match std::env::var("TOKIO_WORKER_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
            _ => Err(bad(&v)),
        },
        Err(std::env::VarError::NotUnicode(v)) => Err(bad(&v)),
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
    }
}

/// The node's runtime with `workers` worker threads ([`worker_count`]). One worker runs on
/// tokio's current-thread scheduler: the same single thread of work without the multi-thread
/// scheduler's cross-thread bookkeeping: 3% less CPU per HTTP/1.1 request (plain build) and 10%
/// per h2 request (profile-guided) in the README's one-worker A/Bs ("Benchmarks"). Errors: the
/// OS refusing a thread or the epoll instance.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    }
    .enable_all()
    .build()
}

fn run(path: PathBuf, upgrade: bool) -> ExitCode {
    // Validate everything before binding (or taking) any port.
    let cfg = match config::load_node(&path) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::from(2);
        }
    };
    let workers = match worker_count() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("petrel: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = start_access_log(&cfg) {
        eprintln!(
            "petrel: {}: log.access: cannot open {:?}: {e}",
            cfg.path.display(),
            cfg.node.log.access
        );
        return ExitCode::from(1);
    }
    let mut inherited = if upgrade {
        let socket = cfg.node.node.upgrade_socket_path(&cfg.path);
        match handoff::take(&socket) {
            Ok(i) => {
                tracing::info!(path = %socket.display(), "took the listening sockets from the running process");
                i
            }
            Err(e) => {
                eprintln!("petrel: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        handoff::Inherited::default()
    };
    let rt = match runtime(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("petrel: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        telemetry::prometheus();
        let drain_timeout = cfg.node.node.drain_timeout;
        let shutdown = Shutdown::new();
        let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("petrel: cannot install signal handlers");
                return ExitCode::from(1);
            }
        };
        // Every handler before READY=1: a SIGHUP (`systemctl reload`) that came before its handler
        // would end the process (the default action), not reload it.
        let (mut hup, mut quit, mut usr1, mut usr2) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) {
            (Ok(h), Ok(q), Ok(u1), Ok(u2)) => (h, q, u1, u2),
            _ => {
                eprintln!("petrel: cannot install the SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 handlers");
                return ExitCode::from(1);
            }
        };
        let mut app = match App::build(cfg, shutdown.clone(), &mut inherited).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("petrel: {e}");
                return ExitCode::from(1);
            }
        };
        {
            let mut out = std::io::stdout().lock();
            for a in app.edge_addrs() {
                let _ = writeln!(out, "edge listening on http://{a}");
            }
            for a in app.edge_tls_addrs() {
                let _ = writeln!(out, "tls listening on https://{a}");
            }
            if let Some(a) = app.admin_addr() {
                let _ = writeln!(out, "admin listening on http://{a}");
            }
            if let Some(a) = app.mesh_addr() {
                let _ = writeln!(out, "mesh listening on udp://{a}");
            }
            if let Some(a) = app.backhaul_addr() {
                let _ = writeln!(out, "backhaul listening on tcp://{a}");
            }
            let _ = out.flush();
        }
        let node = app.node.clone();
        let handoff = app.handoff();
        let serving = tokio::spawn(app.run());
        if upgrade {
            // Serving on the inherited sockets now: the old process may stop accepting.
            match tokio::task::spawn_blocking(move || inherited.ready()).await {
                Ok(Ok(())) => tracing::info!("the old process is draining; this one serves"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the old process did not confirm the handover"),
                Err(e) => tracing::warn!(error = %e, "handover confirmation failed"),
            }
        }
        // Serving (after an upgrade, on the sockets taken over): tell systemd, with this pid.
        petrel::systemd::ready();
        if let Some((path, sockets)) = handoff {
            let started = if upgrade {
                handoff::serve_after_takeover(path.clone(), sockets, node.clone())
            } else {
                handoff::serve(path.clone(), sockets, node.clone())
            };
            if let Err(e) = started {
                tracing::warn!(path = %path.display(), error = %e, "upgrade socket unavailable; petrel run --upgrade will not work for this process");
            }
        }
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = shutdown.handed_over() => { tracing::info!("handed over to a new process: draining"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    // Off the runtime's threads: with one worker the runtime is this thread, and
                    // reading the files and certificates would stall every connection meanwhile.
                    let node = node.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || {
                        let _ = petrel::reload::reload_logged(&node);
                    })
                    .await
                    {
                        tracing::error!(error = %e, "SIGHUP: the reload failed");
                    }
                }
                _ = usr2.recv() => start_upgrade(&node.config_path),
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: reopening the access log");
                    petrel::access::reopen();
                }
                _ = quit.recv() => {
                    tracing::warn!(open = shutdown.open_tasks(), "SIGQUIT: fast shutdown, open connections are cut");
                    shutdown.trigger();
                    shutdown.cut();
                    // A moment for close frames to go out; no waiting for open requests.
                    let _ = shutdown.wait_drained(std::time::Duration::from_millis(100)).await;
                    return ExitCode::SUCCESS;
                }
            }
        }
        petrel::systemd::stopping();
        shutdown.trigger();
        let drained = async {
            let _ = serving.await;
            shutdown.wait_drained(drain_timeout.get()).await
        };
        tokio::select! {
            all = drained => {
                if all {
                    tracing::info!("drained; exiting");
                } else {
                    tracing::warn!(open = shutdown.open_tasks(), deadline = %drain_timeout, "drain deadline reached; closing what is left");
                    // WebSockets get a close frame (1001) at their next frame boundary.
                    shutdown.cut();
                    if !shutdown.wait_drained(CLOSE_GRACE).await {
                        tracing::warn!(open = shutdown.open_tasks(), "some connections did not close in time");
                    }
                }
                ExitCode::SUCCESS
            }
            _ = term.recv() => fast_exit(&shutdown),
            _ = int.recv() => fast_exit(&shutdown),
            _ = quit.recv() => fast_exit(&shutdown),
        }
    })
}

/// After the drain deadline, how long spliced sockets get to send their close frames.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGUSR2: starts this binary again as `petrel run --config <file> --upgrade`, which takes the
/// listening sockets over; this process then drains as on SIGTERM (nginx's USR2).
fn start_upgrade(config: &std::path::Path) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "SIGUSR2: cannot find this binary to start the upgrade");
            return;
        }
    };
    let child = std::process::Command::new(&exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--upgrade")
        .stdin(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            tracing::info!(pid = c.id(), exe = %exe.display(), "SIGUSR2: started the new process; it takes the sockets over")
        }
        Err(e) => tracing::error!(error = %e, "SIGUSR2: could not start the new process"),
    }
}

fn fast_exit(shutdown: &Shutdown) -> ExitCode {
    tracing::warn!(open = shutdown.open_tasks(), "second signal: exiting now");
    ExitCode::SUCCESS
}

fn backend(listen: SocketAddr, id: String) -> ExitCode {
    let rt = match worker_count().and_then(|n| runtime(n).map_err(|e| e.to_string())) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("petrel: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let (addr, serve) = match petrel::backend::bind(listen, id.clone()).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("petrel backend: cannot bind {listen}: {e}");
                return ExitCode::from(1);
            }
        };
        println!("backend {id} listening on http://{addr}");
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = serve => ExitCode::SUCCESS,
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}
