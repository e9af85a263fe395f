//! Zero-downtime binary upgrade: a running node hands its listening sockets to
//! `petrel run --upgrade` over a Unix socket (SCM_RIGHTS), then drains, as HAProxy's `expose-fd`
//! and Pingora's graceful upgrade do. The kernel socket never closes, so no connection is refused.
//!
//! The exchange, on `node.upgrade_socket`:
//! 1. new → old: `petrel-upgrade/1\n`
//! 2. old → new: a 4-byte big-endian length and a JSON [`Offer`], with one descriptor per entry of
//!    `Offer::sockets` attached (same order)
//! 3. new → old: `ready\n` once it serves on them; old → new: `ok\n`, and the old process drains
//!    without leaving the mesh. If the new process dies before step 3, the old one carries on.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::config::{Addr, InstanceConfig};
use crate::state::NodeState;

const HELLO: &[u8] = b"petrel-upgrade/1\n";
const READY: &[u8] = b"ready\n";
const OK: &[u8] = b"ok\n";
/// At most this many sockets change hands (edge listeners + admin + mesh + backhaul TCP/UDP).
const MAX_FDS: usize = 64;
const MAX_OFFER: usize = 1 << 20;
/// How long either side waits for the other at each step; the new process may take a while to
/// build its state between steps 2 and 3.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the old process hands over.
#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    /// One entry per attached descriptor.
    pub sockets: Vec<SocketEntry>,
    /// Instances registered at run time (`PUT /v1/instances`), which no config file holds.
    pub instances: Vec<InstanceEntry>,
}

/// A listening socket, named by the config key it was bound for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketEntry {
    /// e.g. `edge.listen[0]`, `admin.listen`, `mesh.bind`, `backhaul.listen`, `backhaul.quic`.
    pub key: String,
    /// The address the config asked for (the new config must ask for the same to take it).
    pub configured: SocketAddr,
}

/// A run-time registered instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// Instance id.
    pub id: String,
    /// Its app.
    pub app: String,
    /// Where it listens.
    pub address: SocketAddr,
}

/// Why an upgrade could not take over.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// Nobody listens on the upgrade socket.
    #[error("no running petrel to take over from at {0}: {1} (start without --upgrade)")]
    NoOldProcess(PathBuf, std::io::Error),
    /// The exchange broke off.
    #[error("upgrade exchange with the running process failed: {0}")]
    Io(#[from] std::io::Error),
    /// The other side said something unexpected.
    #[error("upgrade exchange with the running process failed: {0}")]
    Protocol(String),
}

/// The old process's side: its sockets (duplicated descriptors) waiting to be offered.
pub struct Sockets {
    entries: Vec<(SocketEntry, OwnedFd)>,
}

impl Sockets {
    /// Nothing yet.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Keeps a duplicate of `sock`'s descriptor to offer under `key`.
    pub fn add(
        &mut self,
        key: &str,
        configured: SocketAddr,
        sock: &impl AsFd,
    ) -> std::io::Result<()> {
        let fd = sock.as_fd().try_clone_to_owned()?;
        self.entries.push((
            SocketEntry {
                key: key.to_string(),
                configured,
            },
            fd,
        ));
        Ok(())
    }
}

impl Sockets {
    fn try_clone(&self) -> std::io::Result<Self> {
        let entries = self
            .entries
            .iter()
            .map(|(e, fd)| Ok((e.clone(), fd.try_clone()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { entries })
    }
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new()
    }
}

/// The new process's side: sockets taken over, by config key.
#[derive(Default)]
pub struct Inherited {
    fds: HashMap<String, (SocketAddr, OwnedFd)>,
    /// Run-time instances to register again.
    pub instances: Vec<InstanceConfig>,
    conn: Option<UnixStream>,
}

impl Inherited {
    /// The descriptor offered under `key`, if it was bound for the same configured address.
    fn take(&mut self, key: &str, configured: SocketAddr) -> Option<OwnedFd> {
        match self.fds.remove(key) {
            Some((addr, fd)) if addr == configured => Some(fd),
            Some((addr, _)) => {
                tracing::info!(key, old = %addr, new = %configured, "address changed; binding anew");
                None
            }
            None => None,
        }
    }

    /// A TCP listener taken over for `key`.
    pub fn tcp(&mut self, key: &str, configured: SocketAddr) -> Option<std::net::TcpListener> {
        self.take(key, configured)
            .map(std::net::TcpListener::from)
            .filter(|l| l.set_nonblocking(true).is_ok())
    }

    /// A UDP socket taken over for `key`.
    pub fn udp(&mut self, key: &str, configured: SocketAddr) -> Option<std::net::UdpSocket> {
        self.take(key, configured)
            .map(std::net::UdpSocket::from)
            .filter(|s| s.set_nonblocking(true).is_ok())
    }

    /// Tells the old process this one serves now (it starts draining). Sockets not taken are
    /// closed here; the old process closes its own copies as it drains.
    pub fn ready(mut self) -> Result<(), HandoffError> {
        for (key, _) in self.fds.drain() {
            tracing::info!(key, "inherited socket not in the new config; closing it");
        }
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        conn.write_all(READY)?;
        let mut ack = [0u8; OK.len()];
        conn.read_exact(&mut ack)?;
        if ack != OK {
            return Err(HandoffError::Protocol(format!("expected ok, got {ack:?}")));
        }
        Ok(())
    }
}

/// New side: connects to the old process at `path` and takes its sockets (blocking, bounded).
pub fn take(path: &Path) -> Result<Inherited, HandoffError> {
    let mut conn =
        UnixStream::connect(path).map_err(|e| HandoffError::NoOldProcess(path.into(), e))?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    conn.write_all(HELLO)?;
    let mut len = [0u8; 4];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut len)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                fds.extend(
                    list.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    if got == 0 {
        return Err(HandoffError::Protocol("closed before the offer".into()));
    }
    conn.read_exact(&mut len[got..])?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_OFFER {
        return Err(HandoffError::Protocol(format!("offer of {n} bytes")));
    }
    let mut body = vec![0u8; n];
    conn.read_exact(&mut body)?;
    let offer: Offer = serde_json::from_slice(&body)
        .map_err(|e| HandoffError::Protocol(format!("bad offer: {e}")))?;
    if offer.sockets.len() != fds.len() {
        return Err(HandoffError::Protocol(format!(
            "offer names {} sockets but {} descriptors came",
            offer.sockets.len(),
            fds.len()
        )));
    }
    let fds = offer
        .sockets
        .into_iter()
        .zip(fds)
        .map(|(e, fd)| (e.key, (e.configured, fd)))
        .collect();
    let instances = offer
        .instances
        .into_iter()
        .map(|i| InstanceConfig {
            id: i.id,
            app: i.app,
            address: Addr(i.address),
        })
        .collect();
    Ok(Inherited {
        fds,
        instances,
        conn: Some(conn),
    })
}

/// Old side: listens on `path` for a new process; after one takes the sockets and says ready,
/// hands over (the caller's main loop sees the drain start). Runs on its own thread.
pub fn serve(path: PathBuf, sockets: Sockets, node: Arc<NodeState>) -> std::io::Result<()> {
    let listener = bind(&path)?;
    let path_for_watcher = path.clone();
    tracing::info!(path = %path.display(), "upgrade socket ready (petrel run --upgrade takes over)");
    // The duplicates keep the listening sockets open in the kernel: once this process drains
    // (for any reason) they must go, or new connections would queue on a listener nobody accepts on.
    let sockets = Arc::new(std::sync::Mutex::new(Some(sockets)));
    let held = sockets.clone();
    let watcher = node.clone();
    tokio::spawn(async move {
        watcher.shutdown.draining().await;
        held.lock().expect("handoff lock").take();
        if !watcher.shutdown.is_handed_over() {
            // (After a handover the path is the new process's socket.)
            let _ = std::fs::remove_file(&path_for_watcher);
        }
    });
    std::thread::Builder::new()
        .name("petrel-handoff".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if node.shutdown.is_draining() {
                    return;
                }
                let conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade socket accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                // Copies, so the lock is not held while the new process starts up.
                let copies = match sockets.lock().expect("handoff lock").as_ref() {
                    Some(s) => s.try_clone(),
                    None => return,
                };
                let result = copies.map_err(HandoffError::Io).and_then(|c| offer(conn, &c, &node));
                match result {
                    Ok(()) => {
                        tracing::info!("a new process took the listening sockets; draining");
                        node.shutdown.hand_over();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upgrade attempt failed; this process keeps serving")
                    }
                }
            }
        })?;
    Ok(())
}

/// Binds the upgrade socket, replacing a stale file but never a live process's socket.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} belongs to a running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Rebinds the upgrade socket in a process that just took over (the old one still holds the old,
/// now unlinked, listener until it exits).
pub fn serve_after_takeover(
    path: PathBuf,
    sockets: Sockets,
    node: Arc<NodeState>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    serve(path, sockets, node)
}

fn offer(mut conn: UnixStream, sockets: &Sockets, node: &NodeState) -> Result<(), HandoffError> {
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut hello = [0u8; HELLO.len()];
    conn.read_exact(&mut hello)?;
    if hello != HELLO {
        return Err(HandoffError::Protocol(
            "not a petrel upgrade request".into(),
        ));
    }
    let offer = Offer {
        sockets: sockets.entries.iter().map(|(e, _)| e.clone()).collect(),
        instances: node
            .registry
            .run_time()
            .into_iter()
            .map(|c| InstanceEntry {
                id: c.id,
                app: c.app,
                address: c.address.get(),
            })
            .collect(),
    };
    let body = serde_json::to_vec(&offer).map_err(|e| HandoffError::Protocol(e.to_string()))?;
    let len = (body.len() as u32).to_be_bytes();
    let fds: Vec<RawFd> = sockets
        .entries
        .iter()
        .map(|(_, fd)| fd.as_raw_fd())
        .collect();
    let sent = sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&len)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    if sent != len.len() {
        return Err(HandoffError::Protocol("short write of the offer".into()));
    }
    conn.write_all(&body)?;
    let mut ready = [0u8; READY.len()];
    conn.read_exact(&mut ready)?;
    if ready != READY {
        return Err(HandoffError::Protocol(
            "new process did not say ready".into(),
        ));
    }
    conn.write_all(OK)?;
    Ok(())
}
