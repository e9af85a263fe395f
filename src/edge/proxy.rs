//! The proxy handler: Host → app → ordered candidates anywhere in the cluster → admit and send.
//! A reject or a failed connect moves on to the next candidate at once, up to the app's retries.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::attempt::{self, Ctx, Miss, Step};
use super::body::{Finish, TimedUpload};
use super::conn::ConnCtx;
use super::error::ProxyError;
use super::fly_replay::{Fallback, Replay, MAX_REPLAYS};
use super::retry::{self, Retry, Transport, Try};
use super::session::Resumed;
use super::AppRoute;
use crate::balance::{Empty, Hints};
use crate::body::{boxed, Body};
use crate::config::LimitType;
use crate::http::headers::{
    ambiguous_framing, append_via, malformed_target, max_forwards, missing_host, response_framing,
    strip_hop_by_hop, strip_internal, wants_upgrade, Forwarded, Forwarding, MaxForwards,
};
use crate::http::ExchangeError;
use crate::http::ReplayableRequest;
use crate::http::Tracked;
use crate::http::{splice, Ending, Side};
use crate::local::Slot;
use crate::pick::candidates::{self, Ask, Candidate, Picked, Target};
use crate::routes::normalize_host;
use crate::session::Ask as SessionAsk;
use crate::state::{EdgeSettings, NodeState};
use crate::telemetry::{node_metrics, AppMetrics};
use crate::trace::{Target as TraceTarget, Trace};

/// Handles one client request end to end; never fails (errors become SPEC §6 responses).
///
/// A plain `fn` around an `async move` block, here and in `forward`: an `async fn` keeps each
/// argument twice in its future (the argument and the binding it is moved into), and this
/// future, boxed per request, is moved whole on every request.
#[allow(clippy::manual_async_fn)] // see above: the `async fn` form doubles the request's room
pub fn handle(
    node: Arc<NodeState>,
    conn: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Response<Body>> + Send {
    async move {
        let start = Instant::now();
        let rid = node.request_id();
        // Loaded once: every phase of the request reads these settings.
        let settings = node.settings.load();
        let mut trace = Some(Trace::new(
            start,
            req.headers(),
            &rid,
            settings.slow_request,
            settings.otlp_sample,
        ));
        if crate::access::enabled() {
            if let Some(t) = trace.as_mut() {
                t.log_access(conn.peer, &req);
            }
        }
        let unrouted = &node_metrics().unrouted;
        let malformed = ambiguous_framing(req.headers())
            .or_else(|| malformed_target(req.method(), req.uri()))
            .or_else(|| missing_host(req.version(), req.headers()));
        if let Some(why) = malformed {
            tracing::info!(request_id = rid.to_str().unwrap_or_default(), peer = %conn.peer, reason = why, "malformed request refused");
            let mut resp = failed(ProxyError::Malformed(why), unrouted, trace, start, &rid);
            // The rest of the connection's bytes cannot be framed safely.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        if let Some(resp) = answer_here(&mut req, &rid, start) {
            return ended_here(resp, trace);
        }
        let (app, host) = match route(&node, &conn, &req) {
            Ok(routed) => routed,
            Err(err) => return failed(err, unrouted, trace, start, &rid),
        };
        if let Some(t) = trace.as_mut() {
            t.set_app(&app.name);
            t.set_strategy(app.strategy.as_str());
        }
        if app.force_https && conn.tls.is_none() {
            if let Some(resp) = to_https(&req, host.as_deref().unwrap_or_default(), &rid) {
                app.metrics.request(301, start.elapsed().as_secs_f64());
                return ended_here(resp, trace);
            }
        }
        let body_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ctx = Ctx {
            node: &node,
            conn: &conn,
            app: &app,
            rid: &rid,
            start,
            settings: &settings,
            upgrade: req.version() == Version::HTTP_11 && wants_upgrade(req.headers()),
            body_failed: &body_failed,
        };
        match forward(&ctx, req, &mut trace).await {
            Ok(resp) => resp,
            Err(err) => {
                if err.status().is_server_error() {
                    tracing::info!(request_id = rid.to_str().unwrap_or_default(), app = %app.name, error = %err, "request failed");
                }
                failed(err, &app.metrics, trace.take(), start, &rid)
            }
        }
    }
}

/// Where a failed request ends: its status and phase counted in `m` (the app's figures, or the
/// unrouted ones), its trace finished, and the SPEC §6 response made.
fn failed(
    err: ProxyError,
    m: &AppMetrics,
    trace: Option<Trace>,
    start: Instant,
    rid: &HeaderValue,
) -> Response<Body> {
    m.failure(err.phase());
    m.request(err.status().as_u16(), start.elapsed().as_secs_f64());
    let phase = err.phase().as_str();
    let resp = err.to_response(rid);
    ended_here(
        resp,
        trace.map(|mut t| {
            t.set_failure(phase);
            t
        }),
    )
}

/// Where a response petrel made itself ends its request's trace: the access log line (with the
/// body's length) and the slow-request check. Returns `resp` unchanged.
fn ended_here(resp: Response<Body>, trace: Option<Trace>) -> Response<Body> {
    if let Some(mut t) = trace {
        let len = http_body::Body::size_hint(resp.body()).exact();
        t.count_page(len.unwrap_or(0) as usize);
        t.finish(Instant::now(), resp.status().as_u16());
    }
    resp
}

/// Methods petrel answers itself, before any routing: `CONNECT` (405), `TRACE` and `OPTIONS`
/// whose `Max-Forwards` is spent (RFC 9110 §7.6.2).
fn answer_here<B>(
    req: &mut Request<B>,
    rid: &HeaderValue,
    start: Instant,
) -> Option<Response<Body>> {
    let method = req.method().clone();
    let answer = match (&method, max_forwards(&method, req.headers_mut())) {
        (&http::Method::CONNECT, _) => Err(ProxyError::MethodNotAllowed("CONNECT")),
        (&http::Method::TRACE, MaxForwards::AnswerHere) => {
            Err(ProxyError::MethodNotAllowed("TRACE"))
        }
        (_, MaxForwards::AnswerHere) => Ok(StatusCode::OK), // OPTIONS, final recipient
        _ => return None,
    };
    let m = &node_metrics().unrouted;
    let status = answer.as_ref().map_or_else(|e| e.status(), |s| *s);
    m.request(status.as_u16(), start.elapsed().as_secs_f64());
    Some(match answer {
        Ok(status) => {
            let mut r = Response::new(crate::body::empty());
            *r.status_mut() = status;
            r.headers_mut().insert("petrel-request-id", rid.clone());
            r
        }
        Err(err) => {
            m.failure(err.phase());
            err.to_response(rid)
        }
    })
}

/// The app a request is for, by its host, and that host. Over TLS the app is chosen by the
/// server name: a Host of another app is refused (421), so a certificate for one app never
/// carries another app's traffic.
fn route<'r, B>(
    node: &NodeState,
    conn: &ConnCtx,
    req: &'r Request<B>,
) -> Result<(Arc<AppRoute>, Option<Cow<'r, str>>), ProxyError> {
    let (host, bad_host) = match request_host(req) {
        Ok(h) => (Some(h), None),
        Err(e) => (None, Some(e)),
    };
    let routes = node.routes.load();
    let app = match host.as_deref().map(|h| routes.lookup(h)) {
        Some(Some(app)) => app.clone(),
        other => {
            return Err(match (other, &host) {
                (None, _) | (_, None) => bad_host.unwrap_or(ProxyError::NoHost),
                (_, Some(h)) => ProxyError::NoRoute(h.chars().take(255).collect()),
            })
        }
    };
    match conn.tls.as_ref().and_then(|t| t.sni.as_deref()) {
        Some(sni) if !routes.lookup(sni).is_some_and(|a| Arc::ptr_eq(a, &app)) => {
            Err(ProxyError::Misdirected {
                host: host.unwrap_or_default().chars().take(255).collect(),
                sni: sni.chars().take(255).collect(),
            })
        }
        _ => Ok((app, host)),
    }
}

/// Fly's `force_https`: `301` to the same host and target over https, except for ACME HTTP-01
/// challenges, which a certificate authority sends over plain HTTP (RFC 8555 §8.3).
fn to_https<B>(req: &Request<B>, host: &str, rid: &HeaderValue) -> Option<Response<Body>> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let pq = if pq == "*" { "/" } else { pq }; // `OPTIONS *`
                                               // A dot segment could climb out of the challenge directory at the origin.
    let climbs = pq
        .split(['/', '?'])
        .any(|s| s == ".." || s.eq_ignore_ascii_case("%2e%2e"));
    if pq.starts_with("/.well-known/acme-challenge/") && !climbs {
        return None;
    }
    let location = HeaderValue::from_str(&format!("https://{host}{pq}")).ok()?;
    let mut r = Response::new(crate::body::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    r.headers_mut().insert(http::header::LOCATION, location);
    r.headers_mut().insert("petrel-request-id", rid.clone());
    Some(r)
}

/// The request's host (the target's authority, else `Host`), normalized; `NoHost` when there is
/// none, and a `400` when it is not a valid host (RFC 9112 §3.2: "MUST respond with 400").
fn request_host<B>(req: &Request<B>) -> Result<Cow<'_, str>, ProxyError> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => match req.headers().get(HOST) {
            None => return Err(ProxyError::NoHost),
            Some(v) => v
                .to_str()
                .map_err(|_| ProxyError::Malformed("invalid Host"))?,
        },
    };
    normalize_host(raw).ok_or(ProxyError::Malformed("invalid Host"))
}

/// An instance's answer and where it came from.
struct Answered {
    resp: Response<Body>,
    side: Option<Side>,
    slot: Option<Slot>,
    /// The candidate that answered (an index into the pick's candidates).
    at: usize,
    /// Tries it took.
    attempts: usize,
}

/// A request's phases (pingora's `ProxyHttp` order): pick the first candidates, read the start
/// of the body, rewrite the request once, try candidates until one answers, follow the app's
/// `fly-replay` if it asks for one, and turn the answer into the client's response.
#[allow(clippy::manual_async_fn)] // one room for the request, as in `handle`
fn forward<'a>(
    ctx: &'a Ctx<'a>,
    mut req: Request<Incoming>,
    trace: &'a mut Option<Trace>,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a {
    async move {
        let (app, conn, upgrade) = (ctx.app, ctx.conn, ctx.upgrade);
        let mut hints = Hints::from_headers(req.headers());
        // The token first: nothing of a request without a valid one goes further.
        let auth_sub = authenticate(app, &mut req, trace, &mut hints)?;
        // A WebSocket that names a session: resumed here or at the region's node that holds it.
        let session = match (&app.sessions, upgrade) {
            (Some(_), true) => SessionAsk::from_uri(req.uri()).map_err(ProxyError::Malformed)?,
            _ => None,
        };
        let session = match session {
            Some(ask) => match begin_or_resume(ctx, ask, auth_sub.as_ref(), &mut req, trace).await?
            {
                Ok(begins) => Some(begins),
                Err(resumed) => return Ok(resumed),
            },
            None => None,
        };
        let client = per_client(app, conn)?;
        // The pick is as of the request's arrival, microseconds ago (no clock read of its own),
        // unless a session lookup, which can take seconds, came first.
        let now_ms = match session {
            Some(_) => ctx.node.now_ms(),
            None => ctx.node.ms_at(ctx.start),
        };
        let picked = first_pick(ctx, &hints, now_ms)?;
        if let Some(t) = trace.as_mut() {
            t.routed();
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let client_h2 = req.version() == Version::HTTP_2;
        // Scoped: a binding live across the next await would keep its room in this future.
        let mut proto = {
            // Nothing to read (a `GET`): an empty body at once, with no future in between (the
            // request is large, and each future it passes through moves it again).
            let req = if http_body::Body::is_end_stream(req.body()) {
                req.map(|_| crate::body::empty())
            } else {
                body_start(req, ctx.settings).await?
            };
            let bytes_in = trace.as_ref().and_then(Trace::bytes_in);
            prepare(req, ctx, client_h2, bytes_in, auth_sub)
        };
        let (answered, picked) = until_answered(ctx, picked, hints, &mut proto, trace).await?;
        let ends = Ends {
            client_upgrade,
            start: ctx.start,
            trace: trace.take(),
            client,
            client_h2,
            session,
        };
        Ok(respond(
            ctx,
            &picked.candidates[answered.at],
            answered,
            ends,
        ))
    }
}

/// Tries candidates until one answers, following the app's `fly-replay` answers (the replayed
/// answer is never shown) and falling back when a replay's target cannot take the request.
/// Returns the answer and the pick it came from.
async fn until_answered(
    ctx: &Ctx<'_>,
    mut picked: Picked,
    mut hints: Hints,
    proto: &mut ReplayableRequest,
    trace: &mut Option<Trace>,
) -> Result<(Answered, Picked), ProxyError> {
    let mut replay = ReplayState::default();
    loop {
        let deadline = replay.deadline;
        let tried = try_candidates(ctx, &mut picked, &hints, proto, trace, deadline).await;
        let answered = match tried {
            Ok(a) => a,
            Err(e) => {
                (picked, hints) = replay.fall_back(ctx, e, proto)?;
                continue;
            }
        };
        let Some(asked) = Replay::from_headers(answered.resp.headers()) else {
            return Ok((answered, picked));
        };
        let from = picked.candidates.swap_remove(answered.at);
        drop(answered); // the replay answer is never shown; its slot is released
        (picked, hints) = replay.follow(ctx, asked, from, proto)?;
    }
}

/// The request's place in its client address's count (`[http_service.concurrency]`
/// `per_client`), held until the response ends.
///
/// # Errors
/// `429` when that client already has `per_client` requests under way.
fn per_client(
    app: &AppRoute,
    conn: &ConnCtx,
) -> Result<Option<crate::routes::per_client::ClientSlot>, ProxyError> {
    let Some(t) = &app.per_client else {
        return Ok(None);
    };
    let slot = t
        .acquire(conn.peer.ip())
        .ok_or_else(|| ProxyError::TooManyRequests {
            app: app.name.to_string(),
            limit: t.limit(),
        })?;
    Ok(Some(slot))
}

/// Checks the request's token (`[http_service.auth]`), lets its claims steer the pick, and returns
/// the subject to bind a session to; a token in the query never reaches the access log.
///
/// # Errors
/// `401` for a missing, expired, forged or misaddressed token.
fn authenticate(
    app: &AppRoute,
    req: &mut Request<Incoming>,
    trace: &mut Option<Trace>,
    hints: &mut Hints,
) -> Result<Option<HeaderValue>, ProxyError> {
    let Some(verifier) = &app.auth else {
        return Ok(None);
    };
    if let (Some(t), Some(path)) = (trace.as_mut(), verifier.redacted(req.uri())) {
        t.set_access_path(path);
    }
    let claims = verifier.check(req).map_err(ProxyError::Unauthorized)?;
    claims.steer(hints);
    Ok(claims
        .sub
        .filter(|s| !s.is_empty())
        .and_then(|s| HeaderValue::from_str(&s).ok()))
}

/// A session a WebSocket begins: its id, the token subject it is bound to, and its reservation
/// (dropped, it frees the id, if the instance does not switch protocols).
type Begins = (SessionAsk, Option<HeaderValue>, crate::session::Reservation);

/// A WebSocket that names session `ask`: attached to it here or through the region's node that
/// holds it (`Err`: the 101 that ends the request), or it begins here (`Ok`). A begin loses its
/// extensions (none may change the frames a session keeps and replays) and the session id (a
/// bearer of the session) before it goes to an instance.
async fn begin_or_resume(
    ctx: &Ctx<'_>,
    ask: SessionAsk,
    sub: Option<&HeaderValue>,
    req: &mut Request<Incoming>,
    trace: &mut Option<Trace>,
) -> Result<Result<Begins, Response<Body>>, ProxyError> {
    let (app, start) = (ctx.app, ctx.start);
    let claim = super::session::Claim {
        node: ctx.node,
        app,
        ask: &ask,
        sub,
        rid: ctx.rid,
    };
    match Box::pin(super::session::resume(&claim, req)).await? {
        Resumed::Answered(resp) => {
            app.metrics.request(101, start.elapsed().as_secs_f64());
            if let Some(t) = trace.take() {
                t.finish(Instant::now(), 101);
            }
            Ok(Err(resp))
        }
        Resumed::Begin(r) => {
            req.headers_mut()
                .remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
            *req.uri_mut() = crate::session::without_session_params(req.uri());
            Ok(Ok((ask, sub.cloned(), r)))
        }
    }
}

/// The first candidates: the instance a `type = "connections"` client connection already holds,
/// or the app's strategy under the request's hints, as of `now_ms` ([`NodeState::now_ms`]).
fn first_pick(ctx: &Ctx<'_>, hints: &Hints, now_ms: u64) -> Result<Picked, ProxyError> {
    let (node, app) = (ctx.node, ctx.app);
    let held = (app.kind == LimitType::Connections && *hints == Hints::default())
        .then(|| ctx.conn.held_instance(&app.name, now_ms))
        .flatten();
    if let Some(inst) = held {
        return Ok(Picked {
            candidates: vec![Candidate {
                target: Target::Local(inst),
                region: node.region.clone(),
                rtt_ms: 0.0,
                load: 0,
                soft: app.soft,
                hard: app.hard,
                healthy: true,
            }],
            order: vec![0],
        });
    }
    strategy_pick_at(ctx, hints, 1 + ctx.app.retries as usize, now_ms)
}

/// The app's strategy under `hints`, from the current snapshot, as many as the retry budget.
fn strategy_pick(ctx: &Ctx<'_>, hints: &Hints) -> Result<Picked, ProxyError> {
    strategy_pick_n(ctx, hints, 1 + ctx.app.retries as usize)
}

/// The app's strategy under `hints`: the first `n` candidates.
fn strategy_pick_n(ctx: &Ctx<'_>, hints: &Hints, n: usize) -> Result<Picked, ProxyError> {
    strategy_pick_at(ctx, hints, n, ctx.node.now_ms())
}

/// [`strategy_pick_n`] as of `now_ms` (the node's clock, [`NodeState::now_ms`]).
fn strategy_pick_at(
    ctx: &Ctx<'_>,
    hints: &Hints,
    n: usize,
    now_ms: u64,
) -> Result<Picked, ProxyError> {
    let (node, app) = (ctx.node, ctx.app);
    let (local, snap) = (node.local.load(), node.cluster.load());
    let src = node.sources(&app.name, &local, &snap, now_ms);
    candidates::pick(&src, Ask::of(app), hints, n, &mut rand::rng()).map_err(|e| match e {
        // "Full" only because this edge could not reach them lately: say so (phase and body).
        Empty::AllFull => match candidates::unreachable(&src, Ask::of(app)) {
            Some(u) => ProxyError::Unreachable {
                app: app.name.to_string(),
                remote: u.remote,
            },
            None => empty_error(e, app, hints),
        },
        e => empty_error(e, app, hints),
    })
}

/// Tries the picked candidates in order until one answers, within the app's retry budget (the
/// loop itself is `retry.rs`; this is one try, and what an answer must pass).
async fn try_candidates(
    ctx: &Ctx<'_>,
    picked: &mut Picked,
    hints: &Hints,
    proto: &ReplayableRequest,
    trace: &mut Option<Trace>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Answered, ProxyError> {
    let app = ctx.app;
    let budget = 1 + app.retries as usize;
    let retry = Retry::new(
        &app.name,
        hints.force.as_deref(),
        budget,
        picked.order.len(),
    );
    let Some(t) = trace.as_mut() else {
        return Err(retry.untried()); // a request's trace lives until it ends: not reached
    };
    let mut tries = Tries {
        ctx,
        picked,
        hints,
        proto,
        trace: t,
    };
    let answer = retry::drive(retry, deadline, &mut tries).await?;
    let (picked, t) = (tries.picked, tries.trace);
    let mut resp = answer.resp;
    // An instance's framing faults and a 101 nobody asked for stop here (502).
    let fault = if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !ctx.upgrade {
        Err("101 Switching Protocols to a request that asked for no upgrade")
    } else {
        let status = resp.status();
        response_framing(status, resp.headers_mut())
    };
    if let Err(why) = fault {
        return Err(ProxyError::from(ExchangeError::Upstream {
            app: app.name.to_string(),
            detail: why.into(),
        }));
    }
    t.head();
    Ok(Answered {
        resp,
        side: answer.side,
        slot: answer.slot,
        at: picked.order[answer.n],
        attempts: answer.n + 1,
    })
}

/// The proxy's transport for the retry loop: a request's picked candidates, local or remote.
struct Tries<'r, 'c> {
    ctx: &'r Ctx<'c>,
    picked: &'r mut Picked,
    hints: &'r Hints,
    proto: &'r ReplayableRequest,
    trace: &'r mut Trace,
}

impl Transport for Tries<'_, '_> {
    fn attempt(&mut self, turn: Try) -> impl std::future::Future<Output = Step> + Send {
        one_try(
            self.ctx,
            self.picked,
            self.hints,
            self.proto,
            self.trace,
            turn,
        )
    }
    fn can_replay(&self) -> bool {
        self.proto.can_replay()
    }
}

/// Try `turn.n` of a request: to a local instance or over the backhaul, counted and logged; a
/// failure after a client's broken body is the client's (`400`).
async fn one_try(
    ctx: &Ctx<'_>,
    picked: &mut Picked,
    hints: &Hints,
    proto: &ReplayableRequest,
    t: &mut Trace,
    turn: Try,
) -> Step {
    let (node, app) = (ctx.node, ctx.app);
    if let Some(reason) = turn.retry_of {
        app.metrics.retry(reason);
    }
    if turn.last && *hints == Hints::default() {
        // Only a request that reached its last try pays for looking for the last resort.
        let (local, snap) = (node.local.load(), node.cluster.load());
        let src = node.sources(&app.name, &local, &snap, node.now_ms());
        let (cands, order) = (&mut picked.candidates, &mut picked.order);
        let budget = 1 + app.retries as usize;
        candidates::last_resort(&src, Ask::of(app), cands, order, budget);
    }
    let cand = &picked.candidates[picked.order[turn.n]];
    t.attempt(TraceTarget {
        instance: cand.target.id().clone(),
        region: cand.region.clone(),
        remote: matches!(cand.target, Target::Remote(_)),
        node: match &cand.target {
            Target::Local(_) => node.name.clone(),
            Target::Remote(r) => r.node.clone(),
        },
    });
    let mark = &t.mark;
    let unavailable = hints
        .prefer_instance
        .as_deref()
        .filter(|p| **p != **cand.target.id());
    let step = match &cand.target {
        Target::Local(inst) => {
            // One await for both: a second one would make this future (and each that holds it)
            // carry room for another attempt and the marked copy, moved on every request. The
            // copy, rare, is boxed for the same reason.
            let marked = unavailable.map(|p| Box::new(preferred_unavailable(proto, p)));
            attempt::local(ctx, inst, marked.as_deref().unwrap_or(proto), mark).await
        }
        Target::Remote(r) => {
            let mut req = proto.attempt();
            if let Some(p) = unavailable {
                mark_preferred_unavailable(req.headers_mut(), p);
            }
            // Boxed: its future is the largest in the handler, and every request's would
            // otherwise carry (and move) its space.
            crate::http::pin_boxed(attempt::remote(ctx, r, req, mark)).await
        }
    };
    t.attempt_done();
    let body_failed = || ctx.body_failed.load(std::sync::atomic::Ordering::Relaxed);
    let client_broke = Step::Fatal(ProxyError::Malformed("invalid or interrupted request body"));
    match step {
        // An owner's 502 for a request whose body the client broke (QUIC resets the stream,
        // the owner answers): the client's fault.
        Step::Done(resp, ..) if resp.status().is_server_error() && body_failed() => client_broke,
        Step::Fatal(e) if !matches!(e, ProxyError::TooLarge(_)) && body_failed() => client_broke,
        Step::Next(reason, miss) => {
            missed(ctx, cand.target.id(), &miss);
            Step::Next(reason, miss)
        }
        other => other,
    }
}

/// A try that reached nothing: a reject counted, an unreachable target logged.
fn missed(ctx: &Ctx<'_>, id: &str, miss: &Miss) {
    let rid = ctx.rid.to_str().unwrap_or_default();
    match miss {
        Miss::Full => ctx.app.metrics.reject(),
        Miss::Instance(e) => {
            tracing::warn!(request_id = rid, instance = %id, error = %e, "instance unreachable; trying next")
        }
        Miss::Backhaul(e) => {
            tracing::warn!(request_id = rid, instance = %id, error = %e, "backhaul failed; trying next")
        }
    }
}

/// `fly-preferred-instance-unavailable` (and the `petrel-` spelling): the instance that takes a
/// request learns that the one the client preferred could not.
fn mark_preferred_unavailable(h: &mut http::HeaderMap, preferred: &str) {
    if let Ok(v) = HeaderValue::from_str(preferred) {
        h.insert("fly-preferred-instance-unavailable", v.clone());
        h.insert("petrel-preferred-instance-unavailable", v);
    }
}

/// A copy of `proto` carrying the preferred-instance marker, for a local attempt.
fn preferred_unavailable(proto: &ReplayableRequest, preferred: &str) -> ReplayableRequest {
    let mut marked = proto.clone();
    mark_preferred_unavailable(marked.headers_mut(), preferred);
    marked
}

/// Where a request stands in its `fly-replay`s: how many, until when, and its fallback.
#[derive(Default)]
struct ReplayState {
    /// Replays followed so far.
    count: usize,
    /// The replay's `timeout`, as a deadline for reaching its target.
    deadline: Option<tokio::time::Instant>,
    /// The instance that asked for the replay, and what to do if the target cannot take it.
    fallback: Option<(Fallback, Candidate)>,
}

impl ReplayState {
    /// Follows a `fly-replay` answer from `from`: at most [`MAX_REPLAYS`], body still
    /// replayable, the target picked under the replay's fields; `fly-replay-src` tells the target
    /// where the request came from.
    fn follow(
        &mut self,
        ctx: &Ctx<'_>,
        asked: Result<Replay, String>,
        from: Candidate,
        proto: &mut ReplayableRequest,
    ) -> Result<(Picked, Hints), ProxyError> {
        let app = ctx.app.name.to_string();
        self.count += 1;
        if self.count > MAX_REPLAYS {
            return Err(ProxyError::ReplayLoop(app));
        }
        let replay = asked
            .and_then(|r| match r.app.as_deref() {
                Some(other) if other != app => Err(format!(
                    "replay to another app ({other:?}) is not supported"
                )),
                _ => Ok(r),
            })
            .map_err(|detail| {
                ProxyError::from(ExchangeError::Upstream {
                    app: app.clone(),
                    detail: format!("malformed fly-replay: {detail}"),
                })
            })?;
        if !proto.can_replay() {
            return Err(ProxyError::from(ExchangeError::Upstream {
                app,
                detail: format!(
                    "fly-replay asked, but the request body is over {} bytes and cannot be replayed",
                    crate::http::REPLAY_LIMIT
                ),
            }));
        }
        let h = proto.headers_mut();
        h.remove("fly-replay-failed");
        if let Some(v) = replay.src_header(from.target.id(), &from.region) {
            h.insert("fly-replay-src", v);
        }
        self.deadline = replay.timeout.map(|t| tokio::time::Instant::now() + t);
        let hints = replay.hints();
        let from_id = from.target.id().clone();
        self.fallback = (replay.fallback != Fallback::None).then_some((replay.fallback, from));
        // One more than the budget, so leaving out the instance that asked (`elsewhere`) still
        // leaves a full budget of tries.
        let budget = 1 + ctx.app.retries as usize;
        let picked = strategy_pick_n(ctx, &hints, budget + 1).map(|mut p| {
            let cands = &p.candidates;
            p.order
                .retain(|&i| replay.allows(cands[i].target.id(), &cands[i].region, &from_id));
            p.order.truncate(budget);
            p
        });
        match picked {
            Ok(p) if !p.order.is_empty() => Ok((p, hints)),
            Ok(_) | Err(_) => {
                let target = replay.target();
                self.fall_back(ctx, ProxyError::ReplayTarget { app, target }, proto)
            }
        }
    }

    /// The replay's target could not take the request (`err`): back to the instance that asked
    /// (`fallback`), with `fly-replay-failed` saying why, or the error.
    fn fall_back(
        &mut self,
        ctx: &Ctx<'_>,
        err: ProxyError,
        proto: &mut ReplayableRequest,
    ) -> Result<(Picked, Hints), ProxyError> {
        let Some((fallback, from)) = self.fallback.take() else {
            return Err(err);
        };
        if !err.retry_safe() {
            return Err(err); // it may have reached the target: never sent twice
        }
        self.deadline = None;
        let why = err
            .to_string()
            .replace(|c: char| !c.is_ascii_graphic() && c != ' ', "");
        if let Ok(v) = HeaderValue::from_str(&why) {
            proto.headers_mut().insert("fly-replay-failed", v);
        }
        let self_only = Hints {
            force: Some(from.target.id().to_string()),
            ..Hints::default()
        };
        let mut picked = Picked {
            candidates: vec![from],
            order: vec![0],
        };
        if fallback == Fallback::PreferSelf {
            // Then any instance of the app.
            if let Ok(rest) = strategy_pick(ctx, &Hints::default()) {
                let me = picked.candidates[0].target.id().clone();
                for i in rest.order {
                    let c = &rest.candidates[i];
                    if *c.target.id() != me {
                        picked.order.push(picked.candidates.len());
                        picked.candidates.push(c.clone());
                    }
                }
            }
            return Ok((picked, Hints::default()));
        }
        Ok((picked, self_only))
    }
}

fn empty_error(e: Empty, app: &AppRoute, hints: &Hints) -> ProxyError {
    let forced = || {
        hints
            .force
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(63)
            .collect()
    };
    match e {
        Empty::NoHealthy => ProxyError::NoHealthy(app.name.to_string()),
        Empty::AllFull => ProxyError::AtCapacity(app.name.to_string()),
        Empty::ForcedUnknown => ProxyError::ForcedUnknown(forced()),
        Empty::ForcedUnavailable => ProxyError::ForcedUnavailable(forced()),
    }
}

/// Refuses a body declared over `edge.max_body_bytes`, reads the first chunk of a chunked one,
/// and bounds the rest. For a request with a body: one without is not read at all.
async fn body_start(
    req: Request<Incoming>,
    settings: &EdgeSettings,
) -> Result<Request<Body>, ProxyError> {
    if let Some(max) = settings.max_body_bytes {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::TooLarge(max));
        }
    }
    let req = read_ahead(
        req,
        settings.header_read_timeout,
        settings.body_buffer_bytes,
    )
    .await?;
    Ok(match settings.max_body_bytes {
        Some(max) => req.map(|b| boxed(http_body_util::Limited::new(b, max as usize))),
        None => req,
    })
}

/// Rewrites the client's request once: headers per SPEC §5, body made replayable and timed.
fn prepare(
    req: Request<Body>,
    ctx: &Ctx<'_>,
    client_h2: bool,
    bytes_in: Option<Arc<std::sync::atomic::AtomicU64>>,
    auth_sub: Option<HeaderValue>,
) -> ReplayableRequest {
    let (conn, node, rid) = (ctx.conn, ctx.node, ctx.rid);
    // RFC 9110 §7.6.3: the protocol version of the hop this proxy received.
    let via_version = match req.version() {
        _ if client_h2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let (mut parts, body) = req.into_parts();
    if parts.version == Version::HTTP_10 {
        // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
        parts.headers.remove(http::header::EXPECT);
    }
    strip_hop_by_hop(&mut parts.headers, ctx.upgrade);
    strip_internal(&mut parts.headers);
    if let Some(sub) = auth_sub {
        // Set after the client's own `Petrel-*` headers are gone: only a verified `sub` reaches
        // the instance.
        parts.headers.insert("petrel-auth-sub", sub);
    }
    let forwarding = Forwarding::of(
        &mut parts.headers,
        &Forwarded {
            client_ip: &conn.client_ip,
            local_port: &conn.local_port,
            proto: if conn.tls.is_some() { "https" } else { "http" },
            region: &node.region_value,
            request_id: rid,
            via_version,
        },
    );
    // An empty body has nothing to time, count or fail.
    let body = if http_body::Body::is_end_stream(&body) {
        body
    } else {
        boxed(TimedUpload::new(
            body,
            ctx.app.clone(),
            bytes_in,
            ctx.body_failed.clone(),
        ))
    };
    ReplayableRequest::from_client(Request::from_parts(parts, body), forwarding)
}

/// A request body is read ahead before any instance is contacted (and so before any instance
/// slot is taken): all of it up to `buffer` bytes, else its first `buffer` bytes, within `limit`.
/// A client that declares a body and sends nothing, or drips it, holds no slot and gets `408`
/// (nginx buffers request bodies by default, HAProxy with `http-buffer-request`). A malformed
/// chunk is refused (400) instead of reaching an instance as half a request.
async fn read_ahead(
    req: Request<Incoming>,
    limit: std::time::Duration,
    buffer: usize,
) -> Result<Request<Body>, ProxyError> {
    let chunked = req.version() == Version::HTTP_11
        && req.headers().contains_key(http::header::TRANSFER_ENCODING);
    let (parts, mut body) = req.into_parts();
    let mut ahead = Vec::new();
    let mut bytes = 0usize;
    let read = async {
        while bytes < buffer {
            match body.frame().await {
                None => break,
                Some(Ok(f)) => {
                    bytes += f.data_ref().map_or(0, |d| d.len());
                    ahead.push(Ok(f));
                }
                Some(Err(_)) if chunked => {
                    return Err(ProxyError::Malformed("invalid chunked body"))
                }
                Some(Err(e)) => {
                    ahead.push(Err(e));
                    break;
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Err(_) => return Err(ProxyError::BodyTimeout),
        Ok(r) => r?,
    }
    let rest = http_body_util::BodyStream::new(body);
    let stream = futures_util::stream::iter(ahead).chain(rest);
    Ok(Request::from_parts(
        parts,
        boxed(http_body_util::StreamBody::new(stream)),
    ))
}

/// What the client's side of a request holds until its response ends.
struct Ends {
    /// The client's half of an upgrade, if it asked for one.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// When the request arrived.
    start: Instant,
    /// Its timeline.
    trace: Option<Trace>,
    /// Its place in the client's `per_client` count.
    client: Option<crate::routes::per_client::ClientSlot>,
    /// The client spoke HTTP/2 (a cancelled response resets a stream, not the connection).
    client_h2: bool,
    /// The session a WebSocket begins, if any.
    session: Option<Begins>,
}

/// Turns the instance's response into the client's: hop-by-hop and internal headers removed,
/// request id (and route, if enabled) added, body tracked; a 101 starts the splice.
fn respond(ctx: &Ctx<'_>, cand: &Candidate, answered: Answered, ends: Ends) -> Response<Body> {
    let Ends {
        client_upgrade,
        start,
        mut trace,
        client,
        client_h2,
        session,
    } = ends;
    let Answered {
        resp,
        side: instance_side,
        slot,
        attempts,
        ..
    } = answered;
    let status = resp.status();
    let (mut parts, body) = resp.into_parts();
    rewrite_head(ctx, cand, attempts, &mut parts);
    let upgraded = client_upgrade.is_some() && instance_side.is_some();
    // A WebSocket gets its access line when it ends, not at its 101.
    let ws_access = upgraded
        .then(|| trace.as_mut().and_then(Trace::take_access))
        .flatten();
    let finish = Finish {
        app: Some(ctx.app.clone()),
        slot: None,
        status: status.as_u16(),
        start,
        // The trace read the clock as the head arrived, a moment ago.
        head: trace
            .as_ref()
            .and_then(Trace::head_at)
            .unwrap_or_else(Instant::now),
        trace,
        client,
    };
    match (client_upgrade, instance_side) {
        (Some(c), Some(i)) => {
            let upgrade = Upgraded {
                client: c,
                instance: i,
                slot,
                session,
                access: ws_access,
                start,
            };
            spawn_upgraded(ctx, &parts.headers, upgrade);
            Response::from_parts(parts, boxed(Tracked::new(body, finish)))
        }
        _ => {
            // An HTTP/1.x response cancelled at `send_timeout` ends its connection: nothing more
            // can be framed on it, and a client that does not read would never learn of it.
            let on_cancel = (!client_h2).then_some(&ctx.conn.send_stalled);
            let buffering = ctx.settings.response_buffering;
            let body = crate::http::read_ahead(body, slot, buffering, on_cancel);
            Response::from_parts(parts, boxed(Tracked::new(body, finish)))
        }
    }
}

/// The response head as the client gets it: HTTP/1.1 whatever the instance spoke (RFC 9110
/// §6.2), hop-by-hop and internal headers removed, request id and `Via` added (unless the app
/// is `pristine`), the app's `response_headers` rules applied, and `petrel-route` if enabled.
fn rewrite_head(
    ctx: &Ctx<'_>,
    cand: &Candidate,
    attempts: usize,
    parts: &mut http::response::Parts,
) {
    let app = ctx.app;
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, switching);
    strip_internal(&mut parts.headers);
    if !app.pristine {
        let rid_name = if app.fly_names {
            crate::http::headers::FLY_REQUEST_ID
        } else {
            crate::http::headers::PETREL_REQUEST_ID
        };
        parts.headers.insert(rid_name, ctx.rid.clone());
        // RFC 9110 §7.6.3: a proxy adds itself to `Via` in every message it forwards, responses
        // too (Fly's proxy does: `via: 1.1 fly.io`); the protocol is the one the instance spoke.
        append_via(
            &mut parts.headers,
            if app.h2_backend && !switching {
                "2 petrel"
            } else {
                "1.1 petrel"
            },
        );
    }
    for (name, rule) in &app.response_headers {
        parts.headers.remove(name);
        for v in rule.iter().flatten() {
            parts.headers.append(name.clone(), v.clone());
        }
    }
    if ctx.settings.debug_headers {
        if let Some(v) = route_header(ctx, cand, attempts) {
            parts.headers.insert("petrel-route", v);
        }
    }
}

/// `petrel-route`: which instance answered and why, in the words of `/v1/explain`'s tiers.
fn route_header(ctx: &Ctx<'_>, cand: &Candidate, attempts: usize) -> Option<HeaderValue> {
    let app = ctx.app;
    let owner = match &cand.target {
        Target::Local(_) => &ctx.node.name,
        Target::Remote(r) => &r.node,
    };
    let reason = match (attempts, app.strategy) {
        (n, _) if n > 1 => "next-after-full-or-unreachable",
        (_, crate::config::Strategy::Leastload) => "least-loaded",
        _ if cand.load < cand.soft => "closest-below-soft",
        _ => "closest-below-hard",
    };
    let route = format!(
        "instance={}; region={}; node={}; strategy={}; attempts={attempts}; rtt_ms={:.1}; reason={reason}",
        cand.target.id(),
        cand.region,
        owner,
        app.strategy.as_str(),
        cand.rtt_ms
    );
    HeaderValue::from_str(&route).ok()
}

/// Both halves of a switched connection and what its end needs.
struct Upgraded {
    /// The client's half.
    client: hyper::upgrade::OnUpgrade,
    /// The instance's half.
    instance: Side,
    /// The local instance's slot, held while the connection lasts.
    slot: Option<Slot>,
    /// The session it begins, if any (see [`Ends::session`]).
    session: Option<Begins>,
    /// Its access line, written when it ends.
    access: Option<Box<crate::trace::AccessFields>>,
    /// When the request arrived.
    start: Instant,
}

/// Starts the task that carries a 101's connection: spliced as it is, or, when the app keeps
/// sessions and this WebSocket begins one, handed to the session's owner task.
fn spawn_upgraded(ctx: &Ctx<'_>, headers: &http::HeaderMap, up: Upgraded) {
    let (node, app) = (ctx.node, ctx.app);
    let rid = ctx.rid.to_str().unwrap_or_default().to_string();
    let ending = Ending::for_response(headers, &node.shutdown);
    let begins = up
        .session
        .zip(app.sessions)
        .filter(|_| ending.websocket)
        .map(|((ask, sub, reservation), cfg)| {
            let start = crate::session::Start {
                app: app.name.clone(),
                id: ask.id,
                sub: sub.and_then(|s| s.to_str().ok().map(Arc::from)),
                protocol: headers.get(http::header::SEC_WEBSOCKET_PROTOCOL).cloned(),
                cfg,
                cut: ending.cut.clone(),
            };
            (reservation, start)
        });
    let (sessions, shutdown) = (node.sessions.clone(), node.shutdown.clone());
    let Upgraded {
        client,
        instance,
        slot,
        access,
        start,
        ..
    } = up;
    node.shutdown.spawn(async move {
        let ended = move |sent, received| {
            if let Some(a) = access {
                a.websocket_ended(start, sent, received);
            }
        };
        let client = Side::Hyper(client);
        match begins {
            Some((r, s)) => {
                let begun = super::session::begin(
                    &shutdown, &sessions, r, s, client, instance, slot, rid, ended,
                );
                Box::pin(begun).await;
            }
            None => {
                let (sent, received) = splice(client, instance, slot, rid, ending).await;
                ended(sent, received);
            }
        }
    });
}
