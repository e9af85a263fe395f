//! `node.toml`: one node's identity, listeners, mesh, backhaul, admin and local instances (SPEC §2).

use serde::Deserialize;

use super::source::{ConfigError, Source};
use super::value::{Addr, Dur};

/// The whole node config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Identity and drain behaviour.
    pub node: NodeSection,
    /// Client-facing listeners.
    pub edge: EdgeSection,
    /// SWIM gossip and RTT pings.
    pub mesh: MeshSection,
    /// Node-to-node request transport.
    pub backhaul: BackhaulSection,
    /// Admin API, metrics, dashboard.
    #[serde(default)]
    pub admin: AdminSection,
    /// Instances hosted on this node.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// Simulated inter-region latency (one machine only).
    #[serde(default)]
    pub simulate: Option<SimulateSection>,
    /// Slow-request log and optional OTLP export.
    #[serde(default)]
    pub tracing: TracingSection,
    /// Process log format and the access log (SPEC §11).
    #[serde(default)]
    pub log: LogSection,
}

/// `[log]` (SPEC §11). Read at start; a reload that changes it says a restart is needed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// The process log on stderr: `"text"` (default) or `"json"` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// The access log: `"off"` (default), `"stderr"`, or a file path (relative to the node
    /// file; appended to, reopened on SIGUSR1).
    #[serde(default = "d_access")]
    pub access: String,
    /// `"json"` (default) or `"combined"` (Apache's combined format, then petrel's fields).
    #[serde(default)]
    pub access_format: AccessFormat,
}

/// `log.format`
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log.access_format`
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Apache's combined format, then petrel's own fields as `key=value`.
    Combined,
}

fn d_access() -> String {
    "off".into()
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            access: d_access(),
            access_format: AccessFormat::default(),
        }
    }
}

/// `[tracing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// Requests that take longer (head and body) are logged with the time of each phase.
    #[serde(default = "d_slow")]
    pub slow_request: Dur,
    /// OTLP/HTTP (JSON) collector base URL, e.g. `http://127.0.0.1:4318`; unset = no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Fraction (0..1) of requests exported besides the slow ones, which always are.
    #[serde(default)]
    pub otlp_sample: f64,
}

impl Default for TracingSection {
    fn default() -> Self {
        Self {
            slow_request: d_slow(),
            otlp_endpoint: None,
            otlp_sample: 0.0,
        }
    }
}

fn d_slow() -> Dur {
    Dur::secs(1)
}

/// `[node]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique in the cluster; `[a-z0-9-]`, at most 63 characters.
    pub name: String,
    /// Region code; `[a-z0-9]{2,8}`.
    pub region: String,
    /// How long open requests and WebSockets may run on after SIGTERM/SIGINT.
    #[serde(default = "d_drain")]
    pub drain_timeout: Dur,
    /// Globs of app config files, relative to this file's directory.
    #[serde(default = "d_apps")]
    pub apps: Vec<String>,
    /// Unix socket where `petrel run --upgrade` takes the listening sockets from this process;
    /// relative to this file's directory; default `.petrel-<name>.sock` beside it.
    #[serde(default)]
    pub upgrade_socket: Option<String>,
}

impl NodeSection {
    /// The upgrade socket path for a config file at `config_path`.
    pub fn upgrade_socket_path(&self, config_path: &std::path::Path) -> std::path::PathBuf {
        let dir = config_path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        match &self.upgrade_socket {
            Some(p) => dir.join(p),
            None => dir.join(format!(".petrel-{}.sock", self.name)),
        }
    }
}

/// `[edge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// Plaintext HTTP/1.1 and h2c (prior knowledge) listeners.
    pub listen: Vec<Addr>,
    /// TLS listeners (SNI, ALPN h2 / http/1.1).
    #[serde(default)]
    pub tls_listen: Vec<Addr>,
    /// Directory of `<hostname>.pem` + `<hostname>.key`.
    #[serde(default = "d_certs")]
    pub certs_dir: String,
    /// Certificate (by file name, without `.pem`) for TLS clients that send no SNI; unset = such
    /// handshakes are refused.
    #[serde(default)]
    pub default_cert: Option<String>,
    /// Add the `Petrel-Route` response header.
    #[serde(default)]
    pub debug_headers: bool,
    /// Largest request head accepted (431 above).
    #[serde(default = "d_max_header")]
    pub max_header_bytes: usize,
    /// Time a client has to send a full request head (408 / close after).
    #[serde(default = "d_header_timeout")]
    pub header_read_timeout: Dur,
    /// Open client connections per listener; at the limit, accepting pauses.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// Largest request body accepted (413 above); 0 = no limit.
    #[serde(default)]
    pub max_body_bytes: u64,
    /// Request body bytes read (within `header_read_timeout`) before an instance is picked: a
    /// smaller body is read whole, a larger one must start with this much (nginx's
    /// `client_body_buffer_size`).
    #[serde(default = "d_body_buffer")]
    pub body_buffer_bytes: usize,
    /// Response bytes read from an instance ahead of a slow client: a response that fits is
    /// read whole and the instance let go at once (nginx's `proxy_buffering`).
    #[serde(default = "d_response_buffer")]
    pub response_buffer_bytes: usize,
    /// A client that takes nothing of its response for this long, with the buffer full, no
    /// longer holds the instance's slot: the instance is waiting on it, not working.
    #[serde(default = "d_response_stall")]
    pub response_stall: Dur,
    /// A client that takes nothing of its response for this long has it cancelled (nginx's
    /// `send_timeout`, HAProxy's `timeout client`).
    #[serde(default = "d_send_timeout")]
    pub send_timeout: Dur,
    /// Concurrent HTTP/2 streams per client connection.
    #[serde(default = "d_h2_streams")]
    pub h2_max_streams: u32,
    /// A client connection that cancels more requests than this within one second (HTTP/2
    /// "rapid reset", CVE-2023-44487) is closed; 0 turns the check off.
    #[serde(default = "d_h2_max_resets")]
    pub h2_max_resets_per_second: u32,
    /// Time allowed to open a TCP connection to a local instance before trying another.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time an instance has to start its response once the request is sent (504 after).
    #[serde(default = "d_response_timeout")]
    pub response_timeout: Dur,
    /// An idle pooled HTTP/1.1 connection to an instance is not reused once it has been idle
    /// this long. Keep it below the instances' own keep-alive timeout (gunicorn 2 s, Node 5 s,
    /// Apache 5 s), so petrel never sends on a connection the origin is closing.
    #[serde(default = "d_pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
}

/// How aggressively SWIM probes and suspects: foca's LAN or WAN presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MeshProfile {
    /// Fast detection for one data centre.
    Lan,
    /// Tolerant timings for a mesh spanning continents.
    #[default]
    Wan,
}

/// `[mesh]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// UDP address for gossip and pings.
    pub bind: Addr,
    /// What peers use to reach us; defaults to `bind`.
    #[serde(default)]
    pub advertise: Option<Addr>,
    /// Any subset of existing members.
    #[serde(default)]
    pub seeds: Vec<Addr>,
    /// `base64:` + 32 bytes; encrypts and authenticates mesh datagrams, and keys the backhaul
    /// (its TLS CA and request tags). Required unless `open = true`.
    #[serde(default)]
    pub cluster_key: Option<String>,
    /// Several keys, for rotation without downtime (memberlist's keyring): the first seals and
    /// signs, every one opens and verifies. Instead of `cluster_key`.
    #[serde(default)]
    pub cluster_keys: Vec<String>,
    /// An open cluster: no key, anyone who reaches `bind` can join. Never the default.
    #[serde(default)]
    pub open: bool,
    /// SWIM timings preset.
    #[serde(default)]
    pub profile: MeshProfile,
}

/// The key in `config/single/node.toml`: public, so a node that runs with it is as good as open.
pub const EXAMPLE_CLUSTER_KEY: &str = "base64:ZXhhbXBsZSBrZXkgLSBtYWtlIHlvdXIgb3duIQ0KAAA=";

impl MeshSection {
    /// What `petrel check` and the start-up log warn about: an open cluster, or the public
    /// example key.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.open {
            w.push("mesh.open = true: this is an OPEN cluster; anyone who can reach mesh.bind can join it, read its gossip and take its traffic".to_string());
        }
        let example = self.cluster_key.iter().chain(&self.cluster_keys);
        if example.into_iter().any(|k| k.trim() == EXAMPLE_CLUSTER_KEY) {
            w.push("mesh.cluster_key is the public example key from config/single/node.toml; make your own: echo \"base64:$(head -c32 /dev/urandom | base64)\"".to_string());
        }
        w
    }

    /// The cluster keys, decoded, primary first (`cluster_key` or `cluster_keys`); empty for an
    /// open cluster. Keys that do not decode are left out (validation reports them).
    pub fn keys(&self) -> Vec<[u8; 32]> {
        self.cluster_key
            .iter()
            .chain(&self.cluster_keys)
            .filter_map(|k| super::decode_cluster_key(k).ok())
            .collect()
    }

    fn validate(&self, src: &super::Source, errs: &mut Vec<super::ConfigError>) {
        let named = usize::from(self.cluster_key.is_some()) + self.cluster_keys.len();
        if self.cluster_key.is_some() && !self.cluster_keys.is_empty() {
            errs.push(src.error(
                "mesh.cluster_keys",
                "set mesh.cluster_key or mesh.cluster_keys, not both",
            ));
        }
        match (named, self.open) {
            (0, false) => errs.push(src.error(
                "mesh.cluster_key",
                "required: a cluster anyone can join is never the default. Make a key with \
                 `head -c32 /dev/urandom | base64` and set cluster_key = \"base64:...\" on every \
                 node, or set mesh.open = true to run an open cluster knowingly",
            )),
            (1.., true) => errs.push(src.error(
                "mesh.open",
                "an open cluster has no key: remove mesh.open or the cluster key",
            )),
            _ => {}
        }
        if let Some(key) = &self.cluster_key {
            if let Err(m) = super::decode_cluster_key(key) {
                errs.push(src.error("mesh.cluster_key", m));
            }
        }
        for (i, key) in self.cluster_keys.iter().enumerate() {
            if let Err(m) = super::decode_cluster_key(key) {
                errs.push(src.error(&format!("mesh.cluster_keys[{i}]"), m));
            }
        }
    }
}

/// Which transport this node uses when it sends over the backhaul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP/2 over TCP.
    #[default]
    H2,
    /// QUIC over UDP.
    Quic,
}

/// `[backhaul]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackhaulSection {
    /// TCP (h2) and UDP (QUIC) port.
    pub listen: Addr,
    /// What this node uses when it sends.
    #[serde(default)]
    pub transport: Transport,
    /// Limit on opening a backhaul connection.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout: Dur,
    /// An owner that has not answered this node's mesh pings for this long is treated as gone
    /// for new requests, and an idempotent request waiting on it moves to the next candidate.
    /// Default: three ping intervals (1.5 s on the LAN profile, 3 s on WAN).
    #[serde(default)]
    pub peer_silence_limit: Option<Dur>,
    /// Cluster CA certificate from `petrel certs` (instead of the CA derived from the cluster key).
    #[serde(default)]
    pub ca: Option<String>,
    /// This node's certificate chain from `petrel certs`.
    #[serde(default)]
    pub cert: Option<String>,
    /// This node's private key from `petrel certs`.
    #[serde(default)]
    pub key: Option<String>,
}

impl BackhaulSection {
    /// The three certificate files, if configured.
    pub fn cert_files(&self) -> Option<(&str, &str, &str)> {
        match (&self.ca, &self.cert, &self.key) {
            (Some(a), Some(c), Some(k)) => Some((a, c, k)),
            _ => None,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin API listener; loopback by default.
    #[serde(default = "d_admin")]
    pub listen: Addr,
    /// Bearer token every admin request must carry (`Authorization: Bearer <token>`); required
    /// when `listen` is not a loopback address.
    #[serde(default)]
    pub token: Option<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: d_admin(),
            token: None,
        }
    }
}

/// `[[instances]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Unique in the cluster.
    pub id: String,
    /// The app this instance serves.
    pub app: String,
    /// Where the instance listens.
    pub address: Addr,
}

/// `[simulate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSection {
    /// Topology file whose RTTs delay this node's outgoing mesh and backhaul traffic.
    pub topology: String,
}

fn d_max_connections() -> usize {
    50_000
}
fn d_h2_streams() -> u32 {
    256
}
fn d_body_buffer() -> usize {
    64 * 1024
}
fn d_response_buffer() -> usize {
    256 * 1024
}
fn d_response_stall() -> Dur {
    Dur::secs(2)
}
fn d_send_timeout() -> Dur {
    Dur::secs(60)
}
fn d_h2_max_resets() -> u32 {
    100
}
fn d_drain() -> Dur {
    Dur::secs(600)
}
fn d_apps() -> Vec<String> {
    vec!["apps/*.toml".into()]
}
fn d_certs() -> String {
    "certs".into()
}
fn d_max_header() -> usize {
    65536
}
fn d_header_timeout() -> Dur {
    Dur::secs(10)
}
fn d_connect_timeout() -> Dur {
    Dur::secs(2)
}
fn d_response_timeout() -> Dur {
    Dur::secs(60)
}
fn d_pool_idle_timeout() -> Dur {
    Dur::ms(1500)
}
fn d_admin() -> Addr {
    Addr("127.0.0.1:9090".parse().expect("static address"))
}

/// `[a-z0-9-]`, 1..=63 chars, not starting or ending with `-`.
pub fn valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `[a-z0-9]{2,8}`.
pub fn valid_region(s: &str) -> bool {
    (2..=8).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl NodeConfig {
    /// Checks everything a single file can check; cross-file checks live in `config::load_node`.
    pub fn validate(&self, src: &Source) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if !valid_name(&self.node.name) {
            errs.push(src.error(
                "node.name",
                format!(
                    "invalid node name {:?} (use a-z, 0-9 and '-', at most 63 characters)",
                    self.node.name
                ),
            ));
        }
        if !valid_region(&self.node.region) {
            errs.push(src.error(
                "node.region",
                format!(
                    "invalid region {:?} (2 to 8 characters of a-z and 0-9)",
                    self.node.region
                ),
            ));
        }
        if self.node.drain_timeout.get().is_zero() {
            errs.push(src.error("node.drain_timeout", "must be greater than 0s"));
        }
        if self.edge.listen.is_empty() && self.edge.tls_listen.is_empty() {
            errs.push(src.error("edge.listen", "at least one listen address is needed"));
        }
        match &self.admin.token {
            None if !self.admin.listen.get().ip().is_loopback() => errs.push(src.error(
                "admin.token",
                format!(
                    "required when admin.listen ({}) is not a loopback address",
                    self.admin.listen
                ),
            )),
            Some(t) if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                errs.push(src.error(
                    "admin.token",
                    "must be at least 16 printable characters without spaces",
                ))
            }
            _ => {}
        }
        if self.edge.max_connections == 0 {
            errs.push(src.error("edge.max_connections", "must be at least 1"));
        }
        if self.edge.h2_max_streams == 0 {
            errs.push(src.error("edge.h2_max_streams", "must be at least 1"));
        }
        if !(1..=64 << 20).contains(&self.edge.response_buffer_bytes) {
            errs.push(src.error(
                "edge.response_buffer_bytes",
                "must be between 1 and 67108864 (64 MiB)",
            ));
        }
        if self.edge.send_timeout.get() <= self.edge.response_stall.get() {
            errs.push(src.error(
                "edge.send_timeout",
                format!(
                    "must be longer than edge.response_stall ({:?} and {:?}; the defaults are 60s and 2s)",
                    self.edge.send_timeout.get(),
                    self.edge.response_stall.get()
                ),
            ));
        }
        if !(8192..=1 << 20).contains(&self.edge.max_header_bytes) {
            errs.push(src.error("edge.max_header_bytes", "must be between 8192 and 1048576"));
        }
        for (key, d) in [
            ("edge.header_read_timeout", self.edge.header_read_timeout),
            ("edge.connect_timeout", self.edge.connect_timeout),
            ("edge.response_timeout", self.edge.response_timeout),
            ("edge.pool_idle_timeout", self.edge.pool_idle_timeout),
            ("edge.response_stall", self.edge.response_stall),
            ("edge.send_timeout", self.edge.send_timeout),
            ("backhaul.connect_timeout", self.backhaul.connect_timeout),
        ] {
            if d.get().is_zero() {
                errs.push(src.error(key, "must be greater than 0s"));
            }
        }
        if self.log.access.trim().is_empty() {
            errs.push(src.error("log.access", "must be \"off\", \"stderr\" or a file path"));
        }
        if self.tracing.slow_request.get().is_zero() {
            errs.push(src.error("tracing.slow_request", "must be greater than 0s"));
        }
        if !(0.0..=1.0).contains(&self.tracing.otlp_sample) {
            errs.push(src.error("tracing.otlp_sample", "must be between 0 and 1"));
        }
        if let Some(url) = &self.tracing.otlp_endpoint {
            if let Err(m) = crate::trace::otlp::parse_endpoint(url) {
                errs.push(src.error("tracing.otlp_endpoint", m));
            }
        }
        let files = [&self.backhaul.ca, &self.backhaul.cert, &self.backhaul.key];
        let set = files.iter().filter(|f| f.is_some()).count();
        if set != 0 && set != 3 {
            errs.push(src.error(
                "backhaul.ca",
                "backhaul.ca, backhaul.cert and backhaul.key go together",
            ));
        }
        if self.backhaul.transport == Transport::Quic && self.mesh.open && set != 3 {
            errs.push(src.error(
                "backhaul.transport",
                "\"quic\" always runs TLS: set mesh.cluster_key (derived CA) or backhaul.ca/cert/key (petrel certs)",
            ));
        }
        self.mesh.validate(src, &mut errs);
        let mut seen = std::collections::HashMap::new();
        for (i, inst) in self.instances.iter().enumerate() {
            if !valid_name(&inst.id) {
                errs.push(src.error(
                    &format!("instances[{i}].id"),
                    format!(
                        "invalid instance id {:?} (use a-z, 0-9 and '-', at most 63 characters)",
                        inst.id
                    ),
                ));
            }
            if let Some(prev) = seen.insert(inst.id.as_str(), i) {
                errs.push(src.error(
                    &format!("instances[{i}].id"),
                    format!(
                        "duplicate instance id {:?} (also instances[{prev}])",
                        inst.id
                    ),
                ));
            }
        }
        errs
    }

    /// Every socket this node binds: used to reject two listeners on one port.
    pub fn bound_addresses(&self) -> Vec<(String, Addr)> {
        let mut v = Vec::new();
        for (i, a) in self.edge.listen.iter().enumerate() {
            v.push((format!("edge.listen[{i}]"), *a));
        }
        for (i, a) in self.edge.tls_listen.iter().enumerate() {
            v.push((format!("edge.tls_listen[{i}]"), *a));
        }
        v.push(("admin.listen".into(), self.admin.listen));
        v
    }
}
