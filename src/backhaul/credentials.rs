//! The backhaul's cluster credentials as they stand now: the request-tag keys and the mutual-TLS
//! configs. A reload that rotates `mesh.cluster_keys` swaps them whole; every new connection and
//! every request after that uses the new ones, and connections already open stay as they are.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::protocol::AuthKey;
use super::tls::ClusterTls;

/// One generation of credentials.
pub struct Credentials {
    /// Signs and checks each request's tag; `None` in an open cluster.
    pub auth: Option<AuthKey>,
    /// Mutual TLS for every backhaul connection; `None` in an open cluster without `petrel certs`.
    pub tls: Option<Arc<ClusterTls>>,
}

/// The current credentials, shared by the backhaul client, both servers and the reload path.
/// Reading them is a lock-free load.
#[derive(Clone)]
pub struct SharedCredentials(Arc<ArcSwap<Credentials>>);

impl SharedCredentials {
    /// Starts with `c`.
    pub fn new(c: Credentials) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(c)))
    }

    /// The credentials now.
    pub fn load(&self) -> Arc<Credentials> {
        self.0.load_full()
    }

    /// Replaces them (a reload).
    pub fn store(&self, c: Credentials) {
        self.0.store(Arc::new(c));
    }
}
