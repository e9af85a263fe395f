//! The most recent instance→client messages of one session, numbered from 0, kept within
//! `replay_bytes` so that a client that comes back can be sent what it missed. Sans-IO.

use std::collections::VecDeque;

/// Bytes a held message costs besides its own (its length in the index).
const INDEX_COST: usize = 4;

/// Instance→client messages as their frames' bytes, oldest first, in one ring of at most
/// `limit` bytes (index included): memory stays within the limit whatever the messages' sizes.
#[derive(Debug)]
pub struct ReplayBuffer {
    limit: usize,
    /// Every held message's frames, then the frames of the message in progress.
    bytes: VecDeque<u8>,
    /// Each held message's length in `bytes`.
    lens: VecDeque<u32>,
    /// The number of the oldest held message.
    first: u64,
    /// Bytes at the end of `bytes` that belong to the message in progress.
    partial: usize,
    /// The message in progress outgrew the limit and is not held.
    partial_lost: bool,
}

/// What a returning client is sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Replay {
    /// Missed messages no longer held (`Petrel-Session-Gap`).
    pub gap: u64,
    /// The frames to send, in order: the held messages from the one asked for, then the message
    /// in progress so far.
    pub bytes: Vec<u8>,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: VecDeque::new(),
            lens: VecDeque::new(),
            first: 0,
            partial: 0,
            partial_lost: false,
        }
    }

    /// Messages completed so far (the next message's number).
    pub fn sent(&self) -> u64 {
        self.first + self.lens.len() as u64
    }

    /// Bytes held now, index included.
    pub fn used(&self) -> usize {
        self.bytes.len() + INDEX_COST * self.lens.len()
    }

    /// Adds one data frame (`raw`, as sent); `ends_message` for the frame with FIN.
    pub fn push_frame(&mut self, raw: &[u8], ends_message: bool) {
        if !self.partial_lost {
            let need = raw.len() + if ends_message { INDEX_COST } else { 0 };
            while self.used() + need > self.limit && !self.lens.is_empty() {
                self.evict_oldest();
            }
            if self.used() + need > self.limit {
                // The message in progress alone is larger than the limit: it is not held.
                self.bytes.truncate(self.bytes.len() - self.partial);
                self.partial = 0;
                self.partial_lost = true;
            } else {
                self.reserve(raw.len());
                self.bytes.extend(raw);
                self.partial += raw.len();
            }
        }
        if ends_message {
            if self.partial_lost {
                // Numbered but not held: as if evicted at once.
                debug_assert!(self.lens.is_empty() && self.partial == 0);
                self.first += 1;
                self.partial_lost = false;
            } else {
                self.lens.push_back(self.partial as u32);
            }
            self.partial = 0;
        }
    }

    /// What a client that has received messages `0..n` is sent, or `Err(sent)` if `n` is more
    /// than have been sent.
    pub fn replay_from(&self, n: u64) -> Result<Replay, u64> {
        if n > self.sent() {
            return Err(self.sent());
        }
        let gap = self.first.saturating_sub(n);
        let skip: usize = self
            .lens
            .iter()
            .take(n.saturating_sub(self.first) as usize)
            .map(|l| *l as usize)
            .sum();
        let bytes = self.bytes.range(skip..).copied().collect();
        Ok(Replay { gap, bytes })
    }

    fn evict_oldest(&mut self) {
        if let Some(l) = self.lens.pop_front() {
            self.bytes.drain(..l as usize);
            self.first += 1;
        }
    }

    /// Grows the ring by doubling, never past the limit.
    fn reserve(&mut self, more: usize) {
        let need = self.bytes.len() + more;
        if need > self.bytes.capacity() {
            let cap = (self.bytes.capacity() * 2)
                .max(need)
                .max(256)
                .min(self.limit);
            self.bytes.reserve_exact(cap.max(need) - self.bytes.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u8, len: usize) -> Vec<u8> {
        vec![i; len]
    }

    #[test]
    fn a_client_gets_exactly_what_it_missed() {
        let mut r = ReplayBuffer::new(1 << 20);
        for i in 0..10 {
            r.push_frame(&msg(i, 10), true);
        }
        assert_eq!(r.sent(), 10);
        let got = r.replay_from(7).unwrap();
        assert_eq!(got.gap, 0);
        assert_eq!(got.bytes, [msg(7, 10), msg(8, 10), msg(9, 10)].concat());
        assert!(r.replay_from(10).unwrap().bytes.is_empty());
        assert_eq!(r.replay_from(11), Err(10));
    }

    #[test]
    fn old_messages_go_first_and_the_gap_counts_them() {
        let mut r = ReplayBuffer::new(100);
        for i in 0..20 {
            r.push_frame(&msg(i, 16), true); // 20 bytes each with the index
        }
        assert!(r.used() <= 100);
        assert_eq!(r.sent(), 20);
        let got = r.replay_from(3).unwrap();
        assert_eq!(got.gap, 12, "messages 3..15 are gone");
        let held: Vec<Vec<u8>> = (15..20).map(|i| msg(i, 16)).collect();
        assert_eq!(got.bytes, held.concat(), "the 5 that fit in 100 bytes");
        assert!(
            r.bytes.capacity() <= 128,
            "the ring never grows past the limit"
        );
    }

    #[test]
    fn a_fragmented_message_is_replayed_whole_and_the_one_in_progress_follows() {
        let mut r = ReplayBuffer::new(1000);
        r.push_frame(b"a1", false);
        r.push_frame(b"a2", true);
        r.push_frame(b"b1", false);
        assert_eq!(r.sent(), 1);
        assert_eq!(r.replay_from(0).unwrap().bytes, b"a1a2b1");
        assert_eq!(r.replay_from(1).unwrap().bytes, b"b1");
    }

    #[test]
    fn a_message_larger_than_the_limit_is_numbered_but_not_held() {
        let mut r = ReplayBuffer::new(50);
        r.push_frame(&msg(1, 10), true);
        r.push_frame(&msg(2, 40), false);
        r.push_frame(&msg(2, 40), true);
        r.push_frame(&msg(3, 10), true);
        assert_eq!(r.sent(), 3);
        let got = r.replay_from(0).unwrap();
        assert_eq!(got.gap, 2);
        assert_eq!(got.bytes, msg(3, 10));
    }
}
