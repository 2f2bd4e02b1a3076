//! A batch slot's seats: a table of geometrically growing segments, installed on demand by the
//! producers that need them, and a per-batcher pool the segments go back to when their batch
//! is done.
//!
//! Items here are `pub` so that `--cfg busline_loom` can re-export them to the loom model
//! checks (`crate::model`); the module itself is private, so they are not part of the API.
#![cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]

use std::ptr;
use std::sync::Arc;

use crate::sync::{AtomicPtr, Ordering};

// The essay.
//
// # Layout
//
// Seat `i` lives at `pos = i + F` (`F = 2^FIRST_BITS`) in a virtual array split at every power
// of two, and each power-of-two range `[2^h, 2^(h+1))` split again into `S = 2^SUB_BITS` equal
// segments (a floating-point number's exponent and mantissa: `h` is the exponent, the next
// `SUB_BITS` bits pick the segment). With `hb(pos)` the highest set bit:
//
//     segment = (hb - FIRST_BITS) * S + ((pos >> (hb - SUB_BITS)) & (S - 1))
//     offset  = pos & (2^(hb - SUB_BITS) - 1),   segment size 2^(hb - SUB_BITS)
//
// so seats 0..F take the first S segments of F / S seats each, and each later doubling takes S
// segments of twice the size. A slot holding `n` seats has allocated at most `n + n / S + F / S`
// of them (the last segment is at most 1/S of what precedes it), and a table of
// `(log2(seats) - FIRST_BITS + 1) * S` pointers covers any number of seats. This is Dechev,
// Pirkelbauer and Stroustrup's lock-free dynamic array layout ("Lock-free dynamically
// resizable arrays", OPODIS 2006; also boxcar's `buckets.rs`), with the buckets cut in `S`
// to bound the waste at 1/S instead of 1/1. A segment's length is its size, cut short by the
// slot's number of seats (the last segment of a 1,000-seat slot holds only what it needs).
//
// # States
//
// A table entry is null (the segment is not installed) or points to a segment whose entries
// are all initialised. Segment 0 is installed by the driver when it first prepares the slot
// and stays for the slot's life (a batch of one never touches the pool); the others are
// installed by producers during an epoch and handed to the pool by the slot's reset.
//
// # Installing
//
// A producer that claimed seat `i` loads its segment's entry (Acquire). If it is null, the
// producer takes a segment from the pool (or allocates one) and installs it with one
// `compare_exchange(null, new)` (Release on success, so the entries' initialisation is visible
// to whoever loads the pointer; Acquire on failure, to read the winner's). A loser hands its
// segment back to the pool (or frees it) and uses the winner's. No producer waits for another:
// an install is lock-free (a failed CAS means another producer's succeeded), and each producer
// tries once.
//
// # The pool
//
// One cell per pooled segment index (an `AtomicPtr`): `put` is a `compare_exchange(null,
// segment)` (Release: the reset of its entries happens before its reuse), `take` a
// `swap(null)` (Acquire). Each operation moves a whole segment in or out of a cell in one RMW,
// so there is no ABA (nothing compares a non-null pointer) and no lock. A `put` that finds its
// cell taken frees the segment instead.
//
// What the pool retains is bounded: only the segments a batch of `POOL_SEATS` seats uses, one
// of each, about `POOL_SEATS + POOL_SEATS / S` seats whatever the load was (46 KB for `u64`
// keys). That is what a steady load of batches up to the default `max_batch_size` needs to
// allocate nothing per batch (each batch returns what the next one takes), while a burst's
// large segments are freed as soon as their batch is done, so memory follows the load down.
//
// # Races (and why they are safe)
//
// - Two producers install the same segment: one CAS wins; the loser never wrote into its own
//   segment (it writes after the install), so handing it back is safe.
// - An install vs the driver's collect: the driver treats a null entry like an unwritten seat
//   and waits; it reads the entries only after an Acquire load of the pointer (pairs with the
//   installer's Release CAS).
// - Recycling: a slot's reset runs only when nobody refers to the slot (`slot.rs`), so no seat
//   of the batch can be read after its segment goes to the pool; the pool's Release put / Acquire
//   take order the reset's writes before the next user's.
// - Stale pointers: the reset nulls the table's entries before the slot is freed; the next
//   epoch's producers claim after the driver's Acquire of the free mask and Release seal, so
//   they see the nulls.

/// `F = 2^FIRST_BITS` seats (in `S` segments) come first.
#[cfg(not(busline_loom))]
const FIRST_BITS: u32 = 7;
/// Each doubling is cut in `S = 2^SUB_BITS` segments: at most 1/S of a slot's seats is unused.
#[cfg(not(busline_loom))]
const SUB_BITS: u32 = 2;
/// Batches up to this size take every segment they need from the pool (the default
/// `max_batch_size`).
#[cfg(not(busline_loom))]
pub const POOL_SEATS: usize = 1024;

// Under loom: segments of 1, 1, 2, 2, 4, 4, ... seats, so that a model with a few seats
// installs, races and recycles segments; the pool keeps segments 1 and 2.
#[cfg(busline_loom)]
const FIRST_BITS: u32 = 1;
#[cfg(busline_loom)]
const SUB_BITS: u32 = 1;
/// Batches up to this size take every segment they need from the pool.
#[cfg(busline_loom)]
pub const POOL_SEATS: usize = 4;

const _: () = assert!(SUB_BITS <= FIRST_BITS, "the first segments hold at least one seat");

/// The segment holding seat `index`, and the seat's offset in it.
#[inline(always)]
pub(crate) fn locate(index: usize) -> (usize, usize) {
    let pos = index + (1 << FIRST_BITS);
    let hb = usize::BITS - 1 - pos.leading_zeros();
    let shift = hb - SUB_BITS;
    let segment = ((hb - FIRST_BITS) << SUB_BITS) as usize + ((pos >> shift) & ((1 << SUB_BITS) - 1));
    (segment, pos & ((1 << shift) - 1))
}

/// The first seat of segment `segment` and how many seats it spans.
#[inline]
pub(crate) fn span(segment: usize) -> (usize, usize) {
    let hb = (segment >> SUB_BITS) as u32 + FIRST_BITS;
    let sub = segment & ((1 << SUB_BITS) - 1);
    let size = 1usize << (hb - SUB_BITS);
    ((1usize << hb) + sub * size - (1 << FIRST_BITS), size)
}

/// How many segments `seats` seats span.
pub(crate) fn segments_for(seats: usize) -> usize {
    locate(seats - 1).0 + 1
}

/// Segments allocated and not yet freed, by this thread's models (loom runs every thread of a
/// model on the test's OS thread), to check that none leaks.
#[cfg(busline_loom)]
mod live {
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    pub(super) fn add(n: isize) {
        LIVE.with(|live| live.set(live.get() + n));
    }

    pub(crate) fn get() -> isize {
        LIVE.with(Cell::get)
    }
}

/// Segments allocated and not yet freed by the models run on this thread.
#[cfg(busline_loom)]
pub fn live_segments() -> isize {
    live::get()
}

/// The per-batcher pool of segments, and what every slot of the batcher shares about them.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    /// Seats per slot: cuts the last segment short.
    seats: usize,
    /// Cell `j - 1` may hold one free segment of index `j` (segment 0 is never pooled).
    cells: Box<[AtomicPtr<T>]>,
    /// Makes a fresh element.
    fresh: fn() -> T,
}

impl<T> Pool<T> {
    /// An empty pool for slots of `seats` seats whose elements start as `fresh()`.
    pub(crate) fn new(seats: usize, fresh: fn() -> T) -> Arc<Pool<T>> {
        assert!(seats >= 1, "a slot has at least one seat");
        let pooled = segments_for(seats.min(POOL_SEATS));
        let cells = (1..pooled).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
        Arc::new(Pool { seats, cells, fresh })
    }

    /// How many elements segment `segment` holds for this pool's slots.
    #[inline]
    fn len(&self, segment: usize) -> usize {
        let (start, size) = span(segment);
        size.min(self.seats - start)
    }

    fn cell(&self, segment: usize) -> Option<&AtomicPtr<T>> {
        segment.checked_sub(1).and_then(|j| self.cells.get(j))
    }

    /// A segment of index `segment`, all fresh: from the pool, else newly allocated.
    fn take(&self, segment: usize) -> *mut T {
        if let Some(cell) = self.cell(segment) {
            #[cfg(busline_loom)]
            let order = if crate::sync::broken(crate::sync::Bug::PoolTake) {
                // BROKEN ON PURPOSE (loom-tests): the take does not acquire the reset's writes.
                Ordering::Relaxed
            } else {
                Ordering::Acquire
            };
            #[cfg(not(busline_loom))]
            let order = Ordering::Acquire;
            // Acquire: pairs with the Release `compare_exchange` in `put`: the segment's reset
            // (keys dropped, seats emptied) happens before we hand it to a producer.
            let segment = cell.swap(ptr::null_mut(), order);
            if !segment.is_null() {
                return segment;
            }
        }
        self.allocate(segment)
    }

    fn allocate(&self, segment: usize) -> *mut T {
        let elements: Box<[T]> = (0..self.len(segment)).map(|_| (self.fresh)()).collect();
        #[cfg(busline_loom)]
        live::add(1);
        Box::into_raw(elements).cast::<T>()
    }

    /// Hands back a segment of index `segment` whose elements are all fresh again: kept in the
    /// pool if its cell is empty, else freed.
    ///
    /// # Safety
    ///
    /// `ptr` came from this pool's `take` for the same index, nobody else refers to it, and
    /// its elements are fresh.
    unsafe fn put(&self, segment: usize, ptr: *mut T) {
        if let Some(cell) = self.cell(segment) {
            // Release: pairs with the Acquire `swap` in `take`.
            if cell.compare_exchange(ptr::null_mut(), ptr, Ordering::Release, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        // SAFETY: the caller hands us the only reference to a segment of this index.
        unsafe { self.free(segment, ptr) };
    }

    /// # Safety
    ///
    /// As [`put`](Pool::put).
    unsafe fn free(&self, segment: usize, ptr: *mut T) {
        let len = self.len(segment);
        // SAFETY: `ptr` is a `Box<[T]>` of `len` elements turned into a raw pointer by
        // `allocate`, and the caller owns it.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(ptr, len)) });
        #[cfg(busline_loom)]
        live::add(-1);
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        for (j, cell) in self.cells.iter().enumerate() {
            let segment = cell.load(Ordering::Relaxed);
            if !segment.is_null() {
                // SAFETY: `&mut self`: the pooled segment is ours alone.
                unsafe { self.free(j + 1, segment) };
            }
        }
    }
}

/// Where a seat lives in its slot's table: [`Seats::place`].
#[derive(Debug)]
pub(crate) struct Place<'a, T> {
    entry: &'a AtomicPtr<T>,
    segment: usize,
    offset: usize,
}

impl<T> Clone for Place<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Place<'_, T> {}

/// One slot's seats: a table of segment pointers, null until installed.
#[derive(Debug)]
pub(crate) struct Seats<T> {
    table: Box<[AtomicPtr<T>]>,
    pool: Arc<Pool<T>>,
}

impl<T> Seats<T> {
    /// A table covering the pool's number of seats, with nothing installed.
    pub(crate) fn new(pool: Arc<Pool<T>>) -> Seats<T> {
        let table = (0..segments_for(pool.seats)).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
        Seats { table, pool }
    }

    /// Installs segment 0 if it is not.
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to the slot (it is free).
    pub(crate) unsafe fn prepare(&self) {
        let first = &self.table[0];
        if first.load(Ordering::Relaxed).is_null() {
            // Release: the claims that reach the slot are ordered after this by the seal's
            // Release swap anyway; Release here also pairs with `get`'s Acquire directly.
            first.store(self.pool.take(0), Ordering::Release);
        }
    }

    /// Seat `index`, if its segment is installed.
    #[inline(always)]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        let (segment, offset) = locate(index);
        // Acquire: pairs with the installer's Release CAS (or `prepare`'s Release store): the
        // segment's elements are initialised.
        let ptr = self.table[segment].load(Ordering::Acquire);
        // SAFETY: a non-null entry points to a live segment of `pool.len(segment)` elements,
        // and `offset` is within it (the index is below the slot's seats); the segment stays
        // until the reset, which nobody races (see the essay).
        (!ptr.is_null()).then(|| unsafe { &*ptr.add(offset) })
    }

    /// Where seat `index` lives: its segment's table entry and its offset there. Arithmetic on
    /// the table, which never moves, so it may be computed before the seat is claimed.
    #[inline(always)]
    pub(crate) fn place(&self, index: usize) -> Place<'_, T> {
        let (segment, offset) = locate(index);
        Place { entry: &self.table[segment], segment, offset }
    }

    /// Seat `index`, installing its segment if it is missing.
    ///
    /// # Safety
    ///
    /// The caller claimed seat `index` in the slot's current epoch.
    #[cfg_attr(any(not(test), busline_loom), allow(dead_code, reason = "the engine goes through `place`; only the unit tests call it"))]
    #[inline(always)]
    pub(crate) unsafe fn get_or_install(&self, index: usize) -> &T {
        // SAFETY: forwarded from the caller.
        unsafe { self.get_or_install_at(self.place(index)) }
    }

    /// The seat at `place`, installing its segment if it is missing.
    ///
    /// # Safety
    ///
    /// `place` is this table's place of a seat the caller claimed in the slot's current epoch.
    #[inline(always)]
    pub(crate) unsafe fn get_or_install_at(&self, place: Place<'_, T>) -> &T {
        // Acquire: as in `get`.
        let mut ptr = place.entry.load(Ordering::Acquire);
        if ptr.is_null() {
            ptr = self.install(place.segment);
        }
        // SAFETY: as in `get`.
        unsafe { &*ptr.add(place.offset) }
    }

    #[cold]
    fn install(&self, segment: usize) -> *mut T {
        let entry = &self.table[segment];
        let new = self.pool.take(segment);
        #[cfg(busline_loom)]
        if crate::sync::broken(crate::sync::Bug::Install) {
            // BROKEN ON PURPOSE (loom-tests): check, then store: two producers may each
            // install a segment, the second overwriting the first.
            entry.store(new, Ordering::Release);
            return new;
        }
        // Release on success: publishes the segment's initialised elements. Acquire on failure:
        // we use the winner's segment, so we must see its initialisation.
        match entry.compare_exchange(ptr::null_mut(), new, Ordering::Release, Ordering::Acquire) {
            Ok(_) => new,
            Err(winner) => {
                // SAFETY: our segment was never published: nobody else refers to it, and we
                // wrote nothing into it.
                unsafe { self.pool.put(segment, new) };
                winner
            }
        }
    }

    /// Hands every segment but the first back to the pool and nulls their entries.
    ///
    /// # Safety
    ///
    /// Nobody else refers to the slot, and every element of every installed segment is fresh
    /// again (the slot's reset emptied the seats it used; the others were never touched).
    pub(crate) unsafe fn recycle(&self) {
        for (segment, entry) in self.table.iter().enumerate().skip(1) {
            let ptr = entry.load(Ordering::Relaxed);
            if !ptr.is_null() {
                entry.store(ptr::null_mut(), Ordering::Relaxed);
                // SAFETY: the slot's exclusive access extends to its segments.
                unsafe { self.pool.put(segment, ptr) };
            }
        }
    }

    /// Calls `f` with every seat of every installed segment (exclusive access).
    pub(crate) fn for_each_installed(&mut self, mut f: impl FnMut(&T)) {
        for (segment, entry) in self.table.iter().enumerate() {
            let ptr = entry.load(Ordering::Relaxed);
            if !ptr.is_null() {
                for offset in 0..self.pool.len(segment) {
                    // SAFETY: `&mut self`; the segment holds `len` initialised elements.
                    f(unsafe { &*ptr.add(offset) });
                }
            }
        }
    }
}

impl<T> Drop for Seats<T> {
    fn drop(&mut self) {
        for (segment, entry) in self.table.iter().enumerate() {
            let ptr = entry.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: `&mut self`: the installed segment is ours alone. (Its elements are
                // dropped with it; the slot dropped any key they held before.)
                unsafe { self.pool.free(segment, ptr) };
            }
        }
    }
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn layout_tiles_the_seats() {
        // Every seat in exactly one segment, segments contiguous and in order.
        let mut next = 0;
        for segment in 0..40 {
            let (start, size) = span(segment);
            assert_eq!(start, next, "segment {segment}");
            for offset in [0, size / 2, size - 1] {
                assert_eq!(locate(start + offset), (segment, offset));
            }
            next = start + size;
        }
        assert_eq!(span(0), (0, 32));
        assert_eq!(span(4), (128, 64));
        assert_eq!(segments_for(1), 1);
        assert_eq!(segments_for(1024), 13);
        // Unlimited: the table for the most seats a ring has is a few hundred pointers.
        assert!(segments_for(crate::ring::MAX_SEATS) <= 160);
        let (start, size) = span(segments_for(crate::ring::MAX_SEATS) - 1);
        assert!(start + size >= crate::ring::MAX_SEATS);
    }

    #[test]
    fn waste_is_at_most_a_quarter_plus_the_first_segment() {
        let step = if cfg!(miri) { 997 } else { 7 };
        for seats in (1..100_000).step_by(step).chain([1 << 20, 1_000_000, (1 << 20) + 1]) {
            let last = segments_for(seats) - 1;
            let (start, size) = span(last);
            let allocated = start + size;
            assert!(allocated <= seats + seats / 4 + 32, "{seats} seats: {allocated} allocated");
        }
    }

    #[derive(Debug, Default)]
    struct Elem(crate::sync::AtomicU64);

    fn fresh() -> Elem {
        Elem::default()
    }

    #[test]
    fn install_recycle_and_reuse() {
        let pool = Pool::new(100, fresh);
        let seats = Seats::new(Arc::clone(&pool));
        // SAFETY: exclusive access.
        unsafe { seats.prepare() };
        assert!(seats.get(0).is_some());
        assert!(seats.get(31).is_some());
        assert!(seats.get(32).is_none(), "segment 1 is installed on demand");
        // SAFETY: seat 40 "claimed".
        let e = unsafe { seats.get_or_install(40) };
        e.0.store(7, Ordering::Relaxed);
        let installed = seats.table[1].load(Ordering::Relaxed);
        assert_eq!(seats.get(40).unwrap().0.load(Ordering::Relaxed), 7);
        // SAFETY: "claimed"; same segment, no second install.
        unsafe { seats.get_or_install(33) };
        assert_eq!(seats.table[1].load(Ordering::Relaxed), installed);
        // The last segment is cut short at 100 seats.
        // SAFETY: "claimed".
        unsafe { seats.get_or_install(99) }.0.store(1, Ordering::Relaxed);
        e.0.store(0, Ordering::Relaxed);
        // SAFETY: exclusive; elements fresh again but seat 99's, reset here.
        unsafe {
            seats.get(99).unwrap().0.store(0, Ordering::Relaxed);
            seats.recycle();
        }
        assert!(seats.get(40).is_none());
        assert!(seats.get(0).is_some(), "segment 0 stays");
        assert_eq!(pool.cells[0].load(Ordering::Relaxed), installed, "segment 1 went to the pool");
        // A second slot takes the pooled segment instead of allocating.
        let other = Seats::new(Arc::clone(&pool));
        // SAFETY: "claimed".
        unsafe { other.get_or_install(32) };
        assert_eq!(other.table[1].load(Ordering::Relaxed), installed);
        assert!(pool.cells[0].load(Ordering::Relaxed).is_null());
    }

    #[test]
    fn racing_installs_leave_one_segment() {
        // Small under Miri, which runs every access through its checks.
        let n = if cfg!(miri) { 1 << 9 } else { 1 << 16 };
        let pool = Pool::new(n, fresh);
        let seats = Seats::new(Arc::clone(&pool));
        std::thread::scope(|s| {
            for t in 0..4usize {
                let seats = &seats;
                s.spawn(move || {
                    for i in (t..n).step_by(4) {
                        // SAFETY: seat `i` is this thread's alone.
                        unsafe { seats.get_or_install(i) }.0.store(i as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        for i in 0..n {
            assert_eq!(seats.get(i).unwrap().0.load(Ordering::Relaxed), i as u64, "seat {i}");
        }
    }

    #[test]
    fn a_full_pool_frees_what_it_cannot_keep() {
        let large = if cfg!(miri) { 1 << 12 } else { 1 << 19 };
        let pool = Pool::new(2 * large, fresh);
        let (a, b) = (Seats::new(Arc::clone(&pool)), Seats::new(Arc::clone(&pool)));
        for seats in [&a, &b] {
            for i in [40, 2000, large] {
                // SAFETY: "claimed"; fresh elements untouched.
                unsafe { seats.get_or_install(i) };
            }
        }
        // SAFETY: exclusive, untouched.
        unsafe {
            a.recycle();
            b.recycle();
        }
        // One segment of index 1 kept; the other, and the large ones, freed (Miri checks).
        assert!(!pool.cells[0].load(Ordering::Relaxed).is_null());
        assert_eq!(pool.cells.len(), segments_for(POOL_SEATS) - 1);
    }
}
