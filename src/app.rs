//! Builds a node from a validated config: binds every listener first, then runs until the drain signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::state::NodeState;

/// A listener that could not be bound, named by its config key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot bind {addr}: {source}")]
pub struct BindError {
    /// Config key of the listener.
    pub key: String,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// A node whose sockets are bound and whose state is built.
pub struct App {
    /// Shared state (snapshots, shutdown).
    pub node: Arc<NodeState>,
    edge: Vec<TcpListener>,
    admin: Option<std::net::TcpListener>,
    cfg: Config,
}

impl App {
    /// Binds the edge and admin listeners (ports given as 0 get ephemeral ones).
    pub async fn build(cfg: Config, shutdown: Shutdown) -> Result<Self, BindError> {
        let mut edge = Vec::new();
        for (i, a) in cfg.node.edge.listen.iter().enumerate() {
            let l = TcpListener::bind(a.get())
                .await
                .map_err(|source| BindError {
                    key: format!("edge.listen[{i}]"),
                    addr: a.get(),
                    source,
                })?;
            edge.push(l);
        }
        let admin_addr = cfg.node.admin.listen.get();
        let admin = std::net::TcpListener::bind(admin_addr).map_err(|source| BindError {
            key: "admin.listen".into(),
            addr: admin_addr,
            source,
        })?;
        if !cfg.node.edge.tls_listen.is_empty() {
            tracing::warn!("edge.tls_listen is set but this build does not serve TLS yet; those addresses are not bound");
        }
        if cfg.node.mesh.cluster_key.is_none() {
            tracing::warn!(
                "mesh.cluster_key is unset: this would be an OPEN cluster once the mesh is active"
            );
        }
        let node = NodeState::new(&cfg, shutdown);
        Ok(Self {
            node,
            edge,
            admin: Some(admin),
            cfg,
        })
    }

    /// Where the edge listens (after binding, so ephemeral ports are real).
    pub fn edge_addrs(&self) -> Vec<SocketAddr> {
        self.edge
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until the drain starts and every listener has closed; open work is then counted
    /// in `node.shutdown` for the caller to wait on with the drain deadline.
    pub async fn run(mut self) -> std::io::Result<()> {
        if let Some(admin) = self.admin.take() {
            crate::admin::spawn(admin, self.node.clone())?;
        }
        let edge = &self.cfg.node.edge;
        let mut servers = Vec::new();
        for l in self.edge.drain(..) {
            servers.push(tokio::spawn(crate::edge::serve(
                l,
                self.node.clone(),
                edge.max_header_bytes,
                edge.header_read_timeout.get(),
            )));
        }
        tracing::info!(
            node = %self.node.name,
            region = %self.node.region,
            apps = self.cfg.apps.len(),
            instances = self.cfg.node.instances.len(),
            "node running (single node: mesh and backhaul are not active in this build)"
        );
        for s in servers {
            let _ = s.await;
        }
        Ok(())
    }
}
