//! The mesh owner task: the only code that touches the mesh core. Biased select (shutdown first),
//! a warning on slow turns, snapshots published behind `ArcSwap`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petrel_mesh::{Event, InstanceLoad, Mesh, MeshConfig, NodeId};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::cluster::{Delays, MeshMetrics, Snapshot, PUBLISH_EVERY, SAMPLE_EVERY};
use crate::state::NodeState;

/// Every this many samples (1 s) expired penalties and load figures are dropped.
const SWEEP_EVERY_TICKS: u64 = 20;
/// How often to knock on the seeds again while no member is known.
const REJOIN_EVERY: Duration = Duration::from_millis(500);
/// A turn slower than this is logged.
const SLOW_TURN: Duration = Duration::from_millis(50);

/// Everything the owner task needs, prepared (and the socket bound) before the node starts.
pub struct MeshSetup {
    /// The bound UDP socket.
    pub socket: std::net::UdpSocket,
    /// This node's identity.
    pub id: NodeId,
    /// Timings and key.
    pub cfg: MeshConfig,
    /// Where to join.
    pub seeds: Vec<SocketAddr>,
    /// Simulated latency, if configured.
    pub delays: Option<Delays>,
}

/// Starts the owner task on the current runtime.
pub fn spawn(setup: MeshSetup, node: Arc<NodeState>) -> std::io::Result<JoinHandle<()>> {
    setup.socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(setup.socket)?);
    Ok(tokio::spawn(run(
        socket,
        setup.id,
        setup.cfg,
        setup.seeds,
        setup.delays,
        node,
    )))
}

async fn run(
    socket: Arc<UdpSocket>,
    id: NodeId,
    cfg: MeshConfig,
    seeds: Vec<SocketAddr>,
    delays: Option<Delays>,
    node: Arc<NodeState>,
) {
    let epoch = Instant::now();
    let now = || epoch.elapsed();
    let mut mesh = Mesh::new(id, cfg, rand::random(), now());
    mesh.join(&seeds, now());
    let mut buf = vec![0u8; 2048];
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = MeshMetrics::default();
    let mut keys = node.keys.mesh.load_full();
    let (mut published_changes, mut published_at) = (u64::MAX, Instant::now() - PUBLISH_EVERY);
    let mut last_join = Instant::now();
    let mut ticks = 0u64;
    loop {
        flush(&mut mesh, &socket, delays.as_ref());
        while let Some(ev) = mesh.poll_event() {
            log_event(&ev);
        }
        if mesh.changes() != published_changes && published_at.elapsed() >= PUBLISH_EVERY {
            published_changes = mesh.changes();
            published_at = Instant::now();
            let view = mesh.view(now());
            metrics.update(&view, mesh.counters());
            node.cluster
                .store(Arc::new(Snapshot::new(view, published_at)));
        }
        let wake = tokio::time::Instant::from_std(epoch + mesh.poll_timeout());
        let turn;
        tokio::select! {
            biased;
            _ = node.shutdown.draining() => {
                if node.shutdown.is_handed_over() {
                    // The new process answers on this socket under a new generation.
                    tracing::info!("mesh handed over to the new process");
                    return;
                }
                tracing::info!("leaving the mesh");
                mesh.leave(now());
                // Leave messages go out at once, without simulated delay: the process may exit soon.
                flush(&mut mesh, &socket, None);
                return;
            }
            r = socket.recv_from(&mut buf) => {
                turn = Instant::now();
                match r {
                    Ok((n, from)) => mesh.handle_datagram(from, &buf[..n], now()),
                    // ICMP "port unreachable" from an earlier send surfaces here on Linux: harmless.
                    Err(e) => tracing::debug!(error = %e, "mesh socket receive error"),
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                turn = Instant::now();
                mesh.handle_timeout(now());
            }
            _ = sample.tick() => {
                turn = Instant::now();
                mesh.set_local_instances(local_loads(&node), now());
                metrics.update_counters(mesh.counters());
                let now_keys = node.keys.mesh.load_full();
                if !Arc::ptr_eq(&now_keys, &keys) {
                    mesh.set_keys(&now_keys);
                    keys = now_keys;
                    tracing::info!(keys = keys.len(), "mesh keys rotated");
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
                    // The edge's short-lived marks: forgotten once they no longer count.
                    let now_ms = node.now_ms();
                    node.penalties.sweep(now_ms);
                    node.feedback.sweep(now_ms, crate::pick::FEEDBACK_IDLE_MS);
                    // Idle instance connections that expired or that the instance closed.
                    let pool_idle = node.settings.load().upstream.pool_idle;
                    for inst in node.local.load().all() {
                        inst.sweep_idle(pool_idle);
                    }
                }
                let alone = node.cluster.load().view.members.iter().all(|m| m.state == petrel_mesh::MemberState::Down);
                if alone && !seeds.is_empty() && last_join.elapsed() >= REJOIN_EVERY {
                    last_join = Instant::now();
                    mesh.join(&seeds, now());
                }
            }
        }
        if turn.elapsed() > SLOW_TURN {
            tracing::warn!(took = ?turn.elapsed(), "slow mesh turn");
        }
    }
}

fn flush(mesh: &mut Mesh, socket: &Arc<UdpSocket>, delays: Option<&Delays>) {
    while let Some(t) = mesh.poll_transmit() {
        let delay = match (delays, &t.region) {
            (Some(d), Some(r)) => d.toward(r),
            _ => Duration::ZERO,
        };
        if delay.is_zero() {
            if let Err(e) = socket.try_send_to(&t.data, t.to) {
                tracing::debug!(to = %t.to, error = %e, "mesh send failed");
            }
        } else {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&t.data, t.to).await;
            });
        }
    }
}

/// This node's instances as the mesh gossips them.
fn local_loads(node: &NodeState) -> Vec<InstanceLoad> {
    let routes = node.routes.load();
    let local = node.local.load();
    let now_ms = node.now_ms();
    local
        .all()
        .filter_map(|i| {
            let app = routes.by_name(&i.app)?;
            Some(InstanceLoad {
                id: i.id.clone(),
                app: i.app.clone(),
                load: i.load(),
                soft: app.soft,
                hard: app.hard,
                healthy: i.accepts_work(now_ms),
            })
        })
        .collect()
}

fn log_event(ev: &Event) {
    match ev {
        Event::MemberUp(id) => {
            tracing::info!(node = %id.name, region = %id.region, addr = %id.addr, "member up")
        }
        Event::MemberDown(id) => {
            tracing::warn!(node = %id.name, region = %id.region, "member down")
        }
        Event::Renamed(old, new) => tracing::info!(
            node = %new.name,
            old_generation = old.generation,
            generation = new.generation,
            "member restarted"
        ),
        Event::Rejoined(id) => tracing::warn!(
            generation = id.generation,
            "this node was declared down; rejoined"
        ),
        Event::Active => tracing::info!("joined the mesh"),
        Event::Idle => tracing::warn!("no live members left"),
        Event::Suspected(id) => tracing::info!(
            node = %id.name,
            region = %id.region,
            "member suspected: no ack to a direct or indirect probe"
        ),
    }
}
