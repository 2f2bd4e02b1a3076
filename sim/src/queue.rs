//! The event queues of the engine and the clients: a 4-ary min-heap on one `u128` key per event.
//!
//! The key is `(time << 64) | sequence`, so one integer comparison orders events by time and,
//! at equal times, by the order they were scheduled (the engine's determinism rests on it).
//! Four children per node halve the heap's depth against a binary heap, and both sifts move a
//! hole rather than swapping, writing each entry once: at the simulator's sizes (a few to a
//! few hundred pending events) `std`'s `BinaryHeap` with a tuple comparison took a tenth of a
//! run, much of it in store-to-load stalls of its swaps.
//!
//! Beside the heap, a *run*: a FIFO of events pushed in increasing key order
//! ([`EventQueue::push_in_order`]). Some streams of events are scheduled in the order they
//! fire: a fixed window's deadlines are each the instance's first arrival plus the window,
//! so in a fleet of 256 instances each deadline would otherwise sift through a heap of ~256
//! timers. Appended to the run they cost O(1); an event out of order goes to the heap. The
//! earliest event is the smaller of the two fronts, so the order of events is the same as
//! with the heap alone.

use std::collections::VecDeque;

/// A pending event: its key and what it is.
#[derive(Debug, Clone, Copy)]
struct Entry<T> {
    key: u128,
    item: T,
}

/// A min-heap of `T` by `u128` key, and a run of events pushed in key order.
#[derive(Debug, Clone)]
pub struct EventQueue<T> {
    heap: Vec<Entry<T>>,
    /// Events in increasing key order (each pushed after every event in it).
    run: VecDeque<Entry<T>>,
}

/// The key of an event at `time` scheduled as the `seq`-th.
#[inline]
pub fn key(time: u64, seq: u64) -> u128 {
    (u128::from(time) << 64) | u128::from(seq)
}

/// The time of a key.
#[inline]
pub fn time_of(key: u128) -> u64 {
    (key >> 64) as u64
}

/// The sequence number of a key.
#[inline]
pub fn seq_of(key: u128) -> u64 {
    key as u64
}

impl<T: Copy> EventQueue<T> {
    /// An empty queue with room for `capacity` events.
    pub fn with_capacity(capacity: usize) -> EventQueue<T> {
        EventQueue { heap: Vec::with_capacity(capacity), run: VecDeque::with_capacity(capacity) }
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len() + self.run.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty() && self.run.is_empty()
    }

    /// The smallest key, if any.
    #[inline]
    pub fn peek_key(&self) -> Option<u128> {
        match (self.heap.first(), self.run.front()) {
            (Some(h), Some(r)) => Some(h.key.min(r.key)),
            (h, r) => h.or(r).map(|e| e.key),
        }
    }

    /// Adds `item` under `key`, to the run if no event there has a larger key (O(1)), else
    /// to the heap: for streams of events mostly scheduled in the order they fire.
    #[inline]
    pub fn push_in_order(&mut self, key: u128, item: T) {
        if self.run.back().is_none_or(|last| last.key < key) {
            self.run.push_back(Entry { key, item });
        } else {
            self.push(key, item);
        }
    }

    /// Adds `item` under `key`.
    #[inline]
    pub fn push(&mut self, key: u128, item: T) {
        let mut hole = self.heap.len();
        self.heap.push(Entry { key, item });
        while hole > 0 {
            let parent = (hole - 1) / 4;
            if self.heap[parent].key <= key {
                break;
            }
            self.heap[hole] = self.heap[parent];
            hole = parent;
        }
        self.heap[hole] = Entry { key, item };
    }

    /// Removes and returns the event of the smallest key.
    #[inline]
    pub fn pop(&mut self) -> Option<(u128, T)> {
        if let Some(r) = self.run.front()
            && self.heap.first().is_none_or(|h| r.key < h.key)
        {
            return self.run.pop_front().map(|e| (e.key, e.item));
        }
        self.pop_heap()
    }

    /// Removes and returns the heap's event of the smallest key.
    #[inline]
    fn pop_heap(&mut self) -> Option<(u128, T)> {
        let last = self.heap.pop()?;
        let Some(&top) = self.heap.first() else { return Some((last.key, last.item)) };
        let len = self.heap.len();
        let mut hole = 0;
        loop {
            let first = 4 * hole + 1;
            if first >= len {
                break;
            }
            // The smallest child, chosen by selects rather than branches: which child is
            // smallest is a coin toss the branch predictor loses (a tenth of a fleet run).
            let mut child = first;
            let mut child_key = self.heap[first].key;
            for c in first + 1..(first + 4).min(len) {
                let k = self.heap[c].key;
                let less = k < child_key;
                child = if less { c } else { child };
                child_key = if less { k } else { child_key };
            }
            if child_key >= last.key {
                break;
            }
            self.heap[hole] = self.heap[child];
            hole = child;
        }
        self.heap[hole] = last;
        Some((top.key, top.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn pops_in_key_order_like_a_sorted_list() {
        let mut rng = crate::rng::stream(3, crate::rng::Stream::Arrivals);
        let mut q = EventQueue::with_capacity(4);
        let mut reference: Vec<u128> = Vec::new();
        let mut seq = 0;
        for round in 0..20_000u64 {
            // Pushes and pops interleaved, with ties in time told apart by the sequence.
            for _ in 0..rng.random_range(0..4) {
                seq += 1;
                let k = key(round + rng.random_range(0..50), seq);
                // Half the pushes try the run: in order or not, the pops stay in key order.
                if rng.random::<bool>() {
                    q.push_in_order(k, seq);
                } else {
                    q.push(k, seq);
                }
                reference.push(k);
            }
            for _ in 0..rng.random_range(0..4) {
                reference.sort_unstable_by(|a, b| b.cmp(a));
                let want = reference.pop();
                assert_eq!(q.pop().map(|(k, _)| k), want);
            }
            assert_eq!(q.len(), reference.len());
        }
        reference.sort_unstable();
        for want in reference {
            let (k, item) = q.pop().unwrap();
            assert_eq!(k, want);
            assert_eq!(u128::from(item), k & u128::from(u64::MAX), "the item travels with its key");
        }
        assert!(q.is_empty());
        assert_eq!((time_of(key(7, 9)), seq_of(key(7, 9))), (7, 9));
    }
}
