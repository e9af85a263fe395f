//! Why the proxy answered a request itself: typed, with the status, the failure phase and retry safety.

use http::{HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::http::{plain, ExchangeError};
use crate::local::ConnectError;
use crate::telemetry::Phase;

/// A request the proxy could not pass to an instance, or that failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No app answers to this Host.
    #[error("no app for host {0:?}")]
    NoRoute(String),
    /// The request has no usable Host.
    #[error("request has no Host")]
    NoHost,
    /// The request is malformed in a way the HTTP parser let through (ambiguous framing, a bad
    /// first chunk); it is never forwarded.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A method petrel does not pass on: `CONNECT` (petrel is a reverse proxy, not a tunnel), or
    /// `TRACE` that stops here (`Max-Forwards: 0`; petrel never reflects a request's headers).
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(&'static str),
    /// The request body is larger than `edge.max_body_bytes`.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    /// The client did not send its body in time.
    #[error("request body not received in time")]
    BodyTimeout,
    /// Over TLS, the Host belongs to another app than the server name the client asked for.
    #[error("host {host:?} is not served on this TLS connection (server name {sni:?})")]
    Misdirected {
        /// The request's Host.
        host: String,
        /// The SNI of the connection.
        sni: String,
    },
    /// The app has no healthy instance anywhere.
    #[error("app {0:?} has no healthy instance")]
    NoHealthy(String),
    /// Every healthy instance was unreachable from this edge moments ago (connect refused or
    /// timed out, owner unreachable); nothing was sent.
    #[error("app {app:?} has no reachable instance right now (connections to every one failed in the last seconds)")]
    Unreachable {
        /// The app.
        app: String,
        /// Some are on other nodes (the backhaul failed), not only local ones.
        remote: bool,
    },
    /// The client already has the app's `per_client` requests in flight at this edge.
    #[error("too many requests in flight from this client for app {app:?} (at most {limit}); retry later")]
    TooManyRequests {
        /// The app.
        app: String,
        /// Its `per_client` limit.
        limit: u32,
    },
    /// The app requires a token (`[http_service.auth]`) and the request's is missing or invalid.
    #[error("unauthorized: {}", .0.as_str())]
    Unauthorized(crate::routes::auth::AuthError),
    /// A WebSocket asked to resume a session no node of this region holds (expired, ended, or
    /// never begun).
    #[error("session {id:?} of app {app:?} is not held in this region (it expired, ended or never began)")]
    SessionNotFound {
        /// The app.
        app: String,
        /// The session id.
        id: String,
    },
    /// The session is bound to another token subject.
    #[error("session {id:?} of app {app:?} belongs to another token subject")]
    SessionRefused {
        /// The app.
        app: String,
        /// The session id.
        id: String,
    },
    /// Whether the region holds the session is not known now: a node that may hold it did not
    /// answer, or another request is beginning it. Retry.
    #[error("session {id:?} of app {app:?} cannot be looked up now ({unanswered} node(s) of the region did not answer, or another request is beginning it); retry")]
    SessionLookup {
        /// The app.
        app: String,
        /// The session id.
        id: String,
        /// Nodes that did not answer.
        unanswered: usize,
    },
    /// The resume cannot be honoured as asked (a count beyond what was sent).
    #[error("cannot resume: {0}")]
    SessionResume(String),
    /// Every candidate was at its hard limit.
    #[error("app {0:?} is at capacity, retry later")]
    AtCapacity(String),
    /// The forced instance is not known.
    #[error("forced instance {0:?} is unknown")]
    ForcedUnknown(String),
    /// The forced instance cannot take the request.
    #[error("forced instance {0:?} is full or down")]
    ForcedUnavailable(String),
    /// No candidate could be connected to.
    #[error("could not connect to any instance of app {app:?}: {last}")]
    Connect {
        /// The app.
        app: String,
        /// The last connect error seen.
        last: ConnectError,
    },
    /// No owner node could be reached over the backhaul.
    #[error("could not reach any node hosting app {app:?}: {last}")]
    Backhaul {
        /// The app.
        app: String,
        /// The last backhaul error seen.
        last: String,
    },
    /// Replays followed one another past `fly_replay::MAX_REPLAYS`.
    #[error("app {0:?} replayed the request more than 10 times (fly-replay loop)")]
    ReplayLoop(String),
    /// No instance where a `fly-replay` sent the request could take it.
    #[error("no instance of app {app:?} {target} could take the replayed request")]
    ReplayTarget {
        /// The app.
        app: String,
        /// Where the replay asked for ("in iad, ord", "anywhere").
        target: String,
    },
    /// The exchange with an instance failed after the request was sent (timeout or broken).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl ProxyError {
    /// The status the client gets (SPEC §6).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::NoHost | ProxyError::Malformed(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::ReplayLoop(_) => StatusCode::LOOP_DETECTED,
            ProxyError::ReplayTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::SessionNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::SessionRefused { .. } => StatusCode::FORBIDDEN,
            ProxyError::SessionResume(_) => StatusCode::BAD_REQUEST,
            ProxyError::SessionLookup { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoHealthy(_)
            | ProxyError::Unreachable { .. }
            | ProxyError::AtCapacity(_)
            | ProxyError::ForcedUnknown(_)
            | ProxyError::ForcedUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Backhaul { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Exchange(e) => e.status(),
        }
    }

    /// Where the session failed, for `petrel_session_failures_total`.
    pub fn phase(&self) -> Phase {
        match self {
            ProxyError::NoRoute(_)
            | ProxyError::NoHost
            | ProxyError::Malformed(_)
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::TooLarge(_)
            | ProxyError::Misdirected { .. }
            | ProxyError::NoHealthy(_)
            | ProxyError::ReplayLoop(_)
            | ProxyError::ReplayTarget { .. }
            | ProxyError::ForcedUnknown(_)
            | ProxyError::SessionNotFound { .. }
            | ProxyError::SessionResume(_)
            | ProxyError::SessionLookup { .. } => Phase::Route,
            ProxyError::SessionRefused { .. } => Phase::Auth,
            ProxyError::AtCapacity(_) | ProxyError::ForcedUnavailable(_) => Phase::InstanceFull,
            ProxyError::Connect { .. } | ProxyError::Unreachable { remote: false, .. } => {
                Phase::InstanceConnect
            }
            ProxyError::Unreachable { remote: true, .. } => Phase::BackhaulConnect,
            ProxyError::TooManyRequests { .. } => Phase::ClientLimit,
            ProxyError::Unauthorized(_) => Phase::Auth,
            ProxyError::Backhaul { .. } => Phase::BackhaulConnect,
            ProxyError::Exchange(ExchangeError::Timeout(_)) | ProxyError::BodyTimeout => {
                Phase::Timeout
            }
            ProxyError::Exchange(ExchangeError::Upstream { .. }) => Phase::Upstream,
        }
    }

    /// True when no byte reached any instance, so the client may safely send the request again.
    pub fn retry_safe(&self) -> bool {
        !matches!(self, ProxyError::Exchange(_))
    }

    /// The response petrel sends for this error.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<Body> {
        let mut r = plain(self.status(), format!("{self}\n"), request_id);
        let h = r.headers_mut();
        if matches!(
            self,
            ProxyError::AtCapacity(_)
                | ProxyError::Unreachable { .. }
                | ProxyError::TooManyRequests { .. }
                | ProxyError::SessionLookup { .. }
        ) {
            h.insert("retry-after", HeaderValue::from_static("1"));
        }
        if let ProxyError::Unauthorized(why) = self {
            // RFC 6750 §3: the scheme, and why the token was refused.
            let v = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                why.as_str()
            );
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(http::header::WWW_AUTHENTICATE, v);
            }
        }
        if matches!(self, ProxyError::MethodNotAllowed(_)) {
            // RFC 9110 §15.5.6: what petrel does pass on.
            h.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        let rid = HeaderValue::from_static("r");
        let r = ProxyError::AtCapacity("hello".into()).to_response(&rid);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(ProxyError::NoRoute("x".into()).status(), 404);
        let timeout = ProxyError::from(ExchangeError::Timeout("a".into()));
        assert_eq!(timeout.status(), 504);
        assert!(!timeout.retry_safe());
        assert!(ProxyError::AtCapacity("a".into()).retry_safe());
    }
}
