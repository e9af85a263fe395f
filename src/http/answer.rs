//! Answers a proxy gives itself (SPEC §6): a plain-text body naming what failed, under the
//! request's id, and the failures of an exchange with an instance that both hops report alike.

use http::{HeaderValue, Response, StatusCode};

use crate::body::{full, Body};

/// The exchange with an instance failed after the request was sent to it, so bytes may have
/// reached the instance and a retry is not safe. The edge reports it for a local instance and the
/// owner node for a request that came over the backhaul, with the same status and text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    /// The instance did not start its response in time (`504`).
    #[error("app {0:?} took too long to respond")]
    Timeout(String),
    /// The instance broke the exchange: connection reset, malformed or ambiguous response (`502`).
    #[error("app {app:?} failed: {detail}")]
    Upstream {
        /// The app.
        app: String,
        /// What went wrong.
        detail: String,
    },
}

impl ExchangeError {
    /// `504 Gateway Timeout` or `502 Bad Gateway` (RFC 9110 §15.6.5, §15.6.3).
    pub fn status(&self) -> StatusCode {
        match self {
            ExchangeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ExchangeError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The response petrel sends for it.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<Body> {
        plain(self.status(), format!("{self}\n"), request_id)
    }
}

/// A `text/plain` answer with `petrel-request-id` set.
pub fn plain(status: StatusCode, text: String, request_id: &HeaderValue) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("petrel-request-id", request_id.clone());
    r
}
