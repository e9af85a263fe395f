//! App configs in fly.toml format (a subset plus petrel's extensions, SPEC §3).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::node::valid_name;
use super::source::{ConfigError, Source};
use super::value::Dur;

/// One app config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App name; also a Host it always answers to (`<app>`, `<app>.localhost`).
    pub app: String,
    /// Informational, as in fly.toml.
    #[serde(default)]
    pub primary_region: Option<String>,
    /// How the app is served.
    #[serde(default)]
    pub http_service: HttpService,
    /// Keys Fly defines that petrel read past (dotted paths), for `petrel check` to list.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// `[http_service]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpService {
    /// Accepted for fly.toml compatibility; instance addresses come from nodes.
    #[serde(default)]
    pub internal_port: Option<u16>,
    /// Extra Host / SNI names routed to this app.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Fly's key: requests on a plaintext listener get `301` to the same URL over https (except
    /// ACME HTTP-01 challenges under `/.well-known/acme-challenge/`).
    #[serde(default)]
    pub force_https: bool,
    /// Soft and hard limits.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Strategy and retry budget.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Active health checks of instances.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// How petrel speaks to the app's instances (Fly's section).
    #[serde(default)]
    pub http_options: HttpOptions,
    /// A token every request must carry, checked at the edge (a petrel extension).
    #[serde(default)]
    pub auth: Option<super::auth::AuthConfig>,
    /// Resumable WebSockets (a petrel extension, SPEC §10).
    #[serde(default)]
    pub sessions: SessionsConfig,
}

/// `[http_service.sessions]`: WebSockets a client can resume after its connection drops
/// (SPEC §10). Off unless `resume = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// WebSockets that carry `petrel_session=<id>` can be resumed.
    #[serde(default)]
    pub resume: bool,
    /// How long the instance's WebSocket is kept open after its client vanished (reset, timeout,
    /// no pong); at most 24h.
    #[serde(default = "d_hold")]
    pub hold: Dur,
    /// Per session, bytes of the most recent instance→client messages kept for replay (frames
    /// as sent, 4 bytes of index each); 1 KiB to 64 MiB.
    #[serde(default = "d_replay_bytes")]
    pub replay_bytes: u64,
    /// An idle client is pinged after this long; no pong within one more interval and it is
    /// gone. 100ms to 1h.
    #[serde(default = "d_ping_interval")]
    pub ping_interval: Dur,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            resume: false,
            hold: d_hold(),
            replay_bytes: d_replay_bytes(),
            ping_interval: d_ping_interval(),
        }
    }
}

fn d_hold() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

fn d_replay_bytes() -> u64 {
    1 << 20
}

fn d_ping_interval() -> Dur {
    Dur(std::time::Duration::from_secs(15))
}

/// `[http_service.http_options]`: how requests reach the app's instances. Fly's section
/// (<https://fly.io/docs/reference/configuration/#http_service-http_options>).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// `true`: instances are spoken to in HTTP/2 with prior knowledge (RFC 9113 §3.3), as gRPC
    /// servers need. `false` (the default, Fly's rule): HTTP/1.1 whatever the client speaks; an
    /// HTTP/2 client's request is translated (`:authority` becomes `Host`, cookies are joined).
    /// WebSocket upgrades always go over HTTP/1.1.
    #[serde(default)]
    pub h2_backend: bool,
    /// Which names the forwarding headers take: petrel's own (`Petrel-Client-IP`, …) or, for apps
    /// that came from Fly, Fly's (`Fly-Client-IP`, `Fly-Region`, `Fly-Request-Id`,
    /// `Fly-Forwarded-Port`). A petrel extension.
    #[serde(default)]
    pub header_names: HeaderNames,
    /// Fly's response header rules.
    #[serde(default)]
    pub response: ResponseOptions,
}

/// The spelling of the headers petrel adds for the instance and the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderNames {
    /// `Petrel-Client-IP`, `Petrel-Edge-Region`, `Petrel-Request-Id` (SPEC §5).
    #[default]
    Petrel,
    /// `Fly-Client-IP`, `Fly-Region`, `Fly-Request-Id`, `Fly-Forwarded-Port`, as Fly's proxy sends.
    Fly,
}

/// `[http_service.http_options.response]`: Fly's rules for the responses clients get.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseOptions {
    /// Header name → a value or a list of values to set (replacing the instance's), or `false`
    /// to remove the header.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderRule>,
    /// `true`: petrel adds none of its own headers (`Petrel-Request-Id`, `Via`) to responses.
    #[serde(default)]
    pub pristine: bool,
}

/// One response header rule, as Fly writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderRule {
    /// Set to this value.
    One(String),
    /// Set to these values, in order.
    Many(Vec<String>),
    /// `false`: remove. (`true` is an error.)
    Remove(bool),
}

/// What one unit of instance load is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LimitType {
    /// In-flight requests (a WebSocket is one request for its whole life).
    #[default]
    Requests,
    /// Open client connections.
    Connections,
}

impl LimitType {
    /// The spelling used in config and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitType::Requests => "requests",
            LimitType::Connections => "connections",
        }
    }
}

/// `[http_service.concurrency]`. A limit left out follows from the other: no `hard_limit` is
/// 25, or 1.25 × `soft_limit` when that is more; no `soft_limit` is 20, or `hard_limit` when that
/// is less (Fly allows either alone).
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawConcurrency")]
pub struct Concurrency {
    /// What counts as load.
    pub kind: LimitType,
    /// At or above: deprioritised.
    pub soft_limit: u32,
    /// At or above: takes no new work.
    pub hard_limit: u32,
    /// *(petrel extension)* Requests in flight per client IP at one edge; above it the client
    /// gets `429` with `Retry-After`. `None` (the default): no per-client limit.
    pub per_client: Option<u32>,
}

/// `[http_service.concurrency]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    #[serde(default, rename = "type")]
    kind: LimitType,
    #[serde(default)]
    soft_limit: Option<u32>,
    #[serde(default)]
    hard_limit: Option<u32>,
    #[serde(default)]
    per_client: Option<u32>,
}

impl From<RawConcurrency> for Concurrency {
    fn from(r: RawConcurrency) -> Self {
        let (soft_limit, hard_limit) = match (r.soft_limit, r.hard_limit) {
            (Some(s), Some(h)) => (s, h),
            (Some(s), None) => (s, d_hard().max(s.saturating_add(s / 4))),
            (None, Some(h)) => (d_soft().min(h), h),
            (None, None) => (d_soft(), d_hard()),
        };
        Self {
            kind: r.kind,
            soft_limit,
            hard_limit,
            per_client: r.per_client,
        }
    }
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            kind: LimitType::default(),
            soft_limit: d_soft(),
            hard_limit: d_hard(),
            per_client: None,
        }
    }
}

/// How an app's requests are spread over its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Closest instance below soft limit.
    #[default]
    Closest,
    /// Least loaded instances first, then the closest of a random few.
    Leastload,
}

impl Strategy {
    /// The spelling used in config, headers and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Closest => "closest",
            Strategy::Leastload => "leastload",
        }
    }
}

/// `[http_service.load_balancing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    /// Strategy for this app.
    #[serde(default)]
    pub strategy: Strategy,
    /// Other instances tried after a reject or a failed connect.
    #[serde(default = "d_retries")]
    pub retries: u32,
}

impl Default for LoadBalancing {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            retries: d_retries(),
        }
    }
}

/// `[[http_service.checks]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Time between checks.
    #[serde(default = "d_interval")]
    pub interval: Dur,
    /// Time one check may take.
    #[serde(default = "d_check_timeout")]
    pub timeout: Dur,
    /// Time after start before failures count.
    #[serde(default = "d_grace")]
    pub grace_period: Dur,
    /// HTTP method.
    #[serde(default = "d_method")]
    pub method: String,
    /// HTTP path.
    #[serde(default = "d_path")]
    pub path: String,
}

fn d_soft() -> u32 {
    20
}
fn d_hard() -> u32 {
    25
}
fn d_retries() -> u32 {
    3
}
fn d_interval() -> Dur {
    Dur::secs(10)
}
fn d_check_timeout() -> Dur {
    Dur::secs(2)
}
fn d_grace() -> Dur {
    Dur::secs(5)
}
fn d_method() -> String {
    "GET".into()
}
fn d_path() -> String {
    "/health".into()
}

/// A DNS name as a Host header carries it: lowercase labels of a-z, 0-9, '-', optional `*.` prefix.
pub fn valid_host(h: &str) -> bool {
    let h = h.strip_prefix("*.").unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl AppConfig {
    /// Checks one app file on its own.
    pub fn validate(&self, src: &Source) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if !valid_name(&self.app) {
            errs.push(src.error(
                "app",
                format!(
                    "invalid app name {:?} (use a-z, 0-9 and '-', at most 63 characters)",
                    self.app
                ),
            ));
        }
        let svc = &self.http_service;
        for (i, h) in svc.hosts.iter().enumerate() {
            if !valid_host(h) {
                errs.push(src.error(
                    &format!("http_service.hosts[{i}]"),
                    format!(
                        "invalid host name {h:?} (lowercase DNS name, e.g. \"hello.example.com\")"
                    ),
                ));
            }
        }
        let c = &svc.concurrency;
        if c.hard_limit == 0 {
            errs.push(src.error("http_service.concurrency.hard_limit", "must be at least 1"));
        }
        if c.soft_limit == 0 {
            errs.push(src.error("http_service.concurrency.soft_limit", "must be at least 1"));
        }
        if c.per_client == Some(0) {
            errs.push(src.error(
                "http_service.concurrency.per_client",
                "must be at least 1 (leave it out for no per-client limit)",
            ));
        }
        if c.soft_limit > c.hard_limit {
            errs.push(src.error(
                "http_service.concurrency.soft_limit",
                format!(
                    "soft_limit {} is above hard_limit {}",
                    c.soft_limit, c.hard_limit
                ),
            ));
        }
        for (name, rule) in &svc.http_options.response.headers {
            let key = format!("http_service.http_options.response.headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errs.push(src.error(&key, format!("invalid header name {name:?}")));
            }
            // These frame the message or describe the connection: set by hand, they desync it.
            const FRAMING: [&str; 8] = [
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "upgrade",
            ];
            if FRAMING.contains(&name.to_ascii_lowercase().as_str()) {
                errs.push(src.error(
                    &key,
                    format!(
                        "{name} frames the response or its connection; petrel sets it, a rule may not"
                    ),
                ));
            }
            let values: &[String] = match rule {
                HeaderRule::One(v) => std::slice::from_ref(v),
                HeaderRule::Many(v) => v,
                HeaderRule::Remove(false) => &[],
                HeaderRule::Remove(true) => {
                    errs.push(src.error(
                        &key,
                        "true is not a rule: write a value, a list of values, or false to remove",
                    ));
                    &[]
                }
            };
            for v in values {
                if http::HeaderValue::from_str(v).is_err() {
                    errs.push(src.error(&key, format!("invalid header value {v:?}")));
                }
            }
        }
        errs.extend(svc.sessions.validate(src));
        if svc.load_balancing.retries > 20 {
            errs.push(src.error("http_service.load_balancing.retries", "at most 20"));
        }
        for (i, ch) in svc.checks.iter().enumerate() {
            let key = |k: &str| format!("http_service.checks[{i}].{k}");
            if ch.interval.get().is_zero() {
                errs.push(src.error(&key("interval"), "must be greater than 0s"));
            }
            if ch.timeout.get().is_zero() || ch.timeout > ch.interval {
                errs.push(src.error(
                    &key("timeout"),
                    "must be greater than 0s and at most the interval",
                ));
            }
            if !ch.path.starts_with('/') {
                errs.push(src.error(
                    &key("path"),
                    format!("path {:?} must start with '/'", ch.path),
                ));
            }
            if http::Method::from_bytes(ch.method.as_bytes()).is_err() {
                errs.push(src.error(
                    &key("method"),
                    format!("invalid HTTP method {:?}", ch.method),
                ));
            }
        }
        errs
    }
}

impl SessionsConfig {
    fn validate(&self, src: &Source) -> Vec<ConfigError> {
        use std::time::Duration;
        const AT: &str = "http_service.sessions";
        let mut errs = Vec::new();
        let hold = self.hold.get();
        if hold.is_zero() || hold > Duration::from_secs(86_400) {
            errs.push(src.error(
                &format!("{AT}.hold"),
                "must be greater than 0s and at most 24h",
            ));
        }
        if !(1024..=64 << 20).contains(&self.replay_bytes) {
            errs.push(src.error(
                &format!("{AT}.replay_bytes"),
                format!(
                    "{} is out of range: 1024 (1 KiB) to 67108864 (64 MiB)",
                    self.replay_bytes
                ),
            ));
        }
        let ping = self.ping_interval.get();
        if ping < Duration::from_millis(100) || ping > Duration::from_secs(3600) {
            errs.push(src.error(&format!("{AT}.ping_interval"), "must be 100ms to 1h"));
        }
        errs
    }
}
