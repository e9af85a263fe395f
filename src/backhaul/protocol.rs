//! The backhaul's internal headers: which instance, the cluster credential, and the owner's reject.
//! All live under `petrel-internal-`, which edges and owners strip before anything leaves the cluster.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// Target instance id (edge → owner).
pub const INSTANCE: &str = "petrel-internal-instance";
/// An [`INSTANCE`] value of `session:<app>` asks the owner to attach the request, a client's
/// WebSocket handshake, to the session of that app it holds (the session id is in the query).
pub const SESSION: &str = "session:";
/// With a [`SESSION`] attach: the asking node's name, when that node is itself beginning the
/// session (two nodes beginning one id at once: the lower name keeps it).
pub const SESSION_BEGINNER: &str = "petrel-internal-session-beginner";
/// HMAC over the target and request id with the cluster key (edge → owner).
pub const AUTH: &str = "petrel-internal-auth";
/// Owner's refusal: "full", "connect", "unknown", "down" or "auth" (owner → edge).
pub const REJECT: &str = "petrel-internal-reject";
/// The instance's load (owner → edge) with every answer: when it refused, or besides the request
/// answered. The edge routes on it while fresh (`pick::Feedback`) instead of the gossiped one.
pub const LOAD: &str = "petrel-internal-load";

/// Why an owner refused a backhaul request; nothing reached the instance in any of these cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// At its hard limit.
    Full,
    /// The owner could not connect to the instance.
    Connect,
    /// No such instance on that node (any more).
    Unknown,
    /// Being removed or failing checks.
    Down,
    /// The request did not carry valid cluster credentials.
    Auth,
}

impl Reject {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Full => "full",
            Reject::Connect => "connect",
            Reject::Unknown => "unknown",
            Reject::Down => "down",
            Reject::Auth => "auth",
        }
    }

    /// Parses a header value.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "full" => Reject::Full,
            "connect" => Reject::Connect,
            "unknown" => Reject::Unknown,
            "down" => Reject::Down,
            "auth" => Reject::Auth,
            _ => return None,
        })
    }

    /// Reads a reject from response headers.
    pub fn from_headers(h: &HeaderMap) -> Option<(Self, Option<u32>)> {
        let r = Self::parse(h.get(REJECT)?.to_str().ok()?)?;
        Some((r, load(h)))
    }
}

/// Reads the owner's load figure (`LOAD`) from response headers.
pub fn load(h: &HeaderMap) -> Option<u32> {
    h.get(LOAD)?.to_str().ok()?.parse().ok()
}

/// The cluster keys, ready to sign and check backhaul requests: each HMAC's keyed state is
/// computed once, not per request. The first key signs, any verifies (a rotation in progress).
/// Cloning shares them.
#[derive(Clone)]
pub struct AuthKey(Arc<[Hmac<Sha256>]>);

impl AuthKey {
    /// Prepares `keys`, primary first; `keys` must not be empty.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        assert!(!keys.is_empty(), "AuthKey needs a key");
        Self(
            keys.iter()
                .map(|k| Hmac::<Sha256>::new_from_slice(k).expect("any key length"))
                .collect(),
        )
    }

    /// The auth tag for a request to `instance` with `request_id`: 16 bytes of the primary
    /// key's HMAC, in hex.
    pub fn tag(&self, instance: &str, request_id: &str) -> String {
        Self::tag_with(&self.0[0], instance, request_id)
    }

    /// True if `tag` is the tag of any of the keys (constant-time per key).
    fn verifies(&self, instance: &str, request_id: &str, tag: &str) -> bool {
        self.0.iter().any(|k| {
            let want = Self::tag_with(k, instance, request_id);
            want.len() == tag.len()
                && want
                    .bytes()
                    .zip(tag.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        })
    }

    fn tag_with(key: &Hmac<Sha256>, instance: &str, request_id: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut m = key.clone();
        m.update(instance.as_bytes());
        m.update(b"\n");
        m.update(request_id.as_bytes());
        let mut out = String::with_capacity(32);
        for b in &m.finalize().into_bytes()[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// Checks a request's auth tag; an open cluster (no key) accepts everything.
pub fn verify(key: Option<&AuthKey>, h: &HeaderMap) -> bool {
    let Some(key) = key else { return true };
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    match (get(INSTANCE), get("petrel-request-id"), get(AUTH)) {
        (Some(i), Some(r), Some(tag)) => key.verifies(i, r, tag),
        _ => false,
    }
}

/// Removes every `petrel-internal-*` header.
pub fn strip(h: &mut HeaderMap) {
    crate::http::headers::strip_prefixed(h, "petrel-internal-");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_binds_instance_and_request_id() {
        let key = AuthKey::new(&[[3u8; 32]]);
        let mut h = HeaderMap::new();
        h.insert(INSTANCE, "i1".parse().unwrap());
        h.insert("petrel-request-id", "r1".parse().unwrap());
        h.insert(AUTH, key.tag("i1", "r1").parse().unwrap());
        assert!(verify(Some(&key), &h));
        assert!(!verify(Some(&AuthKey::new(&[[4u8; 32]])), &h), "other key");
        h.insert(INSTANCE, "i2".parse().unwrap());
        assert!(!verify(Some(&key), &h), "tag is bound to the instance");
        assert!(verify(None, &h), "open cluster");
        for r in [
            Reject::Full,
            Reject::Connect,
            Reject::Unknown,
            Reject::Down,
            Reject::Auth,
        ] {
            assert_eq!(Reject::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn the_tag_is_the_same_as_older_nodes_compute() {
        // Nodes of the previous release (one HMAC per request, hex by `format!`) must accept this
        // release's tags during a rolling deploy, and the other way round.
        let raw = [7u8; 32];
        let mut m = Hmac::<Sha256>::new_from_slice(&raw).unwrap();
        m.update(b"inst-1\nreq-42");
        let old: String = m.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = AuthKey::new(&[raw]);
        assert_eq!(key.tag("inst-1", "req-42"), old);
        assert_eq!(
            key.tag("inst-1", "req-42"),
            old,
            "the keyed state is reused, not consumed"
        );
        assert_ne!(key.tag("inst-1", "req-43"), old);
    }
}
