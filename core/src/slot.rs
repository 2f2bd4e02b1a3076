//! A batch slot: the seats of one bus, its one shared result, and the wakers of its passengers.
//!
//! Items here are `pub` so that `--cfg busline_loom` can re-export them to the loom model
//! checks (`crate::model`); the module itself is private, so they are not part of the API.
#![cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]

use std::mem::MaybeUninit;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;

use crate::seats::{Place, Pool, Seats};
#[cfg(busline_loom)]
use crate::sync::Bug;
use crate::sync::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering, UnsafeCell};
use crate::seat_waker::SeatWaker;

/// A seat: one request's key, its progress, and its caller's waker.
#[derive(Debug)]
pub(crate) struct Entry<K> {
    /// `EMPTY`, `WRITTEN` or `CANCELLED`.
    state: AtomicU8,
    /// Initialised while `state` is `WRITTEN` or `CANCELLED`.
    key: UnsafeCell<MaybeUninit<K>>,
    /// The waiting caller's waker.
    waker: SeatWaker,
}

/// The seat is free: its key is uninitialised. Grants the claiming producer the right to write
/// the key.
const EMPTY: u8 = 0;
/// The producer has written the key. Grants every reader a shared read of the key until the
/// slot is reset.
const WRITTEN: u8 = 1;
/// The caller has gone. The key is still initialised (the reset drops it); grants the driver
/// the right to leave the key out of the batch.
const CANCELLED: u8 = 2;

impl<K> Entry<K> {
    fn new() -> Entry<K> {
        Entry {
            state: AtomicU8::new(EMPTY),
            key: UnsafeCell::new(MaybeUninit::uninit()),
            waker: SeatWaker::new(),
        }
    }
}

/// How far [`Slot::gather`] has read a boarding bus's seats ahead of its seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathered {
    /// Seats `0..upto` have been read.
    pub upto: usize,
    /// How many of them were cancelled when read.
    pub cancelled: usize,
}

impl Gathered {
    /// Nothing read yet.
    pub const NONE: Gathered = Gathered { upto: 0, cancelled: 0 };
}

/// A slot's reference count and its count of cancels, on their own cache line.
#[derive(Debug)]
struct Parties {
    /// Parties still using the slot (see the `parties` field of [`Slot`]).
    remaining: AtomicI64,
    /// Seats cancelled in this epoch (see `cancel` and `collect_rest`).
    cancels: AtomicU64,
}

/// One bus: its seats (see `seats.rs`), the batch's result, and the count of parties still using it.
#[derive(Debug)]
pub struct Slot<K, R> {
    /// The seats, in segments installed on demand and returned to the batcher's pool by the
    /// reset; segment 0 is installed when the driver first opens this slot, then kept.
    seats: Seats<Entry<K>>,
    /// The batch's outcome, written once by the batch's publisher.
    result: UnsafeCell<Option<R>>,
    /// Set (Release) once `result` is written. Grants readers a shared read of `result`.
    done: AtomicBool,
    /// Seats taken when the driver sealed this slot (`count` of the sealing swap, capped at the
    /// number of seats). Written by the driver before it adds to `remaining`.
    sealed_count: AtomicU64,
    /// Parties that still use this slot after its seal: one per seated request (its caller),
    /// plus one for the batch (the driver, then the batch's publisher). Releases may come
    /// before the seal (a caller that gives up early), so it can dip below zero; the seal adds
    /// `count + 1`, and the release that brings it to zero resets the slot (`remaining`).
    ///
    /// On a cache line of its own (with `cancels`, which a caller giving up bumps before it
    /// releases): every caller of the batch decrements it, and on the line of `done`, the seat
    /// table and `result` (which every caller reads) each decrement would make the other cores'
    /// readers miss.
    parties: CachePadded<Parties>,
    /// Nanoseconds (driver clock) at which the first passenger sat down; 0 until stamped.
    opened_at_ns: AtomicU64,
}

// SAFETY: a slot hands keys (`K`) and the outcome (`R`) from one thread to others: keys are
// written by a producer, read by the driver and the caller, dropped by whoever releases last;
// the outcome is written by the batch, read by every caller, dropped by the last releaser.
// Every such access is ordered by the atomics documented above, so sending or sharing a slot
// is sound when `K` and `R` are both `Send` and `Sync`.
unsafe impl<K: Send + Sync, R: Send + Sync> Sync for Slot<K, R> {}
// SAFETY: as above; a slot owns its keys and outcome.
unsafe impl<K: Send + Sync, R: Send + Sync> Send for Slot<K, R> {}

/// A fresh seat, as the pool makes them.
pub(crate) fn fresh_seat<K>() -> Entry<K> {
    Entry::new()
}

/// Where a seat lives in its slot (see [`Slot::place`]).
pub(crate) type SeatPlace<'a, K> = Place<'a, Entry<K>>;

/// The pool of seat segments shared by the slots of one ring.
pub(crate) type SeatPool<K> = Pool<Entry<K>>;

impl<K, R> Slot<K, R> {
    /// An empty slot whose seats come from `pool`; [`prepare`](Slot::prepare) installs the
    /// first segment.
    pub(crate) fn new(pool: Arc<SeatPool<K>>) -> Slot<K, R> {
        Slot {
            seats: Seats::new(pool),
            result: UnsafeCell::new(None),
            done: AtomicBool::new(false),
            sealed_count: AtomicU64::new(0),
            parties: CachePadded::new(Parties { remaining: AtomicI64::new(0), cancels: AtomicU64::new(0) }),
            opened_at_ns: AtomicU64::new(0),
        }
    }

    /// Makes the slot ready to board: its first segment of seats installed, its clock cleared.
    ///
    /// # Safety
    ///
    /// The caller (the driver) has exclusive access to the slot: it is free (no producer can
    /// claim a seat in it, no caller or batch refers to it).
    pub unsafe fn prepare(&self) {
        // SAFETY: exclusive access, guaranteed by the caller.
        unsafe { self.seats.prepare() };
        self.opened_at_ns.store(0, Ordering::Relaxed);
    }

    /// Calls `f` with seat `index`, which must be installed.
    ///
    /// Everyone but the producer that writes a seat and the driver that waits for it reaches
    /// it after that write (the caller wrote it itself; the publisher, the readers and the
    /// reset come after the driver's collect).
    #[inline]
    fn with_entry<T>(&self, index: usize, f: impl FnOnce(&Entry<K>) -> T) -> T {
        f(self.seats.get(index).expect("a seat reached after its write is installed"))
    }

    // ---- producer side -------------------------------------------------------------------

    /// Writes `key` into seat `index` and publishes it to the driver; the caller registers its
    /// waker later, in [`poll_done`](Slot::poll_done). (The engine boards with
    /// [`write_placed`](Slot::write_placed); this one serves the unit tests and the loom models
    /// of the registration.)
    ///
    /// # Safety
    ///
    /// The caller claimed seat `index` of this slot's current epoch, and writes it once.
    #[cfg(any(test, busline_loom))]
    #[inline]
    pub unsafe fn write(&self, index: usize, key: K) {
        // SAFETY: forwarded from the caller.
        unsafe { self.write_seat(index, key, None) }
    }

    /// [`write`](Slot::write), registering the caller's `waker` with the seat at the same
    /// time: the caller then need not register it in its first [`poll_done`](Slot::poll_done)
    /// (two compare-exchanges saved; see `seat_waker.rs`).
    ///
    /// # Safety
    ///
    /// As for [`write`](Slot::write).
    #[cfg_attr(
        not(busline_loom),
        allow(dead_code, reason = "the engine writes with `write_placed`; the loom models with this")
    )]
    #[inline(always)]
    pub unsafe fn write_with_waker(&self, index: usize, key: K, waker: Waker) {
        // SAFETY: forwarded from the caller.
        unsafe { self.write_seat(index, key, Some(waker)) }
    }

    /// [`write_with_waker`](Slot::write_with_waker) at `place`, the seat's place computed ahead
    /// (see `Ring::claim_placed`).
    ///
    /// # Safety
    ///
    /// As for [`write`](Slot::write); `place` is this slot's place of the claimed seat.
    #[inline(always)]
    pub(crate) unsafe fn write_placed(&self, place: SeatPlace<'_, K>, key: K, waker: Waker) {
        // SAFETY: forwarded from the caller.
        unsafe { self.write_at(place, key, Some(waker)) }
    }

    /// Where seat `index` lives (see [`Seats::place`]): arithmetic only, so a producer may
    /// compute it before its claim.
    #[inline(always)]
    pub(crate) fn place(&self, index: usize) -> SeatPlace<'_, K> {
        self.seats.place(index)
    }

    #[cfg_attr(
        not(any(test, busline_loom)),
        allow(dead_code, reason = "for `write` and `write_with_waker`")
    )]
    #[inline(always)]
    unsafe fn write_seat(&self, index: usize, key: K, waker: Option<Waker>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.write_at(self.place(index), key, waker) }
    }

    #[inline(always)]
    unsafe fn write_at(&self, place: SeatPlace<'_, K>, key: K, waker: Option<Waker>) {
        // SAFETY: the caller claimed the seat at `place` in this epoch.
        let entry = unsafe { self.seats.get_or_install_at(place) };
        // SAFETY: the claim grants this producer the only access to the seat while it is
        // EMPTY; the driver waits for WRITTEN before it reads.
        entry.key.with_mut(|slot| unsafe { (*slot).write(key) });
        if let Some(waker) = waker {
            // SAFETY: as for the key: nobody reaches the seat's waker cell before the store
            // below (the publisher's `wake` waits for it too), and a reset left the cell empty.
            unsafe { entry.waker.init(waker) };
        }
        // Release: pairs with the driver's Acquire load in `collect` (which then reads the key)
        // and with `wake`'s (which then takes the waker).
        entry.state.store(WRITTEN, Ordering::Release);
    }

    /// Records when the first passenger sat down (driver clock, nanoseconds; 0 means unknown).
    pub fn stamp_opened(&self, now_ns: u64) {
        self.opened_at_ns.store(now_ns.max(1), Ordering::Relaxed);
    }

    /// When the first passenger sat down, if it stamped it yet.
    pub fn opened_at_ns(&self) -> Option<u64> {
        match self.opened_at_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    // ---- driver side ---------------------------------------------------------------------

    /// Records the seal of `count` seats and takes the batch's reference. Must come before any
    /// call to [`collect`](Slot::collect) or [`publish`](Slot::publish).
    pub fn on_sealed(&self, count: usize) {
        self.sealed_count.store(count as u64, Ordering::Relaxed);
        // Release: the final releaser's Acquire sees `sealed_count`.
        self.parties.remaining.fetch_add(count as i64 + 1, Ordering::AcqRel);
    }

    /// Waits for each of the `count` sealed seats to be written, and calls `live` with the key of
    /// every seat whose caller is still there. Returns how many seats were cancelled.
    ///
    /// # Safety
    ///
    /// Called once per seal, by the driver, after [`on_sealed`](Slot::on_sealed), before the
    /// batch's reference is released.
    pub unsafe fn collect(&self, count: usize, mut live: impl FnMut(&K)) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { self.collect_indexed(count, |_, key| live(key)) }
    }

    /// As [`collect`](Slot::collect), calling `live` with each live seat's index too (in
    /// increasing order).
    ///
    /// # Safety
    ///
    /// As for [`collect`](Slot::collect).
    pub unsafe fn collect_indexed(&self, count: usize, live: impl FnMut(usize, &K)) -> usize {
        // SAFETY: forwarded from the caller; nothing was gathered ahead.
        unsafe { self.collect_rest(count, Gathered::NONE, live) }.expect("nothing gathered, nothing to re-check")
    }

    /// Gathers ahead of the seal: calls `live` with the key of each seat from `from.upto` on
    /// (below `claimed`, the seats taken so far) that is written now, and stops at the first
    /// seat not written yet, without waiting for it. What it returns goes to the next gather and
    /// finally to [`collect_rest`](Slot::collect_rest).
    ///
    /// A timed bus's passengers board long before it departs, and the driver is awake in the
    /// last stretch before its deadline anyway (`driver/alarm.rs`): reading their keys then
    /// takes their de-duplication (tens of nanoseconds a seat: the seats were written by other
    /// cores) off the path from the deadline to the batch call.
    ///
    /// # Safety
    ///
    /// Called by the driver, on the boarding slot (or on a slot sealed and not yet collected),
    /// with the `Gathered` of this epoch's previous gather (or [`Gathered::NONE`]); `claimed`
    /// does not exceed the seats taken in this epoch.
    pub unsafe fn gather(&self, from: Gathered, claimed: usize, mut live: impl FnMut(&K)) -> Gathered {
        let mut gathered = from;
        while gathered.upto < claimed {
            let Some(entry) = self.seats.get(gathered.upto) else { break };
            // Acquire: pairs with the producer's Release store in `write`.
            match entry.state.load(Ordering::Acquire) {
                EMPTY => break,
                WRITTEN => {
                    // SAFETY: WRITTEN grants shared reads of the key until the reset, which
                    // cannot come before this epoch's seal and collect.
                    entry.key.with(|key| live(unsafe { (*key).assume_init_ref() }));
                }
                _ => gathered.cancelled += 1,
            }
            gathered.upto += 1;
        }
        gathered
    }

    /// [`collect`](Slot::collect) after a [`gather`](Slot::gather): waits for and collects the
    /// seats not gathered yet, then checks, from the slot's count of cancels, that no seat
    /// gathered ahead has been cancelled since (one counter read, not a pass over the seats).
    /// Returns how many seats were cancelled, or `None` if one gathered ahead was cancelled
    /// since: the caller then drops everything it collected and collects from scratch.
    ///
    /// # Safety
    ///
    /// As for [`collect`](Slot::collect); `gathered` comes from this epoch's gathers.
    pub unsafe fn collect_rest(&self, count: usize, gathered: Gathered, mut live: impl FnMut(usize, &K)) -> Option<usize> {
        debug_assert!(gathered.upto <= count, "gathered {} seats of {count} sealed", gathered.upto);
        let mut cancelled = gathered.cancelled;
        for index in gathered.upto..count {
            let (entry, state) = self.written(index);
            if state == WRITTEN {
                // SAFETY: WRITTEN grants shared reads of the key until the reset, which cannot
                // happen before the batch's reference is released.
                entry.key.with(|key| live(index, unsafe { (*key).assume_init_ref() }));
            } else {
                cancelled += 1;
            }
        }
        if gathered.upto > 0 {
            // Every cancel is counted before its seat reads CANCELLED (see `cancel`), so the
            // count is at least the cancelled seats seen; more means a seat gathered as
            // WRITTEN has been cancelled since. (One cancelled after this load is a caller
            // leaving as its batch departs: it goes either way, as without a gather.)
            // Relaxed: the cancels that must show here are those of seats this collect saw
            // CANCELLED (each counted before its store, which was read with Acquire) and those
            // ordered before the departure (a cancel racing the departure goes either way).
            let counted = self.parties.cancels.load(Ordering::Relaxed);
            #[cfg(busline_loom)]
            // BROKEN ON PURPOSE (loom-tests): trusts the keys gathered ahead, so a caller that
            // gave up after the gather still has its key sent.
            let counted = if crate::sync::broken(Bug::Gather) { cancelled as u64 } else { counted };
            if counted != cancelled as u64 {
                return None;
            }
        }
        Some(cancelled)
    }

    /// Publishes the batch's outcome and wakes every passenger.
    ///
    /// # Safety
    ///
    /// Called at most once per seal, by the holder of the batch's reference, before releasing it.
    pub unsafe fn publish(&self, outcome: R) {
        // SAFETY: forwarded from the caller.
        let count = unsafe { self.publish_quietly(outcome) };
        self.wake(0..count);
    }

    /// Publishes the batch's outcome without waking anyone: a caller that polls from now on
    /// reads it; [`wake`](Slot::wake) then wakes the callers already waiting. Returns how many
    /// seats the batch has (`0..count` is what there is to wake).
    ///
    /// # Safety
    ///
    /// As for [`publish`](Slot::publish); the holder keeps the batch's reference until it has
    /// woken every seat.
    pub unsafe fn publish_quietly(&self, outcome: R) -> usize {
        // SAFETY: only the batch's holder writes `result`, once; readers read it only after
        // they see `done`, which is stored below.
        self.result.with_mut(|result| unsafe { *result = Some(outcome) });
        // Release: pairs with the Acquire load in `poll_done`; the result is visible to
        // whoever sees `done`.
        #[cfg(busline_loom)]
        let order = if crate::sync::broken(Bug::Publish) {
            // BROKEN ON PURPOSE (loom-tests): no Release, so a reader may see `done` but not
            // the result.
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        #[cfg(not(busline_loom))]
        let order = Ordering::Release;
        self.done.store(true, order);
        self.sealed_count.load(Ordering::Relaxed) as usize
    }

    /// Wakes the callers of `seats`, after [`publish_quietly`](Slot::publish_quietly) and
    /// while the batch's reference is held (a caller that registers after the publication
    /// finds `done` on its own re-check, so a seat woken late, or twice, loses nothing).
    pub fn wake(&self, seats: std::ops::Range<usize>) {
        for index in seats {
            // A batch published without its collect (a panic in the keys' user code stopped
            // it) may reach a seat whose producer is still writing it, waker included.
            #[cfg(busline_loom)]
            if crate::sync::broken(Bug::WakeUnwritten) {
                // BROKEN ON PURPOSE (loom-tests): wakes without waiting for the seat's write.
                self.with_entry(index, |entry| entry.waker.wake());
                continue;
            }
            let (entry, _) = self.written(index);
            entry.waker.wake();
        }
    }

    /// Waits for sealed seat `index` to be written (or cancelled), and returns it with its
    /// state. Its producer has claimed it (the seal counted it) but may not have installed its
    /// segment or stored its key yet: it is between its `fetch_add` and its `store`, a handful
    /// of instructions (an allocation if it installs a segment). Spin, then yield, until it has.
    fn written(&self, index: usize) -> (&Entry<K>, u8) {
        let mut spins = 0u32;
        loop {
            if let Some(entry) = self.seats.get(index) {
                // Acquire: pairs with the producer's Release store in `write_seat`.
                let state = entry.state.load(Ordering::Acquire);
                if state != EMPTY {
                    return (entry, state);
                }
            }
            spins += 1;
            if spins < 64 {
                crate::sync::spin_loop();
            } else {
                crate::sync::yield_now();
            }
        }
    }

    // ---- caller side ---------------------------------------------------------------------

    /// Has the outcome been published? If not, registers `cx`'s waker and checks again, so a
    /// publication that lands after the check wakes this caller.
    pub fn poll_done(&self, index: usize, cx: &mut Context<'_>) -> Poll<()> {
        // Fast path: a caller woken by the publication finds `done` without registering again.
        // Acquire: pairs with the Release store in `publish`.
        if self.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        #[cfg(busline_loom)]
        if crate::sync::broken(Bug::Register) {
            // BROKEN ON PURPOSE (loom-tests): registering after the check loses a wake-up that
            // lands in between.
            let done = self.done.load(Ordering::Acquire);
            self.with_entry(index, |entry| entry.waker.register(cx.waker()));
            return if done { Poll::Ready(()) } else { Poll::Pending };
        }
        self.with_entry(index, |entry| entry.waker.register(cx.waker()));
        // Acquire: as above. Checked after registering: if `publish` stores `done` after
        // this load, its wake (which follows the store) finds our waker.
        let done = self.done.load(Ordering::Acquire);
        if done {
            // Rare: published between the two checks. The publication's wake may have come
            // before our registration; take our waker back so the cell holds nothing.
            self.with_entry(index, |entry| entry.waker.clear());
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Calls `f` with the published outcome and the caller's key.
    ///
    /// # Safety
    ///
    /// The caller holds seat `index` (not yet released) and `poll_done` returned `Ready`.
    pub unsafe fn read<T>(&self, index: usize, f: impl FnOnce(&R, &K) -> T) -> T {
        self.with_entry(index, |entry| {
            self.result.with(|result| {
                // SAFETY: `done` was seen with Acquire, so `result` is written and no longer
                // changes until the reset, which waits for this caller's release. The key was
                // written by this very caller and stays until the reset.
                entry.key.with(|key| unsafe {
                    let result = (*result).as_ref().expect("done implies a result");
                    f(result, (*key).assume_init_ref())
                })
            })
        })
    }

    /// The caller of seat `index` leaves before reading the outcome: the driver, if it has not
    /// collected the seat yet, leaves its key out of the batch. The caller must still release.
    pub fn cancel(&self, index: usize) {
        // Counted first, so that whoever sees the seat CANCELLED sees the count too: the check
        // of a gather in `collect_rest` compares the count with the cancelled seats it saw, and
        // with two cancels or more a count that lags its store would hide a gathered seat's.
        #[cfg(busline_loom)]
        if crate::sync::broken(Bug::CancelOrder) {
            // BROKEN ON PURPOSE (loom-tests): the store first, the count after.
            self.with_entry(index, |entry| entry.state.store(CANCELLED, Ordering::Release));
            self.parties.cancels.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.parties.cancels.fetch_add(1, Ordering::Relaxed);
        // Release: pairs with the driver's Acquire load in `collect` (no data is handed over;
        // the ordering keeps the cancel after the write of the key in the seat's history, and
        // after its count).
        self.with_entry(index, |entry| entry.state.store(CANCELLED, Ordering::Release));
    }

    /// Drops `n` references. Returns `true` if that was the last one: the slot is then reset
    /// (keys dropped, result dropped, seats emptied) and the caller must return it to the pool.
    ///
    /// # Safety
    ///
    /// The caller holds `n` references to the slot (the batch's, taken at the seal, or seated
    /// callers') and gives them up: dropping references nobody held would reset the slot under
    /// the callers and the batch that still read it.
    pub unsafe fn release(&self, n: i64) -> bool {
        // AcqRel: every release publishes its reads of the slot, and the last one acquires
        // them all before it resets the slot.
        let prev = self.parties.remaining.fetch_sub(n, Ordering::AcqRel);
        if prev != n {
            return false;
        }
        // SAFETY: the last reference is gone: no producer (all sealed seats were written
        // before the batch's reference was dropped), no caller and no batch refers to the slot.
        unsafe { self.reset() };
        true
    }

    /// Drops the keys and the result and empties the seats.
    ///
    /// # Safety
    ///
    /// Nobody else refers to the slot.
    unsafe fn reset(&self) {
        let count = self.sealed_count.load(Ordering::Relaxed) as usize;
        // A publication woke (and so emptied) every seat's waker cell; a caller that registered
        // after it saw `done` on its second check and emptied its own. Without a publication
        // (every caller left before departure), cells may still hold wakers.
        let published = self.done.load(Ordering::Relaxed);
        #[cfg(busline_loom)]
        // BROKEN ON PURPOSE (loom-tests): the wakers of an unpublished batch stay in its seats.
        let published = published || crate::sync::broken(Bug::Reset);
        for index in 0..count {
            self.with_entry(index, |entry| {
                let state = entry.state.load(Ordering::Relaxed);
                debug_assert_ne!(state, EMPTY, "a sealed seat was never written");
                if state != EMPTY {
                    // SAFETY: WRITTEN or CANCELLED: the key is initialised, and nobody reads it.
                    entry.key.with_mut(|key| unsafe { drop_key(key) });
                }
                entry.state.store(EMPTY, Ordering::Relaxed);
                if !published {
                    entry.waker.clear();
                }
            });
        }
        // SAFETY: exclusive access, as above; every seat of the batch is empty again, and no
        // seat past `count` was ever touched (a claim past the seal lands in another slot).
        unsafe { self.seats.recycle() };
        // SAFETY: exclusive access, as above.
        self.result.with_mut(|result| unsafe { *result = None });
        self.done.store(false, Ordering::Relaxed);
        self.sealed_count.store(0, Ordering::Relaxed);
        self.parties.cancels.store(0, Ordering::Relaxed);
    }
}

/// Drops a seat's key, catching a panic from its `Drop` (user code): the reset (or the slot's
/// drop) always completes, so the slot returns to the ring, and the panic reaches no caller
/// (every caller of the batch has its answer by then).
///
/// # Safety
///
/// `*key` is initialised, nobody else refers to it, and it is not used again until written.
unsafe fn drop_key<K>(key: *mut MaybeUninit<K>) {
    // SAFETY: forwarded from the caller. A panic part-way through leaves the key's parts as
    // its own `Drop` left them; the seat counts as empty either way.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*key).assume_init_drop() }));
}

impl<K, R> Drop for Slot<K, R> {
    fn drop(&mut self) {
        // Seats still holding keys (a slot dropped while boarding or sealed: the batcher went
        // away with its driver and every caller): drop those keys. The segments go with `seats`.
        self.seats.for_each_installed(|entry| {
            if entry.state.load(Ordering::Relaxed) != EMPTY {
                // SAFETY: `&mut self`: nobody else refers to the slot; WRITTEN or CANCELLED:
                // the key is initialised.
                entry.key.with_mut(|key| unsafe { drop_key(key) });
            }
        });
    }
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_seat_costs_at_most_64_bytes_beyond_its_key() {
        assert!(crate::seat_bytes::<u64>() - std::mem::size_of::<u64>() <= 64);
        let overhead = std::mem::size_of::<Entry<u64>>() - std::mem::size_of::<u64>();
        eprintln!("seat overhead for u64 keys: {overhead} bytes");
        assert!(overhead <= 64, "{overhead} bytes per pending request beyond the key");
        let overhead = std::mem::size_of::<Entry<[u8; 24]>>() - 24;
        assert!(overhead <= 64, "{overhead} bytes per pending request beyond the key");
    }
}
