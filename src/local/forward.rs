//! Sends one request to one local instance: connect (pooled), send, and tell apart "nothing was
//! sent, try elsewhere" from "it went out and failed". Used by the edge and by the backhaul owner side.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;

use super::{ConnectError, Instance, SendError};
use crate::body::Body;
use crate::trace::ConnectMark;

/// Why an instance did not answer.
pub enum Outcome {
    /// Nothing reached the instance; here is the request back.
    Retry(Box<Request<Body>>, ConnectError),
    /// The instance did not start its response in time.
    Timeout,
    /// The request went out and the exchange failed.
    Failed(hyper::Error),
}

/// Connects (pooled) and sends `req` to `inst` in HTTP/1.1 or h2; a pooled connection found dead
/// before the request went out is replaced once by a fresh one.
pub async fn send_to_instance(
    inst: &Arc<Instance>,
    mut req: Request<Body>,
    h2: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    mark: &ConnectMark,
) -> Result<Response<Incoming>, Outcome> {
    let upstream = match inst.connect(h2, false, connect_timeout).await {
        Ok(u) => u,
        Err(e) => return Err(Outcome::Retry(Box::new(req), e)),
    };
    mark.mark();
    set_target(&mut req, inst, h2);
    let attempt = async {
        let req = match upstream.send(req).await {
            Ok(r) => return Ok(r),
            Err(SendError::Failed(e)) => return Err(Outcome::Failed(e)),
            Err(SendError::NotSent(req)) => req,
        };
        let fresh = match inst.connect(h2, true, connect_timeout).await {
            Ok(f) => f,
            Err(e) => return Err(Outcome::Retry(req, e)),
        };
        mark.mark();
        match fresh.send(*req).await {
            Ok(r) => Ok(r),
            Err(SendError::Failed(e)) => Err(Outcome::Failed(e)),
            Err(SendError::NotSent(req)) => {
                Err(Outcome::Retry(req, ConnectError::ClosedEarly(inst.addr)))
            }
        }
    };
    match tokio::time::timeout(response_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Outcome::Timeout),
    }
}

/// HTTP/1.1 gets origin-form (`/path?q`) with the client's Host kept; h2 keeps the client's
/// authority in `:authority` (the connection itself already goes to the instance).
pub fn set_target(req: &mut Request<Body>, inst: &Instance, h2: bool) {
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri = if h2 {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| inst.addr.to_string());
        Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
    } else {
        pq.parse::<Uri>().map_err(http::Error::from)
    };
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
    if h2 {
        req.headers_mut().remove(http::header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        *req.version_mut() = http::Version::HTTP_11;
    }
}
