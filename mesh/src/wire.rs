//! Datagram framing: a header naming the sender's generation and a per-sender counter, the payload,
//! and an HMAC-SHA256 tag over all of it when a cluster key is set.
//!
//! ```text
//! 0      1        2            10         18     19        n-16   n
//! | 'P'  | ver=1  | generation | counter  | kind | payload | tag  |
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Magic byte.
pub const MAGIC: u8 = b'P';
/// Wire version.
pub const VERSION: u8 = 1;
/// Header bytes before the payload.
pub const HEADER: usize = 19;
/// Tag bytes after the payload.
pub const TAG: usize = 16;
/// Largest datagram petrel sends or accepts (fits a QUIC-sized path).
pub const MAX_DATAGRAM: usize = 1200;
/// Largest payload.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER - TAG;

/// Appends `n` as an unsigned LEB128 varint, as postcard encodes lengths.
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A foca (SWIM) message.
    Swim = 0,
    /// An RTT probe.
    Ping = 1,
    /// The answer to a probe.
    Pong = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Kind::Swim),
            1 => Some(Kind::Ping),
            2 => Some(Kind::Pong),
            _ => None,
        }
    }
}

/// Why a datagram was dropped (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Shorter than header + tag, or longer than `MAX_DATAGRAM`.
    Size,
    /// Wrong magic or version.
    Magic,
    /// Tag does not verify: wrong or missing cluster key, or tampered.
    Auth,
    /// Counter already seen or too old for this sender.
    Replay,
    /// Unknown kind byte.
    Kind,
    /// The payload did not decode.
    Payload,
}

impl Drop {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Size => "size",
            Drop::Magic => "magic",
            Drop::Auth => "auth",
            Drop::Replay => "replay",
            Drop::Kind => "kind",
            Drop::Payload => "payload",
        }
    }
}

/// A verified datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The sender's generation.
    pub generation: u64,
    /// The sender's counter.
    pub counter: u64,
    /// What it carries.
    pub kind: Kind,
    /// The payload.
    pub payload: &'a [u8],
}

/// Seals and opens datagrams with an optional 32-byte cluster key.
#[derive(Clone)]
pub struct Sealer {
    key: Option<Hmac<Sha256>>,
}

impl Sealer {
    /// `None` is an open cluster: tags are zeros and are not checked.
    pub fn new(key: Option<[u8; 32]>) -> Self {
        Self {
            key: key
                .map(|k| Hmac::<Sha256>::new_from_slice(&k).expect("HMAC takes any key length")),
        }
    }

    /// Builds a datagram. The caller guarantees `payload.len() <= MAX_PAYLOAD`.
    pub fn seal(&self, generation: u64, counter: u64, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + payload.len() + TAG);
        out.push(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
        out.push(kind as u8);
        out.extend_from_slice(payload);
        let tag = self.tag(&out);
        out.extend_from_slice(&tag);
        out
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG] {
        let mut t = [0u8; TAG];
        if let Some(mac) = &self.key {
            let mut m = mac.clone();
            m.update(data);
            t.copy_from_slice(&m.finalize().into_bytes()[..TAG]);
        }
        t
    }

    /// Checks size, magic, version and tag; does not check replay (see `ReplayGuard`).
    pub fn open<'a>(&self, data: &'a [u8]) -> Result<Frame<'a>, Drop> {
        if data.len() < HEADER + TAG || data.len() > MAX_DATAGRAM {
            return Err(Drop::Size);
        }
        if data[0] != MAGIC || data[1] != VERSION {
            return Err(Drop::Magic);
        }
        let (body, tag) = data.split_at(data.len() - TAG);
        if let Some(mac) = &self.key {
            let mut m = mac.clone();
            m.update(body);
            m.verify_truncated_left(tag).map_err(|_| Drop::Auth)?;
        }
        let generation = u64::from_le_bytes(body[2..10].try_into().expect("8 bytes"));
        let counter = u64::from_le_bytes(body[10..18].try_into().expect("8 bytes"));
        let kind = Kind::from_u8(body[18]).ok_or(Drop::Kind)?;
        Ok(Frame {
            generation,
            counter,
            kind,
            payload: &body[HEADER..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard_sequence_lengths() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 30] {
            let mut mine = Vec::new();
            put_varint(&mut mine, n);
            assert_eq!(mine, postcard::to_stdvec(&n).unwrap(), "{n}");
        }
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let s = Sealer::new(Some([9; 32]));
        let d = s.seal(42, 7, Kind::Ping, b"hello");
        let f = s.open(&d).unwrap();
        assert_eq!(
            (f.generation, f.counter, f.kind, f.payload),
            (42, 7, Kind::Ping, &b"hello"[..])
        );
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert!(s.open(&bad).is_err(), "flip at byte {i} must be caught");
        }
        assert_eq!(
            Sealer::new(Some([8; 32])).open(&d),
            Err(Drop::Auth),
            "wrong key"
        );
        assert_eq!(
            Sealer::new(None).open(&d).unwrap().payload,
            b"hello",
            "open cluster skips the tag"
        );
        assert_eq!(
            s.open(&Sealer::new(None).seal(1, 1, Kind::Ping, b"x")),
            Err(Drop::Auth),
            "keyless sender"
        );
        assert_eq!(s.open(&d[..10]), Err(Drop::Size));
    }
}
