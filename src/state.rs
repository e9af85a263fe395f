//! The node's shared state: immutable snapshots behind `ArcSwap` that the request path reads without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::backhaul::BackhaulClient;
use crate::cluster::SharedSnapshot;
use crate::config::Config;
use crate::local::{LocalTable, Registry};
use crate::pick::Penalties;
use crate::routes::RouteTable;
use crate::shutdown::Shutdown;

/// Edge settings that a reload may change.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Add `Petrel-Route` to responses.
    pub debug_headers: bool,
    /// Connect, response and pool-idle timeouts toward instances.
    pub upstream: crate::local::UpstreamTimeouts,
    /// How long an instance that refused a connect is skipped.
    pub unreachable_for: Duration,
    /// An owner silent (no mesh pong) this long gets no new requests, and idempotent ones
    /// waiting on it move on (`backhaul.peer_silence_limit`).
    pub peer_silence: Duration,
    /// Requests slower than this are logged with their phases (and always exported).
    pub slow_request: Duration,
    /// Fraction of other requests exported over OTLP.
    pub otlp_sample: f64,
    /// Time a client has to send a request head (and the first chunk of a chunked body).
    pub header_read_timeout: Duration,
    /// Largest request body accepted, if limited.
    pub max_body_bytes: Option<u64>,
    /// Request body bytes read before an instance is picked.
    pub body_buffer_bytes: usize,
    /// How responses are read ahead of slow clients.
    pub response_buffering: crate::http::Buffering,
}

/// Everything the edge and admin share.
pub struct NodeState {
    /// This node's name.
    pub name: Arc<str>,
    /// This node's region.
    pub region: Arc<str>,
    /// The same as a header value (`Petrel-Edge-Region`), made once.
    pub region_value: HeaderValue,
    /// Changes on every start; lets peers tell restarts apart.
    pub generation: u64,
    /// Host → app.
    pub routes: ArcSwap<RouteTable>,
    /// Local instances.
    pub local: ArcSwap<LocalTable>,
    /// The instances this node hosts, as configured or registered at run time.
    pub registry: Registry,
    /// The mesh's view: members, RTTs, remote instances.
    pub cluster: SharedSnapshot,
    /// Connections to other nodes' backhaul.
    pub backhaul: BackhaulClient,
    /// Instances this edge recently saw refuse a connection or be unreachable.
    pub penalties: Penalties<Arc<str>>,
    /// Owners' load figures from backhaul answers and this edge's requests on the wire.
    pub feedback: crate::pick::Feedback<Arc<str>>,
    /// Edge settings.
    pub settings: ArcSwap<EdgeSettings>,
    /// The drain signal.
    pub shutdown: Shutdown,
    /// Bearer token the admin API requires, if configured.
    pub admin_token: Option<String>,
    /// Edge certificates by SNI (when `edge.tls_listen` is set); reload swaps them.
    pub tls: Option<Arc<crate::certs::SniResolver>>,
    /// How long open work may run on after a drain starts (also bounds instance removal).
    pub drain_timeout: Duration,
    /// The node config file, re-read on reload.
    pub config_path: std::path::PathBuf,
    /// What of the running config only a restart can change (listeners, identity, mesh, backhaul).
    pub restart_only: String,
    /// The node was given seeds, so it is not ready until it has joined a peer.
    pub expects_peers: bool,
    /// The cluster keys in force, which a reload may rotate.
    pub keys: ClusterKeys,
    /// Resumable WebSocket sessions held on this node.
    pub sessions: crate::session::Sessions,
    started: Instant,
    ids: RequestIds,
}

/// The cluster keys in force and what was made from them; `crate::reload` rotates them.
pub struct ClusterKeys {
    /// The mesh's keys, primary first (the mesh task picks a change up within 50 ms).
    pub mesh: ArcSwap<Vec<[u8; 32]>>,
    /// The backhaul's request-tag keys and TLS.
    pub backhaul: crate::backhaul::SharedCredentials,
    /// The QUIC backhaul endpoint, whose server config follows the TLS.
    pub quic: Option<quinn::Endpoint>,
}

impl NodeState {
    /// Builds the first snapshots from a validated config.
    pub fn new(
        cfg: &Config,
        shutdown: Shutdown,
        backhaul: BackhaulClient,
        keys: ClusterKeys,
    ) -> Arc<Self> {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Arc::new(Self {
            name: cfg.node.node.name.as_str().into(),
            region: cfg.node.node.region.as_str().into(),
            region_value: HeaderValue::from_str(&cfg.node.node.region)
                .unwrap_or(HeaderValue::from_static("-")),
            generation,
            routes: ArcSwap::from_pointee(RouteTable::build(&cfg.apps)),
            local: ArcSwap::from_pointee(LocalTable::build(&cfg.node.instances, None)),
            registry: Registry::new(cfg.node.instances.clone()),
            cluster: crate::cluster::empty(),
            backhaul,
            penalties: Penalties::default(),
            feedback: crate::pick::Feedback::new(crate::pick::FEEDBACK_TTL_MS),
            settings: ArcSwap::from_pointee(EdgeSettings::from_config(cfg)),
            shutdown,
            admin_token: cfg.node.admin.token.clone(),
            tls: cfg
                .certs
                .clone()
                .map(|c| Arc::new(crate::certs::SniResolver::new(c))),
            drain_timeout: cfg.node.node.drain_timeout.get(),
            config_path: cfg.path.clone(),
            restart_only: restart_only(cfg),
            expects_peers: !cfg.node.mesh.seeds.is_empty(),
            keys,
            sessions: crate::session::Sessions::default(),
            started: Instant::now(),
            ids: RequestIds::new(generation),
        })
    }

    /// Milliseconds since this node started (a monotonic clock for short-lived marks).
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// [`Self::now_ms`] as of `at`, an instant already read (one clock read fewer).
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A new unique request id.
    pub fn request_id(&self) -> HeaderValue {
        self.ids.next()
    }
}

/// The settings a reload cannot apply, as one comparable string.
pub fn restart_only(cfg: &Config) -> String {
    let n = &cfg.node;
    let identity = (&n.node.name, &n.node.region, &n.admin.listen);
    let edge = (
        &n.edge.listen,
        &n.edge.tls_listen,
        n.edge.max_header_bytes,
        n.edge.header_read_timeout,
    );
    let mesh = (
        &n.mesh.bind,
        &n.mesh.advertise,
        // Keys rotate on reload; switching between open and keyed needs a restart.
        n.mesh.open,
        &n.tracing.otlp_endpoint,
    );
    let backhaul = (
        &n.backhaul.listen,
        n.backhaul.transport,
        (&n.backhaul.ca, &n.backhaul.cert, &n.backhaul.key),
    );
    format!("{identity:?} {edge:?} {mesh:?} {backhaul:?} {:?}", n.log)
}

impl EdgeSettings {
    /// Reads the edge settings from config.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            debug_headers: cfg.node.edge.debug_headers,
            upstream: crate::local::UpstreamTimeouts {
                connect: cfg.node.edge.connect_timeout.get(),
                response: cfg.node.edge.response_timeout.get(),
                pool_idle: cfg.node.edge.pool_idle_timeout.get(),
            },
            unreachable_for: crate::pick::UNREACHABLE_FOR,
            peer_silence: cfg.node.backhaul.peer_silence_limit.map_or(
                match cfg.node.mesh.profile {
                    crate::config::MeshProfile::Lan => Duration::from_millis(1500),
                    crate::config::MeshProfile::Wan => Duration::from_secs(3),
                },
                |d| d.get(),
            ),
            slow_request: cfg.node.tracing.slow_request.get(),
            otlp_sample: cfg.node.tracing.otlp_sample,
            header_read_timeout: cfg.node.edge.header_read_timeout.get(),
            body_buffer_bytes: cfg.node.edge.body_buffer_bytes,
            response_buffering: crate::http::Buffering {
                bytes: cfg.node.edge.response_buffer_bytes,
                stall: cfg.node.edge.response_stall.get(),
                send_timeout: cfg.node.edge.send_timeout.get(),
            },
            max_body_bytes: (cfg.node.edge.max_body_bytes > 0)
                .then_some(cfg.node.edge.max_body_bytes),
        }
    }
}

/// 16 hex digits, unique per process and hard to guess: splitmix64 over a seeded counter.
struct RequestIds {
    seed: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new(seed: u64) -> Self {
        Self {
            seed: seed ^ rand::random::<u64>(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        // Each worker thread takes a block of counter values at a time: one shared atomic add per
        // `ID_BLOCK` requests, not one per request on a cache line every worker writes.
        thread_local! {
            // (whose block: the generator's seed, next, end)
            static BLOCK: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
        }
        let n = BLOCK.with(|b| {
            let (mut owner, mut next, mut end) = b.get();
            if owner != self.seed || next == end {
                owner = self.seed;
                next = self.counter.fetch_add(ID_BLOCK, Ordering::Relaxed);
                end = next + ID_BLOCK;
            }
            b.set((owner, next + 1, end));
            next
        });
        // splitmix64 of a counter: a bijection, so ids never repeat within a process.
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut hex = [0u8; 16];
        for (k, d) in hex.iter_mut().enumerate() {
            *d = b"0123456789abcdef"[((z >> (60 - 4 * k)) & 0xf) as usize];
        }
        // One allocation, shared by every clone (the response's field, the instance's, the
        // trace's): `from_bytes` copies into a buffer that its first clone copies again.
        let mut v = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex))
            .expect("hex is a valid header value");
        // New for every request: HPACK indexing it would only evict useful table entries.
        v.set_sensitive(true);
        v
    }
}

/// Request ids a worker thread reserves at a time.
const ID_BLOCK: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let ids = RequestIds::new(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let v = ids.next();
            assert_eq!(v.len(), 16);
            assert!(v.is_sensitive(), "never indexed by HPACK");
            assert!(seen.insert(v));
        }
    }

    #[test]
    fn request_ids_stay_unique_across_threads_and_generators() {
        let (a, b) = (Arc::new(RequestIds::new(1)), Arc::new(RequestIds::new(2)));
        let per_gen: Vec<Vec<HeaderValue>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|k| {
                    let (a, b) = (a.clone(), b.clone());
                    s.spawn(move || {
                        // Interleaved, so a thread's block for one generator is never used for
                        // the other.
                        let mut out = (Vec::new(), Vec::new());
                        for i in 0..3_000 {
                            if (i + k) % 3 == 0 {
                                out.1.push(b.next());
                            } else {
                                out.0.push(a.next());
                            }
                        }
                        out
                    })
                })
                .collect();
            let (mut ra, mut rb) = (Vec::new(), Vec::new());
            for h in hs {
                let (x, y) = h.join().unwrap();
                ra.extend(x);
                rb.extend(y);
            }
            vec![ra, rb]
        });
        for ids in per_gen {
            let n = ids.len();
            let set: std::collections::HashSet<_> = ids.into_iter().collect();
            assert_eq!(set.len(), n);
        }
    }
}
