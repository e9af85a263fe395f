//! Builds a node from a validated config: binds every listener first, then runs until the drain signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::cluster::{Delays, MeshSetup};
use crate::config::{Config, MeshProfile};
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
    mesh: Option<MeshSetup>,
    mesh_addr: Option<SocketAddr>,
    backhaul: Option<TcpListener>,
    key: Option<[u8; 32]>,
    tls: Option<Arc<crate::backhaul::tls::ClusterTls>>,
    quic: Option<quinn::Endpoint>,
    delays: Option<Delays>,
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
        let mesh_bind = cfg.node.mesh.bind.get();
        let socket = std::net::UdpSocket::bind(mesh_bind).map_err(|source| BindError {
            key: "mesh.bind".into(),
            addr: mesh_bind,
            source,
        })?;
        let mesh_addr = socket.local_addr().ok();
        let bh_addr = cfg.node.backhaul.listen.get();
        let backhaul = TcpListener::bind(bh_addr)
            .await
            .map_err(|source| BindError {
                key: "backhaul.listen".into(),
                addr: bh_addr,
                source,
            })?;
        let bh_bound = backhaul.local_addr().unwrap_or(bh_addr);
        if !cfg.node.edge.tls_listen.is_empty() {
            tracing::warn!("edge.tls_listen is set but this build does not serve TLS yet; those addresses are not bound");
        }
        let key = cfg
            .node
            .mesh
            .cluster_key
            .as_deref()
            .and_then(|k| crate::config::decode_cluster_key(k).ok());
        if key.is_none() {
            tracing::warn!("mesh.cluster_key is unset: this is an OPEN cluster; anyone who can reach mesh.bind can join");
        }
        let advertise = cfg
            .node
            .mesh
            .advertise
            .map(|a| a.get())
            .or(mesh_addr)
            .unwrap_or(mesh_bind);
        let delays = match &cfg.node.simulate {
            Some(sim) => {
                let dir = cfg
                    .path
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                let topo =
                    crate::topology::Topology::load(&dir.join(&sim.topology)).map_err(|e| {
                        BindError {
                            key: "simulate.topology".into(),
                            addr: mesh_bind,
                            source: std::io::Error::other(e.to_string()),
                        }
                    })?;
                tracing::info!(topology = %sim.topology, "simulated inter-region latency is on");
                Some(Delays::new(topo, &cfg.node.node.region))
            }
            None => None,
        };
        let dir = cfg
            .path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let tls_err = |e: crate::backhaul::tls::TlsError, k: &str| BindError {
            key: k.into(),
            addr: bh_addr,
            source: std::io::Error::other(e.to_string()),
        };
        let tls = match (cfg.node.backhaul.cert_files(), &key) {
            (Some((ca, cert, k)), _) => Some(Arc::new(
                crate::backhaul::tls::ClusterTls::from_files(
                    &dir.join(ca),
                    &dir.join(cert),
                    &dir.join(k),
                )
                .map_err(|e| tls_err(e, "backhaul.cert"))?,
            )),
            (None, Some(k)) => Some(Arc::new(
                crate::backhaul::tls::ClusterTls::derive(k, &cfg.node.node.name)
                    .map_err(|e| tls_err(e, "mesh.cluster_key"))?,
            )),
            (None, None) => {
                tracing::warn!(
                    "backhaul runs without TLS: set mesh.cluster_key or backhaul.ca/cert/key"
                );
                None
            }
        };
        // QUIC listens on the backhaul port number over UDP, beside TCP, whenever TLS exists.
        let quic_endpoint = match &tls {
            Some(t) => {
                Some(
                    crate::backhaul::bind_quic(t, bh_bound).map_err(|source| BindError {
                        key: "backhaul.listen".into(),
                        addr: bh_bound,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let quic_client = match (&tls, cfg.node.backhaul.transport) {
            (Some(t), crate::config::Transport::Quic) => Some(
                crate::backhaul::QuicClient::new(
                    t,
                    bh_bound.ip(),
                    cfg.node.backhaul.connect_timeout.get(),
                )
                .map_err(|source| BindError {
                    key: "backhaul.transport".into(),
                    addr: bh_bound,
                    source,
                })?,
            ),
            _ => None,
        };
        let client = crate::backhaul::BackhaulClient::new(
            cfg.node.backhaul.connect_timeout.get(),
            delays.clone(),
            key,
            tls.clone(),
            quic_client,
        );
        let node = NodeState::new(&cfg, shutdown, client);
        let profile = match cfg.node.mesh.profile {
            MeshProfile::Lan => petrel_mesh::Profile::Lan,
            MeshProfile::Wan => petrel_mesh::Profile::Wan,
        };
        let seeds: Vec<SocketAddr> = cfg.node.mesh.seeds.iter().map(|a| a.get()).collect();
        let mesh = MeshSetup {
            socket,
            id: petrel_mesh::NodeId {
                name: node.name.clone(),
                region: node.region.clone(),
                addr: advertise,
                // Peers reach our backhaul at the advertised host with the bound port.
                backhaul: SocketAddr::new(advertise.ip(), bh_bound.port()),
                generation: node.generation,
            },
            cfg: petrel_mesh::MeshConfig::new(profile, (seeds.len() as u32 + 1).max(8), key),
            seeds,
            delays: delays.clone(),
        };
        Ok(Self {
            node,
            edge,
            admin: Some(admin),
            mesh: Some(mesh),
            mesh_addr,
            backhaul: Some(backhaul),
            key,
            tls,
            quic: quic_endpoint,
            delays,
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

    /// Where the backhaul listens.
    pub fn backhaul_addr(&self) -> Option<SocketAddr> {
        self.backhaul.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the mesh socket is bound.
    pub fn mesh_addr(&self) -> Option<SocketAddr> {
        self.mesh_addr
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
        let backhaul = self.backhaul.take().map(|l| {
            tokio::spawn(crate::backhaul::serve(
                l,
                self.node.clone(),
                self.key,
                self.delays.clone(),
                self.tls.clone(),
            ))
        });
        let health = tokio::spawn(crate::local::health::run(self.node.clone()));
        let quic = self.quic.take().map(|e| {
            tokio::spawn(crate::backhaul::serve_quic(
                e,
                self.node.clone(),
                self.key,
                self.delays.clone(),
            ))
        });
        let mesh = match self.mesh.take() {
            Some(setup) => Some(crate::cluster::spawn(setup, self.node.clone())?),
            None => None,
        };
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
            "node running"
        );
        for s in servers {
            let _ = s.await;
        }
        if let Some(m) = mesh {
            let _ = m.await;
        }
        if let Some(b) = backhaul {
            let _ = b.await;
        }
        if let Some(q) = quic {
            let _ = q.await;
        }
        let _ = health.await;
        Ok(())
    }
}
