//! The most recent instance→client messages of one session, numbered from 0, kept within
//! `replay_bytes` so that a client that comes back can be sent what it missed. Sans-IO.

use std::collections::VecDeque;

/// Bytes a held message costs besides its own (its length in the index).
const INDEX_COST: usize = 4;
/// The ring is kept in blocks of this many bytes (a sixteenth of `replay_bytes` when that is
/// under 64 KiB, at least 16): it grows
/// and shrinks a block at a time, never by reallocating and copying, so a held session's memory
/// is its blocks and nothing the allocator has yet to take back.
const BLOCK: usize = 4096;

/// Instance→client messages as their frames' bytes, oldest first, in a ring of blocks that with
/// the index never exceeds `limit` bytes, whatever the messages' sizes.
#[derive(Debug)]
pub struct ReplayBuffer {
    limit: usize,
    block: usize,
    /// The ring: `len` bytes from offset `head` of the first block.
    blocks: VecDeque<Box<[u8]>>,
    head: usize,
    len: usize,
    /// Each held message's length in the ring.
    lens: VecDeque<u32>,
    /// The number of the oldest held message.
    first: u64,
    /// Bytes at the end of the ring that belong to the message in progress.
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
            block: (limit / 16).clamp(16, BLOCK),
            blocks: VecDeque::new(),
            head: 0,
            len: 0,
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

    /// Bytes held now: the blocks the ring would need with `more` bytes added, and the index.
    fn cost(&self, more: usize, more_index: usize) -> usize {
        let blocks = (self.head + self.len + more).div_ceil(self.block);
        blocks * self.block + INDEX_COST * (self.lens.len() + more_index)
    }

    /// Bytes held now, blocks and index.
    pub fn used(&self) -> usize {
        self.blocks.len() * self.block + INDEX_COST * self.lens.len()
    }

    /// Adds one data frame (`raw`, as sent); `ends_message` for the frame with FIN.
    pub fn push_frame(&mut self, raw: &[u8], ends_message: bool) {
        if !self.partial_lost {
            let index = usize::from(ends_message);
            while self.cost(raw.len(), index) > self.limit && !self.lens.is_empty() {
                self.evict_oldest();
            }
            if self.cost(raw.len(), index) > self.limit {
                // The message in progress alone is larger than the limit: it is not held.
                self.truncate_partial();
                self.partial_lost = true;
            } else {
                self.append(raw);
                self.partial += raw.len();
            }
        }
        if ends_message {
            if self.partial_lost {
                // Numbered but not held: as if evicted at once.
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
        let mut bytes = Vec::with_capacity(self.len - skip);
        let mut at = self.head + skip;
        while at < self.head + self.len {
            let (b, off) = (at / self.block, at % self.block);
            let end = (self.head + self.len - at).min(self.block - off);
            bytes.extend_from_slice(&self.blocks[b][off..off + end]);
            at += end;
        }
        Ok(Replay { gap, bytes })
    }

    fn append(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let tail = self.head + self.len;
            if tail == self.blocks.len() * self.block {
                self.blocks
                    .push_back(vec![0u8; self.block].into_boxed_slice());
            }
            let (b, off) = (tail / self.block, tail % self.block);
            let n = data.len().min(self.block - off);
            self.blocks[b][off..off + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(l) = self.lens.pop_front() {
            self.head += l as usize;
            self.len -= l as usize;
            self.first += 1;
            while self.head >= self.block {
                self.blocks.pop_front();
                self.head -= self.block;
            }
            if self.len == 0 {
                self.head = 0; // an empty ring starts its block again
            }
        }
    }

    fn truncate_partial(&mut self) {
        self.len -= self.partial;
        self.partial = 0;
        while self.blocks.len() * self.block >= self.head + self.len + self.block
            && !self.blocks.is_empty()
        {
            self.blocks.pop_back();
        }
        if self.len == 0 {
            self.head = 0;
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
        let mut r = ReplayBuffer::new(400);
        for i in 0..40 {
            r.push_frame(&msg(i, 16), true); // 20 bytes each with the index
            assert!(r.used() <= 400, "blocks and index never exceed the limit");
        }
        assert_eq!(r.sent(), 40);
        let got = r.replay_from(3).unwrap();
        let held = 40 - 3 - got.gap;
        assert!((12..=20).contains(&held), "{held} held in 400 bytes");
        let expect: Vec<Vec<u8>> = (3 + got.gap as u8..40).map(|i| msg(i, 16)).collect();
        assert_eq!(got.bytes, expect.concat(), "the newest that fit, in order");
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

    #[test]
    fn blocks_are_let_go_as_messages_leave_and_never_exceed_the_limit() {
        let limit = 64 << 10;
        let mut r = ReplayBuffer::new(limit);
        let mut rng = 12345u64;
        for i in 0..5000u32 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = 1 + (rng >> 33) as usize % 3000;
            let frame: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
            r.push_frame(&frame, true);
            assert!(r.used() <= limit, "{} > {limit}", r.used());
        }
        let got = r.replay_from(r.sent() - 1).unwrap();
        assert_eq!(got.bytes.len(), r.lens.back().copied().unwrap() as usize);
        assert_eq!(
            got.bytes[0],
            (4999u32 as u8),
            "the newest message is intact"
        );
    }
}
