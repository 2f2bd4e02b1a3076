//! The ingestion ring: a wait-free multi-producer claim on the seats of the boarding slot,
//! sealed by the driver with one atomic swap.
//!
//! Items here are `pub` so that `--cfg busline_loom` can re-export them to the loom model
//! checks (`crate::model`); the module itself is private, so they are not part of the API.
#![cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::slot::{SeatPlace, SeatPool, Slot, fresh_seat};
#[cfg(busline_loom)]
use crate::sync::Bug;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// The most batch slots a ring can have: one bit each in the free mask.
pub(crate) const MAX_SLOTS: usize = 64;

/// The most seats a slot can have: a larger `max_batch_size` (up to `usize::MAX`, "no limit")
/// gets this many. Half of what `count` can hold, so that the claims past the seats (at most
/// one per thread, see the essay) never carry; and more than memory holds (2^39 seats of at
/// least 32 bytes are 16 TiB), so it limits nothing in practice.
pub const MAX_SEATS: usize = 1 << 39;

/// The stop: the head word every producer claims from, and the fixed set of batch slots.
#[derive(Debug)]
pub struct Ring<K, R> {
    /// `{ closed, epoch, slot, count }`, see the accessors below.
    head: CachePadded<AtomicU64>,
    /// Bit `i` set: slot `i` is free (nobody refers to it; the driver may open it).
    free: CachePadded<AtomicU64>,
    slots: Box<[Slot<K, R>]>,
    seats: usize,
    /// Set by a producer waiting for room (`want_room`), taken by the driver after each seal
    /// (`take_room_wanted`). Off the head's cache line: producers claim there.
    room_wanted: CachePadded<AtomicBool>,
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
// A producer first loads the head word: if the bus is already full (or the ring closed) it stops
// there (`Claim::Full`, `Claim::Closed`) without claiming. Otherwise it claims a seat with one
// `fetch_add(1)`: wait-free, never a CAS loop. The value it gets back names the slot and the
// seat index (`count` before the add). If the index is below the number of seats, the seat is
// the producer's alone: it writes its key (installing the seat's segment first if it is
// missing, see `seats.rs`) and publishes it with a Release store of the seat's state (see
// `slot.rs`). At or beyond
// the number of seats the bus is full (`Claim::Full`): the producer wrote nothing and applies
// the overflow policy. With `closed` set it is refused (`Claim::Closed`).
//
// The claim is an x86 locked instruction (or an ARM acquire RMW): it waits for every earlier
// store, the previous submit's seat included, and nothing after it starts before it ends. So
// every step between the `fetch_add` and the seat's stores is paid in series by each submit.
// The producer therefore locates the seat it expects (the next one of the slot it saw, from its
// first load) before claiming, and after the claim only compares the word it got with the word
// it saw: equal, it is that seat; otherwise (another producer claimed in between) it locates
// the seat it got. Locating is arithmetic on the slot's segment table, which never moves, so a
// guess that turns out wrong costs only the second computation. (The claim comes in two
// halves, `look` and `claim_looked`, so that the caller can record the expected seat before
// the claim too: see `signals::board_then`.)
//
// The segment's pointer, though, is loaded after the claim, not guessed with the place. The
// place is the same in every opening of the slot; the table's content is not: the reset hands
// the segments back to the pool, which frees or passes them to other slots. `word == seen`
// tells the same slot and seat, not the same opening: the 17-bit epoch wraps, and a producer
// preempted between its look and its claim while 2^17 seals go by, which then claims when the
// head word is again exactly what it saw, would write through a pointer read two openings ago
// into a segment freed or reused since. (Without the wrap the guess would be sound: the look,
// with Acquire, would order the last reset before the pointer's load, and a pointer installed
// in a later opening happens after the seal that opened it, so the claim would read a later
// word.) Only a table whose entries never change once set (segments kept by their slot, not
// pooled) would make the early load sound; the pool is what lets memory follow the load down.
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
//   count beyond `seats` is discarded by the `min`.
// - The count never carries into `slot`, enforced by `claim` itself: a producer first loads the
//   head word (Relaxed) and does not claim if `count >= seats`. So a claim past the seats
//   comes from a producer whose load saw room that was gone by its `fetch_add`; after such a
//   claim, that thread's next load sees the count it left or a later one (coherence), which
//   is full, or a new epoch. Past the seats, `count` therefore grows by at most one per
//   thread per epoch, whatever the overflow policy does: `count <= seats + threads`. `seats`
//   is at most `MAX_SEATS` = 2^39 and a process has far fewer than 2^39 threads (Linux caps
//   thread ids at 2^22), so `count < 2^40` and never reaches `slot`. `epoch` (17 bits) only
//   tells one opening of a slot from the next for a producer waiting for room, which
//   re-checks within microseconds of its claim.
// - Publish vs register: see `slot.rs` (register before check; publish before wake).
// - Cancel vs collect: the driver either sees the seat WRITTEN (the key goes in the batch and the
//   caller's release is one of the counted references) or CANCELLED (left out); the caller
//   releases exactly once either way.
// - Installing a seat's segment vs the seal and the collect: see `seats.rs`.
//
// # Waking a producer that waits for room
//
// A producer that found the bus full (under `Overflow::Wait`) must not sleep through the seal
// that makes room. It creates its notification (tokio's `Notified`, which receives any
// `notify_waiters` from its creation on), then `want_room`: announces itself with
// `room_wanted.swap(true)` and checks `has_moved_on`. The driver seals (or closes), then
// `take_room_wanted`: `room_wanted.swap(false)`, and notifies if it was set. Both accesses to
// `room_wanted` are read-modify-writes (AcqRel), so they are ordered in its modification
// order and the later one reads the earlier: if the driver's swap is first, the producer's
// swap acquires it, so the seal happens before the producer's check, which sees the moved-on
// head; if the producer's is first, the driver reads `true` and notifies after it. Either way
// the producer wakes. (A store for the announcement would leave the two checks racing past
// each other, the store-buffering pattern, unless every access is SeqCst; loom, which models
// SeqCst as AcqRel, finds the lost wake-up: `Bug::Room`.) The head word's own orderings take no
// part in this.
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
#[cfg_attr(
    not(any(test, busline_loom)),
    allow(dead_code, reason = "the engine's `look` answers `Full` or `Closed`; a `Seat` comes from `claim`, for tests and loom models")
)]
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

/// What a producer's [`Ring::claim_placed`] got: a [`Claim`], with where the seat lives.
#[derive(Debug)]
pub(crate) enum Placed<'a, K> {
    /// Seat `index` of slot `slot` is this producer's; it lives at `place`. `guessed`: it is
    /// the seat its [`Seen`] expected.
    Seat { slot: usize, index: usize, place: SeatPlace<'a, K>, guessed: bool },
    /// As [`Claim::Full`].
    Full { boarding: u64 },
    /// As [`Claim::Closed`].
    Closed,
}

/// The head word a producer saw before its claim ([`Ring::look`]): names the seat the claim
/// gets unless another producer claims first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    word: u64,
}

impl Seen {
    /// The slot of the expected seat.
    #[inline(always)]
    pub(crate) fn slot(&self) -> usize {
        slot_of(self.word)
    }

    /// The expected seat.
    #[inline(always)]
    pub(crate) fn index(&self) -> usize {
        count_of(self.word)
    }
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
    /// A ring of `slots` batch slots of `seats` seats each (at most [`MAX_SEATS`]: more is
    /// taken as that many); slot 0 boards first. Seats are allocated as producers take them.
    pub fn new(slots: usize, seats: usize) -> Ring<K, R> {
        Ring::with_count(slots, seats, 0)
    }

    /// As [`new`](Ring::new), with the boarding slot's `count` starting at `count` instead of
    /// 0, as if that many claims had been made (tests of the head word's bound; seats below
    /// `count` must not be sealed, nobody wrote them).
    pub(crate) fn with_count(slots: usize, seats: usize, count: u64) -> Ring<K, R> {
        assert!((2..=MAX_SLOTS).contains(&slots), "2..=64 slots");
        assert!(seats >= 1, "a slot has at least one seat");
        assert!(count <= COUNT_MASK, "count fits its field");
        let seats = seats.min(MAX_SEATS);
        let pool = SeatPool::new(seats, fresh_seat::<K>);
        let slots: Box<[Slot<K, R>]> = (0..slots).map(|_| Slot::new(Arc::clone(&pool))).collect();
        // SAFETY: the ring is not shared yet: exclusive access to slot 0.
        unsafe { slots[0].prepare() };
        let all = if slots.len() == 64 { u64::MAX } else { (1u64 << slots.len()) - 1 };
        Ring {
            head: CachePadded::new(AtomicU64::new(pack(0, 0) | count)),
            free: CachePadded::new(AtomicU64::new(all & !1)),
            slots,
            seats,
            room_wanted: CachePadded::new(AtomicBool::new(false)),
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

    /// Claims a seat on the boarding slot. Wait-free: one load, then (if the bus is not seen
    /// full) one `fetch_add`.
    #[cfg_attr(
        not(any(test, busline_loom)),
        allow(dead_code, reason = "the engine claims with `look` and `claim_looked`; tests and loom models with `claim`")
    )]
    #[inline(always)]
    pub fn claim(&self) -> Claim {
        match self.claim_placed() {
            Placed::Seat { slot, index, .. } => Claim::Seat { slot, index },
            Placed::Full { boarding } => Claim::Full { boarding },
            Placed::Closed => Claim::Closed,
        }
    }

    /// [`claim`](Ring::claim), with where the seat lives.
    #[inline(always)]
    pub(crate) fn claim_placed(&self) -> Placed<'_, K> {
        match self.look() {
            Ok(seen) => self.claim_looked(seen),
            Err(Claim::Full { boarding }) => Placed::Full { boarding },
            Err(_) => Placed::Closed,
        }
    }

    /// The first half of [`claim_placed`](Ring::claim_placed): looks at the head word. A bus
    /// seen full or a closed ring is the answer (`Err`, [`Claim::Full`] or [`Claim::Closed`]);
    /// otherwise the seat to expect, for [`claim_looked`](Ring::claim_looked).
    #[inline(always)]
    pub(crate) fn look(&self) -> Result<Seen, Claim> {
        // Look before claiming: a producer that sees the bus full (or the ring closed) does not
        // add to `count`, which bounds the count past the seats (see the essay). Relaxed: the
        // value only decides whether to claim; a stale full bus sends the producer to its
        // overflow policy, which re-checks (`has_moved_on`).
        let seen = self.head.load(Ordering::Relaxed);
        #[cfg(busline_loom)]
        // BROKEN ON PURPOSE (loom-tests): claim without looking, so a full bus counts on.
        let seen = if crate::sync::broken(Bug::Bound) { seen & !COUNT_MASK & !CLOSED } else { seen };
        if is_closed(seen) {
            return Err(Claim::Closed);
        }
        if count_of(seen) >= self.seats {
            return Err(Claim::Full { boarding: seen & !COUNT_MASK });
        }
        Ok(Seen { word: seen })
    }

    /// The second half of [`claim_placed`](Ring::claim_placed): claims, after a
    /// [`look`](Ring::look) that saw `seen`.
    #[inline(always)]
    pub(crate) fn claim_looked(&self, seen: Seen) -> Placed<'_, K> {
        let seen = seen.word;
        // The seat this claim gets if no other producer claims first, located before the claim:
        // the locked add waits for every earlier store, so whatever stands between it and this
        // seat's stores is paid by every submit in series (see the essay).
        let expected = self.slots[slot_of(seen)].place(count_of(seen));
        // Acquire: pairs with the driver's Release swap that opened this slot, so its
        // preparation (and the reset of its previous epoch) happens before we write a seat.
        #[cfg(busline_loom)]
        let order = if crate::sync::broken(Bug::Claim) {
            // BROKEN ON PURPOSE (loom-tests): a Relaxed claim does not see the slot's reset.
            Ordering::Relaxed
        } else {
            Ordering::Acquire
        };
        #[cfg(not(busline_loom))]
        let order = Ordering::Acquire;
        let word = self.head.fetch_add(1, order);
        if is_closed(word) {
            return Placed::Closed;
        }
        let index = count_of(word);
        debug_assert!(index < COUNT_MASK as usize, "the head word's count is about to carry");
        if index < self.seats {
            let slot = slot_of(word);
            // The same word means the same slot and seat: the place computed above is this one.
            #[cfg(busline_loom)]
            let guessed = if crate::sync::broken(Bug::Place) {
                // BROKEN ON PURPOSE (loom-tests): the count alone decides, so a claim in the
                // slot opened by a seal since the look writes into the sealed slot's seat.
                index == count_of(seen)
            } else {
                word == seen
            };
            #[cfg(not(busline_loom))]
            let guessed = word == seen;
            let place = if guessed { expected } else { self.slots[slot].place(index) };
            Placed::Seat { slot, index, place, guessed }
        } else {
            Placed::Full { boarding: word & !COUNT_MASK }
        }
    }

    /// Has the boarding slot changed since a [`Claim::Full`] saw `boarding`?
    pub fn has_moved_on(&self, boarding: u64) -> bool {
        // Acquire: a producer that sees a new epoch goes on to claim; (the wait-for-room
        // handshake does not rely on this ordering, see the essay).
        self.head.load(Ordering::Acquire) & !COUNT_MASK != boarding
    }

    /// The producer's side of the wait for room, after a [`Claim::Full`] that saw `boarding`
    /// and after creating the notification it will wait on: announces the wait, then returns
    /// whether the boarding slot has moved on (if not, the driver's next seal or close will see
    /// the announcement and notify).
    pub fn want_room(&self, boarding: u64) -> bool {
        #[cfg(busline_loom)]
        if crate::sync::broken(Bug::Room) {
            // BROKEN ON PURPOSE (loom-tests): a store does not read the driver's swap, so the
            // announcement and the driver's check can miss each other.
            self.room_wanted.store(true, Ordering::SeqCst);
            return self.has_moved_on(boarding);
        }
        // AcqRel: a read-modify-write, ordered against the driver's `take_room_wanted` in
        // `room_wanted`'s modification order; Acquire pairs with its Release (see the essay).
        self.room_wanted.swap(true, Ordering::AcqRel);
        self.has_moved_on(boarding)
    }

    /// The driver's side of the wait for room, after each seal or close: was a producer
    /// waiting? If so the driver must notify the waiters.
    pub fn take_room_wanted(&self) -> bool {
        // AcqRel: Release pairs with `want_room`'s Acquire (the seal before this happens before
        // its check); Acquire reads its announcement.
        self.room_wanted.swap(false, Ordering::AcqRel)
    }

    /// The raw `count` of the head word (tests of its bound).
    #[cfg_attr(not(any(test, busline_loom)), allow(dead_code, reason = "used by tests and loom models"))]
    pub(crate) fn head_count(&self) -> u64 {
        self.head.load(Ordering::Relaxed) & COUNT_MASK
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
    /// slot is free.
    ///
    /// # Safety
    ///
    /// One thread at a time seals or closes the ring (the driver): two seals at once could take
    /// the same free slot and prepare it under the producers the other let in.
    pub unsafe fn seal(&self) -> Option<Sealed> {
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
        unsafe { self.slots[next].prepare() };
        // Only the driver changes the epoch and slot fields, so this read is current for them.
        let current = self.head.load(Ordering::Relaxed);
        debug_assert!(!is_closed(current), "sealing a closed ring");
        // Release: publishes the preparation of `next` (and the reset of its last epoch, which
        // we acquired above) to producers that claim in it.
        // Acquire: orders the reads of the sealed slot after every claim counted here.
        #[cfg(busline_loom)]
        let order = if crate::sync::broken(Bug::Seal) {
            // BROKEN ON PURPOSE (loom-tests): without Release, a producer claiming in `next`
            // does not see the reset of its previous epoch.
            Ordering::Acquire
        } else {
            Ordering::AcqRel
        };
        #[cfg(not(busline_loom))]
        let order = Ordering::AcqRel;
        let old = self.head.swap(pack(epoch_of(current) + 1, next), order);
        Some(self.sealed(old))
    }

    /// Seals the boarding slot for good: every later claim is refused.
    ///
    /// # Safety
    ///
    /// As for [`seal`](Ring::seal): one thread at a time seals or closes.
    pub unsafe fn close(&self) -> Sealed {
        let current = self.head.load(Ordering::Relaxed);
        debug_assert!(!is_closed(current), "closing a closed ring");
        // AcqRel: as in `seal` (the driver then calls `take_room_wanted`, see the essay).
        let old = self.head.swap(CLOSED | pack(epoch_of(current) + 1, 0), Ordering::AcqRel);
        self.sealed(old)
    }

    fn sealed(&self, old: u64) -> Sealed {
        let sealed = Sealed { slot: slot_of(old), count: count_of(old).min(self.seats) };
        self.slots[sealed.slot].on_sealed(sealed.count);
        sealed
    }

    /// Drops `n` references to slot `slot`; if they were the last, returns the slot to the free
    /// pool and returns `true` (the driver may want to know: it may be waiting for a slot).
    ///
    /// # Safety
    ///
    /// As for [`Slot::release`]: the caller holds `n` references to the slot and gives them up.
    pub unsafe fn release(&self, slot: usize, n: i64) -> bool {
        // SAFETY: forwarded from the caller.
        if unsafe { self.slots[slot].release(n) } {
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

    // These tests run on one thread, the ring's one sealer, and release only references they
    // took (a seat they claimed, the batch's at its seal).
    fn seal<K, R>(ring: &Ring<K, R>) -> Option<Sealed> {
        // SAFETY: the one sealer (above).
        unsafe { ring.seal() }
    }

    fn close<K, R>(ring: &Ring<K, R>) -> Sealed {
        // SAFETY: the one sealer (above).
        unsafe { ring.close() }
    }

    fn release<K, R>(ring: &Ring<K, R>, slot: usize, n: i64) -> bool {
        // SAFETY: references the test holds (above).
        unsafe { ring.release(slot, n) }
    }

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
        let sealed = seal(&ring).unwrap();
        assert_eq!(sealed, Sealed { slot: 0, count: 2 });
        // The next slot boards; no free slot is left for another seal.
        assert_eq!(ring.claim(), Claim::Seat { slot: 1, index: 0 });
        // SAFETY: claimed above.
        unsafe { ring.slot(1).write(0, 12) };
        assert!(seal(&ring).is_none());
        let mut keys = vec![];
        // SAFETY: once, after the seal.
        let cancelled = unsafe { ring.slot(0).collect(2, |k| keys.push(*k)) };
        assert_eq!((keys, cancelled), (vec![10, 11], 0));
        // SAFETY: once, by the batch's holder.
        unsafe { ring.slot(0).publish(7) };
        assert!(!release(&ring, 0, 1), "two callers still hold it");
        assert!(!release(&ring, 0, 1));
        assert_eq!(ring.live_slots(), 1);
        assert!(release(&ring, 0, 1));
        assert_eq!(ring.live_slots(), 0);
        assert_eq!(seal(&ring), Some(Sealed { slot: 1, count: 1 }));
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
        assert!(!release(&ring, 0, 1), "a release before the seal never frees");
        let sealed = seal(&ring).unwrap();
        let mut keys = vec![];
        // SAFETY: once, after the seal.
        let cancelled = unsafe { ring.slot(0).collect(sealed.count, |k| keys.push(k.clone())) };
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(cancelled, 1);
        // SAFETY: once.
        unsafe { ring.slot(0).publish(()) };
        assert!(!release(&ring, 0, 1)); // the batch
        assert!(!release(&ring, 0, 1)); // "a"
        assert!(release(&ring, 0, 1)); // "c": keys dropped, slot free
    }

    #[test]
    fn keys_gathered_ahead_are_collected_once_and_a_later_cancel_is_caught() {
        use crate::slot::Gathered;
        let ring: Ring<String, ()> = Ring::new(2, 8);
        let board = |i: usize, k: &str| {
            assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: i });
            // SAFETY: claimed just now, written once.
            unsafe { ring.slot(0).write(i, k.to_string()) };
        };
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            board(i, k);
        }
        ring.slot(0).cancel(1);
        assert!(!release(&ring, 0, 1));
        let mut keys = vec![];
        assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: 3 });
        // SAFETY: the driver, on the boarding slot, first gather; 4 seats claimed, the 4th not
        // written yet (the gather stops there).
        let gathered = unsafe { ring.slot(0).gather(Gathered::NONE, 4, |k| keys.push(k.clone())) };
        assert_eq!(gathered, Gathered { upto: 3, cancelled: 1 });
        assert_eq!(keys, ["a", "c"]);
        // SAFETY: seat 3 was claimed above.
        unsafe { ring.slot(0).write(3, "d".to_string()) };
        board(4, "e");
        // Nothing cancelled since: the rest is collected after what was gathered.
        let sealed = seal(&ring).unwrap();
        // SAFETY: once, after the seal; `gathered` from this epoch.
        let rest = unsafe { ring.slot(0).collect_rest(sealed.count, gathered, |_, k| keys.push(k.clone())) };
        assert_eq!(rest, Some(1));
        assert_eq!(keys, ["a", "c", "d", "e"]);
        // SAFETY: once.
        unsafe { ring.slot(0).publish(()) };
        for _ in 0..4 {
            assert!(!release(&ring, 0, 1));
        }
        assert!(release(&ring, 0, 1), "the batch and four callers: keys dropped, slot free");

        // Next epoch of slot 0 (after slot 1's): a seat gathered live, cancelled before the seal.
        assert_eq!(seal(&ring).map(|s| s.slot), Some(1));
        assert!(release(&ring, 1, 1), "slot 1 sealed empty");
        for (i, k) in ["x", "y"].into_iter().enumerate() {
            board(i, k);
        }
        let mut keys = vec![];
        // SAFETY: as above.
        let gathered = unsafe { ring.slot(0).gather(Gathered::NONE, 2, |k| keys.push(k.clone())) };
        assert_eq!((gathered.upto, keys.len()), (2, 2));
        ring.slot(0).cancel(0);
        assert!(!release(&ring, 0, 1));
        let sealed = seal(&ring).unwrap();
        // SAFETY: as above.
        let rest = unsafe { ring.slot(0).collect_rest(sealed.count, gathered, |_, k| keys.push(k.clone())) };
        assert_eq!(rest, None, "the cancel after the gather is caught");
        keys.clear();
        // SAFETY: collect_rest collected nothing: collect from scratch, once.
        let cancelled = unsafe { ring.slot(0).collect(sealed.count, |k| keys.push(k.clone())) };
        assert_eq!((keys, cancelled), (vec!["y".to_string()], 1));
        // SAFETY: once.
        unsafe { ring.slot(0).publish(()) };
        assert!(!release(&ring, 0, 1));
        assert!(release(&ring, 0, 1));

        // A third epoch of slot 0 with no cancel: the reset cleared the count, so what was
        // gathered stands (a count carried over would force a collect from scratch).
        assert_eq!(seal(&ring).map(|s| s.slot), Some(1));
        assert!(release(&ring, 1, 1), "slot 1 sealed empty");
        board(0, "z");
        let mut keys = vec![];
        // SAFETY: as above.
        let gathered = unsafe { ring.slot(0).gather(Gathered::NONE, 1, |k| keys.push(k.clone())) };
        let sealed = seal(&ring).unwrap();
        // SAFETY: as above.
        let rest = unsafe { ring.slot(0).collect_rest(sealed.count, gathered, |_, k| keys.push(k.clone())) };
        assert_eq!((rest, keys), (Some(0), vec!["z".to_string()]));
        // SAFETY: once.
        unsafe { ring.slot(0).publish(()) };
        assert!(!release(&ring, 0, 1));
        assert!(release(&ring, 0, 1));
    }

    #[test]
    fn closed_refuses() {
        let ring: Ring<u64, ()> = Ring::new(2, 4);
        assert!(matches!(ring.claim(), Claim::Seat { .. }));
        // SAFETY: claimed above.
        unsafe { ring.slot(0).write(0, 1) };
        assert_eq!(close(&ring), Sealed { slot: 0, count: 1 });
        assert_eq!(ring.claim(), Claim::Closed);
        assert!(ring.is_closed());
    }

    #[test]
    fn claims_past_the_seats_are_bounded_by_the_threads() {
        // The last 4 seats of the largest slot; 8 threads claim 2,000 times each (50 under Miri).
        let ring: Ring<u64, ()> = Ring::with_count(2, usize::MAX, MAX_SEATS as u64 - 4);
        assert_eq!(ring.seats(), MAX_SEATS, "no limit is MAX_SEATS");
        let boarding = ring.head.load(Ordering::Relaxed) & !COUNT_MASK;
        let seated = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..if cfg!(miri) { 50 } else { 2_000 } {
                        match ring.claim() {
                            Claim::Seat { slot: 0, index } => {
                                assert!(index >= MAX_SEATS - 4);
                                seated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Claim::Full { boarding: b } => assert_eq!(b, boarding),
                            other => panic!("{other:?}"),
                        }
                    }
                });
            }
        });
        assert_eq!(seated.into_inner(), 4, "each remaining seat claimed once");
        let count = ring.head_count() as usize;
        assert!(count <= MAX_SEATS + 8, "at most one claim past the seats per thread: {count}");
        assert!(!ring.has_moved_on(boarding), "slot and epoch untouched");
    }

    #[test]
    fn a_full_bus_near_the_count_limit_never_carries() {
        // A state no ring reaches (the bound keeps `count <= seats + threads`): one seat, and
        // `count` one below its largest value. Looking before claiming keeps it there.
        let ring: Ring<u64, ()> = Ring::with_count(2, 1, COUNT_MASK - 1);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..if cfg!(miri) { 50 } else { 1_000 } {
                        assert_eq!(ring.claim(), Claim::Full { boarding: pack(0, 0) });
                    }
                });
            }
        });
        assert_eq!(ring.head_count(), COUNT_MASK - 1);
        assert_eq!(ring.boarding().slot, 0);
    }

    #[test]
    fn unlimited_seats_grow_with_the_batch_and_recycle() {
        let ring: Ring<String, usize> = Ring::new(2, usize::MAX);
        for round in 0..3 {
            let slot = round % 2;
            for i in 0..300 {
                assert_eq!(ring.claim(), Claim::Seat { slot, index: i });
                // SAFETY: claimed above.
                unsafe { ring.slot(slot).write(i, format!("{round}:{i}")) };
            }
            let sealed = seal(&ring).unwrap();
            assert_eq!(sealed, Sealed { slot, count: 300 });
            let mut n = 0;
            // SAFETY: once, after the seal.
            let cancelled = unsafe {
                ring.slot(slot).collect(300, |k| {
                    assert_eq!(*k, format!("{round}:{n}"));
                    n += 1;
                })
            };
            assert_eq!((n, cancelled), (300, 0));
            // SAFETY: once, by the batch's holder.
            unsafe { ring.slot(slot).publish(round) };
            assert!(!release(&ring, slot, 300));
            assert!(release(&ring, slot, 1), "the reset recycles the segments");
        }
    }

    #[test]
    fn the_room_handshake_reports_the_waiter() {
        let ring: Ring<u64, ()> = Ring::new(2, 1);
        assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: 0 });
        // SAFETY: claimed above.
        unsafe { ring.slot(0).write(0, 1) };
        let Claim::Full { boarding } = ring.claim() else { panic!("full") };
        assert!(!ring.want_room(boarding), "nothing moved yet");
        assert!(seal(&ring).is_some());
        assert!(ring.take_room_wanted(), "the driver sees the waiter");
        assert!(!ring.take_room_wanted(), "once");
        assert!(ring.want_room(boarding), "the producer sees the new epoch");
    }
}
