//! Header fields on the QUIC backhaul's wire: postcard's encoding of `[(name, value)]`, written
//! straight from a `HeaderMap` and read straight into one.
//!
//! Earlier releases went through a `Vec<(String, Vec<u8>)>`: two allocations per field each way,
//! and a third and fourth to build the map. The bytes on the wire are the same (postcard writes a
//! `u8` sequence and a byte string alike, a varint length and then the bytes), so nodes of both
//! releases read each other's heads and trailers (a test below holds this).

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Deserializer, Serialize};

/// Serializes `h` (a `HeaderMap`, or a `Cow` of one) as a sequence of `(name, value bytes)`
/// pairs, in the map's order (serde's `serialize_with`). Errors: the serializer's (postcard's
/// never fail on these types).
pub fn serialize<S, H>(h: &H, s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    H: std::ops::Deref<Target = HeaderMap>,
{
    write(h, s)
}

fn write<S: Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(h.len()))?;
    for (name, value) in h {
        seq.serialize_element(&(name.as_str(), Raw(value.as_bytes())))?;
    }
    seq.end()
}

/// A field value written as a byte string (`serialize_bytes`), not one element per byte.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Reads the pairs [`serialize`] writes into a `HeaderMap` (serde's `deserialize_with`),
/// borrowing names and values from the input until each field is built. Errors: an invalid
/// field name or value (RFC 9110 §5.1, §5.5), more fields than a `HeaderMap` holds (32,768), or
/// malformed input.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
    d.deserialize_seq(Fields)
}

struct Fields;

impl<'de> Visitor<'de> for Fields {
    type Value = HeaderMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of (name, value) header fields")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderMap, A::Error> {
        // The announced length is the peer's word: room for a usual head, and growth beyond.
        let mut h = HeaderMap::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some((name, value)) = seq.next_element::<(&'de str, &'de [u8])>()? {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| de::Error::custom(format_args!("bad header name {name:?}: {e}")))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|e| de::Error::custom(format_args!("bad value of {name}: {e}")))?;
            h.try_append(name, value)
                .map_err(|_| de::Error::custom("too many header fields"))?;
        }
        Ok(h)
    }
}

/// `h` alone (a trailer frame), postcard-encoded. Errors: postcard's (none for these types).
pub fn encode(h: &HeaderMap) -> postcard::Result<Vec<u8>> {
    struct Alone<'a>(&'a HeaderMap);
    impl Serialize for Alone<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            write(self.0, s)
        }
    }
    postcard::to_stdvec(&Alone(h))
}

/// Fields alone (a trailer frame) from their postcard encoding. Errors as [`deserialize`].
pub fn decode(buf: &[u8]) -> postcard::Result<HeaderMap> {
    struct Alone(HeaderMap);
    impl<'de> Deserialize<'de> for Alone {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Alone)
        }
    }
    postcard::from_bytes::<Alone>(buf).map(|a| a.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backhaul::frame::{Head, HeadOut};
    use std::borrow::Cow;

    /// What earlier releases sent and read.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OldHead {
        line: String,
        headers: Vec<(String, Vec<u8>)>,
    }

    fn sample() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("app.example"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.insert(
            "petrel-internal-instance",
            HeaderValue::from_static("app-1"),
        );
        h.insert("x-bin", HeaderValue::from_bytes(b"\x80\xff ok").unwrap());
        h.insert("x-empty", HeaderValue::from_static(""));
        h
    }

    fn old_pairs(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        h.iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_wire_is_the_earlier_releases_both_ways() {
        let h = sample();
        let old = OldHead {
            line: "GET /x?y=1".into(),
            headers: old_pairs(&h),
        };
        let new = HeadOut {
            line: old.line.clone(),
            headers: Cow::Borrowed(&h),
        };
        let (old_bytes, new_bytes) = (
            postcard::to_stdvec(&old).unwrap(),
            postcard::to_stdvec(&new).unwrap(),
        );
        assert_eq!(new_bytes, old_bytes, "same bytes as the previous release");
        let read: Head = postcard::from_bytes(&old_bytes).unwrap();
        assert_eq!(read.line, old.line);
        assert_eq!(read.headers, h, "an old node's head reads the same");
        let old_read: OldHead = postcard::from_bytes(&new_bytes).unwrap();
        assert_eq!(old_read, old, "an old node reads a new node's head");
        // Trailers travel as the bare sequence.
        let t = encode(&h).unwrap();
        assert_eq!(t, postcard::to_stdvec(&old_pairs(&h)).unwrap());
        assert_eq!(decode(&t).unwrap(), h);
    }

    #[test]
    fn bad_fields_are_errors_not_panics() {
        for (name, value) in [
            ("bad name", b"v".to_vec()),
            ("", b"v".to_vec()),
            ("x-ok", b"line\nbreak".to_vec()),
        ] {
            let bytes = postcard::to_stdvec(&vec![(name.to_string(), value)]).unwrap();
            assert!(decode(&bytes).is_err(), "{name:?}");
        }
        assert!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(),
            "a length past the input"
        );
        assert!(decode(&[]).is_err(), "nothing at all");
        // More distinct names than a HeaderMap holds (32,768): refused, not a panic.
        let many: Vec<(String, Vec<u8>)> = (0..40_000).map(|i| (format!("a{i}"), vec![])).collect();
        let bytes = postcard::to_stdvec(&many).unwrap();
        assert!(decode(&bytes).is_err());
    }
}
