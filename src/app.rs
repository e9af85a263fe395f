//! Builds a node from a validated config: binds every listener first, then runs until the drain signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::backhaul::protocol::AuthKey;
use crate::backhaul::{Credentials, SharedCredentials};
use crate::cluster::Delays;
use crate::config::{Config, MeshProfile};
use crate::handoff::{Inherited, Sockets};
use crate::node::mesh::MeshSetup;
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
    edge_tls: Vec<TcpListener>,
    admin: Option<std::net::TcpListener>,
    mesh: Option<MeshSetup>,
    mesh_addr: Option<SocketAddr>,
    backhaul: Option<TcpListener>,
    /// The backhaul's request-tag keys and TLS, swapped by a reload that rotates keys.
    creds: SharedCredentials,
    quic: Option<quinn::Endpoint>,
    delays: Option<Delays>,
    handoff: Option<Sockets>,
    cfg: Config,
}

impl App {
    /// Binds every listener (ports given as 0 get ephemeral ones), or takes it from `inherited`
    /// (sockets handed over by an older process for the same config key and address).
    pub async fn build(
        cfg: Config,
        shutdown: Shutdown,
        inherited: &mut Inherited,
    ) -> Result<Self, BindError> {
        let mut handoff = Sockets::new();
        let edge = edge_listeners(
            "edge.listen",
            &cfg.node.edge.listen,
            inherited,
            &mut handoff,
        )?;
        let edge_tls = edge_listeners(
            "edge.tls_listen",
            &cfg.node.edge.tls_listen,
            inherited,
            &mut handoff,
        )?;
        let admin_addr = cfg.node.admin.listen.get();
        let admin = tcp_listener(inherited, "admin.listen", admin_addr)?;
        offer(&mut handoff, "admin.listen", admin_addr, &admin);
        let mesh_bind = cfg.node.mesh.bind.get();
        let socket = match inherited.udp("mesh.bind", mesh_bind) {
            Some(s) => s,
            None => std::net::UdpSocket::bind(mesh_bind).map_err(|source| BindError {
                key: "mesh.bind".into(),
                addr: mesh_bind,
                source,
            })?,
        };
        offer(&mut handoff, "mesh.bind", mesh_bind, &socket);
        let mesh_addr = socket.local_addr().ok();
        let bh_addr = cfg.node.backhaul.listen.get();
        let (backhaul, mut bh_udp) = backhaul_sockets(inherited, bh_addr)?;
        offer(&mut handoff, "backhaul.listen", bh_addr, &backhaul);
        let bh_bound = backhaul.local_addr().unwrap_or(bh_addr);
        let backhaul = TcpListener::from_std(backhaul).map_err(|source| BindError {
            key: "backhaul.listen".into(),
            addr: bh_addr,
            source,
        })?;
        let keys = cfg.node.mesh.keys();
        for w in cfg.node.mesh.warnings() {
            tracing::warn!("{w}");
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
                let topo = crate::config::topology::Topology::load(&dir.join(&sim.topology))
                    .map_err(|e| BindError {
                        key: "simulate.topology".into(),
                        addr: mesh_bind,
                        source: std::io::Error::other(e.to_string()),
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
        let tls = match (cfg.node.backhaul.cert_files(), keys.first()) {
            (Some((ca, cert, k)), _) => Some(Arc::new(
                crate::backhaul::tls::ClusterTls::from_files(
                    &dir.join(ca),
                    &dir.join(cert),
                    &dir.join(k),
                )
                .map_err(|e| tls_err(e, "backhaul.cert"))?,
            )),
            (None, Some(_)) => Some(Arc::new(
                crate::backhaul::tls::ClusterTls::derive(&keys, &cfg.node.node.name)
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
                let err = |source| BindError {
                    key: "backhaul.listen".into(),
                    addr: bh_bound,
                    source,
                };
                let udp = match inherited.udp("backhaul.quic", bh_addr).or(bh_udp.take()) {
                    Some(s) => s,
                    None => std::net::UdpSocket::bind(bh_bound).map_err(err)?,
                };
                offer(&mut handoff, "backhaul.quic", bh_addr, &udp);
                Some(crate::backhaul::bind_quic(t, udp).map_err(err)?)
            }
            None => None,
        };
        let auth = (!keys.is_empty()).then(|| AuthKey::new(&keys));
        let creds = SharedCredentials::new(Credentials {
            auth,
            tls: tls.clone(),
        });
        let quic_client = match (&tls, cfg.node.backhaul.transport) {
            (Some(_), crate::config::Transport::Quic) => Some(
                crate::backhaul::QuicClient::new(
                    creds.clone(),
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
            creds.clone(),
            quic_client,
        );
        let cluster_keys = crate::state::ClusterKeys {
            mesh: arc_swap::ArcSwap::from_pointee(keys.clone()),
            backhaul: creds.clone(),
            quic: quic_endpoint.clone(),
        };
        let node = NodeState::new(&cfg, shutdown, client, cluster_keys);
        for i in std::mem::take(&mut inherited.instances) {
            match crate::node::registry::register(&node, &i.id, &i.app, i.address.get()) {
                Ok(()) => tracing::info!(instance = %i.id, "run-time instance taken over"),
                Err(e) => {
                    tracing::warn!(instance = %i.id, error = %e, "run-time instance not taken over")
                }
            }
        }
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
            cfg: petrel_mesh::MeshConfig::new(profile, (seeds.len() as u32 + 1).max(8), keys),
            seeds,
            delays: delays.clone(),
        };
        Ok(Self {
            node,
            edge,
            edge_tls,
            admin: Some(admin),
            mesh: Some(mesh),
            mesh_addr,
            backhaul: Some(backhaul),
            creds,
            quic: quic_endpoint,
            delays,
            handoff: Some(handoff),
            cfg,
        })
    }

    /// The sockets to offer to a later `petrel run --upgrade`, and where to listen for it.
    pub fn handoff(&mut self) -> Option<(std::path::PathBuf, Sockets)> {
        let path = self.cfg.node.node.upgrade_socket_path(&self.cfg.path);
        self.handoff.take().map(|s| (path, s))
    }

    /// Where the edge listens (after binding, so ephemeral ports are real).
    pub fn edge_addrs(&self) -> Vec<SocketAddr> {
        self.edge
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Where the edge serves TLS.
    pub fn edge_tls_addrs(&self) -> Vec<SocketAddr> {
        self.edge_tls
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
            tokio::spawn(crate::owner::serve(
                l,
                self.node.clone(),
                self.creds.clone(),
                self.delays.clone(),
            ))
        });
        let health = tokio::spawn(crate::node::health::run(self.node.clone()));
        if let Some(endpoint) = &self.cfg.node.tracing.otlp_endpoint {
            if let Err(e) = crate::trace::otlp::start(endpoint, &self.node.name, &self.node.region)
            {
                tracing::warn!(endpoint, error = %e, "OTLP export not started");
            }
        }
        let quic = self.quic.take().map(|e| {
            tokio::spawn(crate::owner::serve_quic(
                e,
                self.node.clone(),
                self.creds.clone(),
                self.delays.clone(),
            ))
        });
        let mesh = match self.mesh.take() {
            Some(setup) => Some(crate::node::mesh::spawn(setup, self.node.clone())?),
            None => None,
        };
        let limits = crate::edge::Limits::from_config(&self.cfg.node.edge);
        let mut servers = Vec::new();
        for l in self.edge.drain(..) {
            servers.push(tokio::spawn(crate::edge::serve(
                l,
                self.node.clone(),
                limits,
                None,
            )));
        }
        let tls = self.node.tls.clone().map(crate::certs::server_config);
        for l in self.edge_tls.drain(..) {
            servers.push(tokio::spawn(crate::edge::serve(
                l,
                self.node.clone(),
                limits,
                tls.clone(),
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

/// The listeners of one `[edge]` list, taken over or bound, each kept for a later handover.
fn edge_listeners(
    key: &str,
    addrs: &[crate::config::Addr],
    inherited: &mut Inherited,
    handoff: &mut Sockets,
) -> Result<Vec<TcpListener>, BindError> {
    let mut out = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let l = tcp_listener(inherited, &key, a.get())?;
        offer(handoff, &key, a.get(), &l);
        out.push(TcpListener::from_std(l).map_err(|source| BindError {
            key,
            addr: a.get(),
            source,
        })?);
    }
    Ok(out)
}

/// A listening TCP socket for `key`: taken over if offered, else bound now.
fn tcp_listener(
    inherited: &mut Inherited,
    key: &str,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, BindError> {
    if let Some(l) = inherited.tcp(key, addr) {
        tracing::info!(key, addr = ?l.local_addr().ok(), "listener taken over");
        return Ok(l);
    }
    bind_tcp(key, addr)
}

/// The backhaul's TCP listener and, when its port is 0 and nothing is inherited, a UDP socket on
/// the same port number for QUIC (which listens beside TCP). The kernel picks the TCP port; that
/// number may be taken for UDP, so it picks again rather than fail to start.
///
/// # Errors
/// The address cannot be bound, or 20 ports in a row were taken for UDP.
fn backhaul_sockets(
    inherited: &mut Inherited,
    addr: SocketAddr,
) -> Result<(std::net::TcpListener, Option<std::net::UdpSocket>), BindError> {
    const KEY: &str = "backhaul.listen";
    if let Some(l) = inherited.tcp(KEY, addr) {
        tracing::info!(key = KEY, addr = ?l.local_addr().ok(), "listener taken over");
        return Ok((l, None));
    }
    if addr.port() != 0 {
        return Ok((bind_tcp(KEY, addr)?, None));
    }
    let (tcp, udp) = same_port(20, || bind_tcp(KEY, addr))?;
    Ok((tcp, Some(udp)))
}

/// A TCP listener from `next_tcp` whose port number is free for UDP too, and that UDP socket;
/// at most `tries` listeners are asked for (`tries` ≥ 1).
fn same_port(
    tries: usize,
    mut next_tcp: impl FnMut() -> Result<std::net::TcpListener, BindError>,
) -> Result<(std::net::TcpListener, std::net::UdpSocket), BindError> {
    let mut taken = None;
    for _ in 0..tries.max(1) {
        let tcp = next_tcp()?;
        let err = |addr, source| BindError {
            key: "backhaul.listen".into(),
            addr,
            source,
        };
        let at = tcp
            .local_addr()
            .map_err(|e| err(SocketAddr::from(([0, 0, 0, 0], 0)), e))?;
        match std::net::UdpSocket::bind(at) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => taken = Some(err(at, e)),
            Err(e) => return Err(err(at, e)),
        }
    }
    Err(taken.expect("at least one try, and every one was taken"))
}

/// A fresh TCP listener on `addr` (`SO_REUSEADDR`, a deep backlog) for config key `key`.
fn bind_tcp(key: &str, addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let err = |source| BindError {
        key: key.into(),
        addr,
        source,
    };
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    let l = sock.listen(LISTEN_BACKLOG).map_err(err)?;
    l.into_std().map_err(err)
}

/// Pending connections the kernel queues per listener (capped by net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

/// Keeps a duplicate of a socket for a later upgrade; a failure only disables that.
fn offer(handoff: &mut Sockets, key: &str, addr: SocketAddr, sock: &impl std::os::fd::AsFd) {
    if let Err(e) = handoff.add(key, addr, sock) {
        tracing::warn!(key, error = %e, "socket cannot be handed over on upgrade");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backhaul_port_taken_for_udp_is_passed_over() {
        // A UDP socket holds port P, and the first TCP listener offered is on P: it is passed
        // over, and the next one's port serves both.
        // P must be free for TCP: a parallel test's connection may hold the same port number
        // for TCP (one ephemeral range), and then the first offer fails for that reason instead.
        // The TCP listener found on P is the first offer itself, so nothing can take P between.
        let (_held, p, on_p) = (0..50)
            .find_map(|_| {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let p = udp.local_addr().ok()?;
                bind_tcp("backhaul.listen", p).ok().map(|tcp| (udp, p, tcp))
            })
            .expect("a UDP port that TCP can take too");
        let mut on_p = Some(on_p);
        let mut offered = 0;
        let (tcp, udp) = same_port(5, || {
            offered += 1;
            match on_p.take() {
                Some(tcp) => Ok(tcp),
                None => bind_tcp("backhaul.listen", SocketAddr::from(([127, 0, 0, 1], 0))),
            }
        })
        .expect("a free pair");
        assert_eq!(offered, 2);
        let port = tcp.local_addr().expect("tcp").port();
        assert_ne!(port, p.port());
        assert_eq!(udp.local_addr().expect("udp").port(), port);
        // Only taken ports: a clear error after the tries, naming the key.
        let e = same_port(3, || bind_tcp("backhaul.listen", p)).unwrap_err();
        assert!(
            e.to_string().starts_with("backhaul.listen: cannot bind"),
            "{e}"
        );
    }
}
