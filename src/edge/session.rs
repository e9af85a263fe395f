//! The edge's part in resumable WebSocket sessions (SPEC §10): a request that comes back to a
//! session is answered here when this node holds it, or passed to the node of the region that
//! does; a request that begins one goes to an instance as any WebSocket does (see `respond`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::error::ProxyError;
use crate::backhaul::protocol;
use crate::body::{empty, Body};
use crate::http::{splice, Ending, Side};
use crate::local::Slot;
use crate::routes::AppRoute;
use crate::session::{Ask, AttachError, Found, Reservation, Sessions, Start};
use crate::state::NodeState;
use crate::telemetry::{node_metrics, session_metrics};
use crate::trace::ConnectMark;

/// How long the region's other nodes have, together, to say whether one holds a session a
/// client resumes.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The same, for a client that begins a session (a node that does not answer in time gets the
/// client a 503 to retry, not a second session under the same id).
const BEGIN_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request waits for another one that is beginning the same session on this node.
const SETTLE: Duration = Duration::from_secs(10);

/// Headers a re-attaching client's handshake carries to the node that holds its session.
const HANDSHAKE: [header::HeaderName; 6] = [
    header::HOST,
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
];

/// What became of a WebSocket request that names a session.
pub(super) enum Resumed {
    /// It was attached to the session, here or on the region's node that holds it: the 101.
    Answered(Response<Body>),
    /// No node holds it and the request does not resume one: it begins the session at an
    /// instance, under this reservation.
    Begin(Reservation),
}

/// One WebSocket request that names a session, as the lookup needs it.
pub(super) struct Claim<'a> {
    /// This node.
    pub node: &'a NodeState,
    /// The request's app.
    pub app: &'a Arc<AppRoute>,
    /// The session it names, and its count if it resumes.
    pub ask: &'a Ask,
    /// The token subject the session must be bound to (`[http_service.auth]`).
    pub sub: Option<&'a HeaderValue>,
    /// The request id.
    pub rid: &'a HeaderValue,
}

/// Answers a WebSocket request that names session `ask.id`: attached here if this node holds it
/// (after waiting for another request that is beginning it), else through the region's node
/// that does; if none does, a request without `petrel_resume` begins it.
pub(super) async fn resume(
    claim: &Claim<'_>,
    req: &mut Request<Incoming>,
) -> Result<Resumed, ProxyError> {
    // Rounds until SETTLE: each one lost a race (the session ended, another request took the
    // id, a peer is still beginning it) and looks again.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while tokio::time::Instant::now() < deadline {
        match held_here(claim, req).await {
            Round::Done(r) => return r,
            Round::Again => continue,
            Round::NotHere => {}
        }
        match in_region(claim, req).await {
            Round::Done(r) => return r,
            Round::Again | Round::NotHere => {}
        }
    }
    Err(busy(claim.app, claim.ask))
}

/// One round of a session lookup.
enum Round {
    /// Decided: attached, begun, or refused.
    Done(Result<Resumed, ProxyError>),
    /// A race was lost (ended a moment ago, taken, a peer beginning it): look again.
    Again,
    /// This node does not hold it.
    NotHere,
}

/// Attaches the client to the session if this node holds it (after waiting for a request that
/// is beginning it here).
async fn held_here(claim: &Claim<'_>, req: &mut Request<Incoming>) -> Round {
    let (app, ask) = (claim.app, claim.ask);
    let sub = claim.sub.and_then(|v| v.to_str().ok());
    let found = claim
        .node
        .sessions
        .find_settled(&app.name, &ask.id, sub, SETTLE);
    let h = match found.await {
        Found::OtherSubject => {
            session_metrics().refused.increment(1);
            return Round::Done(Err(refused(app, ask)));
        }
        Found::Beginning(_) | Found::Busy => return Round::Done(Err(busy(app, ask))),
        Found::Nothing => return Round::NotHere,
        Found::Session(h) => h,
    };
    let mut resp = match crate::session::switching(req.headers(), h.protocol()) {
        Ok(r) => r,
        Err(why) => return Round::Done(Err(ProxyError::Malformed(why))),
    };
    let client = Side::Hyper(hyper::upgrade::on(&mut *req));
    match h.attach(ask.resume, client).await {
        Ok(counts) => {
            crate::session::set_counts(&mut resp, counts);
            finish_head(&mut resp, app, claim.rid);
            Round::Done(Ok(Resumed::Answered(resp)))
        }
        Err(e @ AttachError::Beyond { .. }) => {
            Round::Done(Err(ProxyError::SessionResume(e.to_string())))
        }
        Err(AttachError::Ended) => Round::Again, // ended a moment ago: look again
    }
}

/// Asks the region's other nodes; with none holding it, a begin takes the id here and a resume
/// is told the session is gone.
async fn in_region(claim: &Claim<'_>, req: &mut Request<Incoming>) -> Round {
    let (node, app, ask) = (claim.node, claim.app, claim.ask);
    // A begin takes the id here first, so that a peer beginning it at the same moment sees it
    // (and the lower node name keeps it); a resume begins nothing.
    let reservation = match ask.resume {
        Some(_) => None,
        None => match node.sessions.reserve(&app.name, &ask.id) {
            Some(r) => Some(r),
            None => return Round::Again, // taken a moment ago: look again
        },
    };
    let wait = match ask.resume {
        Some(_) => LOOKUP_TIMEOUT,
        None => BEGIN_LOOKUP_TIMEOUT,
    };
    let lookup = on_region_peer(claim, req, wait, reservation.is_some());
    let (unanswered, beginning) = match lookup.await {
        Err(e) => return Round::Done(Err(e)),
        Ok(Lookup::Attached(resp)) => return Round::Done(Ok(Resumed::Answered(resp))),
        Ok(Lookup::NotHeld {
            unanswered,
            beginning,
        }) => (unanswered, beginning),
    };
    if beginning {
        // A peer is beginning it: once its instance answers, it holds it.
        drop(reservation);
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Round::Again;
    }
    if unanswered > 0 {
        // A node that did not answer may hold it: neither a definitive 404 nor a second
        // session under the same id.
        return Round::Done(Err(ProxyError::SessionLookup {
            app: app.name.to_string(),
            id: ask.id.clone(),
            unanswered,
        }));
    }
    match reservation {
        // A peer with a lower name asked meanwhile and this node gave way: look again.
        Some(r) if !r.commit() => {
            drop(r);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Round::Again
        }
        Some(r) => Round::Done(Ok(Resumed::Begin(r))),
        None => {
            session_metrics().expired.increment(1);
            Round::Done(Err(ProxyError::SessionNotFound {
                app: app.name.to_string(),
                id: ask.id.clone(),
            }))
        }
    }
}

fn refused(app: &AppRoute, ask: &Ask) -> ProxyError {
    ProxyError::SessionRefused {
        app: app.name.to_string(),
        id: ask.id.clone(),
    }
}

fn busy(app: &AppRoute, ask: &Ask) -> ProxyError {
    ProxyError::SessionLookup {
        app: app.name.to_string(),
        id: ask.id.clone(),
        unanswered: 0,
    }
}

/// The request id on a 101 petrel wrote, and `Via` as on every response it forwards.
fn finish_head(resp: &mut Response<Body>, app: &AppRoute, rid: &HeaderValue) {
    if !app.pristine {
        resp.headers_mut().insert("petrel-request-id", rid.clone());
        crate::http::headers::append_via(resp.headers_mut(), "1.1 petrel");
    }
}

/// What the region's other nodes said.
enum Lookup {
    /// One held the session and took the client: the 101 to send.
    Attached(Response<Body>),
    /// None held it; this many did not answer in time, and one or more is beginning it.
    NotHeld { unanswered: usize, beginning: bool },
}

/// Asks every other live node of this region, at once, to attach the client to session
/// `ask.id`; the one that holds it answers 101 and the client is spliced to it.
/// `beginning_here`: this node holds a reservation for it (a begin, not a resume).
async fn on_region_peer(
    claim: &Claim<'_>,
    req: &mut Request<Incoming>,
    wait: Duration,
    beginning_here: bool,
) -> Result<Lookup, ProxyError> {
    let node = claim.node;
    let peers = region_peers(node);
    let mut answers = Answers {
        unanswered: peers.len(),
        ..Answers::default()
    };
    let began = std::time::Instant::now();
    let mut asks: FuturesUnordered<_> = peers
        .into_iter()
        .map(|to| {
            let beginner = beginning_here.then_some(&*node.name);
            let out = attach_request(claim, req, beginner);
            let mark = ConnectMark::new(began);
            async move {
                let r = node.backhaul.send(to, &node.region, out, true, &mark).await;
                (to, r)
            }
        })
        .collect();
    let found = tokio::time::timeout(wait, async {
        while let Some((to, r)) = asks.next().await {
            match r {
                Ok((resp, Some(side))) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    return Some((to, resp, side));
                }
                Ok((resp, _)) => answers.no(resp).await,
                Err(e) => {
                    tracing::info!(peer = %to, error = %e, "session lookup: peer did not answer")
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    drop(asks); // the others said no, or are cancelled
    let Some((to, held, side)) = found else {
        return answers.verdict(claim);
    };
    tracing::info!(session = %claim.ask.id, holder = %to, "session attached through its holder");
    Ok(Lookup::Attached(splice_to_holder(claim, req, &held, side)))
}

/// The other live nodes of this node's region, by backhaul address.
fn region_peers(node: &NodeState) -> Vec<SocketAddr> {
    let snap = node.cluster.load();
    snap.view
        .members
        .iter()
        .filter(|m| {
            m.state != petrel_mesh::MemberState::Down
                && *m.id.region == *node.region
                && *m.id.name != *node.name
        })
        .map(|m| m.id.backhaul)
        .collect()
}

/// What the region's nodes that do not hold the session said.
#[derive(Default)]
struct Answers {
    /// Asked and not answered yet (busy, down, or an old node that does not know sessions).
    unanswered: usize,
    /// One is beginning it (`409`).
    beginning: bool,
    /// One holds it for another token subject (`403`).
    other_subject: bool,
    /// One holds it but cannot resume as asked (`400`, with why).
    beyond: Option<String>,
}

impl Answers {
    async fn no(&mut self, resp: Response<Body>) {
        match resp.status() {
            StatusCode::NOT_FOUND => self.unanswered -= 1,
            StatusCode::CONFLICT => {
                self.unanswered -= 1;
                self.beginning = true;
            }
            StatusCode::FORBIDDEN => {
                self.unanswered -= 1;
                self.other_subject = true;
            }
            StatusCode::BAD_REQUEST => {
                self.unanswered -= 1;
                let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                let text = body.map(|b| b.to_bytes()).unwrap_or_default();
                self.beyond = Some(String::from_utf8_lossy(&text).trim().to_string());
            }
            // Busy, or an old node that does not know sessions: no answer.
            _ => {}
        }
    }

    fn verdict(self, claim: &Claim<'_>) -> Result<Lookup, ProxyError> {
        if self.other_subject {
            return Err(refused(claim.app, claim.ask));
        }
        if let Some(why) = self.beyond {
            return Err(ProxyError::SessionResume(why));
        }
        Ok(Lookup::NotHeld {
            unanswered: self.unanswered,
            beginning: self.beginning,
        })
    }
}

/// The client's 101, with the holder's WebSocket and session headers; the client is spliced to
/// the holder's stream under the drain signal.
fn splice_to_holder(
    claim: &Claim<'_>,
    req: &mut Request<Incoming>,
    held: &Response<Body>,
    side: Side,
) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let names = [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderName::from_static(crate::session::RECEIVED),
        header::HeaderName::from_static(crate::session::GAP),
    ];
    for name in names {
        if let Some(v) = held.headers().get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    finish_head(&mut resp, claim.app, claim.rid);
    let client = Side::Hyper(hyper::upgrade::on(&mut *req));
    let node = claim.node;
    let ending = Ending {
        cut: node.shutdown.cut_token(),
        websocket: true,
    };
    let rid = claim.rid.to_str().unwrap_or_default().to_string();
    node.shutdown.spawn(async move {
        splice(client, side, (), rid, ending).await;
    });
    resp
}

/// The client's handshake as the holder needs it: its WebSocket headers, the app and session,
/// the token subject this edge checked, signed as any backhaul request.
fn attach_request(
    claim: &Claim<'_>,
    req: &Request<Incoming>,
    beginner: Option<&str>,
) -> Request<Body> {
    let Claim { app, sub, rid, .. } = *claim;
    let mut out = Request::new(empty());
    *out.method_mut() = Method::GET;
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = Version::HTTP_11;
    let h = out.headers_mut();
    for name in &HANDSHAKE {
        for v in req.headers().get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}{}", protocol::SESSION, app.name)) {
        h.insert(protocol::INSTANCE, v);
    }
    h.insert("petrel-request-id", rid.clone());
    if let Some(s) = sub {
        h.insert("petrel-auth-sub", s.clone());
    }
    if let Some(v) = beginner.and_then(|b| HeaderValue::from_str(b).ok()) {
        h.insert(protocol::SESSION_BEGINNER, v);
    }
    out
}

/// Begins the session a 101 starts: once both streams are ready it is registered under its
/// reservation and its owner task is spawned (a task of its own, as small as the session's
/// state: the handshake's futures are gone by then), holding the instance's slot; `ended` gets
/// the bytes from and to its clients.
#[allow(clippy::too_many_arguments)]
pub(super) async fn begin(
    shutdown: &crate::shutdown::Shutdown,
    sessions: &Sessions,
    reservation: Reservation,
    start: Start,
    client: Side,
    instance: Side,
    slot: Option<Slot>,
    rid: String,
    ended: impl FnOnce(u64, u64) + Send + 'static,
) {
    let (c, i) = tokio::join!(client.ready(), instance.ready());
    let (c, i) = match (c, i) {
        (Ok(c), Ok(i)) => (c, i),
        (c, i) => {
            tracing::warn!(
                request_id = rid,
                client_ok = c.is_ok(),
                instance_ok = i.is_ok(),
                "upgrade did not complete on both sides"
            );
            return;
        }
    };
    let task = sessions.start(reservation, start, i, c);
    shutdown.spawn(async move {
        let gauge = &node_metrics().websockets;
        gauge.increment(1.0);
        let (_, up, down) = task.await;
        gauge.decrement(1.0);
        drop(slot);
        ended(up, down);
    });
}
