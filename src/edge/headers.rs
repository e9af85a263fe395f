//! Header rewriting at the proxy boundary: hop-by-hop removal, SPEC §5 forwarding headers, anti-spoofing.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, UPGRADE, VIA};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers and any named in `Connection`. With `keep_upgrade`, `Upgrade` and a
/// `Connection: upgrade` survive (a WebSocket handshake being passed on).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let trailers_ok = h
        .get("te")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    for n in named {
        if !(keep_upgrade && n == UPGRADE) {
            h.remove(&n);
        }
    }
    if trailers_ok {
        h.insert("te", HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(UPGRADE);
    }
}

/// Removes every header whose name starts with `prefix` (lowercase).
pub fn strip_prefixed(h: &mut HeaderMap, prefix: &str) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// Removes every `petrel-*` header: the namespace is petrel's own, so nothing a client or an
/// instance sends under it is trusted or passed on.
pub fn strip_internal(h: &mut HeaderMap) {
    strip_prefixed(h, "petrel-");
    for n in crate::balance::ROUTING_HEADERS {
        h.remove(n);
    }
}

/// What the edge knows about where a request came from.
pub struct Forwarded<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's port.
    pub local_port: u16,
    /// "http" or "https".
    pub proto: &'static str,
    /// This node's region.
    pub region: &'a str,
    /// The request id.
    pub request_id: &'a str,
    /// "1.1" or "2".
    pub via_version: &'static str,
}

/// Adds SPEC §5 headers (after `strip_internal` removed client copies).
pub fn add_forwarding(h: &mut HeaderMap, f: &Forwarded<'_>) {
    let ip = f.peer.ip().to_string();
    let xff = {
        let prior: Vec<&str> = h
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            ip.clone()
        } else {
            format!("{}, {ip}", prior.join(", "))
        }
    };
    let via = {
        let prior: Vec<&str> = h
            .get_all(VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mine = format!("{} petrel", f.via_version);
        if prior.is_empty() {
            mine
        } else {
            format!("{}, {mine}", prior.join(", "))
        }
    };
    let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    set(h, "x-forwarded-for", &xff);
    set(h, "via", &via);
    set(h, "petrel-client-ip", &ip);
    set(h, "petrel-edge-region", f.region);
    set(h, "petrel-request-id", f.request_id);
    set(h, "x-forwarded-proto", f.proto);
    set(h, "x-forwarded-port", &f.local_port.to_string());
}

/// Refuses request heads that two parsers could frame differently (request smuggling): both
/// `Content-Length` and `Transfer-Encoding`, or more than one `Host`. (hyper itself refuses
/// conflicting lengths, bad `Transfer-Encoding` lists, obs-fold and malformed fields.)
pub fn ambiguous_framing(h: &HeaderMap) -> Option<&'static str> {
    if h.contains_key(http::header::TRANSFER_ENCODING)
        && h.contains_key(http::header::CONTENT_LENGTH)
    {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if h.get_all(http::header::HOST).iter().count() > 1 {
        return Some("more than one Host header");
    }
    None
}

/// True for an HTTP/1.1 request asking to switch protocols (WebSocket and friends).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE)
        && h.get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_framing_is_named() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        assert_eq!(ambiguous_framing(&h), None);
        h.append("host", "b".parse().unwrap());
        assert_eq!(ambiguous_framing(&h), Some("more than one Host header"));
        let mut h = HeaderMap::new();
        h.insert("content-length", "5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        assert!(ambiguous_framing(&h).unwrap().contains("Transfer-Encoding"));
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(h.contains_key("accept") && h["te"] == "trailers");
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn spoofed_headers_are_replaced_and_xff_appended() {
        let mut h = map(&[
            ("petrel-client-ip", "1.2.3.4"),
            ("petrel-request-id", "evil"),
            ("fly-force-instance-id", "x"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        strip_internal(&mut h);
        h.remove("x-forwarded-proto");
        add_forwarding(
            &mut h,
            &Forwarded {
                peer: "127.0.0.9:5000".parse().unwrap(),
                local_port: 8080,
                proto: "http",
                region: "iad",
                request_id: "r1",
                via_version: "1.1",
            },
        );
        assert_eq!(h["petrel-client-ip"], "127.0.0.9");
        assert_eq!(h["petrel-request-id"], "r1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 petrel");
        assert!(!h.contains_key("fly-force-instance-id"));
    }
}
