//! Replay protection: a sliding window of counters per sender (its authenticated sender id and
//! generation, never its address: a datagram replayed from another port is still a replay), as
//! in IPsec/DTLS.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};

const WINDOW: u64 = 64;

/// Remembers which counters each sender generation has used recently.
pub struct ReplayGuard {
    windows: HashMap<(u64, u64), (u64, u64)>,
    order: VecDeque<(u64, u64)>,
    capacity: usize,
}

impl ReplayGuard {
    /// Tracks at most `capacity` senders (oldest forgotten first).
    pub fn new(capacity: usize) -> Self {
        Self {
            windows: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True (and recorded) if `counter` is new for `sender` in `generation`; false for a replay
    /// or a counter older than the window.
    pub fn accept(&mut self, sender: u64, generation: u64, counter: u64) -> bool {
        let sender = (sender, generation);
        let Some((highest, bits)) = self.windows.get_mut(&sender) else {
            if self.order.len() >= self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.windows.remove(&old);
                }
            }
            self.order.push_back(sender);
            self.windows.insert(sender, (counter, 1));
            return true;
        };
        if counter > *highest {
            let shift = counter - *highest;
            *bits = if shift >= WINDOW {
                1
            } else {
                (*bits << shift) | 1
            };
            *highest = counter;
            true
        } else {
            let age = *highest - counter;
            if age >= WINDOW || *bits & (1 << age) != 0 {
                false
            } else {
                *bits |= 1 << age;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> u64 {
        1
    }

    #[test]
    fn duplicates_and_old_counters_are_refused_reordering_is_fine() {
        let mut g = ReplayGuard::new(16);
        assert!(g.accept(a(), 1, 10));
        assert!(!g.accept(a(), 1, 10));
        assert!(g.accept(a(), 1, 12));
        assert!(g.accept(a(), 1, 11), "late but inside the window");
        assert!(!g.accept(a(), 1, 11));
        assert!(g.accept(a(), 1, 200));
        assert!(!g.accept(a(), 1, 100), "older than the window");
        assert!(g.accept(a(), 2, 10), "a new generation has its own window");
        assert!(g.accept(2, 1, 10), "so does another sender");
    }

    #[test]
    fn capacity_is_bounded() {
        let mut g = ReplayGuard::new(4);
        for gen in 0..100 {
            assert!(g.accept(a(), gen, 1));
        }
        assert!(g.windows.len() <= 4);
    }
}
