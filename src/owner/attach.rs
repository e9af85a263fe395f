//! Owner side of a session re-attach: another node of the region passes on a client's WebSocket
//! handshake that resumes a session this node holds (SPEC §10, "resume works through any node of
//! the region"). Answers 101 and takes the stream, or 404 / 403 / 400 at once.

use http::{Request, Response, StatusCode};

use crate::backhaul::protocol;
use crate::body::{full, Body};
use crate::http::Side;
use crate::session::{Ask, AttachError, Found};
use crate::state::NodeState;
use crate::telemetry::session_metrics;

/// Attaches the handshake in `req` to session `ask.id` of `app`, if this node holds it.
pub(super) async fn attach(
    node: &NodeState,
    app: &str,
    req: Request<Body>,
    edge_side: Option<Side>,
) -> Response<Body> {
    let (Some(side), Ok(Some(ask))) = (edge_side, Ask::from_uri(req.uri())) else {
        return plain(StatusCode::BAD_REQUEST, "not a session handshake");
    };
    let sub = req
        .headers()
        .get("petrel-auth-sub")
        .and_then(|v| v.to_str().ok());
    // A session still being begun here answers at once: 409, the asking node waits and asks
    // again. When the asking node is beginning it too, the lower node name keeps it: a higher
    // one here answers 404 and gives way (the asker begins; this node then finds it there).
    let beginner = req
        .headers()
        .get(protocol::SESSION_BEGINNER)
        .and_then(|v| v.to_str().ok());
    let h = match node.sessions.find(app, &ask.id, sub) {
        Found::Nothing => return plain(StatusCode::NOT_FOUND, "no such session here"),
        Found::Beginning(_) | Found::Busy => {
            // Giving way only while this node has not gone to the instance yet: once it has,
            // the peer waits, even with the lower name (else both would begin).
            return match beginner {
                Some(other) if other < &*node.name && node.sessions.give_way(app, &ask.id) => {
                    plain(
                        StatusCode::NOT_FOUND,
                        "being begun here, by a node that gives way",
                    )
                }
                _ => plain(StatusCode::CONFLICT, "the session is being begun here"),
            };
        }
        Found::OtherSubject => {
            session_metrics().refused.increment(1);
            return plain(StatusCode::FORBIDDEN, "another token subject");
        }
        Found::Session(h) => h,
    };
    let mut resp = match crate::session::switching(req.headers(), h.protocol()) {
        Ok(r) => r,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    match h.attach(ask.resume, side).await {
        Ok(counts) => {
            crate::session::set_counts(&mut resp, counts);
            resp
        }
        Err(e @ AttachError::Beyond { .. }) => plain(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(AttachError::Ended) => plain(StatusCode::NOT_FOUND, "the session ended"),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r
}
