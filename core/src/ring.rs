//! The ingestion ring: a wait-free multi-producer claim on the seats of the boarding slot,
//! sealed by the driver with one atomic swap.
//!
//! Items here are `pub` so that `--cfg busline_loom` can re-export them to the loom model
//! checks (`crate::model`); the module itself is private, so they are not part of the API.
#![cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]

use crossbeam_utils::CachePadded;

use crate::slot::Slot;
use crate::sync::{AtomicU64, Ordering};

/// The most batch slots a ring can have: one bit each in the free mask.
pub(crate) const MAX_SLOTS: usize = 64;

/// The stop: the head word every producer claims from, and the fixed set of batch slots.
#[derive(Debug)]
pub struct Ring<K, R> {
    /// `{ closed, epoch, slot, count }`, see the accessors below.
    head: CachePadded<AtomicU64>,
    /// Bit `i` set: slot `i` is free (nobody refers to it; the driver may open it).
    free: CachePadded<AtomicU64>,
    slots: Box<[Slot<K, R>]>,
    seats: usize,
}

// The essay.
//
// # States
//
// The head word packs `{ closed: 1, epoch: 17, slot: 6, count: 40 }`. `slot` is the batch slot
// now boarding, `count` the number of claims made on it since it opened, `epoch` a sequence
// number that tells one opening of a slot from the next, `closed` that the batcher accepts no
// more requests. Producers only ever add to `count`; only the driver changes the other fields.
// Each batch slot is, in turn: free (in the `free` mask), boarding (named by the head word),
// sealed (its batch is collecting, running or being read by its callers), then free again.
//
// # Submitting
//
// A producer claims a seat with one `fetch_add(1)` on the head word: wait-free, never a CAS
// loop. The value it gets back names the slot and the seat index (`count` before the add).
// If the index is below the number of seats, the seat is the producer's alone: it writes its
// key and publishes it with a Release store of the seat's state (see `slot.rs`). At or beyond
// the number of seats the bus is full (`Claim::Full`): the producer wrote nothing and applies
// the overflow policy. With `closed` set it is refused (`Claim::Closed`).
//
// # Sealing an epoch
//
// The driver seals the boarding slot with one `swap` of the head word to
// `{ epoch: e + 1, slot: next, count: 0 }`, where `next` is a free slot it has prepared. Every
// claim is ordered against that swap in the head word's modification order: a claim before it
// is counted in the old `count` the swap returns (and so is in the sealed batch), a claim after
// it lands in `next`. There is no in-between. The sealed batch holds
// `min(count, seats)` requests; the driver then waits for each of those seats to be written
// (a producer may be between its `fetch_add` and its store) before it reads their keys.
//
// # Reusing a slot
//
// A sealed slot counts its references: one per seated request (released by its caller when
// it has read the outcome, or when it gives up) and one for the batch (released by whoever
// publishes the outcome). The release that brings the count to zero resets the slot (drops keys
// and result, empties seats) and sets its bit in `free` with Release. The driver takes a slot
// out of `free` with Acquire, so the reset happens before any reuse. Rule: a slot is reused only
// when no producer (all its sealed seats were written before the batch was collected, and a
// claim after the seal lands elsewhere), no caller and no batch can still touch it.
//
// # Races (and why they are safe)
//
// - Claim vs seal: decided by the head word's modification order, above.
// - A claim past the seats vs the seal: the full-bus producer never touches the slot; the
//   count beyond `seats` is discarded by the `min`. It must never carry into `slot`: under
//   `Overflow::Wait` a producer claims again only once the epoch has changed (at most one
//   claim past the seats per producer per epoch); under `Reject` and `RunAlone` a producer
//   that sees the batcher at capacity does not claim at all, so only the arrivals between the
//   bus filling and the driver noticing count past it. `count` has 40 bits: 10^12 claims, 30
//   hours of 10 M/s, in one epoch. `epoch` (17 bits) only tells one opening of a slot from the
//   next for a producer waiting for room, which re-checks within microseconds of its claim.
// - Publish vs register: see `slot.rs` (register before check; publish before wake).
// - Cancel vs collect: the driver either sees the seat WRITTEN (the key goes in the batch and the
//   caller's release is one of the counted references) or CANCELLED (left out); the caller
//   releases exactly once either way.
//
// The claim-then-publish protocol is that of Vyukov's bounded MPMC queue and of the Disruptor's
// multi-producer sequencer: claim a position with one atomic add, then publish the position's
// data with a per-position flag the consumer waits on.

/// Bit set once the batcher is closed. Grants nothing: a claim that sees it is refused.
const CLOSED: u64 = 1 << 63;
const EPOCH_SHIFT: u32 = 46;
const EPOCH_MASK: u64 = (1 << 17) - 1;
const SLOT_SHIFT: u32 = 40;
const SLOT_MASK: u64 = (1 << 6) - 1;
const COUNT_MASK: u64 = (1 << 40) - 1;

#[inline(always)]
fn count_of(word: u64) -> usize {
    (word & COUNT_MASK) as usize
}

#[inline(always)]
fn slot_of(word: u64) -> usize {
    ((word >> SLOT_SHIFT) & SLOT_MASK) as usize
}

#[inline(always)]
fn epoch_of(word: u64) -> u64 {
    (word >> EPOCH_SHIFT) & EPOCH_MASK
}

#[inline(always)]
fn is_closed(word: u64) -> bool {
    word & CLOSED != 0
}

#[inline(always)]
fn pack(epoch: u64, slot: usize) -> u64 {
    ((epoch & EPOCH_MASK) << EPOCH_SHIFT) | ((slot as u64) << SLOT_SHIFT)
}

/// What a producer's claim got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Seat `index` of slot `slot` is this producer's.
    Seat {
        /// The boarding slot.
        slot: usize,
        /// The seat.
        index: usize,
    },
    /// The boarding slot was full; `boarding` identifies it, to wait for the next one.
    Full {
        /// The `{ epoch, slot }` part of the head word that was full.
        boarding: u64,
    },
    /// The batcher is closed.
    Closed,
}

/// A slot the driver has just sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// The sealed slot.
    pub slot: usize,
    /// Seats taken.
    pub count: usize,
}

impl<K, R> Ring<K, R> {
    /// A ring of `slots` batch slots of `seats` seats each; slot 0 boards first.
    pub fn new(slots: usize, seats: usize) -> Ring<K, R> {
        assert!((2..=MAX_SLOTS).contains(&slots), "2..=64 slots");
        assert!(seats >= 1 && seats <= u32::MAX as usize / 2, "seats out of range");
        let slots: Box<[Slot<K, R>]> = (0..slots).map(|_| Slot::new()).collect();
        // SAFETY: the ring is not shared yet: exclusive access to slot 0.
        unsafe { slots[0].prepare(seats) };
        let all = if slots.len() == 64 { u64::MAX } else { (1u64 << slots.len()) - 1 };
        Ring {
            head: CachePadded::new(AtomicU64::new(pack(0, 0))),
            free: CachePadded::new(AtomicU64::new(all & !1)),
            slots,
            seats,
        }
    }

    /// Seats per slot.
    pub fn seats(&self) -> usize {
        self.seats
    }

    /// Slot `index`.
    #[inline(always)]
    pub fn slot(&self, index: usize) -> &Slot<K, R> {
        &self.slots[index]
    }

    /// Claims a seat on the boarding slot. Wait-free: one `fetch_add`.
    #[inline]
    pub fn claim(&self) -> Claim {
        #[cfg(not(feature = "loom-broken-claim"))]
        // Acquire: pairs with the driver's Release swap that opened this slot, so its
        // preparation (entries allocated, seats empty) is visible before we write a seat.
        let word = self.head.fetch_add(1, Ordering::Acquire);
        #[cfg(feature = "loom-broken-claim")]
        // BROKEN ON PURPOSE (loom-tests): read, then claim, in two steps. Two producers can get
        // the same seat, and a claim can land after the seal without being counted.
        let word = {
            let w = self.head.load(Ordering::Acquire);
            self.head.store(w + 1, Ordering::Release);
            w
        };
        if is_closed(word) {
            return Claim::Closed;
        }
        let index = count_of(word);
        if index < self.seats {
            Claim::Seat { slot: slot_of(word), index }
        } else {
            Claim::Full { boarding: word & !COUNT_MASK }
        }
    }

    /// Has the boarding slot changed since a [`Claim::Full`] saw `boarding`?
    pub fn has_moved_on(&self, boarding: u64) -> bool {
        // SeqCst: pairs with the SeqCst seal and close swaps (see `seal`).
        self.head.load(Ordering::SeqCst) & !COUNT_MASK != boarding
    }

    /// The `{ epoch, slot }` part of the head word now: what a [`Claim::Full`] would report, for
    /// a waiter that has not claimed (a `tower` service waiting to be ready).
    #[cfg_attr(not(feature = "tower"), allow(dead_code, reason = "used by the tower service only"))]
    pub fn boarding_word(&self) -> u64 {
        // Acquire: as `has_moved_on`.
        self.head.load(Ordering::Acquire) & !COUNT_MASK
    }

    /// The boarding slot and how many seats are taken in it (driver side; a snapshot).
    pub fn boarding(&self) -> Sealed {
        let word = self.head.load(Ordering::Relaxed);
        Sealed { slot: slot_of(word), count: count_of(word).min(self.seats) }
    }

    /// Is a free slot available for the next epoch?
    pub fn has_free_slot(&self) -> bool {
        self.free.load(Ordering::Relaxed) != 0
    }

    /// Slots sealed and not yet released (excludes the boarding slot, if any: a closed ring
    /// has none, its last boarding slot was sealed by `close`).
    pub fn live_slots(&self) -> usize {
        let boarding = usize::from(!self.is_closed());
        let free = self.free.load(Ordering::Relaxed).count_ones() as usize;
        self.slots.len().saturating_sub(boarding + free)
    }

    /// Whether the ring is closed.
    pub fn is_closed(&self) -> bool {
        is_closed(self.head.load(Ordering::Relaxed))
    }

    /// Seals the boarding slot and opens a free one. Returns `None` (and changes nothing) if no
    /// slot is free. Driver only: one caller at a time.
    pub fn seal(&self) -> Option<Sealed> {
        // Acquire: pairs with the Release `fetch_or` in `release`: the reset of a freed slot
        // happens before we prepare and reopen it.
        let free = self.free.load(Ordering::Acquire);
        if free == 0 {
            return None;
        }
        let next = free.trailing_zeros() as usize;
        // Only the driver clears bits; releasers only set them.
        self.free.fetch_and(!(1 << next), Ordering::Relaxed);
        // SAFETY: `next` was free: no producer, caller or batch refers to it.
        unsafe { self.slots[next].prepare(self.seats) };
        // Only the driver changes the epoch and slot fields, so this read is current for them.
        let current = self.head.load(Ordering::Relaxed);
        debug_assert!(!is_closed(current), "sealing a closed ring");
        // Release: publishes the preparation of `next` to producers that claim in it.
        // Acquire: orders the reads of the sealed slot after every claim counted here.
        // SeqCst (free on x86, where every swap is a full barrier): a producer waiting for
        // room announces itself, then checks `has_moved_on`; the driver seals, then checks the
        // announcement. Both pairs are SeqCst, so one of the two sees the other.
        let old = self.head.swap(pack(epoch_of(current) + 1, next), Ordering::SeqCst);
        Some(self.sealed(old))
    }

    /// Seals the boarding slot for good: every later claim is refused. Driver only.
    pub fn close(&self) -> Sealed {
        let current = self.head.load(Ordering::Relaxed);
        debug_assert!(!is_closed(current), "closing a closed ring");
        // SeqCst: a producer that waits for room checks `has_moved_on` after announcing
        // itself; this swap and that check are totally ordered (see `Batcher`'s overflow path).
        let old = self.head.swap(CLOSED | pack(epoch_of(current) + 1, 0), Ordering::SeqCst);
        self.sealed(old)
    }

    fn sealed(&self, old: u64) -> Sealed {
        let sealed = Sealed { slot: slot_of(old), count: count_of(old).min(self.seats) };
        self.slots[sealed.slot].on_sealed(sealed.count);
        sealed
    }

    /// Drops `n` references to slot `slot`; if they were the last, returns the slot to the free
    /// pool and returns `true` (the driver may want to know: it may be waiting for a slot).
    pub fn release(&self, slot: usize, n: i64) -> bool {
        if self.slots[slot].release(n) {
            // Release: pairs with the Acquire load in `seal`.
            self.free.fetch_or(1 << slot, Ordering::Release);
            true
        } else {
            false
        }
    }
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let w = pack(12345, 63) + 77;
        assert_eq!(epoch_of(w), 12345);
        assert_eq!(CLOSED >> EPOCH_SHIFT, EPOCH_MASK + 1, "the fields tile the word");
        assert_eq!(slot_of(w), 63);
        assert_eq!(count_of(w), 77);
        assert!(!is_closed(w));
        assert!(is_closed(w | CLOSED));
        assert_eq!(epoch_of(pack(EPOCH_MASK + 1, 0)), 0, "the epoch wraps");
    }

    #[test]
    fn claims_seal_and_reuse() {
        let ring: Ring<u64, u32> = Ring::new(2, 2);
        assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: 0 });
        assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: 1 });
        assert!(matches!(ring.claim(), Claim::Full { .. }));
        // SAFETY: the seats were claimed above, each written once.
        unsafe {
            ring.slot(0).write(0, 10);
            ring.slot(0).write(1, 11);
        }
        let sealed = ring.seal().unwrap();
        assert_eq!(sealed, Sealed { slot: 0, count: 2 });
        // The next slot boards; no free slot is left for another seal.
        assert_eq!(ring.claim(), Claim::Seat { slot: 1, index: 0 });
        // SAFETY: claimed above.
        unsafe { ring.slot(1).write(0, 12) };
        assert!(ring.seal().is_none());
        let mut keys = vec![];
        // SAFETY: once, after the seal.
        let cancelled = unsafe { ring.slot(0).collect(2, |k| keys.push(*k)) };
        assert_eq!((keys, cancelled), (vec![10, 11], 0));
        // SAFETY: once, by the batch's holder.
        unsafe { ring.slot(0).publish(7) };
        assert!(!ring.release(0, 1), "two callers still hold it");
        assert!(!ring.release(0, 1));
        assert_eq!(ring.live_slots(), 1);
        assert!(ring.release(0, 1));
        assert_eq!(ring.live_slots(), 0);
        assert_eq!(ring.seal(), Some(Sealed { slot: 1, count: 1 }));
        assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: 0 });
    }

    #[test]
    fn early_cancel_is_left_out() {
        let ring: Ring<String, ()> = Ring::new(2, 4);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: i });
            // SAFETY: claimed above.
            unsafe { ring.slot(0).write(i, k.to_string()) };
        }
        ring.slot(0).cancel(1);
        assert!(!ring.release(0, 1), "a release before the seal never frees");
        let sealed = ring.seal().unwrap();
        let mut keys = vec![];
        // SAFETY: once, after the seal.
        let cancelled = unsafe { ring.slot(0).collect(sealed.count, |k| keys.push(k.clone())) };
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(cancelled, 1);
        // SAFETY: once.
        unsafe { ring.slot(0).publish(()) };
        assert!(!ring.release(0, 1)); // the batch
        assert!(!ring.release(0, 1)); // "a"
        assert!(ring.release(0, 1)); // "c": keys dropped, slot free
    }

    #[test]
    fn closed_refuses() {
        let ring: Ring<u64, ()> = Ring::new(2, 4);
        assert!(matches!(ring.claim(), Claim::Seat { .. }));
        // SAFETY: claimed above.
        unsafe { ring.slot(0).write(0, 1) };
        assert_eq!(ring.close(), Sealed { slot: 0, count: 1 });
        assert_eq!(ring.claim(), Claim::Closed);
        assert!(ring.is_closed());
    }
}
