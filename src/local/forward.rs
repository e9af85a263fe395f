//! Sends one request to one local instance: connect (pooled), send, and tell apart "nothing was
//! sent, try elsewhere" from "it went out and failed". Used by the edge and by the backhaul owner side.

use std::sync::Arc;
use std::time::Instant;

use http::Response;

use super::{ConnectError, Instance, SendError, UpstreamTimeouts, Wire};
use crate::body::{Body, BoxError};
use crate::http::{InstanceForm, ReplayableRequest};
use crate::trace::ConnectMark;

/// Why an instance did not answer.
pub enum Outcome {
    /// Nothing reached the instance: the connect failed, or every connection tried was gone
    /// before the request went out. Another instance may take it.
    NotSent(ConnectError),
    /// The instance did not start its response in time.
    Timeout,
    /// The request went out and the exchange failed: a `hyper::Error` or an
    /// [`super::OriginError`].
    Failed(BoxError),
}

/// Connects (pooled) and sends `req` to `inst` in the app's `form`: HTTP/2 with prior knowledge,
/// or HTTP/1.1 (target, `Host`, version and header names set by [`InstanceForm::apply`]). A
/// request with no body and no upgrade goes through petrel's own HTTP/1.1 client (`local::h1`),
/// the rest through hyper's.
///
/// One more try goes out on a fresh connection when a pooled one
/// - was gone before the request went out (any method; hyper hands the request back), or
/// - failed before any response, and the request may be sent twice ([`ReplayableRequest::is_idempotent`])
///   with its body still replayable: the instance closed an idle keep-alive connection as the
///   request went out on it (RFC 9112 §9.3.1, "retrying requests").
///
/// A fresh connection that fails is never retried here: that is the instance's fault, not a race.
/// A request that may not be resent avoids the race instead: it reuses only a connection idle
/// well inside the instance's learned keep-alive time (see the pool's module note).
///
/// `mark` is the attempt's clock: when it began (a clock read the caller made a moment ago)
/// stands for "now" in the pool's idle check, starts the response deadline, and is the
/// connection time of a pooled connection (a new one reads the clock once connected).
pub async fn send_to_instance(
    inst: &Arc<Instance>,
    req: &ReplayableRequest,
    form: InstanceForm,
    timeouts: &UpstreamTimeouts,
    mark: &ConnectMark,
) -> Result<Response<Body>, Outcome> {
    let wire = wire_for(req, form);
    let attempt = async {
        let mut fresh = false;
        loop {
            // Known before anything is sent: a body that may outgrow the replay buffer makes the
            // request one that cannot be resent, whatever its method.
            let resendable = req.is_idempotent() && req.fits_replay() && req.can_replay();
            let upstream = inst
                .connect(wire, fresh, resendable, timeouts, mark)
                .await
                .map_err(Outcome::NotSent)?;
            let (reused, idle) = (upstream.reused(), upstream.idle());
            mark.mark_at(if reused { mark.began() } else { Instant::now() });
            let sent = upstream.send(req, form).await;
            let instance_closed = match &sent {
                Err(SendError::NotSent) => true,
                Err(SendError::Failed(e)) => !from_client(e),
                Ok(_) => false,
            };
            if let (true, Some(idle)) = (instance_closed, idle) {
                inst.closed_after_idle(idle); // the pool learns the instance's keep-alive time
            }
            match sent {
                Ok(resp) => return Ok(resp),
                Err(SendError::NotSent) if reused => {}
                Err(SendError::NotSent) => {
                    return Err(Outcome::NotSent(ConnectError::ClosedEarly(inst.addr)))
                }
                Err(SendError::Failed(e))
                    if reused && !from_client(&e) && resendable && req.can_replay() =>
                {
                    tracing::debug!(instance = %inst.id, error = %e, "pooled connection failed before any response; resending on a fresh one");
                }
                Err(SendError::Failed(e)) => return Err(Outcome::Failed(e)),
            }
            fresh = true;
        }
    };
    // Not bound to a name: a binding would keep its room in this future, moved per request.
    match tokio::time::timeout_at(
        tokio::time::Instant::from_std(mark.began()) + timeouts.response,
        attempt,
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Outcome::Timeout),
    }
}

/// Which client carries `req`: h2 when the app asks for it; petrel's own HTTP/1.1 client when
/// there is no body to send and no protocol switch to ask for (`Upgrade`, `CONNECT`); hyper's
/// otherwise.
fn wire_for(req: &ReplayableRequest, form: InstanceForm) -> Wire {
    if form.h2 {
        Wire::H2
    } else if req.body_is_empty()
        && *req.method() != http::Method::CONNECT
        && !req.headers().contains_key(http::header::UPGRADE)
    {
        Wire::H1Direct
    } else {
        Wire::H1
    }
}

/// True when the exchange failed on the client's side of it (hyper says "user": reading the
/// client's body failed), not the instance's.
fn from_client(e: &BoxError) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_user)
}
