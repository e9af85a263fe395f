//! Logging setup and every metric petrel exports (SPEC §8), named in this one place.
//!
//! Per-app metric handles are registered once when the route table is built, so the request
//! path increments pre-resolved counters instead of hashing label sets.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `petrel_requests_total{app,status_class}`
pub const REQUESTS_TOTAL: &str = "petrel_requests_total";
/// `petrel_request_duration_seconds{app}`
pub const REQUEST_DURATION: &str = "petrel_request_duration_seconds";
/// `petrel_upstream_body_seconds{app,direction}`
pub const UPSTREAM_BODY: &str = "petrel_upstream_body_seconds";
/// `petrel_retries_total{app,reason}`
pub const RETRIES_TOTAL: &str = "petrel_retries_total";
/// `petrel_rejects_total{app}`
pub const REJECTS_TOTAL: &str = "petrel_rejects_total";
/// `petrel_session_failures_total{app,phase}`
pub const SESSION_FAILURES: &str = "petrel_session_failures_total";
/// `petrel_backhaul_connect_seconds{transport}`
pub const BACKHAUL_CONNECT: &str = "petrel_backhaul_connect_seconds";
/// `petrel_active_connections{kind}`
pub const ACTIVE_CONNECTIONS: &str = "petrel_active_connections";
/// `petrel_mesh_members{state}`
pub const MESH_MEMBERS: &str = "petrel_mesh_members";
/// `petrel_peer_rtt_seconds{region}`
pub const PEER_RTT: &str = "petrel_peer_rtt_seconds";
/// `petrel_gossip_bytes_total{direction}`
pub const GOSSIP_BYTES: &str = "petrel_gossip_bytes_total";
/// `petrel_mesh_dropped_total{reason}`: mesh datagrams dropped (size, magic, auth, replay, kind, payload).
pub const MESH_DROPPED: &str = "petrel_mesh_dropped_total";
/// TLS handshakes refused at the edge (`reason`: no_sni, unknown_sni, handshake, timeout).
pub const TLS_FAILURES: &str = "petrel_tls_failures_total";
/// Client connections closed for sending nothing useful in time (`phase`: first_request).
pub const CONN_TIMEOUTS: &str = "petrel_connection_timeouts_total";
/// `petrel_requests_cancelled_total`: requests the client gave up on (an HTTP/2 stream reset, a
/// closed connection) before their response head.
pub const CANCELLED: &str = "petrel_requests_cancelled_total";
/// `petrel_connections_closed_total{reason}`: client connections petrel closed for abuse
/// (`rapid_reset`).
pub const CONNS_CLOSED: &str = "petrel_connections_closed_total";
/// `petrel_slow_client_responses_total{outcome}`: responses whose client took nothing while
/// petrel's buffer was full: the instance let go (`released`), or cancelled at `send_timeout`
/// (`cancelled`).
pub const SLOW_CLIENTS: &str = "petrel_slow_client_responses_total";
/// Request spans sent to the OTLP collector, or dropped (`outcome`: exported, dropped).
pub const TRACE_SPANS: &str = "petrel_trace_spans_total";
/// `petrel_build_info{version}`: always 1; the label says which petrel runs.
pub const BUILD_INFO: &str = "petrel_build_info";
/// `petrel_app_instances{app}`: healthy instances of the app in this node's view.
pub const APP_INSTANCES: &str = "petrel_app_instances";
/// `petrel_app_load{app}`: their load (in-flight requests or connections) summed.
pub const APP_LOAD: &str = "petrel_app_load";
/// `petrel_app_capacity{app,limit}`: their soft and hard limits summed.
pub const APP_CAPACITY: &str = "petrel_app_capacity";
/// `petrel_ws_sessions{state}`: resumable WebSocket sessions on this node, with a client
/// (`live`) or waiting for one (`held`).
pub const WS_SESSIONS: &str = "petrel_ws_sessions";
/// `petrel_ws_resumes_total{outcome}`: resume attempts, by outcome (`resumed`, `gap`, `expired`,
/// `refused`, `taken_over`).
pub const WS_RESUMES: &str = "petrel_ws_resumes_total";

/// Every metric's HELP text and unit, in exposition order (SPEC §8: every metric has HELP and
/// TYPE lines; the TYPE comes from how it is recorded).
const HELP: [(&str, Option<metrics::Unit>, &str); 24] = [
    (
        REQUESTS_TOTAL,
        None,
        "Client requests answered, by app and status class.",
    ),
    (
        REQUEST_DURATION,
        Some(metrics::Unit::Seconds),
        "Time from a request's arrival to the end of its response, by app.",
    ),
    (
        UPSTREAM_BODY,
        Some(metrics::Unit::Seconds),
        "Time spent streaming bodies to (request) and from (response) instances.",
    ),
    (
        RETRIES_TOTAL,
        None,
        "Requests moved on to another instance, by app and reason (full, connect).",
    ),
    (
        REJECTS_TOTAL,
        None,
        "Instances refusing work at their hard limit, by app.",
    ),
    (
        SESSION_FAILURES,
        None,
        "Requests that failed, by app and the phase that failed.",
    ),
    (
        BACKHAUL_CONNECT,
        Some(metrics::Unit::Seconds),
        "Time to open a backhaul connection to another node, by transport.",
    ),
    (
        ACTIVE_CONNECTIONS,
        None,
        "Open client connections (http) and proxied WebSockets (websocket).",
    ),
    (
        MESH_MEMBERS,
        None,
        "Other nodes this node knows, by SWIM state.",
    ),
    (
        PEER_RTT,
        Some(metrics::Unit::Seconds),
        "Windowed-minimum round-trip time to peers, by their region.",
    ),
    (
        GOSSIP_BYTES,
        Some(metrics::Unit::Bytes),
        "Mesh bytes sent and received (gossip and RTT pings).",
    ),
    (MESH_DROPPED, None, "Mesh datagrams dropped, by reason."),
    (
        TLS_FAILURES,
        None,
        "TLS handshakes refused at the edge, by reason.",
    ),
    (
        CONN_TIMEOUTS,
        None,
        "Client connections closed for sending nothing useful in time.",
    ),
    (
        CANCELLED,
        None,
        "Requests the client cancelled before their response head (h2 reset or closed connection).",
    ),
    (
        CONNS_CLOSED,
        None,
        "Client connections petrel closed, by reason (rapid_reset; send_timeout: a response the client took none of).",
    ),
    (
        SLOW_CLIENTS,
        None,
        "Responses stalled on a client that took nothing: instance let go (released) or response cancelled at send_timeout (cancelled).",
    ),
    (
        TRACE_SPANS,
        None,
        "Request spans exported over OTLP or dropped.",
    ),
    (
        BUILD_INFO,
        None,
        "Which petrel runs: always 1, labelled with its version.",
    ),
    (
        APP_INSTANCES,
        None,
        "Healthy instances of the app anywhere, as this node sees them.",
    ),
    (
        APP_LOAD,
        None,
        "The app's load (in-flight requests or connections) over those instances.",
    ),
    (
        APP_CAPACITY,
        None,
        "The app's soft and hard limits summed over those instances (limit label).",
    ),
    (
        WS_SESSIONS,
        None,
        "Resumable WebSocket sessions held on this node: with a client (live) or waiting for one (held).",
    ),
    (
        WS_RESUMES,
        None,
        "WebSocket session resumes: resumed, gap (some missed messages no longer held), expired (404), refused (400/403), taken_over (a live client replaced).",
    ),
];

/// The standard `process_*` series (CPU seconds, resident memory, open descriptors, start time).
fn process() -> &'static metrics_process::Collector {
    static C: OnceLock<metrics_process::Collector> = OnceLock::new();
    C.get_or_init(metrics_process::Collector::default)
}

/// Refreshes what is read at scrape time: the process series.
pub fn before_scrape() {
    process().collect();
}

/// One app's capacity as this node sees it now (set at scrape time).
pub fn app_capacity(app: &str, instances: usize, load: u64, soft: u64, hard: u64) {
    let app = app.to_string();
    metrics::gauge!(APP_INSTANCES, "app" => app.clone()).set(instances as f64);
    metrics::gauge!(APP_LOAD, "app" => app.clone()).set(load as f64);
    metrics::gauge!(APP_CAPACITY, "app" => app.clone(), "limit" => "soft").set(soft as f64);
    metrics::gauge!(APP_CAPACITY, "app" => app, "limit" => "hard").set(hard as f64);
}

/// Registers every metric's HELP text and the build-info series with the installed recorder.
fn describe() {
    for (name, unit, help) in HELP {
        // Gauges: the two named here; histograms: the `_seconds` series but the RTT gauge.
        let kind = if name.ends_with("_total") {
            "counter"
        } else if name.ends_with("_seconds") && name != PEER_RTT {
            "histogram"
        } else {
            "gauge"
        };
        match (kind, unit) {
            ("counter", Some(u)) => metrics::describe_counter!(name, u, help),
            ("counter", None) => metrics::describe_counter!(name, help),
            ("histogram", Some(u)) => metrics::describe_histogram!(name, u, help),
            ("histogram", None) => metrics::describe_histogram!(name, help),
            (_, Some(u)) => metrics::describe_gauge!(name, u, help),
            (_, None) => metrics::describe_gauge!(name, help),
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Counters an operator alerts on start at 0, not absent until the first event.
    for outcome in ["released", "cancelled"] {
        metrics::counter!(SLOW_CLIENTS, "outcome" => outcome).increment(0);
    }
    let s = session_metrics();
    for c in [&s.resumed, &s.gap, &s.expired, &s.refused, &s.taken_over] {
        c.increment(0);
    }
    s.live.increment(0.0);
    s.held.increment(0.0);
    process().describe();
}

/// Where a failed session failed (the `phase` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No app for the host, no instance, bad routing header.
    Route,
    /// Cluster authentication.
    Auth,
    /// Opening a backhaul connection to the owner node.
    BackhaulConnect,
    /// Opening a connection to the instance.
    InstanceConnect,
    /// Every candidate was at its hard limit.
    InstanceFull,
    /// The instance failed after the request was sent.
    Upstream,
    /// The instance took too long.
    Timeout,
    /// The client had `per_client` requests in flight already (`429`).
    ClientLimit,
}

impl Phase {
    /// All phases, in label order.
    pub const ALL: [Phase; 8] = [
        Phase::Route,
        Phase::Auth,
        Phase::BackhaulConnect,
        Phase::InstanceConnect,
        Phase::InstanceFull,
        Phase::Upstream,
        Phase::Timeout,
        Phase::ClientLimit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Route => "route",
            Phase::Auth => "auth",
            Phase::BackhaulConnect => "backhaul_connect",
            Phase::InstanceConnect => "instance_connect",
            Phase::InstanceFull => "instance_full",
            Phase::Upstream => "upstream",
            Phase::Timeout => "timeout",
            Phase::ClientLimit => "client_limit",
        }
    }
}

/// Why a request moved on to another instance (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The instance was at its hard limit.
    Full,
    /// The instance could not be reached.
    Connect,
}

/// Pre-registered handles for one app.
#[derive(Clone)]
pub struct AppMetrics {
    status: [Counter; 5],
    duration: Histogram,
    body_up: Histogram,
    body_down: Histogram,
    retry_full: Counter,
    retry_connect: Counter,
    rejects: Counter,
    failures: [Counter; 8],
}

impl AppMetrics {
    /// Registers every series of `app` (cheap to clone afterwards).
    pub fn new(app: &str) -> Self {
        let app = app.to_string();
        let status = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|c| metrics::counter!(REQUESTS_TOTAL, "app" => app.clone(), "status_class" => c));
        let failures = Phase::ALL.map(
            |p| metrics::counter!(SESSION_FAILURES, "app" => app.clone(), "phase" => p.as_str()),
        );
        Self {
            status,
            duration: metrics::histogram!(REQUEST_DURATION, "app" => app.clone()),
            body_up: metrics::histogram!(UPSTREAM_BODY, "app" => app.clone(), "direction" => "request"),
            body_down: metrics::histogram!(UPSTREAM_BODY, "app" => app.clone(), "direction" => "response"),
            retry_full: metrics::counter!(RETRIES_TOTAL, "app" => app.clone(), "reason" => "full"),
            retry_connect: metrics::counter!(RETRIES_TOTAL, "app" => app.clone(), "reason" => "connect"),
            rejects: metrics::counter!(REJECTS_TOTAL, "app" => app.clone()),
            failures,
        }
    }

    /// One finished request: its status and how long it took.
    pub fn request(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.status[class].increment(1);
        self.duration.record(seconds);
    }

    /// Time spent streaming the response body from the instance.
    pub fn response_body(&self, seconds: f64) {
        self.body_down.record(seconds);
    }

    /// Time spent streaming the request body to the instance.
    pub fn request_body(&self, seconds: f64) {
        self.body_up.record(seconds);
    }

    /// A move to the next candidate.
    pub fn retry(&self, reason: RetryReason) {
        match reason {
            RetryReason::Full => self.retry_full.increment(1),
            RetryReason::Connect => self.retry_connect.increment(1),
        }
    }

    /// An instance refused work at its hard limit.
    pub fn reject(&self) {
        self.rejects.increment(1);
    }

    /// A session that failed, by phase.
    pub fn failure(&self, phase: Phase) {
        let i = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.failures[i].increment(1);
    }
}

/// Metrics not tied to an app.
pub struct NodeMetrics {
    /// Open client HTTP connections.
    pub http_connections: Gauge,
    /// Open proxied WebSockets / upgraded streams.
    pub websockets: Gauge,
    /// Requests whose Host matched no app.
    pub unrouted: AppMetrics,
    /// Backhaul requests refused before an app was known (bad credentials).
    pub backhaul: AppMetrics,
}

/// Resumable WebSocket session metrics (SPEC §8, §10).
pub struct SessionMetrics {
    /// Sessions with a client attached.
    pub live: Gauge,
    /// Sessions waiting for their client.
    pub held: Gauge,
    /// Resumed with every missed message.
    pub resumed: Counter,
    /// Resumed, some missed messages no longer held.
    pub gap: Counter,
    /// Refused with 404: no node of the region holds it.
    pub expired: Counter,
    /// Refused with 400 or 403 (a count beyond what was sent, another token subject).
    pub refused: Counter,
    /// A live client replaced by a new one (close 4001).
    pub taken_over: Counter,
}

/// The process-wide session metrics.
pub fn session_metrics() -> &'static SessionMetrics {
    static M: OnceLock<SessionMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let outcome = |o: &'static str| metrics::counter!(WS_RESUMES, "outcome" => o);
        SessionMetrics {
            live: metrics::gauge!(WS_SESSIONS, "state" => "live"),
            held: metrics::gauge!(WS_SESSIONS, "state" => "held"),
            resumed: outcome("resumed"),
            gap: outcome("gap"),
            expired: outcome("expired"),
            refused: outcome("refused"),
            taken_over: outcome("taken_over"),
        }
    })
}

/// The process-wide node metrics.
pub fn node_metrics() -> &'static NodeMetrics {
    static M: OnceLock<NodeMetrics> = OnceLock::new();
    M.get_or_init(|| NodeMetrics {
        http_connections: metrics::gauge!(ACTIVE_CONNECTIONS, "kind" => "http"),
        websockets: metrics::gauge!(ACTIVE_CONNECTIONS, "kind" => "websocket"),
        unrouted: AppMetrics::new("_unrouted"),
        backhaul: AppMetrics::new("_backhaul"),
    })
}

/// Installs the Prometheus recorder once per process and returns its handle for `/metrics`.
pub fn prometheus() -> &'static PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ],
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!(
                "a metrics recorder was already installed; /metrics shows only this handle's view"
            );
        } else {
            describe();
        }
        handle
    })
}

/// Logs to stderr, as text or one JSON object per line (`log.format`, SPEC §11); `RUST_LOG`
/// overrides the default `info`.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let base = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        base.json().flatten_event(true).try_init()
    } else {
        base.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
