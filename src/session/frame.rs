//! WebSocket frames (RFC 6455 §5.2) parsed whole, as the session layer needs them: the opcode,
//! FIN, and the frame's bytes exactly as received, so a frame is forwarded or replayed unchanged.
//! Also the few frames petrel writes itself (ping, pong, close).

use bytes::{Bytes, BytesMut};

/// The largest frame payload a session passes, bytes. A bigger frame closes the session with
/// 1009 ("message too big", RFC 6455 §7.4.1): a session keeps whole frames in memory.
pub const MAX_FRAME: u64 = 16 << 20;

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
    /// A payload longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than a session carries ({MAX_FRAME})")]
    TooBig(u64),
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
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
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
        if len > MAX_FRAME {
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
        assert_eq!(FrameError::TooBig(1).close_code(), 1009);
    }

    #[test]
    fn a_close_reason_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let p = close_payload(4001, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
