//! WebSocket frame boundaries in a spliced byte stream (RFC 6455 §5.2), so that a close frame can
//! be put between two frames when a drain deadline ends a socket, never inside one.

/// Tracks where frames start and end in one direction of a WebSocket.
#[derive(Debug, Default)]
pub struct FrameTracker {
    head: [u8; 14],
    have: usize,
    /// Payload bytes left in the current frame (0 while reading a header).
    left: u64,
}

impl FrameTracker {
    /// True between two frames: a frame written now would not split another.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }

    /// Consumes `data` up to and including the end of the current frame; returns how many bytes
    /// that took (all of `data` when the frame goes on past it).
    pub fn advance(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            if self.left > 0 {
                let take =
                    (data.len() - used).min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= take as u64;
                used += take;
                if self.left == 0 {
                    return used;
                }
                continue;
            }
            self.head[self.have] = data[used];
            self.have += 1;
            used += 1;
            if let Some(len) = self.header_len() {
                if self.have == len {
                    self.left = self.payload_len();
                    self.have = 0;
                    if self.left == 0 {
                        return used;
                    }
                }
            }
        }
        used
    }

    /// Total header length once the first two bytes are known.
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let ext = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        Some(2 + ext + mask)
    }

    fn payload_len(&self) -> u64 {
        match self.head[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0; 8])),
            n => u64::from(n),
        }
    }
}

/// Close code 1001, "going away" (RFC 6455 §7.4.1): the endpoint is shutting down.
const GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();

/// A close frame as a server sends it (unmasked), toward the client.
pub fn close_to_client() -> Vec<u8> {
    vec![0x88, 0x02, GOING_AWAY[0], GOING_AWAY[1]]
}

/// A close frame as a client sends it (masked with `key`), toward the instance.
pub fn close_to_server(key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x88, 0x82];
    f.extend_from_slice(&key);
    f.push(GOING_AWAY[0] ^ key[0]);
    f.push(GOING_AWAY[1] ^ key[1]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => f.push(m | payload_len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload_len));
        f
    }

    #[test]
    fn boundaries_are_found_however_the_bytes_are_cut() {
        let frames = [
            frame(0, false),
            frame(5, true),
            frame(125, false),
            frame(126, true),
            frame(70_000, false),
            frame(3, false),
        ];
        let mut ends = Vec::new();
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend_from_slice(f);
            ends.push(stream.len());
        }
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut t = FrameTracker::default();
            let mut seen = Vec::new();
            let mut pos = 0;
            for piece in stream.chunks(chunk) {
                let mut off = 0;
                while off < piece.len() {
                    off += t.advance(&piece[off..]);
                    if t.at_boundary() {
                        seen.push(pos + off);
                    }
                }
                pos += piece.len();
            }
            seen.dedup();
            assert_eq!(seen, ends, "chunk size {chunk}");
        }
    }

    #[test]
    fn close_frames_parse_as_one_frame() {
        for f in [close_to_client(), close_to_server([9, 8, 7, 6])] {
            let mut t = FrameTracker::default();
            assert_eq!(t.advance(&f), f.len());
            assert!(t.at_boundary());
        }
        let masked = close_to_server([9, 8, 7, 6]);
        assert_eq!([masked[6] ^ 9, masked[7] ^ 8], 1001u16.to_be_bytes());
    }
}
