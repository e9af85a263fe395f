//! The backhaul: how an edge sends a request to the node that owns the chosen instance: its
//! transports, TLS, credentials and wire protocol. The owner's side (admission against the hard
//! limit before the instance sees a byte) is `crate::owner`, which imports this module.
//!
//! Transport: HTTP/2 over TCP (one multiplexed connection per peer), HTTP/1.1 for upgrades
//! (WebSockets), both in mutual TLS with a CA derived from the cluster key. Requests carry
//! `petrel-internal-*` headers, also authenticated with the cluster key.

mod client;
pub mod credentials;
pub mod delay;
mod fields;
pub(crate) mod frame;
mod peers;
pub mod protocol;
mod quic;
pub mod tls;

pub use client::{BackhaulClient, BackhaulError};
pub use credentials::{Credentials, SharedCredentials};
pub use quic::{bind as bind_quic, server_config as quic_server_config, QuicClient};

/// HTTP/2 backhaul receive window per stream, bytes. Fixed rather than hyper's adaptive window,
/// which gives the whole connection the same window as one stream: one response whose client
/// reads nothing then fills the connection window and stalls every other response on it. 4 MiB
/// per stream carries 40 MB/s at 100 ms RTT.
pub(crate) const H2_STREAM_WINDOW: u32 = 4 << 20;
/// HTTP/2 backhaul receive window per connection, bytes: 64 streams' worth, so responses stalled
/// on their clients (until `edge.send_timeout`) do not stall the rest.
pub(crate) const H2_CONN_WINDOW: u32 = 256 << 20;
