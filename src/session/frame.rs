//! WebSocket frames (RFC 6455 §5.2) parsed whole, as the session layer needs them: the opcode,
//! FIN, and the frame's bytes exactly as received, so a frame is forwarded or replayed unchanged.
//! Also the few frames petrel writes itself (ping, pong, close).

use bytes::{Bytes, BytesMut};

/// The largest message a session ever passes, bytes, whatever its `replay_bytes`: a session keeps
/// whole frames, and gathers a client's fragmented message whole, in memory.
pub const MAX_MESSAGE: u64 = 16 << 20;

/// The largest message (and frame) a session with `replay_bytes` passes: `replay_bytes`, at least
/// 1 MiB, at most [`MAX_MESSAGE`]. A bigger one closes the session with 1009 ("message too big",
/// RFC 6455 §7.4.1), so one session holds at most about twice its replay bytes.
pub fn message_limit(replay_bytes: usize) -> u64 {
    (replay_bytes as u64).clamp(1 << 20, MAX_MESSAGE)
}

/// A frame's opcode (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: a text message (or its first fragment).
    Text,
    /// 0x2: a binary message (or its first fragment).
    Binary,
    /// 0x8: the closing handshake.
    Close,
    /// 0x9: a ping.
    Ping,
    /// 0xA: a pong.
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong (RFC 6455 §5.5); the rest carry messages.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One whole frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// What it is.
    pub opcode: Opcode,
    /// The last frame of its message (always true for control frames).
    pub fin: bool,
    /// The frame as received: header, masking key, payload.
    pub raw: Bytes,
    /// Where the payload starts in `raw`.
    header_len: usize,
    /// The masking key, if the frame is masked (every client frame is, RFC 6455 §5.3).
    mask: Option<[u8; 4]>,
}

impl Frame {
    /// The frame is masked (a client's must be, a server's must not be: RFC 6455 §5.1).
    pub fn masked(&self) -> bool {
        self.mask.is_some()
    }

    /// For a close frame, whether its payload is one an endpoint may send (RFC 6455 §5.5.1,
    /// §7.4): empty, or a code that may appear on the wire (1000–1003, 1007–1014, 3000–4999)
    /// and a UTF-8 reason.
    pub fn valid_close(&self) -> bool {
        let p = self.payload();
        match p.len() {
            0 => true,
            1 => false,
            _ => {
                let code = u16::from_be_bytes([p[0], p[1]]);
                let code_ok = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                code_ok && std::str::from_utf8(&p[2..]).is_ok()
            }
        }
    }

    /// The payload, unmasked.
    pub fn payload(&self) -> Vec<u8> {
        let mut p = self.raw[self.header_len..].to_vec();
        if let Some(key) = self.mask {
            for (i, b) in p.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        p
    }

    /// For a close frame, its status code, if it has one (RFC 6455 §5.5.1).
    pub fn close_code(&self) -> Option<u16> {
        let p = self.payload();
        (self.opcode == Opcode::Close && p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]))
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

/// Why a byte stream is not a WebSocket a session can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An opcode RFC 6455 reserves (0x3–0x7, 0xB–0xF).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV bits set: no extension is negotiated on a session (petrel strips
    /// `Sec-WebSocket-Extensions`), so none may be used.
    #[error("RSV bits set without a negotiated extension")]
    ReservedBits,
    /// A control frame longer than 125 bytes or fragmented (RFC 6455 §5.5).
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    /// A message (or frame) longer than the session's limit ([`message_limit`]).
    #[error("message of {0} bytes or more is larger than this session carries")]
    TooBig(u64),
    /// A client frame without a mask, or a server frame with one (RFC 6455 §5.1).
    #[error("frame masked the wrong way for its direction")]
    Masking,
    /// A continuation with no message begun, or a new message before the last one ended
    /// (RFC 6455 §5.4).
    #[error("fragments out of order")]
    Fragments,
    /// A close frame with a code that may not be sent, or a one-byte or non-UTF-8 payload.
    #[error("invalid close frame")]
    BadClose,
}

impl FrameError {
    /// The close code that answers it (RFC 6455 §7.4.1): 1009 for a frame too big, else 1002.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooBig(_) => 1009,
            _ => 1002,
        }
    }
}

/// Cuts a byte stream into whole frames. Holds only the bytes of the frame in progress; an idle
/// decoder holds no allocation.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(MAX_MESSAGE)
    }
}

impl Decoder {
    /// A decoder that refuses frames with payloads over `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held of a frame not yet whole.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `None` until one is, or why the stream is not one a session carries.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode =
            Opcode::from_bits(b[0] & 0x0f).ok_or(FrameError::ReservedOpcode(b[0] & 0x0f))?;
        let fin = b[0] & 0x80 != 0;
        let masked = b[1] & 0x80 != 0;
        let (len, ext) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 2),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 8)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 0),
        };
        if opcode.is_control() && (!fin || len > 125) {
            return Err(FrameError::BadControl);
        }
        if len > self.limit {
            return Err(FrameError::TooBig(len));
        }
        let header_len = 2 + ext + if masked { 4 } else { 0 };
        let total = header_len + len as usize;
        if b.len() < total {
            self.buf.reserve(total - b.len());
            return Ok(None);
        }
        let mask = masked.then(|| {
            let k = &b[2 + ext..2 + ext + 4];
            [k[0], k[1], k[2], k[3]]
        });
        let raw = self.buf.split_to(total).freeze();
        if self.buf.is_empty() {
            self.buf = BytesMut::new(); // an idle session keeps no read buffer
        }
        Ok(Some(Frame {
            opcode,
            fin,
            raw,
            header_len,
            mask,
        }))
    }
}

/// A frame as a server writes it (unmasked), toward the client. `payload` at most 125 bytes for
/// control frames.
pub fn to_client(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut f = header(opcode, payload.len(), false);
    f.extend_from_slice(payload);
    f
}

/// A frame as a client writes it (masked with a fresh key), toward the instance.
pub fn to_instance(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let key: [u8; 4] = rand::random();
    let mut f = header(opcode, payload.len(), true);
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A close frame's payload: the code, then a reason of at most 123 bytes.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

fn header(opcode: Opcode, len: usize, masked: bool) -> Vec<u8> {
    let m = if masked { 0x80 } else { 0 };
    let mut f = Vec::with_capacity(len + 14);
    f.push(0x80 | opcode.bits());
    match len {
        0..=125 => f.push(m | len as u8),
        126..=65535 => {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let mut stream = Vec::new();
        let sent = [
            to_client(Opcode::Text, b"hello"),
            to_instance(Opcode::Binary, &[7u8; 300]),
            to_client(Opcode::Ping, b"p"),
            to_client(Opcode::Binary, &vec![1u8; 70_000]),
            to_instance(Opcode::Close, &close_payload(1000, "bye")),
        ];
        for f in &sent {
            stream.extend_from_slice(f);
        }
        for chunk in [1, 3, 100, 4096, stream.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), sent.len(), "chunk {chunk}");
            for (g, s) in got.iter().zip(&sent) {
                assert_eq!(&g.raw[..], &s[..], "raw bytes unchanged");
            }
            assert_eq!(got[1].payload(), vec![7u8; 300], "masked payload unmasked");
            assert_eq!(got[4].close_code(), Some(1000));
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn streams_a_session_cannot_carry_are_refused() {
        let mut d = Decoder::default();
        d.push(&[0x83, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::ReservedOpcode(3)));
        let mut d = Decoder::default();
        d.push(&[0xC1, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::ReservedBits));
        let mut d = Decoder::default();
        d.push(&[0x09, 0]); // a fragmented ping
        assert_eq!(d.next_frame(), Err(FrameError::BadControl));
        let mut d = Decoder::default();
        d.push(&[0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::TooBig(0x1000_0000)));
        let mut d = Decoder::new(1000);
        d.push(&[0x82, 126, 0x03, 0xe9]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooBig(1001)),
            "a session's own limit"
        );
        assert_eq!(FrameError::TooBig(1).close_code(), 1009);
    }

    #[test]
    fn close_frames_are_checked_as_rfc_6455_says() {
        let close = |p: &[u8]| {
            let mut d = Decoder::default();
            d.push(&to_instance(Opcode::Close, p));
            d.next_frame().unwrap().unwrap()
        };
        assert!(close(&[]).valid_close());
        assert!(close(&close_payload(1000, "bye")).valid_close());
        assert!(close(&close_payload(4001, "")).valid_close());
        for bad in [1005u16, 1006, 1015, 999, 5000, 1004] {
            assert!(!close(&close_payload(bad, "")).valid_close(), "{bad}");
        }
        assert!(!close(&[3]).valid_close(), "one byte");
        assert!(!close(&[3, 232, 0xff]).valid_close(), "not UTF-8");
        assert!(close(&[]).masked());
        assert!(Decoder::default().next_frame().unwrap().is_none());
    }

    #[test]
    fn a_close_reason_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let p = close_payload(4001, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
