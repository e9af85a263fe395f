//! Datagram framing: a header naming the sender, its generation and a per-sender counter, the
//! payload, and a tag. With a cluster key the payload is encrypted and the whole datagram
//! authenticated with XChaCha20-Poly1305 (an AEAD: RFC 8439 and draft-irtf-cfrg-xchacha); the
//! header is the associated data and is also the 24-byte nonce, unique because a sender never
//! reuses a counter within a generation. Several keys may be accepted at once, for rotation as
//! memberlist does it: send with the first, open with any.
//!
//! ```text
//! 0      1        2        10           18         26     27        n-16   n
//! | 'P'  | ver=2  | sender | generation | counter  | kind | payload | tag  |
//! ```
//! `kind` has its top bit set when the datagram is sealed; an open cluster (no key) sends it
//! clear, with a zero tag, and a keyed node drops such a datagram as `auth`.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// Magic byte.
pub const MAGIC: u8 = b'P';
/// Wire version (2: sender in the header, AEAD).
pub const VERSION: u8 = 2;
/// Header bytes before the payload.
pub const HEADER: usize = 27;
/// Tag bytes after the payload.
pub const TAG: usize = 16;
/// Largest datagram petrel sends or accepts (fits a QUIC-sized path).
pub const MAX_DATAGRAM: usize = 1200;
/// Largest payload.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER - TAG;
/// The `kind` bit that marks a sealed (encrypted) datagram.
const SEALED: u8 = 0x80;

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
    /// "You are suspected": a Lifeguard suspicion record sent straight to its target (the buddy
    /// system), so it can refute before the news has gossiped round.
    Suspect = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Kind::Swim),
            1 => Some(Kind::Ping),
            2 => Some(Kind::Pong),
            3 => Some(Kind::Suspect),
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
    /// Does not open with any cluster key: another key, no key (an open node), or tampered.
    Auth,
    /// Counter already seen or too old for this sender and generation (wherever it came from).
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
pub struct Frame {
    /// The sender ([`Sealer::sender_id`] of its node name).
    pub sender: u64,
    /// The sender's generation.
    pub generation: u64,
    /// The sender's counter.
    pub counter: u64,
    /// What it carries.
    pub kind: Kind,
    /// The payload, decrypted.
    pub payload: Vec<u8>,
}

/// Seals and opens datagrams under zero or more 32-byte cluster keys (none: an open cluster).
#[derive(Clone)]
pub struct Sealer {
    keys: Vec<XChaCha20Poly1305>,
    sender: u64,
}

impl Sealer {
    /// `keys`: the first seals, every one opens; empty is an open cluster. `sender`: this
    /// node's [`Sealer::sender_id`].
    pub fn new(keys: &[[u8; 32]], sender: u64) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
            sender,
        }
    }

    /// Replaces the keys (a reload rotating them); the sender stays.
    pub fn set_keys(&mut self, keys: &[[u8; 32]]) {
        *self = Self::new(keys, self.sender);
    }

    /// A node's sender id: the first 8 bytes of SHA-256 over its name (names are unique in a
    /// cluster). It keys the receivers' replay windows, so it is authenticated with the rest.
    pub fn sender_id(name: &str) -> u64 {
        let d = Sha256::new()
            .chain_update(b"petrel mesh sender\0")
            .chain_update(name.as_bytes())
            .finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// Builds a datagram. The caller guarantees `payload.len() <= MAX_PAYLOAD`.
    pub fn seal(&self, generation: u64, counter: u64, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + payload.len() + TAG);
        out.push(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
        let Some(key) = self.keys.first() else {
            out.push(kind as u8);
            out.extend_from_slice(payload);
            out.extend_from_slice(&[0u8; TAG]);
            return out;
        };
        out.push(kind as u8 | SEALED);
        let mut body = payload.to_vec();
        let nonce = *XNonce::from_slice(&out[2..26]);
        let tag = key
            .encrypt_in_place_detached(&nonce, &out, &mut body)
            .expect("a datagram is far below the AEAD's length limit");
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        out
    }

    /// Checks size, magic and version, and opens the datagram with any of the keys; does not
    /// check replay (see `ReplayGuard`).
    pub fn open(&self, data: &[u8]) -> Result<Frame, Drop> {
        if data.len() < HEADER + TAG || data.len() > MAX_DATAGRAM {
            return Err(Drop::Size);
        }
        if data[0] != MAGIC || data[1] != VERSION {
            return Err(Drop::Magic);
        }
        let (head, rest) = data.split_at(HEADER);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let sealed = head[26] & SEALED != 0;
        let payload = match (sealed, self.keys.is_empty()) {
            (false, true) => body.to_vec(),
            (true, false) => {
                let nonce = XNonce::from_slice(&head[2..26]);
                let tag = Tag::from_slice(tag);
                self.keys
                    .iter()
                    .find_map(|k| {
                        let mut plain = body.to_vec();
                        k.decrypt_in_place_detached(nonce, head, &mut plain, tag)
                            .ok()
                            .map(|()| plain)
                    })
                    .ok_or(Drop::Auth)?
            }
            // A clear datagram at a keyed node, or a sealed one at an open node.
            _ => return Err(Drop::Auth),
        };
        let word = |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().expect("8"));
        Ok(Frame {
            sender: word(2..10),
            generation: word(10..18),
            counter: word(18..26),
            kind: Kind::from_u8(head[26] & !SEALED).ok_or(Drop::Kind)?,
            payload,
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
        let s = Sealer::new(&[[9; 32]], 5);
        let d = s.seal(42, 7, Kind::Ping, b"hello");
        assert!(
            !d.windows(5).any(|w| w == b"hello"),
            "the payload is encrypted on the wire"
        );
        let f = s.open(&d).unwrap();
        assert_eq!(
            (f.sender, f.generation, f.counter, f.kind, &f.payload[..]),
            (5, 42, 7, Kind::Ping, &b"hello"[..])
        );
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert!(s.open(&bad).is_err(), "flip at byte {i} must be caught");
        }
        assert_eq!(
            Sealer::new(&[[8; 32]], 1).open(&d),
            Err(Drop::Auth),
            "wrong key"
        );
        assert_eq!(
            Sealer::new(&[], 1).open(&d),
            Err(Drop::Auth),
            "an open node cannot read it"
        );
        assert_eq!(
            s.open(&Sealer::new(&[], 1).seal(1, 1, Kind::Ping, b"x")),
            Err(Drop::Auth),
            "keyless sender"
        );
        assert_eq!(
            Sealer::new(&[], 2)
                .open(&Sealer::new(&[], 1).seal(1, 1, Kind::Pong, b"x"))
                .unwrap()
                .payload,
            b"x",
            "open clusters talk in the clear"
        );
        assert_eq!(s.open(&d[..10]), Err(Drop::Size));
    }

    #[test]
    fn rotation_sends_with_the_first_key_and_opens_with_any() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let old = Sealer::new(&[a], 1);
        let both = Sealer::new(&[a, b], 2);
        let new = Sealer::new(&[b, a], 3);
        let only_b = Sealer::new(&[b], 4);
        let from_old = old.seal(1, 1, Kind::Swim, b"s");
        let from_new = new.seal(1, 1, Kind::Swim, b"s");
        assert!(both.open(&from_old).is_ok() && both.open(&from_new).is_ok());
        assert!(old.open(&both.seal(1, 1, Kind::Swim, b"s")).is_ok());
        assert!(only_b.open(&from_new).is_ok());
        assert_eq!(only_b.open(&from_old).err(), Some(Drop::Auth));
    }

    #[test]
    fn sender_ids_differ_by_name_and_are_stable() {
        assert_ne!(Sealer::sender_id("a"), Sealer::sender_id("b"));
        assert_eq!(Sealer::sender_id("node-1"), Sealer::sender_id("node-1"));
    }
}
