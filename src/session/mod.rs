//! Resumable WebSocket sessions (SPEC §10): the instance's WebSocket is kept open while its
//! client is away, what the client missed is kept within `replay_bytes`, and a client that comes
//! back (to this node, or through another node of the region) is sent it and goes on live.
//!
//! One owner task per session ([`task`]) holds both streams; the [`Sessions`] registry only maps
//! (app, id) to that task's mailbox and is touched once per WebSocket handshake, never per frame.

mod ask;
pub mod frame;
mod handshake;
mod replay;
pub(crate) mod task;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

pub use ask::{valid_id, without_session_params, Ask};
pub use handshake::{set_counts, switching, GAP, RECEIVED};
pub use replay::{Replay, ReplayBuffer};
pub use task::{AttachError, Attached, End, SessionConfig, TAKEN_OVER};

use crate::http::{Io, Side};
use task::{Attach, Task};

type Key = (Arc<str>, Arc<str>);

struct Entry {
    tx: mpsc::Sender<Box<Attach>>,
    sub: Option<Arc<str>>,
    protocol: Option<HeaderValue>,
    serial: u64,
}

/// A session id's place in the registry.
enum State {
    /// A request that begins it is on its way to an instance; others with the id wait.
    Beginning(Arc<Notify>, Phase),
    /// Its owner task runs.
    Held(Entry),
}

/// Where a begin stands against a peer of the region beginning the same id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Still asking the region whether a peer holds or begins it.
    Looking,
    /// Asked, no peer had it: this node goes to the instance.
    Committed,
    /// A peer with a lower name is beginning it too: this node gives way and looks again.
    Yielded,
}

/// Every session this node holds, by app and session id.
#[derive(Clone, Default)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<Key, State>>>,
    serial: Arc<AtomicU64>,
}

/// The right to begin session (app, id) on this node: taken before the request goes to an
/// instance, so a second client with the same id waits for the first's 101 and then takes the
/// session over, instead of opening a second instance WebSocket. Dropped without
/// [`Sessions::start`] (the request failed), it frees the id and wakes the waiters.
pub struct Reservation {
    sessions: Sessions,
    key: Key,
    notify: Arc<Notify>,
    started: bool,
}

impl Reservation {
    /// Commits to begin: `false` if this node gave way to a peer meanwhile
    /// ([`Sessions::give_way`]); then drop the reservation and look again.
    pub fn commit(&self) -> bool {
        let mut map = self.sessions.lock();
        match map.get_mut(&self.key) {
            Some(State::Beginning(n, phase)) if Arc::ptr_eq(n, &self.notify) => {
                if *phase == Phase::Yielded {
                    return false;
                }
                *phase = Phase::Committed;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.started {
            let mut map = self.sessions.lock();
            if matches!(map.get(&self.key), Some(State::Beginning(n, _)) if Arc::ptr_eq(n, &self.notify))
            {
                map.remove(&self.key);
            }
        }
        self.notify.notify_waiters();
    }
}

/// What a lookup found.
pub enum Found {
    /// No session by that id here.
    Nothing,
    /// The session is bound to another token subject (`403`).
    OtherSubject,
    /// Another request is beginning it: wait on this, then look again.
    Beginning(std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>),
    /// Another request was still beginning it when [`Sessions::find_settled`] stopped waiting.
    Busy,
    /// The session.
    Session(Handle),
}

/// A session's mailbox.
pub struct Handle {
    tx: mpsc::Sender<Box<Attach>>,
    protocol: Option<HeaderValue>,
}

impl Handle {
    /// The subprotocol the instance chose when the session began (`Sec-WebSocket-Protocol`).
    pub fn protocol(&self) -> Option<&HeaderValue> {
        self.protocol.as_ref()
    }

    /// Attaches a client that has received `from` messages (`None`: none to replay, live from
    /// now). Returns the counts for its 101; the session takes `client` once that is written.
    pub async fn attach(&self, from: Option<u64>, client: Side) -> Result<Attached, AttachError> {
        let (reply, rx) = oneshot::channel();
        // Boxed: the channel allocates its slots up front, and most sessions never see one.
        let a = Box::new(Attach {
            from,
            client,
            reply,
        });
        self.tx.send(a).await.map_err(|_| AttachError::Ended)?;
        rx.await.map_err(|_| AttachError::Ended)?
    }
}

/// A session about to begin: the instance answered 101 to a request with `petrel_session`.
pub struct Start {
    /// Its app.
    pub app: Arc<str>,
    /// The client's session id.
    pub id: String,
    /// The token subject it is bound to, if the app checks tokens.
    pub sub: Option<Arc<str>>,
    /// The subprotocol the instance chose.
    pub protocol: Option<HeaderValue>,
    /// Its settings.
    pub cfg: SessionConfig,
    /// Cancelled at the node's drain deadline.
    pub cut: CancellationToken,
}

impl Sessions {
    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session `id` of `app`, if this node holds it and it is bound to `sub`.
    pub fn find(&self, app: &str, id: &str, sub: Option<&str>) -> Found {
        let map = self.lock();
        match map.get(&(Arc::from(app), Arc::from(id))) {
            None => Found::Nothing,
            // Created under the lock, so a wake-up between now and the wait is not lost.
            Some(State::Beginning(n, _)) => Found::Beginning(Box::pin(n.clone().notified_owned())),
            Some(State::Held(e)) if e.sub.as_deref() != sub => Found::OtherSubject,
            Some(State::Held(e)) => Found::Session(Handle {
                tx: e.tx.clone(),
                protocol: e.protocol.clone(),
            }),
        }
    }

    /// As [`Sessions::find`], but while another request is beginning the session, waits for it
    /// (at most `wait`, then [`Found::Busy`]).
    pub async fn find_settled(
        &self,
        app: &str,
        id: &str,
        sub: Option<&str>,
        wait: std::time::Duration,
    ) -> Found {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.find(app, id, sub) {
                Found::Beginning(begun) => {
                    if tokio::time::timeout_at(deadline, begun).await.is_err() {
                        return Found::Busy;
                    }
                }
                other => return other,
            }
        }
    }

    /// Takes the right to begin session `id` of `app` here; `None` if it exists or is being
    /// begun already.
    pub fn reserve(&self, app: &str, id: &str) -> Option<Reservation> {
        let key: Key = (Arc::from(app), Arc::from(id));
        let mut map = self.lock();
        if map.contains_key(&key) {
            return None;
        }
        let notify = Arc::new(Notify::new());
        map.insert(
            key.clone(),
            State::Beginning(notify.clone(), Phase::Looking),
        );
        Some(Reservation {
            sessions: self.clone(),
            key,
            notify,
            started: false,
        })
    }

    /// A peer with a lower node name is beginning session `id` of `app` too: if this node is
    /// still looking (not yet gone to the instance), it gives way and `true` is returned (the peer
    /// may begin); `false` when this node has committed to begin it (the peer must wait).
    pub fn give_way(&self, app: &str, id: &str) -> bool {
        let mut map = self.lock();
        match map.get_mut(&(Arc::from(app), Arc::from(id))) {
            Some(State::Beginning(_, phase)) if *phase != Phase::Committed => {
                *phase = Phase::Yielded;
                true
            }
            _ => false,
        }
    }

    /// Registers the session `reservation` was taken for, over the instance's and the first
    /// client's streams, and returns its owner task, to be spawned; it leaves the registry when
    /// it ends. Requests that waited for it are woken and attach to it.
    pub fn start(
        &self,
        mut reservation: Reservation,
        s: Start,
        instance: Box<dyn Io>,
        client: Box<dyn Io>,
    ) -> impl Future<Output = (End, u64, u64)> + Send + 'static {
        let key = reservation.key.clone();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1);
        let entry = Entry {
            tx,
            sub: s.sub,
            protocol: s.protocol,
            serial,
        };
        self.lock().insert(key.clone(), State::Held(entry));
        reservation.started = true;
        drop(reservation); // wakes the waiters, who now find it held
        let name = format!("{}/{}", s.app, s.id);
        tracing::info!(session = %name, "session began");
        let task = Task::new(name, s.cfg, instance, client, s.cut, rx);
        let this = self.clone();
        async move {
            let out = task.run().await;
            let mut map = this.lock();
            if matches!(map.get(&key), Some(State::Held(e)) if e.serial == serial) {
                map.remove(&key);
            }
            out
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, State>> {
        // A panic while holding it cannot leave the map half-updated (single inserts/removes).
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Two nodes beginning one id: a node still looking gives way to a lower-named peer, and its
    /// commit then fails (it looks again); a node that committed first does not give way (the
    /// peer waits). Either way exactly one of them goes to the instance.
    #[test]
    fn a_begin_gives_way_only_before_it_commits() {
        let s = super::Sessions::default();
        let r = s.reserve("app", "id-1").expect("free");
        assert!(s.give_way("app", "id-1"), "still looking: gives way");
        assert!(s.give_way("app", "id-1"), "and keeps giving way");
        assert!(!r.commit(), "a node that gave way does not begin");
        drop(r);
        assert!(s.reserve("app", "id-1").is_some(), "the id is free again");

        let s = super::Sessions::default();
        let r = s.reserve("app", "id-2").expect("free");
        assert!(r.commit(), "nobody asked: it begins");
        assert!(!s.give_way("app", "id-2"), "committed: the peer must wait");
        assert!(r.commit());
        assert!(!s.give_way("app", "unknown"), "nothing to give way on");
        drop(r);
        assert!(matches!(s.find("app", "id-2", None), super::Found::Nothing));
    }

    /// A held session's memory is its replay blocks plus this task: a session's state must stay
    /// small, or 1,000 held sessions cost more than their replay bytes + 8 KiB each.
    #[test]
    fn a_session_task_stays_small() {
        let (a, _b) = tokio::io::duplex(64);
        let (c, _d) = tokio::io::duplex(64);
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let cfg = super::SessionConfig {
            hold: Duration::from_secs(1),
            replay_bytes: 1024,
            ping_interval: Duration::from_secs(1),
        };
        let t = super::task::Task::new(
            "x".into(),
            cfg,
            Box::new(a),
            Box::new(c),
            Default::default(),
            rx,
        );
        let run = t.run();
        assert!(
            std::mem::size_of_val(&run) <= 2048,
            "{} bytes",
            std::mem::size_of_val(&run)
        );
    }
}
