//! Pooled connections to local instances: HTTP/1.1 keep-alive connections (petrel's own client
//! for requests without a body or upgrade, hyper's for the rest) and one multiplexed h2 sender each.
//!
//! Connecting is a separate step from sending so that a failed connect leaves the request (and its
//! body) untouched in the caller's hands: retrying it elsewhere is always safe. An idle HTTP/1.1
//! connection is reused only while it is younger than the pool's idle timeout. For a request that
//! cannot be resent, a connection idle for a while is reused only if a peek at its socket shows the
//! instance has not closed it; one that can be resent goes out unpeeked and is resent on a fresh
//! connection if the instance had closed it (see `send_to_instance`).
//!
//! A request that may not be sent twice (a `POST`) cannot be resent when an instance closes an idle
//! connection just as the request goes out on it (RFC 9112 §9.3.1). So the pool learns how long
//! each instance keeps idle connections (the shortest idle time after which it was seen to close
//! one, or its `Keep-Alive: timeout`), and such a request only reuses a connection idle for less
//! than half of that; otherwise it gets a new connection.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Response;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::h1::{Checkin, Conn, RequestHead};
use super::io::{idle_and_open, nothing_arrived, OriginIo};
use super::Instance;
use crate::body::{Body, BoxError};
use crate::http::{InstanceForm, ReplayableRequest};
use crate::trace::ConnectMark;

/// Idle HTTP/1.1 connections kept per instance. An HTTP/2 client can have hundreds of streams in
/// flight, each on its own instance connection: a smaller pool would close and reopen them at
/// that rate (and a connect storm overflows a small origin's accept queue).
const MAX_IDLE_H1: usize = 1024;

/// A connection idle at least this long has its socket peeked before reuse by a request that cannot
/// be resent. No origin closes an idle connection sooner; connections reused back to back under
/// load skip the system call.
const PEEK_AFTER: Duration = Duration::from_millis(1);

/// How long a learned idle-close time is trusted: an instance that restarted closed its
/// connections at arbitrary ages, which says nothing about its keep-alive timeout a minute later.
const LEARNED_FOR: Duration = Duration::from_secs(60);

/// Timeouts for reaching an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Time to open a TCP connection (and finish the h2 handshake).
    pub connect: Duration,
    /// Time from the attempt's start to the response head: a new connection's connect counts
    /// against it (as it always has; `send_to_instance` bounds the whole attempt).
    pub response: Duration,
    /// An idle pooled HTTP/1.1 connection older than this is closed instead of reused.
    pub pool_idle: Duration,
}

/// An idle HTTP/1.1 connection.
struct Idle {
    sender: http1::SendRequest<Body>,
    stream: Arc<TcpStream>,
    since: Instant,
}

/// An idle connection of petrel's own HTTP/1.1 client.
struct DirectIdle {
    conn: Conn,
    since: Instant,
}

/// Idle HTTP/1.1 connections of one instance, newest last, and what they taught about it.
#[derive(Default)]
struct H1Pool {
    idle: Vec<Idle>,
    direct: Vec<DirectIdle>,
    /// The shortest idle time after which the instance was seen to close a connection (or the
    /// keep-alive timeout it announced), over a sliding window of `LEARNED_FOR`: the current
    /// half-window (its minimum and when it began) and the previous one's minimum.
    closes: Option<(Duration, Instant)>,
    closes_before: Option<Duration>,
}

impl H1Pool {
    /// Records that the instance closed (or will close) a connection idle for `idle`.
    fn closes_after(&mut self, idle: Duration, now: Instant) {
        self.closes = Some(match self.closes {
            Some((d, since)) if now.saturating_duration_since(since) < LEARNED_FOR / 2 => {
                (d.min(idle), since)
            }
            Some((d, since)) => {
                // A new half-window; the last one still counts if it is recent.
                let recent = now.saturating_duration_since(since) < LEARNED_FOR;
                self.closes_before = recent.then_some(d);
                (idle, now)
            }
            None => (idle, now),
        });
    }

    /// How long a connection may have been idle for a request: the pool's idle timeout for one
    /// that can be resent, `unsafe_reuse_limit` for one that cannot.
    fn reuse_limit(&self, max_idle: Duration, resendable: bool, now: Instant) -> Duration {
        match resendable {
            true => max_idle,
            false => self.unsafe_reuse_limit(max_idle, now),
        }
    }

    /// How long a connection may have been idle for a request that cannot be resent: half the
    /// shortest idle close seen in the last `LEARNED_FOR` (at most `max_idle`).
    fn unsafe_reuse_limit(&self, max_idle: Duration, now: Instant) -> Duration {
        let Some((d, since)) = self.closes else {
            return max_idle;
        };
        let age = now.saturating_duration_since(since);
        let learned = match (age < LEARNED_FOR, self.closes_before) {
            (false, _) => return max_idle,
            (true, Some(before)) if age < LEARNED_FOR / 2 => d.min(before),
            (true, _) => d,
        };
        max_idle.min(learned / 2)
    }
}

/// Takes the newest idle connection of `list` (newest last) with its idle time, if it has been
/// idle less than `limit`. When the newest is `max_idle` old, every one below it is too: all are
/// closed. One idle for `limit` or more stays for requests allowed to reuse it (those that can be
/// resent).
fn newest<T>(
    list: &mut Vec<T>,
    since: impl Fn(&T) -> Instant,
    now: Instant,
    max_idle: Duration,
    limit: Duration,
) -> Option<(T, Duration)> {
    let age = now.saturating_duration_since(since(list.last()?));
    if age >= max_idle {
        list.clear();
        return None;
    }
    if age >= limit {
        return None;
    }
    list.pop().map(|c| (c, age))
}

/// Idle connections of one instance.
#[derive(Default)]
pub(super) struct ConnPool {
    h1: Mutex<H1Pool>,
    /// The shared h2 connection, read without a lock (swapped when a new one is made).
    h2: arc_swap::ArcSwapOption<http2::SendRequest<Body>>,
}

/// Why no connection to an instance could be had; nothing was sent, so a retry elsewhere is safe.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish in time.
    #[error("connect to {0} timed out after {1:?}")]
    Timeout(std::net::SocketAddr, Duration),
    /// The TCP connect failed (refused, unreachable).
    #[error("connect to {0} failed: {1}")]
    Io(std::net::SocketAddr, io::Error),
    /// The HTTP handshake failed (h2 preface refused).
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(std::net::SocketAddr, hyper::Error),
    /// A new connection closed before it took the request.
    #[error("connection to {0} closed before the request was sent")]
    ClosedEarly(std::net::SocketAddr),
}

/// Which client carries a request to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 through petrel's own client (`local::h1`): a request with no body and no upgrade.
    H1Direct,
    /// HTTP/1.1 through hyper's client: a request with a body, or an upgrade.
    H1,
    /// HTTP/2 with prior knowledge (`h2_backend`).
    H2,
}

/// A connection ready to carry one request to an instance.
pub enum Upstream {
    /// HTTP/1.1 through petrel's own client: exclusive until the response body ends, then back to
    /// the pool.
    Direct {
        /// The connection.
        conn: Conn,
        /// Its instance, whose pool it returns to.
        inst: Arc<Instance>,
        /// How long it sat in the pool; `None` for a new connection.
        idle: Option<Duration>,
        /// The pool's idle timeout, to prune connections that outlived it on return.
        max_idle: Duration,
        /// Pooled, and the request may be resent: a `408` is the instance's idle timeout, not
        /// an answer (see `Conn::exchange`).
        stale_408: bool,
    },
    /// HTTP/1.1: exclusive until the response body ends, then back to the pool.
    H1 {
        /// The connection.
        sender: http1::SendRequest<Body>,
        /// A second handle on its socket, for the pool's liveness peek.
        stream: Arc<TcpStream>,
        /// Its instance, whose pool it returns to.
        inst: Arc<Instance>,
        /// How long it sat in the pool; `None` for a new connection.
        idle: Option<Duration>,
    },
    /// HTTP/2: shared, multiplexed.
    H2 {
        /// The connection.
        sender: http2::SendRequest<Body>,
        /// It carried earlier requests.
        reused: bool,
    },
}

/// The outcome of sending on an `Upstream`.
pub enum SendError {
    /// The connection turned out dead before the request went out.
    NotSent,
    /// The request (or part of it) went out and then the exchange failed: a `hyper::Error`, or
    /// an [`super::OriginError`] from petrel's own client.
    Failed(BoxError),
}

impl Instance {
    /// A pooled or new connection for `wire`; `fresh` skips the pool. `resendable`: the request
    /// may be sent again if the connection turns out closed (see the module's note); one that may
    /// not only reuses a connection well inside the instance's keep-alive time. `mark`: the
    /// attempt's clock (idle ages are measured from when it began, a moment ago).
    pub async fn connect(
        self: &Arc<Self>,
        wire: Wire,
        fresh: bool,
        resendable: bool,
        t: &UpstreamTimeouts,
        mark: &ConnectMark,
    ) -> Result<Upstream, ConnectError> {
        if !fresh {
            let now = mark.began();
            let pooled = match wire {
                Wire::H1Direct => self.checkout_direct(t.pool_idle, resendable, now),
                _ => self.checkout(wire == Wire::H2, t.pool_idle, resendable, now),
            };
            if let Some(up) = pooled {
                return Ok(up);
            }
        }
        // Boxed: the connect and handshake futures are large, and a pooled request never needs them.
        Box::pin(self.dial(wire, t)).await
    }

    /// A new connection, handshake done.
    async fn dial(
        self: &Arc<Self>,
        wire: Wire,
        t: &UpstreamTimeouts,
    ) -> Result<Upstream, ConnectError> {
        let timeout = t.connect;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Err(_) => return Err(ConnectError::Timeout(self.addr, timeout)),
            Ok(Err(e)) => return Err(ConnectError::Io(self.addr, e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        if wire == Wire::H1Direct {
            return Ok(Upstream::Direct {
                conn: Conn::new(stream),
                inst: self.clone(),
                idle: None,
                max_idle: t.pool_idle,
                stale_408: false,
            });
        }
        if wire == Wire::H2 {
            let io = TokioIo::new(stream);
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10))
                .handshake(io)
                .await
                .map_err(|e| ConnectError::Handshake(self.addr, e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "h2 instance connection ended");
                }
            });
            self.pool.h2.store(Some(Arc::new(sender.clone())));
            Ok(Upstream::H2 {
                sender,
                reused: false,
            })
        } else {
            let stream = Arc::new(stream);
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(OriginIo::new(stream.clone())))
                .await
                .map_err(|e| ConnectError::Handshake(self.addr, e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "h1 instance connection ended");
                }
            });
            Ok(Upstream::H1 {
                sender,
                stream,
                inst: self.clone(),
                idle: None,
            })
        }
    }

    fn checkout(
        self: &Arc<Self>,
        h2: bool,
        max_idle: Duration,
        resendable: bool,
        now: Instant,
    ) -> Option<Upstream> {
        if h2 {
            let guard = self.pool.h2.load();
            return guard
                .as_deref()
                .filter(|s| !s.is_closed())
                .cloned()
                .map(|sender| Upstream::H2 {
                    sender,
                    reused: true,
                });
        }
        let mut pool = self.pool.h1.lock().expect("pool lock");
        let limit = pool.reuse_limit(max_idle, resendable, now);
        while let Some((c, age)) = newest(&mut pool.idle, |c| c.since, now, max_idle, limit) {
            // A request that can be resent is not worth a system call per reuse: if the instance
            // closed this connection, `send_to_instance` finds out by sending and resends on a
            // fresh one. (Peeking for every request cost 0.6 `recvfrom` per h2 request under load,
            // where pooled connections sit idle a few milliseconds between uses.)
            let peek = !resendable && age >= PEEK_AFTER;
            if c.sender.is_closed() || (peek && !idle_and_open(&c.stream)) {
                pool.closes_after(age, now); // the instance closed it: learn its keep-alive
                continue;
            }
            if !c.sender.is_ready() {
                continue;
            }
            return Some(Upstream::H1 {
                sender: c.sender,
                stream: c.stream,
                inst: self.clone(),
                idle: Some(age),
            });
        }
        None
    }

    /// An idle connection of petrel's own client, by the same rules as `checkout`'s HTTP/1.1 ones.
    /// No task reads an idle connection here (hyper's connection task would), so one the instance
    /// closed, or sent an unsolicited answer on, is found by the reactor's readiness (free), by
    /// the peek (a request that cannot be resent), or by sending (one that can is then resent
    /// on a fresh connection).
    fn checkout_direct(
        self: &Arc<Self>,
        max_idle: Duration,
        resendable: bool,
        now: Instant,
    ) -> Option<Upstream> {
        let mut pool = self.pool.h1.lock().expect("pool lock");
        let limit = pool.reuse_limit(max_idle, resendable, now);
        while let Some((c, age)) = newest(&mut pool.direct, |c| c.since, now, max_idle, limit) {
            let peek = !resendable && age >= PEEK_AFTER;
            let open = if peek {
                idle_and_open(c.conn.stream())
            } else {
                nothing_arrived(c.conn.stream())
            };
            if !open {
                pool.closes_after(age, now);
                continue;
            }
            return Some(Upstream::Direct {
                conn: c.conn,
                inst: self.clone(),
                idle: Some(age),
                max_idle,
                stale_408: resendable,
            });
        }
        None
    }

    /// Closes the idle connections that outlived `max_idle` (the pool's idle timeout), and those
    /// of petrel's own client that the instance closed or wrote on while idle. Without it, an
    /// instance that gets no more requests would keep them: half-closed (`CLOSE-WAIT`) on this
    /// side and orphaned on the instance's, up to the pool's size (a reviewer counted 198 after a
    /// burst against nginx's 1 s keep-alive). The node calls it every second.
    pub fn sweep_idle(&self, max_idle: Duration) {
        let now = Instant::now();
        let young = |since: Instant| now.saturating_duration_since(since) < max_idle;
        let mut pool = self.pool.h1.lock().expect("pool lock");
        pool.direct
            .retain(|c| young(c.since) && nothing_arrived(c.conn.stream()));
        pool.idle
            .retain(|c| young(c.since) && !c.sender.is_closed());
    }

    /// Idle connections in the pool (petrel's own client's and hyper's), for tests.
    #[cfg(test)]
    pub(crate) fn idle_connections(&self) -> usize {
        let pool = self.pool.h1.lock().expect("pool lock");
        pool.direct.len() + pool.idle.len()
    }

    /// Learns the keep-alive time an instance announces in a response (`Keep-Alive: timeout=`).
    fn learn_keep_alive(&self, headers: &http::HeaderMap) {
        if let Some(t) = keep_alive_timeout(headers) {
            let mut pool = self.pool.h1.lock().expect("pool lock");
            pool.closes_after(t, Instant::now());
        }
    }

    /// Learns that this instance closed a connection that had been idle for `idle` (a pooled
    /// connection failed as a request went out on it).
    pub(super) fn closed_after_idle(&self, idle: Duration) {
        let mut pool = self.pool.h1.lock().expect("pool lock");
        pool.closes_after(idle, Instant::now());
    }

    fn checkin(&self, sender: http1::SendRequest<Body>, stream: Arc<TcpStream>) {
        let mut pool = self.pool.h1.lock().expect("pool lock");
        if pool.idle.len() < MAX_IDLE_H1 {
            pool.idle.push(Idle {
                sender,
                stream,
                since: Instant::now(),
            });
        }
    }
}

/// Where a connection of petrel's own client goes when its response body ends: the newest in its
/// instance's idle list; connections that outlived the pool's idle timeout are closed on the way,
/// so an instance that gets no more requests does not keep them open.
pub(super) struct Back {
    inst: Arc<Instance>,
    max_idle: Duration,
}

impl Checkin for Back {
    fn checkin(self, conn: Conn) {
        let now = Instant::now();
        let mut pool = self.inst.pool.h1.lock().expect("pool lock");
        let stale = pool
            .direct
            .iter()
            .take_while(|c| now.saturating_duration_since(c.since) >= self.max_idle)
            .count();
        pool.direct.drain(..stale);
        if pool.direct.len() < MAX_IDLE_H1 {
            pool.direct.push(DirectIdle { conn, since: now });
        }
    }
}

/// The `timeout` an origin announces in `Keep-Alive: timeout=5, max=100` (Node, Apache and
/// others send it; RFC 2068 §19.7.1.1 defined the header, which RFC 9112 no longer does).
fn keep_alive_timeout(h: &http::HeaderMap) -> Option<Duration> {
    const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
    let v = h.get(&KEEP_ALIVE)?.to_str().ok()?;
    v.split(',')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("timeout"))
        .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl Upstream {
    /// True for a connection that carried earlier requests (so the instance may have closed it
    /// while the request was on its way).
    pub fn reused(&self) -> bool {
        match self {
            Upstream::H1 { idle, .. } | Upstream::Direct { idle, .. } => idle.is_some(),
            Upstream::H2 { reused, .. } => *reused,
        }
    }

    /// How long a pooled HTTP/1.1 connection sat idle before this request; `None` otherwise.
    pub fn idle(&self) -> Option<Duration> {
        match self {
            Upstream::H1 { idle, .. } | Upstream::Direct { idle, .. } => *idle,
            Upstream::H2 { .. } => None,
        }
    }

    /// Sends an attempt of `req` in the app's `form` ([`InstanceForm::apply`]); an HTTP/1.1
    /// connection returns to the pool once its response has been read. petrel's own client
    /// writes the head straight from `req` (no copy of its header map), unless the app wants
    /// Fly's header names, which are set in a copy.
    pub async fn send(
        self,
        req: &ReplayableRequest,
        form: InstanceForm,
    ) -> Result<Response<Body>, SendError> {
        match self {
            Upstream::Direct {
                conn,
                inst,
                max_idle,
                stale_408,
                ..
            } => {
                let back = Back {
                    inst: inst.clone(),
                    max_idle,
                };
                // Boxed, as is hyper's branch below (requests with a body, upgrades: one
                // allocation each): this future is held by every attempt's, and room kept for
                // another branch is moved with each of them on every bodiless request too.
                let copy = form
                    .fly_names
                    .then(|| Box::new(framed(req, form).into_parts().0));
                let head = match copy.as_deref() {
                    Some(p) => RequestHead::of(&p.method, &p.uri, &p.headers, None),
                    None => {
                        RequestHead::of(req.method(), req.uri(), req.headers(), req.forwarding())
                    }
                };
                match conn.exchange(head, back, stale_408).await {
                    Ok(resp) => {
                        inst.learn_keep_alive(resp.headers());
                        Ok(resp)
                    }
                    Err(e) => Err(SendError::Failed(Box::new(e))),
                }
            }
            Upstream::H1 {
                sender,
                stream,
                inst,
                ..
            } => Box::pin(send_h1(sender, stream, inst, framed(req, form))).await,
            Upstream::H2 { mut sender, .. } => {
                from_hyper(sender.try_send_request(framed(req, form)).await)
            }
        }
    }
}

/// Sends `out` on a pooled or new HTTP/1.1 connection of hyper's client, which goes back to
/// `inst`'s pool once the response has been read (never after a `101`).
async fn send_h1(
    mut sender: http1::SendRequest<Body>,
    stream: Arc<TcpStream>,
    inst: Arc<Instance>,
    mut out: http::Request<Body>,
) -> Result<Response<Body>, SendError> {
    crate::http::declare_unsized_body(&mut out);
    let r = sender.try_send_request(out).await;
    if let Ok(resp) = &r {
        inst.learn_keep_alive(resp.headers());
    }
    if matches!(&r, Ok(resp) if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS) {
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                inst.checkin(sender, stream);
            }
        });
    }
    from_hyper(r)
}

/// hyper's answer as a [`SendError`]: a request handed back was never sent.
fn from_hyper(
    r: Result<
        Response<hyper::body::Incoming>,
        hyper::client::conn::TrySendError<http::Request<Body>>,
    >,
) -> Result<Response<Body>, SendError> {
    r.map(|resp| resp.map(crate::body::boxed))
        .map_err(|mut e| match e.take_message() {
            Some(_) => SendError::NotSent,
            None => SendError::Failed(Box::new(e.into_error())),
        })
}

/// An attempt of `req` as an instance of this `form` takes it, for hyper's clients.
fn framed(req: &ReplayableRequest, form: InstanceForm) -> http::Request<Body> {
    let mut out = req.attempt();
    form.apply(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_cannot_be_resent_reuses_only_well_inside_the_learned_idle_close() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let max = Duration::from_millis(1500);
        let ms = Duration::from_millis;
        let mut p = H1Pool::default();
        assert_eq!(p.unsafe_reuse_limit(max, t0), max, "nothing learned yet");
        p.closes_after(ms(40), t0);
        p.closes_after(ms(30), t0 + s(1));
        p.closes_after(ms(90), t0 + s(2));
        assert_eq!(p.unsafe_reuse_limit(max, t0 + s(3)), ms(15));
        // A long keep-alive never lengthens the pool's own idle timeout.
        let mut long = H1Pool::default();
        long.closes_after(s(5), t0);
        assert_eq!(long.unsafe_reuse_limit(max, t0), max);
        // Closes seen all along keep it learned, past a minute...
        for k in 1..=10 {
            p.closes_after(ms(32), t0 + s(10 * k));
        }
        assert_eq!(p.unsafe_reuse_limit(max, t0 + s(101)), ms(16));
        // ...and an odd early close (a restart) is forgotten within a minute of the last one.
        p.closes_after(ms(2), t0 + s(102));
        assert_eq!(p.unsafe_reuse_limit(max, t0 + s(103)), ms(1));
        for k in 0..8 {
            p.closes_after(ms(32), t0 + s(110 + 10 * k));
        }
        assert_eq!(p.unsafe_reuse_limit(max, t0 + s(185)), ms(16));
        // Nothing seen for a minute: nothing known.
        assert_eq!(p.unsafe_reuse_limit(max, t0 + s(260)), max);
    }

    #[test]
    fn keep_alive_timeout_is_read_from_the_origins_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(keep_alive_timeout(&h), None);
        h.insert("keep-alive", "timeout=5, max=100".parse().unwrap());
        assert_eq!(keep_alive_timeout(&h), Some(Duration::from_secs(5)));
        h.insert("keep-alive", "max=3 , Timeout = 2".parse().unwrap());
        assert_eq!(keep_alive_timeout(&h), Some(Duration::from_secs(2)));
        h.insert("keep-alive", "timeout=soon".parse().unwrap());
        assert_eq!(keep_alive_timeout(&h), None);
    }
}
