//! The event queue: a min-heap on (virtual time, insertion order), so equal times pop in the order
//! they were scheduled and a run is the same for the same seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Virtual time in nanoseconds since the simulation began.
pub type Nanos = u64;

/// Heap entries stay small (24 bytes) whatever the event's size: the heap moves entries on every
/// push and pop, the events themselves sit still in a slab.
#[derive(PartialEq, Eq)]
struct Entry {
    at: Nanos,
    seq: u64,
    slot: u32,
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest event must come out first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Pending events.
pub struct Queue<E> {
    heap: BinaryHeap<Entry>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Schedules `ev` at `at`.
    pub fn push(&mut self, at: Nanos, ev: E) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(ev);
                slot
            }
            None => {
                self.slab.push(Some(ev));
                u32::try_from(self.slab.len() - 1).expect("fewer than 2^32 pending events")
            }
        };
        self.heap.push(Entry {
            at,
            seq: self.seq,
            slot,
        });
    }

    /// The earliest event.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        let e = self.heap.pop()?;
        self.free.push(e.slot);
        let ev = self.slab[e.slot as usize]
            .take()
            .expect("a queued slot holds its event");
        Some((e.at, ev))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events processed so far plus pending ones (a measure of work).
    pub fn scheduled(&self) -> u64 {
        self.seq
    }
}

/// Milliseconds to nanoseconds.
pub fn ms(x: f64) -> Nanos {
    (x.max(0.0) * 1e6) as Nanos
}

/// Seconds to nanoseconds.
pub fn secs(x: f64) -> Nanos {
    (x.max(0.0) * 1e9) as Nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_insertion_order() {
        let mut q = Queue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        assert_eq!(q.pop(), Some((1, "a")));
        assert_eq!(q.pop(), Some((5, "b")));
        q.push(3, "d");
        q.push(3, "e");
        assert_eq!(q.pop(), Some((3, "d")), "a reused slot keeps time order");
        assert_eq!(q.pop(), Some((3, "e")));
        assert_eq!(q.pop(), Some((5, "c")));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }
}
