//! The backhaul: how an edge sends a request to the node that owns the chosen instance, and how
//! that owner admits it against the instance's hard limit before the instance sees a byte.
//!
//! Transport: HTTP/2 over TCP (one multiplexed connection per peer), HTTP/1.1 for upgrades
//! (WebSockets), both in mutual TLS with a CA derived from the cluster key. Requests carry
//! `petrel-internal-*` headers, also authenticated with the cluster key.

mod client;
pub mod credentials;
pub mod delay;
mod frame;
pub mod protocol;
mod quic;
mod server;
pub mod tls;

pub use client::{BackhaulClient, BackhaulError};
pub use credentials::{Credentials, SharedCredentials};
pub use quic::{
    bind as bind_quic, serve as serve_quic, server_config as quic_server_config, QuicClient,
};
pub use server::serve;
