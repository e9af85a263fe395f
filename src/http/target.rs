//! The form of a request as an instance receives it: request target, `Host` and version
//! (RFC 9112 §3.2, RFC 9113 §8.3.1 and §8.2.3), whatever the client spoke.

use std::borrow::Cow;

use http::header::{COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, Version};

/// How an app's instances take their requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceForm {
    /// HTTP/2 with prior knowledge (`h2_backend`, never for upgrades); else HTTP/1.1.
    pub h2: bool,
    /// The forwarding headers under Fly's names (`header_names = "fly"`).
    pub fly_names: bool,
}

impl InstanceForm {
    /// Frames `req` for such an instance: [`for_h2`] or [`for_http1`], then [`to_fly_names`].
    pub fn apply<B>(self, req: &mut Request<B>) {
        if self.h2 {
            for_h2(req);
        } else {
            for_http1(req);
        }
        if self.fly_names {
            to_fly_names(req.headers_mut());
        }
    }
}

/// petrel's forwarding header names and Fly's, in pairs (SPEC §5, Fly's "Request headers").
const FLY_NAMES: [(&str, &str); 3] = [
    ("petrel-client-ip", "fly-client-ip"),
    ("petrel-edge-region", "fly-region"),
    ("petrel-request-id", "fly-request-id"),
];

/// Renames the forwarding headers to Fly's (`Fly-Client-IP`, `Fly-Region`, `Fly-Request-Id`) and
/// adds `Fly-Forwarded-Port` beside `X-Forwarded-Port`, for apps that came from Fly.
pub fn to_fly_names(h: &mut HeaderMap) {
    for (ours, theirs) in FLY_NAMES {
        if let Some(v) = h.remove(ours) {
            h.insert(HeaderName::from_static(theirs), v);
        }
    }
    if let Some(port) = h.get("x-forwarded-port").cloned() {
        h.insert(HeaderName::from_static("fly-forwarded-port"), port);
    }
    let https = h
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes() == b"https");
    h.insert(
        HeaderName::from_static("x-forwarded-ssl"),
        HeaderValue::from_static(if https { "on" } else { "off" }),
    );
}

/// Frames `req` for an HTTP/1.1 hop: origin-form target (`/path?query`, or `*`), and a `Host`
/// that is the target's authority when the request carried one. That covers an HTTP/2 client's
/// `:authority` (RFC 9113 §8.3.1) and an absolute-form target whose authority overrides a
/// different `Host` (RFC 9112 §3.2.2: "ignore the received Host and replace it"). Split
/// `Cookie` fields, legal in HTTP/2, are joined with `"; "` (RFC 9113 §8.2.3), since an HTTP/1.1
/// origin may accept only one (RFC 6265 §5.4).
pub fn for_http1<B>(req: &mut Request<B>) {
    if let Some(host) = authority_host(req.uri()) {
        if let Ok(v) = HeaderValue::from_str(host) {
            req.headers_mut().insert(HOST, v);
        }
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        if let Ok(uri) = origin_form(req.uri()).parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    join_cookies(req.headers_mut());
    *req.version_mut() = Version::HTTP_11;
}

/// The `Host` an HTTP/1.1 hop gets for `uri` when it has an authority (an absolute-form target, an
/// HTTP/2 client's `:authority`): the authority without userinfo (RFC 9110 §4.2.4).
pub fn authority_host(uri: &Uri) -> Option<&str> {
    let authority = uri.authority()?.as_str();
    Some(authority.rsplit('@').next().unwrap_or_default())
}

/// The origin-form target of `uri` for an HTTP/1.1 hop (RFC 9112 §3.2.1): its path and query as
/// they are (`/p?q`, or `*`), with `/` for an empty path (`http://host?q` → `/?q`).
///
/// RFC 9112 §3.2.4 would have the last proxy send `OPTIONS http://host` as `OPTIONS *`; the `http`
/// crate's parser already reads that empty path as `/`, so it goes as `OPTIONS /`.
pub fn origin_form(uri: &Uri) -> Cow<'_, str> {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if pq.starts_with('/') || pq == "*" {
        return Cow::Borrowed(pq);
    }
    // An empty path before a query (`Uri::path` says `/` for it; this string does not).
    match uri.query() {
        None => Cow::Borrowed("/"),
        Some(q) => Cow::Owned(format!("/?{q}")),
    }
}

/// hyper's HTTP/1.1 client sends no body at all for a `GET`, `HEAD` or `CONNECT` whose length
/// it does not know (it assumes there is none), so a client's `GET` with a chunked body, or an
/// HTTP/2 `GET` with DATA and no `content-length`, would lose its content (RFC 9110 §9.3.1 lets
/// a GET have one; Elasticsearch's search API uses it). Such a body is declared chunked.
pub fn declare_unsized_body<B: http_body::Body>(req: &mut Request<B>) {
    let quiet = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::CONNECT
    );
    let h = req.headers();
    if quiet
        && !h.contains_key(http::header::CONTENT_LENGTH)
        && !h.contains_key(http::header::TRANSFER_ENCODING)
        && !req.body().is_end_stream()
    {
        req.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// Frames `req` for an HTTP/2 hop: the authority travels in `:authority` (taken from `Host` when
/// the target was in origin-form) and `Host` is removed (RFC 9113 §8.3.1).
pub fn for_h2<B>(req: &mut Request<B>) {
    if req.uri().authority().is_none() {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(u) = Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(pq)
            .build()
        {
            *req.uri_mut() = u;
        }
    }
    req.headers_mut().remove(HOST);
    *req.version_mut() = Version::HTTP_2;
}

/// One `Cookie` field from several, in order, joined with `"; "`.
/// An empty `Cookie` field is dropped: it would leave an empty pair in the joined one (RFC 6265
/// §4.2.1 has none).
fn join_cookies(h: &mut http::HeaderMap) {
    let mut all = h.get_all(COOKIE).iter();
    match (all.next(), all.next()) {
        (None, _) => return,
        (Some(one), None) if !one.is_empty() => return, // the usual case: no allocation
        _ => {}
    }
    let mut joined: Vec<u8> = Vec::new();
    for v in h.get_all(COOKIE).iter().filter(|v| !v.is_empty()) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if joined.is_empty() {
        h.remove(COOKIE);
    } else if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().uri(uri);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn absolute_form_sets_host_from_the_target() {
        let mut r = req("http://app.example/a?b=1", &[("host", "other")]);
        for_http1(&mut r);
        assert_eq!(r.uri(), "/a?b=1");
        assert_eq!(r.headers()["host"], "app.example");
        assert_eq!(r.headers().get_all("host").iter().count(), 1);
        assert_eq!(r.version(), Version::HTTP_11);
    }

    #[test]
    fn h2_authority_becomes_host_and_cookies_are_joined() {
        let mut r = req(
            "https://app.example:8443/x",
            &[
                ("cookie", "a=1"),
                ("cookie", ""),
                ("cookie", "b=2"),
                ("accept", "*/*"),
            ],
        );
        *r.version_mut() = Version::HTTP_2;
        for_http1(&mut r);
        assert_eq!(r.uri(), "/x");
        assert_eq!(r.headers()["host"], "app.example:8443");
        let cookies: Vec<_> = r.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }

    #[test]
    fn an_empty_path_is_slash() {
        let mut r = req("http://a.example?x=1", &[]);
        for_http1(&mut r);
        assert_eq!(r.uri(), "/?x=1");
        let mut r = req("http://a.example", &[]);
        for_http1(&mut r);
        assert_eq!(r.uri(), "/");
        let mut r = req("http://a.example/p?q", &[]);
        for_http1(&mut r);
        assert_eq!(r.uri(), "/p?q");
    }

    #[test]
    fn origin_form_keeps_host_and_asterisk_stays() {
        let mut r = req("/p", &[("host", "h")]);
        for_http1(&mut r);
        assert_eq!(r.uri(), "/p");
        assert_eq!(r.headers()["host"], "h");
        let mut r = req("*", &[("host", "h")]);
        for_http1(&mut r);
        assert_eq!(r.uri(), "*");
    }

    #[test]
    fn fly_apps_get_fly_s_names() {
        let mut r = req(
            "/",
            &[
                ("host", "h"),
                ("petrel-client-ip", "1.2.3.4"),
                ("petrel-edge-region", "iad"),
                ("petrel-request-id", "r1"),
                ("x-forwarded-port", "443"),
            ],
        );
        InstanceForm {
            h2: false,
            fly_names: true,
        }
        .apply(&mut r);
        let h = r.headers();
        assert_eq!(h["fly-client-ip"], "1.2.3.4");
        assert_eq!(h["fly-region"], "iad");
        assert_eq!(h["fly-request-id"], "r1");
        assert_eq!(h["fly-forwarded-port"], "443");
        assert!(h.keys().all(|k| !k.as_str().starts_with("petrel-")));
    }

    #[test]
    fn h2_hop_moves_host_into_the_authority() {
        let mut r = req("/p?q", &[("host", "app.example")]);
        for_h2(&mut r);
        assert_eq!(r.uri(), "http://app.example/p?q");
        assert!(r.headers().get("host").is_none());
        assert_eq!(r.version(), Version::HTTP_2);
        let mut r = req("http://a.example/", &[("host", "b")]);
        for_h2(&mut r);
        assert_eq!(r.uri().authority().unwrap(), "a.example");
    }
}
