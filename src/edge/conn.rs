//! One client connection as the request path sees it: its addresses and TLS, the instance slots
//! it holds, its reset budget; and the per-listener limits that bound what a client can stretch.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::local::{Instance, Slot};

/// What the TLS handshake settled.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The server name the client asked for, lowercased.
    pub sni: Option<String>,
    /// ALPN chose h2.
    pub alpn_h2: bool,
}

/// Per client connection: addresses, and the instance slots held under `type = "connections"`.
pub struct ConnCtx {
    /// Client address.
    pub peer: SocketAddr,
    /// The client's IP as a header value (`X-Forwarded-For`, `Petrel-Client-IP`), made once.
    pub client_ip: http::HeaderValue,
    /// Our listener address.
    pub local: SocketAddr,
    /// Its port as a header value (`X-Forwarded-Port`), made once.
    pub local_port: http::HeaderValue,
    held: Mutex<Vec<Slot>>,
    /// Present on TLS connections.
    pub tls: Option<TlsInfo>,
    /// Set when the first request head has arrived.
    first: tokio::sync::watch::Sender<bool>,
    /// The same, read without the channel's lock (every request checks it).
    seen: std::sync::atomic::AtomicBool,
    /// Cancelled requests that close the connection within one second (0: never).
    pub(super) max_resets: u32,
    /// Cancelled requests in the current one-second window, and when it began (ms since
    /// `opened`), packed `count << 32 | start`.
    resets: std::sync::atomic::AtomicU64,
    opened: std::time::Instant,
    /// Woken when the client cancelled too many requests.
    pub(super) abusive: tokio::sync::Notify,
    /// Woken when an HTTP/1.x response was cancelled at `edge.send_timeout`: the connection
    /// is closed.
    pub send_stalled: Arc<tokio::sync::Notify>,
}

impl ConnCtx {
    /// The context of a connection just accepted from `peer` on `local`.
    pub(super) fn new(
        peer: SocketAddr,
        local: SocketAddr,
        tls: Option<TlsInfo>,
        limits: Limits,
    ) -> Self {
        Self {
            peer,
            client_ip: http::HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or(http::HeaderValue::from_static("-")),
            local,
            local_port: http::HeaderValue::from(local.port()),
            held: Mutex::new(Vec::new()),
            tls,
            first: tokio::sync::watch::Sender::new(false),
            seen: std::sync::atomic::AtomicBool::new(false),
            max_resets: limits.max_resets_per_second,
            resets: std::sync::atomic::AtomicU64::new(0),
            opened: std::time::Instant::now(),
            abusive: tokio::sync::Notify::new(),
            send_stalled: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Counts a request the client cancelled before its response head; past the limit within
    /// one second, the connection is told to close (HTTP/2 rapid reset: a client that opens
    /// and resets streams makes petrel and the instances work while holding no stream itself).
    pub(super) fn cancelled(&self) {
        use std::sync::atomic::Ordering;
        metrics::counter!(crate::telemetry::CANCELLED).increment(1);
        if self.max_resets == 0 {
            return;
        }
        let now = self.opened.elapsed().as_millis() as u64 & 0xffff_ffff;
        let mut over = false;
        let _ = self
            .resets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let (count, start) = (v >> 32, v & 0xffff_ffff);
                let (count, start) = if now.wrapping_sub(start) & 0xffff_ffff >= 1000 {
                    (1, now)
                } else {
                    (count + 1, start)
                };
                over = count > u64::from(self.max_resets);
                Some(count << 32 | start)
            });
        if over {
            self.abusive.notify_one();
        }
    }

    /// Marks that a request arrived on this connection.
    pub(super) fn saw_request(&self) {
        use std::sync::atomic::Ordering;
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.first.send_replace(true);
        }
    }

    /// A request head has arrived on this connection.
    pub(super) fn has_seen_request(&self) -> bool {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves once a request has arrived, or after `limit`.
    pub(super) async fn first_request(&self, limit: Duration) {
        let mut rx = self.first.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|seen| *seen)).await;
    }

    /// A reachable instance of `app` this connection already holds a slot on.
    pub fn held_instance(&self, app: &str, now_ms: u64) -> Option<Arc<Instance>> {
        let held = self.held.lock().expect("conn lock");
        held.iter()
            .map(Slot::instance)
            .find(|i| &*i.app == app && i.accepts_work(now_ms))
            .cloned()
    }

    /// True if this connection holds a slot on `inst`.
    pub fn holds(&self, inst: &Arc<Instance>) -> bool {
        let held = self.held.lock().expect("conn lock");
        held.iter().any(|s| Arc::ptr_eq(s.instance(), inst))
    }

    /// Keeps `slot` until the connection closes.
    pub fn hold(&self, slot: Slot) {
        self.held.lock().expect("conn lock").push(slot);
    }
}

/// Per-listener limits (SPEC §6): every wait a client can stretch is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (431 above).
    pub max_header_bytes: usize,
    /// Time to send a full request head, and to finish a TLS handshake (408 / close after).
    pub header_read_timeout: Duration,
    /// Open connections per listener; at the limit, accepting pauses.
    pub max_connections: usize,
    /// Concurrent h2 streams per connection.
    pub h2_max_streams: u32,
    /// Cancelled requests per second that close a connection (0: never).
    pub max_resets_per_second: u32,
}

impl Limits {
    /// From the `[edge]` section.
    pub fn from_config(edge: &crate::config::EdgeSection) -> Self {
        Self {
            max_header_bytes: edge.max_header_bytes,
            header_read_timeout: edge.header_read_timeout.get(),
            max_connections: edge.max_connections,
            h2_max_streams: edge.h2_max_streams,
            max_resets_per_second: edge.h2_max_resets_per_second,
        }
    }
}
