//! The `101 Switching Protocols` petrel writes itself when a client re-attaches to a session it
//! holds (RFC 6455 §4.2.2): the instance's WebSocket is already open, so petrel answers the
//! handshake in its place.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::Attached;
use crate::body::{empty, Body};

/// `Petrel-Session-Received`: client→instance messages the instance was given.
pub const RECEIVED: &str = "petrel-session-received";
/// `Petrel-Session-Gap`: missed messages no longer held.
pub const GAP: &str = "petrel-session-gap";

/// The 101 for a client that re-attaches, given its request's headers and the subprotocol the
/// instance chose when the session began; [`set_counts`] adds the session's counts. `Err` (a
/// `400` reason) when the request is not a valid WebSocket handshake.
pub fn switching(
    request: &HeaderMap,
    protocol: Option<&HeaderValue>,
) -> Result<Response<Body>, &'static str> {
    let key = request
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or("a WebSocket handshake needs Sec-WebSocket-Key")?;
    if request
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v != "13")
    {
        return Err("only WebSocket version 13 is spoken");
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| "unusable Sec-WebSocket-Key")?,
    );
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    Ok(r)
}

/// Adds `Petrel-Session-Received` and, when some missed messages are no longer held,
/// `Petrel-Session-Gap` to a 101 from [`switching`].
pub fn set_counts<B>(resp: &mut Response<B>, counts: Attached) {
    let h = resp.headers_mut();
    h.insert(RECEIVED, HeaderValue::from(counts.received));
    if counts.gap > 0 {
        h.insert(GAP, HeaderValue::from(counts.gap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        let mut req = HeaderMap::new();
        req.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let mut r = switching(&req, None).unwrap();
        set_counts(
            &mut r,
            Attached {
                received: 3,
                gap: 0,
            },
        );
        assert_eq!(r.status(), 101);
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            r.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()[RECEIVED], "3");
        assert!(r.headers().get(GAP).is_none());
        set_counts(
            &mut r,
            Attached {
                received: 0,
                gap: 5,
            },
        );
        assert_eq!(r.headers()[GAP], "5");
        assert!(switching(&HeaderMap::new(), None).is_err());
    }
}
