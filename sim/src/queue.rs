//! The event queues of the engine and the clients: a 4-ary min-heap on one `u128` key per event.
//!
//! The key is `(time << 64) | sequence`, so one integer comparison orders events by time and,
//! at equal times, by the order they were scheduled (the engine's determinism rests on it).
//! Four children per node halve the heap's depth against a binary heap, and both sifts move a
//! hole rather than swapping, writing each entry once: at the simulator's sizes (a few to a
//! few hundred pending events) `std`'s `BinaryHeap` with a tuple comparison took a tenth of a
//! run, much of it in store-to-load stalls of its swaps.

/// A pending event: its key and what it is.
#[derive(Debug, Clone, Copy)]
struct Entry<T> {
    key: u128,
    item: T,
}

/// A min-heap of `T` by `u128` key.
#[derive(Debug, Clone)]
pub struct EventQueue<T> {
    heap: Vec<Entry<T>>,
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
        EventQueue { heap: Vec::with_capacity(capacity) }
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The smallest key, if any.
    #[inline]
    pub fn peek_key(&self) -> Option<u128> {
        self.heap.first().map(|e| e.key)
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
        let last = self.heap.pop()?;
        let Some(&top) = self.heap.first() else { return Some((last.key, last.item)) };
        let len = self.heap.len();
        let mut hole = 0;
        loop {
            let first = 4 * hole + 1;
            if first >= len {
                break;
            }
            let mut child = first;
            for c in first + 1..(first + 4).min(len) {
                if self.heap[c].key < self.heap[child].key {
                    child = c;
                }
            }
            if self.heap[child].key >= last.key {
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
                q.push(k, seq);
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
