//! One attempt at one candidate: admit and send to a local instance, or send over the backhaul
//! and read the owner's answer. Each tells "nothing reached it, try the next one" apart from
//! "it went out and failed".

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};

use super::conn::ConnCtx;
use super::error::ProxyError;
use super::AppRoute;
use crate::backhaul::protocol::{self, Reject};
use crate::backhaul::BackhaulError;
use crate::body::Body;
use crate::config::LimitType;
use crate::http::ExchangeError;
use crate::http::Side;
use crate::http::{InstanceForm, ReplayableRequest};
use crate::local::{send_to_instance, ConnectError, Instance, Outcome, Slot};
use crate::pick::Remote;
use crate::state::{EdgeSettings, NodeState};
use crate::telemetry::RetryReason;
use crate::trace::ConnectMark;

/// What every attempt of one request shares (pingora's per-request context).
pub(super) struct Ctx<'a> {
    /// This node.
    pub node: &'a NodeState,
    /// The client's connection.
    pub conn: &'a ConnCtx,
    /// The request's app.
    pub app: &'a Arc<AppRoute>,
    /// The request id.
    pub rid: &'a HeaderValue,
    /// When the request arrived.
    pub start: std::time::Instant,
    /// Edge settings as of the request's start.
    pub settings: &'a EdgeSettings,
    /// An HTTP/1.1 upgrade (WebSocket) is asked for.
    pub upgrade: bool,
    /// Set when reading the client's body failed (a malformed chunk, the client gone): an
    /// exchange that then fails is the client's fault (`400`), whatever the path reported.
    pub body_failed: &'a Arc<std::sync::atomic::AtomicBool>,
}

impl Ctx<'_> {
    /// Until when (node clock, ms) a target that refused a connection is skipped.
    fn unreachable_until(&self) -> u64 {
        self.node.now_ms() + self.settings.unreachable_for.as_millis() as u64
    }
}

/// What one candidate did with the request.
pub(super) enum Step {
    /// It answered (the slot, if local, is held until the response ends).
    Done(Response<Body>, Option<Side>, Option<Slot>),
    /// Nothing reached it: try the next one.
    Next(RetryReason, Miss),
    /// It failed after the request went out.
    Fatal(ProxyError),
}

/// Why a candidate was passed over.
pub(super) enum Miss {
    /// At its hard limit.
    Full,
    /// A local instance could not be connected to.
    Instance(ConnectError),
    /// The owner node could not be reached, or refused for another reason than "full".
    Backhaul(BackhaulError),
}

/// Admits `req` to a local instance against its hard limit and sends it.
pub(super) async fn local(
    ctx: &Ctx<'_>,
    inst: &Arc<Instance>,
    req: &ReplayableRequest,
    mark: &ConnectMark,
) -> Step {
    let Some(slot) = admit(ctx.conn, ctx.app, inst) else {
        return Step::Next(RetryReason::Full, Miss::Full);
    };
    // HTTP/1.1 unless the app asks for h2 (Fly's `h2_backend`); upgrades only exist in HTTP/1.1.
    let form = InstanceForm {
        h2: ctx.app.h2_backend && !ctx.upgrade,
        fly_names: ctx.app.fly_names,
    };
    match send_to_instance(inst, req, form, &ctx.settings.upstream, mark).await {
        Ok(mut resp) => {
            inst.mark_reachable();
            let side = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| Side::Hyper(hyper::upgrade::on(&mut resp)));
            Step::Done(resp, side, slot)
        }
        Err(Outcome::NotSent(e)) => {
            inst.mark_unreachable(ctx.unreachable_until());
            Step::Next(RetryReason::Connect, Miss::Instance(e))
        }
        Err(Outcome::Timeout) => Step::Fatal(ProxyError::from(ExchangeError::Timeout(
            ctx.app.name.to_string(),
        ))),
        Err(Outcome::Failed(e)) => Step::Fatal(failed(ctx, &*e)),
    }
}

/// An exchange that failed after the request went out: the client's body over the limit (413),
/// or the instance's fault.
fn failed(ctx: &Ctx<'_>, e: &(dyn std::error::Error + 'static)) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut from_client_body = false;
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return ProxyError::TooLarge(ctx.settings.max_body_bytes.unwrap_or_default());
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            // The request body petrel was sending failed because reading the client's body
            // failed (a bad chunk past the read-ahead, the client gone): the client's fault, a
            // 400, not the instance's.
            if from_client_body {
                return ProxyError::Malformed("invalid or interrupted request body");
            }
            from_client_body = h.is_user();
        }
        cause = c.source();
    }
    let detail = match e.downcast_ref::<hyper::Error>() {
        // As HAProxy's `tune.http.maxhdr` (101), a head of more fields is refused; say which.
        Some(h) if h.is_parse_too_large() => {
            "the instance's response head is too large (more than 100 fields, or over 400 KiB)"
                .to_string()
        }
        _ => e.to_string(),
    };
    ProxyError::from(ExchangeError::Upstream {
        app: ctx.app.name.to_string(),
        detail,
    })
}

/// How often a request waiting on an owner checks that the owner still answers mesh pings.
const SILENCE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Sends `req` over the backhaul to the owner of `r`, which admits or rejects it.
pub(super) async fn remote(
    ctx: &Ctx<'_>,
    r: &Remote,
    mut req: Request<Body>,
    mark: &ConnectMark,
) -> Step {
    let node = ctx.node;
    if let Ok(v) = HeaderValue::from_str(&r.id) {
        req.headers_mut().insert(protocol::INSTANCE, v);
    }
    let watch = OwnerWatch { ctx, r };
    if watch.silent() {
        return watch.gone(); // nothing sent: any request may go elsewhere
    }
    // An idempotent request may leave an owner that falls silent while it waits (frozen, cut
    // off): sent twice, it has the effect of once (RFC 9110 §9.2.2). Others wait on.
    let may_leave = !ctx.upgrade && crate::http::is_idempotent(req.method(), req.headers());
    let sent_ms = node.now_ms();
    node.feedback
        .sent(r.id.clone(), sent_ms, sent_ms + (r.rtt_ms / 2.0) as u64);
    let send = tokio::time::timeout(
        ctx.settings.upstream.response,
        node.backhaul
            .send(r.backhaul, &r.region, req, ctx.upgrade, mark),
    );
    let sent = tokio::select! {
        sent = send => sent,
        () = watch.until_silent(may_leave) => {
            tracing::info!(request_id = ctx.rid.to_str().unwrap_or_default(), owner = %r.node, "owner went silent while the request waited; trying the next candidate");
            return watch.gone();
        }
    };
    match sent {
        Err(_) => Step::Fatal(ExchangeError::Timeout(ctx.app.name.to_string()).into()),
        Ok(Err(e)) => backhaul_failed(ctx, r, e, may_leave),
        Ok(Ok((resp, side))) => owner_answered(ctx, r, resp, side),
    }
}

/// Watches the owner's mesh pings while a request waits on it (`backhaul.peer_silence_limit`).
struct OwnerWatch<'a, 'c> {
    ctx: &'a Ctx<'c>,
    r: &'a Remote,
}

impl OwnerWatch<'_, '_> {
    fn silent(&self) -> bool {
        let limit = self.ctx.settings.peer_silence;
        let snap = self.ctx.node.cluster.load();
        snap.silent_for(&self.r.node).is_some_and(|s| s > limit)
    }

    /// Resolves when the owner falls silent; never when the request may not leave it.
    async fn until_silent(&self, may_leave: bool) {
        if !may_leave {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(SILENCE_CHECK).await;
            if self.silent() {
                return;
            }
        }
    }

    /// The owner is skipped a while and the request moves on.
    fn gone(&self) -> Step {
        let (ctx, r) = (self.ctx, self.r);
        ctx.node.penalties.mark(&r.id, ctx.unreachable_until());
        let limit = ctx.settings.peer_silence;
        let e = BackhaulError::Connect(
            r.backhaul,
            format!(
                "owner {} has not answered mesh pings for over {limit:?}",
                r.node
            ),
        );
        Step::Next(RetryReason::Connect, Miss::Backhaul(e))
    }
}

/// The backhaul failed: before sending (the owner is skipped a while, the request moves on), or
/// after (an idempotent request whose body can be replayed moves on, others fail).
fn backhaul_failed(ctx: &Ctx<'_>, r: &Remote, e: BackhaulError, may_leave: bool) -> Step {
    if matches!(e, BackhaulError::Connect(..) | BackhaulError::NotSent(..)) {
        ctx.node.penalties.mark(&r.id, ctx.unreachable_until());
        return Step::Next(RetryReason::Connect, Miss::Backhaul(e));
    }
    let err = failed(ctx, &e);
    // The owner (or its link) failed before any response: an idempotent request may be sent
    // again elsewhere (RFC 9110 §9.2.2), as Envoy's `retry_on: reset` does; the caller checks
    // that its body can still be replayed.
    let owner_fault = matches!(err, ProxyError::Exchange(ExchangeError::Upstream { .. }))
        && !ctx.body_failed.load(std::sync::atomic::Ordering::Relaxed);
    if may_leave && owner_fault {
        // No penalty: a pooled connection that broke (a healed partition) says nothing of the
        // owner now; a fresh connect that fails marks it.
        tracing::info!(request_id = ctx.rid.to_str().unwrap_or_default(), owner = %r.node, error = %e, "owner failed before answering; the idempotent request moves on");
        return Step::Next(RetryReason::Connect, Miss::Backhaul(e));
    }
    Step::Fatal(err)
}

/// The owner answered: its load figure goes into this edge's feedback; a reject moves the
/// request on (`full` without a penalty, anything else skips the owner a while).
fn owner_answered(ctx: &Ctx<'_>, r: &Remote, resp: Response<Body>, side: Option<Side>) -> Step {
    let node = ctx.node;
    let reject = Reject::from_headers(resp.headers());
    let told = match reject {
        // An owner that says "full" without a figure is full as far as this edge knows.
        Some((Reject::Full, load)) => Some(load.unwrap_or(u32::MAX)),
        _ => protocol::load(resp.headers()),
    };
    if let Some(load) = told {
        node.feedback.answered(r.id.clone(), load, node.now_ms());
    }
    match reject {
        None => Step::Done(resp, side, None),
        Some((Reject::Full, load)) => {
            tracing::debug!(instance = %r.id, node = %r.node, ?load, "owner rejected: full");
            Step::Next(RetryReason::Full, Miss::Full)
        }
        Some((why, _)) => {
            node.penalties.mark(&r.id, ctx.unreachable_until());
            let e = BackhaulError::Connect(
                r.backhaul,
                format!("owner {} refused: {}", r.node, why.as_str()),
            );
            Step::Next(RetryReason::Connect, Miss::Backhaul(e))
        }
    }
}

/// Admission against the hard limit. `Some(None)`: admitted on a slot the connection already holds.
fn admit(conn: &ConnCtx, app: &AppRoute, inst: &Arc<Instance>) -> Option<Option<Slot>> {
    match app.kind {
        LimitType::Requests => inst.try_acquire(app.hard).map(Some),
        LimitType::Connections => {
            if conn.holds(inst) {
                return Some(None);
            }
            conn.hold(inst.try_acquire(app.hard)?);
            Some(None)
        }
    }
}
