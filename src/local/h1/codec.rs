//! petrel's HTTP/1.1 client codec for instance connections, sans-IO: the request head out, the
//! response head in with its body framing (RFC 9112 §4–§7), and the chunked decoder (§7.1).
//! Parsing is `httparse`'s (the parser hyper uses); this file decides what the parts mean.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::http::headers::{one_length, Forwarding};

/// Fields in a response head (or trailer section) at most: hyper's default, and HAProxy's
/// `tune.http.maxhdr` (101).
pub const MAX_FIELDS: usize = 100;

/// Bytes of a response head at most: hyper's default read-buffer limit (8 KiB + 100 × 4 KiB).
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Bytes of a chunk-size line at most (its extensions included); a longer one is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// What went wrong on an instance connection. Every variant is the instance's doing (or the
/// network's); none is the client's.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The response head passed [`MAX_FIELDS`] fields or [`MAX_HEAD`] bytes.
    #[error("the instance's response head is too large (more than 100 fields, or over 400 KiB)")]
    HeadTooLarge,
    /// The response broke HTTP/1.1's grammar or framing rules.
    #[error("invalid response from the instance: {0}")]
    Invalid(&'static str),
    /// The connection ended before a byte of the response arrived (an idle connection the
    /// instance had closed, RFC 9112 §9.3.1).
    #[error("the instance closed the connection before answering")]
    ClosedBeforeResponse,
    /// The connection ended inside the response head or body.
    #[error("the instance closed the connection in the middle of its response")]
    Truncated,
    /// Reading or writing the socket failed.
    #[error("instance connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a `HEAD` response, `204`, `304`, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the instance closes the connection.
    Close,
}

/// A final response head, read and framed.
#[derive(Debug)]
pub struct Head {
    /// Status code (never 1xx).
    pub status: StatusCode,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: Version,
    /// The reason phrase, when it is not the status's canonical one.
    pub reason: Option<Bytes>,
    /// The fields as received (a `Content-Length` beside `Transfer-Encoding` is removed).
    pub headers: HeaderMap,
    /// How the body ends.
    pub framing: Framing,
    /// The connection may carry another request once this body has been read.
    pub reusable: bool,
}

/// What [`parse_head`] found at the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// An interim `1xx` answer (`100 Continue`, `103 Early Hints`), consumed and dropped as hyper
    /// drops them.
    Interim,
    /// The final head, consumed from the buffer.
    Final(Head),
}

/// A request head as petrel's HTTP/1.1 client writes it, borrowed from the request kept for
/// retries, so that an attempt copies no header map. The HTTP/1.1 form of the request
/// ([`crate::http::for_http1`]: origin-form target, the authority as `Host`, one `Cookie`) is
/// applied as the head is written.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// Origin-form target: `/path?query`, or `*`.
    pub target: Cow<'a, str>,
    /// Written as `Host` in place of every `Host` field of `headers`: the authority of an
    /// absolute-form target (RFC 9112 §3.2.2) or of an HTTP/2 client's `:authority` (RFC 9113
    /// §8.3.1), never its userinfo (RFC 9110 §4.2.4).
    pub host: Option<&'a str>,
    /// The fields, in order. `Transfer-Encoding` is left out (the request has no body, and hyper
    /// leaves it out of such a request too); several `Cookie` fields are written as one, joined
    /// with `"; "` (RFC 9113 §8.2.3), since an HTTP/1.1 origin may accept only one (RFC 6265 §5.4).
    pub headers: &'a HeaderMap,
    /// The edge's forwarding fields, written after `headers` (SPEC §5).
    pub forwarding: Option<&'a Forwarding>,
}

impl<'a> RequestHead<'a> {
    /// The HTTP/1.1 head of a request with this `method`, `uri` (origin-form, absolute-form or
    /// an HTTP/2 client's), `headers` and `forwarding` fields.
    pub fn of(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        forwarding: Option<&'a Forwarding>,
    ) -> Self {
        Self {
            method,
            target: crate::http::origin_form(uri),
            host: crate::http::authority_host(uri),
            headers,
            forwarding,
        }
    }
}

/// Writes `head` into `dst`, for a request without a body.
pub fn encode_head(head: &RequestHead<'_>, dst: &mut BytesMut) {
    let forwarding = head.forwarding.map(Forwarding::fields);
    let fields = |(n, v): (&HeaderName, &HeaderValue)| n.as_str().len() + v.len() + 4;
    let len = head.method.as_str().len()
        + head.target.len()
        + 13
        + head.host.map_or(0, |h| h.len() + 8)
        + head.headers.iter().map(fields).sum::<usize>()
        + forwarding
            .iter()
            .flatten()
            .map(|(n, v)| fields((n, v)))
            .sum::<usize>()
        + 2;
    dst.reserve(len);
    dst.put_slice(head.method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(head.target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    if let Some(host) = head.host {
        dst.put_slice(b"host: ");
        dst.put_slice(host.as_bytes());
        dst.put_slice(b"\r\n");
    }
    // A `Cookie` line stays open for the next `Cookie` value: a map yields one name's values
    // one after another.
    let mut cookie_open = false;
    for (name, value) in head.headers {
        if name == TRANSFER_ENCODING || (name == HOST && head.host.is_some()) {
            continue;
        }
        if name == COOKIE && value.is_empty() {
            continue; // an empty pair in the joined field otherwise (as `for_http1` drops it)
        }
        if name == COOKIE && cookie_open {
            dst.put_slice(b"; ");
            dst.put_slice(value.as_bytes());
            continue;
        }
        if cookie_open {
            dst.put_slice(b"\r\n");
        }
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        cookie_open = name == COOKIE;
        if !cookie_open {
            dst.put_slice(b"\r\n");
        }
    }
    if cookie_open {
        dst.put_slice(b"\r\n");
    }
    for (name, value) in forwarding.iter().flatten() {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
}

/// Parses the response head at the front of `buf` for a request of `method`; a whole head is
/// split off `buf` (its field values keep pointing into it, uncopied).
///
/// Errors: [`OriginError::HeadTooLarge`] past [`MAX_FIELDS`] fields (the byte limit is the
/// caller's, who knows how much it read), [`OriginError::Invalid`] for bad grammar, a `101` (no
/// upgrade was asked for), `Transfer-Encoding` in an HTTP/1.0 response, or an invalid or
/// conflicting `Content-Length`.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, OriginError> {
    // Left uninitialised: httparse writes only the fields it finds (100 empty fields cost more
    // to fill than a short head costs to parse).
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Err(OriginError::HeadTooLarge),
        Err(_) => return Err(OriginError::Invalid("malformed response head")),
    };
    let code = resp.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| OriginError::Invalid("bad status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(OriginError::Invalid(
            "101 to a request that asked for no upgrade",
        ));
    }
    if status.is_informational() {
        let _ = buf.split_to(len);
        return Ok(Parsed::Interim);
    }
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let reason = resp
        .reason
        .filter(|r| !r.is_empty() && status.canonical_reason() != Some(*r))
        .map(|r| Bytes::copy_from_slice(r.as_bytes()));
    // Where each field sits in the head, so the values can share its bytes once it is split off.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_FIELDS];
    let count = resp.headers.len();
    for (span, f) in spans.iter_mut().zip(resp.headers.iter()) {
        let name = f.name.as_ptr() as usize - base;
        let value = f.value.as_ptr() as usize - base;
        *span = (
            name as u32,
            (name + f.name.len()) as u32,
            value as u32,
            (value + f.value.len()) as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    // Room for the two fields the edge adds to every response (`Via` and the request id).
    let mut headers = HeaderMap::with_capacity(count + 2);
    // Which framing fields are present, noted on the way so absent ones cost no lookup.
    let mut seen = Seen::default();
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| OriginError::Invalid("bad field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| OriginError::Invalid("bad field value"))?;
        // A `Connection` field that says only `close` or `keep-alive` is this hop's and was read
        // here; not kept, the edge has nothing to strip (one that names other fields stays, so
        // that the edge removes them too, RFC 9110 §7.6.1).
        if seen.note(&name, value.as_bytes()) {
            headers.append(name, value);
        }
    }
    let (framing, mut reusable) = framing(status, method, version, &mut headers, seen)?;
    // HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with
    // `Connection: keep-alive` (RFC 9112 §9.3).
    reusable &= match version {
        Version::HTTP_10 => seen.keep_alive && !seen.close,
        _ => !seen.close,
    };
    Ok(Parsed::Final(Head {
        status,
        version,
        reason,
        headers,
        framing,
        reusable,
    }))
}

/// The framing fields a head has, noted as the fields are read, so that none is looked up again.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    transfer_encoding: bool,
    content_length: Length,
    /// `Connection` names `close`.
    close: bool,
    /// `Connection` names `keep-alive`.
    keep_alive: bool,
}

/// What the `Content-Length` fields of a head say together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// There is none.
    #[default]
    Absent,
    /// Every value states this length (a list of equal values is one length, RFC 9110 §8.6).
    Valid(u64),
    /// A value is not all digits, or two differ.
    Invalid,
}

impl Seen {
    /// Notes one field; false for a `Connection` field that names nothing but `close` and
    /// `keep-alive` (the caller need not keep it).
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == CONTENT_LENGTH {
            self.content_length = match (self.content_length, one_length(value)) {
                (Length::Absent, Some(n)) => Length::Valid(n),
                (Length::Valid(a), Some(n)) if a == n => Length::Valid(a),
                _ => Length::Invalid,
            };
        } else if name == CONNECTION {
            let mut others = false;
            for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                let (close, keep_alive) = (
                    t.eq_ignore_ascii_case(b"close"),
                    t.eq_ignore_ascii_case(b"keep-alive"),
                );
                self.close |= close;
                self.keep_alive |= keep_alive;
                others |= !(close || keep_alive || t.is_empty());
            }
            return others;
        }
        true
    }
}

/// The body's framing (RFC 9112 §6.3, in its order) and whether it leaves the connection usable.
fn framing(
    status: StatusCode,
    method: &Method,
    version: Version,
    headers: &mut HeaderMap,
    seen: Seen,
) -> Result<(Framing, bool), OriginError> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    let last_coding = match seen.transfer_encoding {
        true => headers.get_all(TRANSFER_ENCODING).iter().next_back(),
        false => None,
    };
    if let Some(last) = last_coding {
        if version == Version::HTTP_10 {
            return Err(OriginError::Invalid(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        let chunked = last
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if !chunked {
            return Ok((Framing::Close, false));
        }
        // Both: Transfer-Encoding wins, the length goes, and the connection is not trusted
        // with another request (§6.3 point 3: a sign of response splitting).
        let both =
            seen.content_length != Length::Absent && headers.remove(CONTENT_LENGTH).is_some();
        return Ok((Framing::Chunked, !both));
    }
    match seen.content_length {
        Length::Absent => Ok((Framing::Close, false)),
        Length::Valid(0) => Ok((Framing::Empty, true)),
        Length::Valid(n) => Ok((Framing::Length(n), true)),
        Length::Invalid => Err(OriginError::Invalid(
            "invalid or conflicting Content-Length",
        )),
    }
}

/// Reads the chunk-size line at the front of `buf` (RFC 9112 §7.1:
/// `1*HEXDIG [BWS ";" chunk-ext] CRLF`): `Some((line length, size))`, or `None` while the line is
/// incomplete. Stricter than `httparse::parse_chunk_size` and as strict as hyper, where response
/// splitting lives: at least one digit (leading zeros are fine, however many), CRLF and nothing
/// else to end the line, no CR, LF or other control character inside an extension.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, OriginError> {
    let bad = |why| Err(OriginError::Invalid(why));
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(d) = buf.get(i).and_then(|b| (*b as char).to_digit(16)) {
        size = match size.checked_mul(16) {
            Some(s) => s + u64::from(d),
            None => return bad("chunk size too large"),
        };
        i += 1;
    }
    if i == buf.len() {
        return Ok(None);
    }
    if i == 0 {
        return bad("chunk size line without a size");
    }
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match buf.get(i) {
        None => return Ok(None),
        Some(b'\r') => {}
        Some(b';') => {
            while let Some(&b) = buf.get(i) {
                if b == b'\r' {
                    break;
                }
                if (b < 0x20 && b != b'\t') || b == 0x7f {
                    return bad("control character in a chunk extension");
                }
                i += 1;
            }
            if i == buf.len() {
                return Ok(None);
            }
        }
        Some(_) => return bad("bad chunk size line"),
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((i + 2, size))),
        Some(_) => bad("chunk size line not ended by CRLF"),
    }
}

/// One step of [`Chunked::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section (RFC 9112 §7.1.2), when it has fields.
    Trailers(HeaderMap),
    /// The buffer holds no whole step: read more.
    Need,
    /// The body is over; the connection is positioned after it.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// The chunked transfer coding's decoder (RFC 9112 §7.1), fed from a read buffer.
#[derive(Debug)]
pub struct Chunked(ChunkState);

impl Default for Chunked {
    fn default() -> Self {
        Self(ChunkState::Size)
    }
}

impl Chunked {
    /// Takes what it can from the front of `buf`. Errors: [`OriginError::Invalid`] for a bad
    /// size line or a chunk not followed by CRLF, [`OriginError::HeadTooLarge`] for a trailer
    /// section past the limits.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, OriginError> {
        loop {
            match self.0 {
                ChunkState::Size => match chunk_size_line(buf)? {
                    Some((used, size)) => {
                        let _ = buf.split_to(used);
                        self.0 = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    None if buf.len() > MAX_CHUNK_LINE => {
                        return Err(OriginError::Invalid("chunk size line too long"))
                    }
                    None => return Ok(Decoded::Need),
                },
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::Need);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    self.0 = match left - take {
                        0 => ChunkState::DataEnd,
                        rest => ChunkState::Data(rest),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::Need);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(OriginError::Invalid("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.0 = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buf),
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }

    /// The trailer section after the last chunk: an empty line, or fields then an empty line.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, OriginError> {
        if buf.len() < 2 {
            return Ok(Decoded::Need);
        }
        if &buf[..2] == b"\r\n" {
            let _ = buf.split_to(2);
            self.0 = ChunkState::Done;
            return Ok(Decoded::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let (used, map) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete((used, parsed))) => {
                let mut map = HeaderMap::with_capacity(parsed.len());
                for f in parsed.iter() {
                    let name = HeaderName::from_bytes(f.name.as_bytes())
                        .map_err(|_| OriginError::Invalid("bad trailer field name"))?;
                    let value = HeaderValue::from_bytes(f.value)
                        .map_err(|_| OriginError::Invalid("bad trailer field value"))?;
                    map.append(name, value);
                }
                (used, map)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(OriginError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::Need),
            Err(httparse::Error::TooManyHeaders) => return Err(OriginError::HeadTooLarge),
            Err(_) => return Err(OriginError::Invalid("malformed trailer section")),
        };
        // httparse ends a line at a bare LF too; hyper does not, and neither may petrel, or the
        // two would disagree on where the message ends (found by review).
        let lines = &buf[..used];
        if lines
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\n' && (i == 0 || lines[i - 1] != b'\r'))
        {
            return Err(OriginError::Invalid("a trailer line not ended by CRLF"));
        }
        let _ = buf.split_to(used);
        self.0 = ChunkState::Done;
        Ok(Decoded::Trailers(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], method: Method) -> Result<(Head, BytesMut), OriginError> {
        let mut buf = BytesMut::from(bytes);
        loop {
            match parse_head(&mut buf, &method)? {
                Parsed::Final(h) => return Ok((h, buf)),
                Parsed::Interim => continue,
                Parsed::Partial => panic!("partial head: {bytes:?}"),
            }
        }
    }

    #[test]
    fn the_request_head_is_origin_form_with_every_field_but_transfer_encoding() {
        let mut h = HeaderMap::new();
        h.insert("host", "app.example".parse().unwrap());
        h.append("x-two", "a".parse().unwrap());
        h.append("x-two", "b".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        let mut out = BytesMut::new();
        let uri = Uri::from_static("/a?b=1");
        encode_head(&RequestHead::of(&Method::DELETE, &uri, &h, None), &mut out);
        assert_eq!(
            &out[..],
            b"DELETE /a?b=1 HTTP/1.1\r\nhost: app.example\r\nx-two: a\r\nx-two: b\r\n\r\n"
        );
    }

    #[test]
    fn an_absolute_target_becomes_origin_form_with_its_authority_as_host_and_one_cookie() {
        // As an HTTP/2 client's request arrives: `:authority` in the URI, split cookies.
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        h.insert("host", "stale.example".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let uri = Uri::from_static("https://user@app.example:8443/p?q=1");
        let empty = Uri::from_static("http://app.example?x=1");
        assert_eq!(
            RequestHead::of(&Method::GET, &empty, &h, None).target,
            "/?x=1"
        );
        let bare = Uri::from_static("http://app.example");
        assert_eq!(RequestHead::of(&Method::GET, &bare, &h, None).target, "/");
        let star = Uri::from_static("*");
        assert_eq!(
            RequestHead::of(&Method::OPTIONS, &star, &h, None).target,
            "*"
        );
        let mut out = BytesMut::new();
        encode_head(&RequestHead::of(&Method::GET, &uri, &h, None), &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example:8443\r\ncookie: a=1; b=2\r\naccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn the_forwarding_fields_follow_the_clients_own_as_hyper_would_send_them() {
        use crate::http::headers::{Forwarded, Forwarding};
        let mut h = HeaderMap::new();
        h.insert("host", "app.example".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.9".parse().unwrap());
        h.insert("x-forwarded-port", "1".parse().unwrap()); // a client's word: replaced
        let f = Forwarded {
            client_ip: &HeaderValue::from_static("192.0.2.1"),
            local_port: &HeaderValue::from_static("8080"),
            proto: "http",
            region: &HeaderValue::from_static("iad"),
            request_id: &HeaderValue::from_static("rid-1"),
            via_version: "1.1",
        };
        let fwd = Forwarding::of(&mut h, &f);
        let uri = Uri::from_static("/");
        let mut out = BytesMut::new();
        encode_head(
            &RequestHead::of(&Method::GET, &uri, &h, Some(&fwd)),
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET / HTTP/1.1\r\nhost: app.example\r\nx-forwarded-for: 10.0.0.9, 192.0.2.1\r\n\
             via: 1.1 petrel\r\npetrel-client-ip: 192.0.2.1\r\npetrel-edge-region: iad\r\n\
             petrel-request-id: rid-1\r\nx-forwarded-proto: http\r\nx-forwarded-port: 8080\r\n\r\n"
        );
        // The same fields as a map gets them for hyper's clients and the backhaul.
        let mut applied = h.clone();
        fwd.apply(&mut applied);
        let mut direct = BytesMut::new();
        encode_head(
            &RequestHead::of(&Method::GET, &uri, &applied, None),
            &mut direct,
        );
        assert_eq!(direct, out);
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        type Case = (&'static [u8], Method, Result<(Framing, bool), ()>);
        let cases: &[Case] = &[
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Ok((Framing::Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::HEAD,
                Ok((Framing::Empty, true)),
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Ok((Framing::Empty, true)),
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                Method::GET,
                Ok((Framing::Empty, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
                Ok((Framing::Empty, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET,
                Ok((Framing::Chunked, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Method::GET,
                Ok((Framing::Chunked, true)),
            ),
            // Both: chunked, and the connection is not reused.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET,
                Ok((Framing::Chunked, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Method::GET,
                Ok((Framing::Close, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Ok((Framing::Close, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n",
                Method::GET,
                Ok((Framing::Length(7), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                Method::GET,
                Ok((Framing::Length(5), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Ok((Framing::Length(5), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n",
                Method::GET,
                Ok((Framing::Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
                Method::GET,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
                Method::GET,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
                Method::GET,
                Err(()),
            ),
            (
                b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET,
                Err(()),
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
                Method::GET,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
                Method::GET,
                Err(()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
                Method::GET,
                Err(()),
            ),
        ];
        for (bytes, method, want) in cases {
            let got = head(bytes, method.clone()).map(|(h, _)| (h.framing, h.reusable));
            assert_eq!(
                got.map_err(|_| ()),
                *want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let (h, _) = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert!(
            !h.headers.contains_key(CONTENT_LENGTH),
            "the length beside chunked goes"
        );
    }

    #[test]
    fn interim_answers_are_skipped_and_the_rest_stays_in_the_buffer() {
        let bytes = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 Fine\r\nX-A: 1\r\ncontent-length: 2\r\n\r\nhi";
        let (h, rest) = head(bytes, Method::GET).unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(
            h.reason.as_deref(),
            Some(&b"Fine"[..]),
            "a non-canonical reason is kept"
        );
        assert_eq!(h.headers["x-a"], "1");
        assert!(
            !h.headers.contains_key("link"),
            "the interim answer's fields are not merged"
        );
        assert_eq!(&rest[..], b"hi");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(matches!(
            parse_head(&mut partial, &Method::GET),
            Ok(Parsed::Partial)
        ));
        assert_eq!(partial.len(), 27, "a partial head is left in place");
    }

    #[test]
    fn too_many_fields_is_too_large() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            bytes.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        assert!(matches!(
            head(&bytes, Method::GET),
            Err(OriginError::HeadTooLarge)
        ));
    }

    fn dechunk(pieces: &[&[u8]]) -> Result<(Vec<u8>, Option<HeaderMap>, BytesMut), OriginError> {
        let (mut c, mut buf) = (Chunked::default(), BytesMut::new());
        let (mut body, mut trailers) = (Vec::new(), None);
        let mut pieces = pieces.iter();
        loop {
            match c.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => {
                    pieces.for_each(|p| buf.extend_from_slice(p));
                    return Ok((body, trailers, buf));
                }
                Decoded::Need => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => panic!("needs more after {body:?}"),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 9\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let (a, b) = wire.split_at(split);
            let (body, trailers, rest) = dechunk(&[a, b]).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "split at {split}");
            assert_eq!(trailers.unwrap()["x-sum"], "9");
            assert_eq!(
                &rest[..],
                b"NEXT",
                "what follows the body is left for the next response"
            );
        }
        let (body, trailers, _) = dechunk(&[b"0\r\n\r\n"]).unwrap();
        assert!(body.is_empty() && trailers.is_none());
        // Leading zeros are a valid size however many there are (httparse stops at 16 digits).
        let (body, _, _) = dechunk(&[b"00000000000000005\r\nhello\r\n0 ;last\r\n\r\n"]).unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn bad_chunks_are_errors() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            // Each of these httparse accepts, and hyper refuses (found by review):
            b"5\r\nhello\r\n\r\n\r\n", // an empty size line read as the last chunk
            b"5\r\nhello\r\n;x\r\n\r\n", // a size line with no digits
            b"5;a\nb\r\nhello\r\n0\r\n\r\n", // a bare LF inside an extension
            b"5\nhello\r\n0\r\n\r\n",  // a size line ended by LF alone
            b"5x\r\nhello\r\n0\r\n\r\n", // junk after the size
            b"0\r\nx-a: a\r\n b\r\n\r\n", // an obs-folded trailer
            b"0\r\nx-a: 1\n\r\n",      // a trailer line ended by LF alone
            b"0\r\nx-a: 1\nx-b: 2\r\n\r\n",
        ] {
            assert!(
                dechunk(&[wire]).is_err(),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(Chunked::default()
            .decode(&mut BytesMut::from(&long[..]))
            .is_err());
    }
}
