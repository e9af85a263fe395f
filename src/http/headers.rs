//! Header rewriting at the proxy boundary: hop-by-hop removal, SPEC §5 forwarding headers, anti-spoofing.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE, VIA,
};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1). `Trailer` is not
/// one of them (RFC 9110 §6.6.2): it announces the trailer fields, and hyper's HTTP/1.1 server
/// sends only the trailers it names. The standard names compare as `http`'s enum, without a
/// string; only a name outside that set is compared as text.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == CONNECTION
        || *name == TE
        || *name == TRANSFER_ENCODING
        || *name == PROXY_AUTHENTICATE
        || *name == PROXY_AUTHORIZATION
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Removes every header whose name is `doomed`, found in one pass over the keys: a request that
/// carries none of them costs no lookup (and no allocation) at all.
fn strip_where(h: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = h.keys().filter(|n| doomed(n)).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

/// Removes hop-by-hop headers and any named in `Connection`. With `keep_upgrade`, `Upgrade` and a
/// `Connection: upgrade` survive (a WebSocket handshake being passed on).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the fields, no lookup: most messages carry none of these, or only
    // `Connection: keep-alive`. `keep-alive` goes anyway and `upgrade` follows `keep_upgrade`:
    // the usual values cost no parse and no allocation. (`close` is parsed: a field named
    // `Close` must go too, RFC 9110 §7.6.1; the name is reserved for that reason, §16.3.2.2.)
    let mut named: Vec<HeaderName> = Vec::new();
    let (mut any, mut drop_length) = (false, false);
    let mut trailers_ok: Option<bool> = None; // from the first `TE` field, as `get` reads it
    for (n, v) in h.iter() {
        if *n == CONNECTION {
            any = true;
            let tokens = v.to_str().ok().into_iter().flat_map(|v| v.split(','));
            named.extend(
                tokens
                    .map(str::trim)
                    .filter(|t| {
                        !["keep-alive", "upgrade"]
                            .iter()
                            .any(|c| t.eq_ignore_ascii_case(c))
                    })
                    .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
            );
        } else if *n == TE {
            any = true;
            trailers_ok.get_or_insert_with(|| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        } else if *n == TRANSFER_ENCODING {
            any = true;
            drop_length = true;
        } else if *n == UPGRADE {
            any |= !keep_upgrade;
        } else {
            any |= is_hop_by_hop(n);
        }
    }
    if any {
        // Fields that frame or route the message stay whatever `Connection` names: dropping
        // Host or Content-Length because a client listed them would break the message, not a
        // hop.
        let keep = |n: &HeaderName| *n == http::header::HOST || *n == http::header::CONTENT_LENGTH;
        strip_where(h, |n| {
            is_hop_by_hop(n)
                || if *n == UPGRADE {
                    !keep_upgrade
                } else {
                    named.contains(n) && !keep(n)
                }
        });
    }
    if drop_length {
        // RFC 9112 §6.3: with Transfer-Encoding, Content-Length means nothing and must go.
        h.remove(http::header::CONTENT_LENGTH);
    }
    if trailers_ok == Some(true) {
        h.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Cleans a trailer section before it is passed on: connection-specific fields (and those
/// `Connection` names) belong to one hop, and framing and routing fields cannot be acted on
/// after the content (RFC 9110 §6.5.1, §7.6.1; RFC 9113 §8.2.2 makes them malformed in HTTP/2,
/// so one left in would reset the stream). They are dropped, never the message.
pub fn sanitize_trailers(h: &mut HeaderMap) {
    strip_hop_by_hop(h, false);
    for n in [
        TE,
        http::header::CONTENT_LENGTH,
        http::header::HOST,
        http::header::TRAILER,
    ] {
        h.remove(n);
    }
    strip_prefixed(h, "petrel-internal-");
}

/// Removes every header whose name starts with `prefix` (lowercase).
pub fn strip_prefixed(h: &mut HeaderMap, prefix: &str) {
    strip_where(h, |n| n.as_str().starts_with(prefix));
}

/// Fly's names for what petrel adds or reads (forwarding, replay), never taken from a client or
/// passed from an instance to a client: an app that came from Fly trusts them.
pub const FLY_OWN: [&str; 8] = [
    "fly-client-ip",
    "fly-region",
    "fly-request-id",
    "fly-forwarded-port",
    "fly-replay",
    "fly-replay-src",
    "fly-replay-failed",
    "fly-preferred-instance-unavailable",
];

/// Removes every `petrel-*` header: the namespace is petrel's own, so nothing a client or an
/// instance sends under it is trusted or passed on. The `fly-*` routing headers and Fly's names
/// of petrel's own headers ([`FLY_OWN`]) go too.
pub fn strip_internal(h: &mut HeaderMap) {
    strip_where(h, |n| {
        let n = n.as_str();
        n.starts_with("petrel-")
            || (n.starts_with("fly-")
                && (crate::balance::ROUTING_HEADERS.contains(&n) || FLY_OWN.contains(&n)))
    });
}

/// What the edge knows about where a request came from.
pub struct Forwarded<'a> {
    /// The client's IP address as a header value (made once per connection).
    pub client_ip: &'a HeaderValue,
    /// The listener's port as a header value (`X-Forwarded-Port`, made once per connection).
    pub local_port: &'a HeaderValue,
    /// "http" or "https".
    pub proto: &'static str,
    /// This node's region as a header value (made once per node).
    pub region: &'a HeaderValue,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// "1.1" or "2".
    pub via_version: &'static str,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const PETREL_CLIENT_IP: HeaderName = HeaderName::from_static("petrel-client-ip");
const PETREL_EDGE_REGION: HeaderName = HeaderName::from_static("petrel-edge-region");
/// The request id's field (SPEC §5), to the instance and back to the client. A name made once:
/// inserting by a `&str` parses the name on every request.
pub const PETREL_REQUEST_ID: HeaderName = HeaderName::from_static("petrel-request-id");
/// The request id's field under `header_names = "fly"` (Fly's `fly-request-id`).
pub const FLY_REQUEST_ID: HeaderName = HeaderName::from_static("fly-request-id");
const X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");

/// The SPEC §5 fields the edge adds to a request, made once and written into each attempt:
/// into a copy of its header map for hyper's clients and the backhaul ([`Forwarding::apply`]),
/// or straight after the client's fields by petrel's own HTTP/1.1 client
/// ([`Forwarding::fields`]), which then copies no map at all.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// `X-Forwarded-For`: the client's list, if it sent one, then the client's IP.
    xff: HeaderValue,
    /// `Via` (RFC 9110 §7.6.3): the client's list, if any, then `<version> petrel`.
    via: HeaderValue,
    client_ip: HeaderValue,
    region: HeaderValue,
    /// Marked sensitive: new for every request, indexing it in HPACK's table would only evict
    /// useful entries.
    request_id: HeaderValue,
    proto: HeaderValue,
    port: HeaderValue,
}

impl Forwarding {
    /// The fields for a request whose client headers are `h`. The client's own
    /// `X-Forwarded-For` and `Via` are taken into the new values; they and every client copy of
    /// the other fields leave `h`, and so does its `X-Forwarded-Ssl`: Rack and Rails read
    /// `X-Forwarded-Ssl: on` as https, never a client's word for it (apps with Fly's header
    /// names get petrel's own, as Fly sends it).
    pub fn of(h: &mut HeaderMap, f: &Forwarded<'_>) -> Self {
        // What the client sent of these, in one pass without a lookup: the usual request sent
        // none of them.
        static REPLACED: [HeaderName; 6] = [
            X_FORWARDED_SSL,
            X_FORWARDED_PROTO,
            X_FORWARDED_PORT,
            PETREL_CLIENT_IP,
            PETREL_EDGE_REGION,
            PETREL_REQUEST_ID,
        ];
        let (mut has_xff, mut has_via, mut has_replaced) = (false, false, false);
        for n in h.keys() {
            has_xff |= *n == X_FORWARDED_FOR;
            has_via |= *n == VIA;
            has_replaced |= REPLACED.contains(n);
        }
        // RFC 9110 §7.6.3: the received protocol's version, then this proxy's name.
        let mine: HeaderValue = match f.via_version {
            "2" => HeaderValue::from_static("2 petrel"),
            "1.1" => HeaderValue::from_static("1.1 petrel"),
            "1.0" => HeaderValue::from_static("1.0 petrel"),
            other => HeaderValue::from_str(&format!("{other} petrel"))
                .unwrap_or(HeaderValue::from_static("1.1 petrel")),
        };
        // Values made once (per connection, per node) are cloned, not formatted and checked again.
        let xff = match has_xff {
            true => joined(h, &X_FORWARDED_FOR, f.client_ip),
            false => f.client_ip.clone(),
        };
        let via = match has_via {
            true => joined(h, &VIA, &mine),
            false => mine,
        };
        if has_replaced {
            for n in &REPLACED {
                h.remove(n);
            }
        }
        let mut request_id = f.request_id.clone();
        request_id.set_sensitive(true);
        Self {
            xff,
            via,
            client_ip: f.client_ip.clone(),
            region: f.region.clone(),
            request_id,
            proto: HeaderValue::from_static(f.proto),
            port: f.local_port.clone(),
        }
    }

    /// The fields, names and values, in the order they are written.
    pub fn fields(&self) -> [(HeaderName, &HeaderValue); 7] {
        [
            (X_FORWARDED_FOR, &self.xff),
            (VIA, &self.via),
            (PETREL_CLIENT_IP, &self.client_ip),
            (PETREL_EDGE_REGION, &self.region),
            (PETREL_REQUEST_ID, &self.request_id),
            (X_FORWARDED_PROTO, &self.proto),
            (X_FORWARDED_PORT, &self.port),
        ]
    }

    /// Sets each field in `h`, replacing any copy there.
    pub fn apply(&self, h: &mut HeaderMap) {
        // Room for all of them in one growth, not one per doubling.
        h.reserve(7);
        for (name, value) in self.fields() {
            h.insert(name, value.clone());
        }
    }
}

/// The client's list elements of `name`, removed from `h`, joined with `, ` and then `mine`;
/// empty elements are left out (RFC 9110 §5.6.1: a sender must not generate them), and `mine`
/// stands alone if the rest cannot make a valid value.
fn joined(h: &mut HeaderMap, name: &HeaderName, mine: &HeaderValue) -> HeaderValue {
    let mut all: Vec<u8> = Vec::new();
    let elements = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    for e in elements {
        all.extend_from_slice(e.as_bytes());
        all.extend_from_slice(b", ");
    }
    all.extend_from_slice(mine.as_bytes());
    h.remove(name);
    HeaderValue::from_bytes(&all).unwrap_or_else(|_| mine.clone())
}

/// Appends `mine` (`"<protocol> petrel"`) to a response's `Via`, after any entries it has.
pub fn append_via(h: &mut HeaderMap, mine: &'static str) {
    let mut entry = match h.entry(VIA) {
        http::header::Entry::Vacant(v) => {
            v.insert(HeaderValue::from_static(mine));
            return;
        }
        http::header::Entry::Occupied(o) => o,
    };
    let mut all: Vec<u8> = Vec::new();
    for v in entry.iter() {
        all.extend_from_slice(v.as_bytes());
        all.extend_from_slice(b", ");
    }
    all.extend_from_slice(mine.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&all) {
        entry.insert(v);
    }
}

/// Refuses request heads that two parsers could frame differently (request smuggling): both
/// `Content-Length` and `Transfer-Encoding`, a transfer coding other than `chunked` (petrel
/// decodes no other, RFC 9112 §6.1), or more than one `Host`. (hyper itself refuses conflicting
/// lengths, bad `Transfer-Encoding` lists, obs-fold and malformed fields.)
pub fn ambiguous_framing(h: &HeaderMap) -> Option<&'static str> {
    let counts = FramingFields::of(h);
    if counts.transfer_encoding > 0 && counts.content_length > 0 {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if counts.transfer_encoding > 0 && !only_chunked(h) {
        return Some("a transfer coding other than chunked");
    }
    if counts.host > 1 {
        return Some("more than one Host header");
    }
    None
}

/// How many fields of a message frame or route it, counted in one pass without a lookup: most
/// messages have one `Host`, one `Content-Length` or none, and need no further look.
#[derive(Debug, Default)]
struct FramingFields {
    transfer_encoding: usize,
    content_length: usize,
    /// A `Content-Length` value is a list (`5, 5`).
    listed_length: bool,
    /// The length every `Content-Length` value states, if they all state one.
    length: Option<u64>,
    /// A `Content-Length` value that is not a number or a list of equal ones ([`one_length`]).
    bad_length: bool,
    /// Two `Content-Length` values that state different lengths.
    conflicting_lengths: bool,
    host: usize,
}

impl FramingFields {
    fn of(h: &HeaderMap) -> Self {
        let mut c = Self::default();
        for (n, v) in h.iter() {
            if *n == TRANSFER_ENCODING {
                c.transfer_encoding += 1;
            } else if *n == http::header::CONTENT_LENGTH {
                c.content_length += 1;
                c.listed_length |= v.as_bytes().contains(&b',');
                match (one_length(v.as_bytes()), c.length) {
                    (None, _) => c.bad_length = true,
                    (Some(n), Some(before)) if n != before => c.conflicting_lengths = true,
                    (Some(n), _) => c.length = Some(n),
                }
            } else if *n == http::header::HOST {
                c.host += 1;
            }
        }
        c
    }
}

/// The one length a `Content-Length` value states (RFC 9110 §8.6): `1*DIGIT`, or a list of equal
/// such values (`5, 5`); `None` for anything else (`+5`, `5,`, `5, 6`, past `u64`).
pub fn one_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Why a request's target cannot be forwarded, if it cannot (answered `400`): the authority
/// form (`GET host:80`) belongs to `CONNECT` alone (RFC 9112 §3.2.3), and a target is ASCII
/// (RFC 3986 §2; the URI parser lets raw UTF-8 through, which an origin would read in its own
/// way, as HAProxy also refuses).
pub fn malformed_target(method: &http::Method, uri: &http::Uri) -> Option<&'static str> {
    if uri.scheme().is_none() && uri.authority().is_some() && method != http::Method::CONNECT {
        return Some("an authority-form target outside CONNECT");
    }
    let pq = uri.path_and_query().map_or("", |p| p.as_str());
    if pq == "*" && method != http::Method::OPTIONS {
        return Some("an asterisk-form target outside OPTIONS"); // RFC 9112 §3.2.4
    }
    if !pq.is_ascii() {
        return Some("a request-target that is not ASCII");
    }
    None
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host` is refused (`400`), even in absolute form.
pub fn missing_host(version: http::Version, h: &HeaderMap) -> Option<&'static str> {
    (version == http::Version::HTTP_11 && !h.contains_key(http::header::HOST))
        .then_some("an HTTP/1.1 request without Host")
}

/// What `Max-Forwards` says of a `TRACE` or `OPTIONS` request (RFC 9110 §7.6.2).
#[derive(Debug, PartialEq, Eq)]
pub enum MaxForwards {
    /// Pass it on (the header, if any, was decremented).
    Forward,
    /// The count is 0: this proxy is the final recipient and must answer itself.
    AnswerHere,
}

/// Checks and decrements `Max-Forwards` on `TRACE` and `OPTIONS`; other methods ignore it.
pub fn max_forwards(method: &http::Method, h: &mut HeaderMap) -> MaxForwards {
    if *method != http::Method::TRACE && *method != http::Method::OPTIONS {
        return MaxForwards::Forward;
    }
    let name = http::header::MAX_FORWARDS;
    match h
        .get(&name)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
    {
        Some(0) => MaxForwards::AnswerHere,
        Some(n) => {
            h.insert(name, HeaderValue::from(n - 1));
            MaxForwards::Forward
        }
        None => MaxForwards::Forward,
    }
}

/// True when `Transfer-Encoding` is absent or exactly `chunked`.
fn only_chunked(h: &HeaderMap) -> bool {
    let mut codings = h
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(c), None) => c.eq_ignore_ascii_case("chunked"),
        _ => false,
    }
}

/// Checks an instance's response framing before it is passed on: a transfer coding other than
/// `chunked` would reach the client undeclared (petrel decodes none), and `Content-Length`
/// values must agree (RFC 9110 §8.6; several equal ones become one). A `204` (or `1xx`) carries
/// no length at all (RFC 9110 §8.6, RFC 9112 §6.1), whatever a hop added. `Err` names the fault.
pub fn response_framing(status: http::StatusCode, h: &mut HeaderMap) -> Result<(), &'static str> {
    if status == http::StatusCode::NO_CONTENT || status.is_informational() {
        h.remove(http::header::CONTENT_LENGTH);
        h.remove(http::header::TRANSFER_ENCODING);
        return Ok(());
    }
    let counts = FramingFields::of(h);
    if counts.transfer_encoding > 0 && !only_chunked(h) {
        return Err("a transfer coding other than chunked");
    }
    if counts.bad_length {
        return Err("a Content-Length that is not a number"); // `+5`: u64's parser takes it
    }
    if counts.conflicting_lengths {
        return Err("conflicting Content-Length values");
    }
    if let (true, Some(n)) = (
        counts.content_length > 1 || counts.listed_length,
        counts.length,
    ) {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n)); // several equal: one
    }
    Ok(())
}

/// True for a request asking to switch protocols (WebSocket and friends). `h2c` is not one:
/// RFC 9113 retired that upgrade, and petrel speaks h2 to clients that ask for it directly.
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    if !h.contains_key(UPGRADE) {
        return false; // the usual request: one lookup
    }
    let h2c_only = h.get_all(UPGRADE).iter().all(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').all(|t| t.trim().eq_ignore_ascii_case("h2c")))
    });
    !h2c_only
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
    fn response_lengths_must_be_numbers_that_agree() {
        let framed = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(http::header::CONTENT_LENGTH, v.parse().unwrap());
            }
            response_framing(http::StatusCode::OK, &mut h).map(|()| {
                let all: Vec<_> = h.get_all(http::header::CONTENT_LENGTH).iter().collect();
                all.iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(framed(&["5"]), Ok(vec!["5".to_string()]));
        assert_eq!(framed(&["5", "5"]), Ok(vec!["5".to_string()]));
        assert_eq!(framed(&["5, 5"]), Ok(vec!["5".to_string()]));
        assert!(framed(&["5", "6"]).is_err());
        assert!(framed(&["+5"]).is_err(), "RFC 9110 §8.6: 1*DIGIT");
        assert!(framed(&["5,"]).is_err());
        assert_eq!(framed(&[]), Ok(vec![]));
    }

    #[test]
    fn targets_in_authority_form_or_not_ascii_are_refused() {
        let t = |m: &str, u: &str| {
            malformed_target(&m.parse().unwrap(), &u.parse::<http::Uri>().unwrap())
        };
        assert!(t("GET", "host:80").is_some());
        assert_eq!(t("CONNECT", "host:443"), None);
        assert_eq!(t("GET", "http://host:80/x"), None);
        assert_eq!(t("GET", "/a%C3%A9?q=1"), None);
        assert!(t("GET", "/caf\u{e9}").is_some());
        assert!(t("GET", "/x?caf\u{e9}").is_some());
        assert_eq!(t("OPTIONS", "*"), None);
        assert!(t("GET", "*").is_some());
    }

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
    fn a_field_named_close_goes_when_connection_names_it() {
        // RFC 9110 §7.6.1, §16.3.2.2: "Close" is reserved so that a proxy drops it.
        let mut h = map(&[
            ("connection", "close"),
            ("close", "secret"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
        let mut h = map(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn internal_and_routing_headers_go_in_one_pass_others_stay() {
        let mut h = map(&[
            ("petrel-internal-load", "3"),
            ("petrel-anything", "x"),
            ("fly-prefer-region", "iad"),
            ("petrel-force-instance-id", "i"),
            ("fly-request-id", "spoofed"),
            ("fly-client-ip", "1.2.3.4"),
            ("fly-replay", "region=x"),
            ("fly-app-specific", "keep"),
            ("accept", "*/*"),
        ]);
        strip_internal(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "fly-app-specific"]);
    }

    #[test]
    fn max_forwards_counts_down_on_trace_and_options_only() {
        let mut h = map(&[("max-forwards", "3")]);
        assert_eq!(
            max_forwards(&http::Method::OPTIONS, &mut h),
            MaxForwards::Forward
        );
        assert_eq!(h["max-forwards"], "2");
        assert_eq!(
            max_forwards(&http::Method::GET, &mut h),
            MaxForwards::Forward
        );
        assert_eq!(h["max-forwards"], "2", "GET ignores it");
        let mut h = map(&[("max-forwards", "0")]);
        assert_eq!(
            max_forwards(&http::Method::TRACE, &mut h),
            MaxForwards::AnswerHere
        );
        assert_eq!(
            max_forwards(&http::Method::OPTIONS, &mut HeaderMap::new()),
            MaxForwards::Forward
        );
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
            ("x-forwarded-port", "1"),
            ("x-forwarded-port", "2"),
            ("via", "1.0 corp"),
        ]);
        strip_internal(&mut h);
        let f = Forwarding::of(
            &mut h,
            &Forwarded {
                client_ip: &HeaderValue::from_static("127.0.0.9"),
                local_port: &HeaderValue::from_static("8080"),
                proto: "http",
                region: &HeaderValue::from_static("iad"),
                request_id: &HeaderValue::from_static("r1"),
                via_version: "1.1",
            },
        );
        for n in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-port",
            "via",
        ] {
            assert!(!h.contains_key(n), "the client's {n} leaves its fields");
        }
        f.apply(&mut h);
        assert_eq!(h["petrel-client-ip"], "127.0.0.9");
        assert_eq!(h["petrel-request-id"], "r1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        let ports: Vec<_> = h.get_all("x-forwarded-port").iter().collect();
        assert_eq!(ports, ["8080"], "the client's copies are replaced");
        assert_eq!(h["via"], "1.0 corp, 1.1 petrel");
        assert!(!h.contains_key("fly-force-instance-id"));
        assert_eq!(h["petrel-edge-region"], "iad");
        // RFC 9110 §7.6.3: the received version comes first, whatever it is.
        for (version, via) in [("2", "2 petrel"), ("1.0", "1.0 petrel"), ("3", "3 petrel")] {
            let mut h = HeaderMap::new();
            let f = Forwarding::of(
                &mut h,
                &Forwarded {
                    client_ip: &HeaderValue::from_static("::1"),
                    local_port: &HeaderValue::from_static("443"),
                    proto: "https",
                    region: &HeaderValue::from_static("iad"),
                    request_id: &HeaderValue::from_static("r2"),
                    via_version: version,
                },
            );
            f.apply(&mut h);
            assert_eq!(h["via"], via);
            assert_eq!(h["x-forwarded-for"], "::1");
            assert!(h["petrel-request-id"].is_sensitive());
        }
    }
}
