//! A seat's waker cell: the waker of the caller waiting in the seat, woken by the batch's
//! publisher. The `AtomicWaker` algorithm (as in `futures`' and tokio's), plus a first
//! registration without atomics. (The driver's own waker cell is `sync::WakerCell`.)
//!
//! `register` and `wake` race through a small state word: a registration takes the cell
//! (`WAITING` -> `REGISTERING`), stores its waker and gives it back; a wake sets `WAKING`, and
//! takes the waker if the cell was idle. A wake that lands during a registration leaves
//! `WAKING` set, and the registration, on giving the cell back, finds it and wakes its own
//! waker. Two compare-exchanges per registration, one or two read-modify-writes per wake.
//!
//! [`init`](SeatWaker::init) is the seat's first registration, made while the caller owns its
//! seat outright: between its claim and the Release store that publishes the written seat, no
//! other thread may touch the seat (the driver and the publisher wait for that store, see
//! `slot.rs`). A plain store then does what `register` does with two compare-exchanges, which
//! on the reference VM is ~11 ns of a ~42 ns first poll of `load`.
//!
//! Built on the loom facade (`sync.rs`), so the loom models check this very code, the plain
//! store included: loom's `UnsafeCell` reports any access to the waker not ordered after it.

use std::task::Waker;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// Idle: no registration or wake in progress.
const WAITING: usize = 0;
/// A registration holds the cell.
const REGISTERING: usize = 0b01;
/// A wake holds the cell, or came while a registration held it.
const WAKING: usize = 0b10;

pub(crate) struct SeatWaker {
    state: AtomicUsize,
    /// Written only by whoever holds the cell (`REGISTERING`, or `WAKING` from `WAITING`), or
    /// by `init` before the cell is shared.
    waker: UnsafeCell<Option<Waker>>,
}

impl std::fmt::Debug for SeatWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeatWaker").finish_non_exhaustive()
    }
}

// SAFETY: the waker (`Send + Sync`) is only accessed by the holder of the cell, as the state
// word orders (or, for `init`, before any other thread can reach the cell).
unsafe impl Send for SeatWaker {}
// SAFETY: as above.
unsafe impl Sync for SeatWaker {}

impl SeatWaker {
    pub(crate) fn new() -> SeatWaker {
        SeatWaker { state: AtomicUsize::new(WAITING), waker: UnsafeCell::new(None) }
    }

    /// Stores `waker` as the first registration, without synchronising.
    ///
    /// # Safety
    ///
    /// No other thread accesses the cell until it is handed over by a later Release (the
    /// seat's store of `WRITTEN`), and no wake or registration is in progress on it.
    #[inline(always)]
    pub(crate) unsafe fn init(&self, waker: Waker) {
        // SAFETY: exclusive access, guaranteed by the caller. The cell is empty (a new seat, or
        // one its reset cleared), so nothing is dropped: a plain write, no check of an old waker.
        self.waker.with_mut(|cell| unsafe {
            debug_assert!((*cell).is_none(), "`init` on a seat whose waker was not cleared");
            cell.write(Some(waker))
        });
    }

    /// Registers `waker` to be woken by the next [`wake`](SeatWaker::wake), replacing the
    /// waker registered before. If a wake races it, `waker` is woken at once.
    pub(crate) fn register(&self, waker: &Waker) {
        // Acquire: the previous holder's writes to the waker are visible.
        match self.state.compare_exchange(WAITING, REGISTERING, Ordering::Acquire, Ordering::Acquire).unwrap_or_else(|s| s) {
            WAITING => {
                // SAFETY: REGISTERING: we hold the cell.
                self.waker.with_mut(|cell| unsafe {
                    match &*cell {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *cell = Some(waker.clone()),
                    }
                });
                // AcqRel: releases our write; on failure, acquires the racing wake's.
                match self.state.compare_exchange(REGISTERING, WAITING, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {}
                    Err(actual) => {
                        // A wake came meanwhile (it could not take the waker): wake it ourselves.
                        debug_assert_eq!(actual, REGISTERING | WAKING);
                        // SAFETY: we still hold the cell until the swap below.
                        let woken = self.waker.with_mut(|cell| unsafe { (*cell).take() });
                        self.state.swap(WAITING, Ordering::AcqRel);
                        if let Some(waker) = woken {
                            waker.wake();
                        }
                    }
                }
            }
            WAKING => {
                // A wake holds the cell: it is waking the previous waker; have this one polled
                // again, so it registers once the wake is done.
                waker.wake_by_ref();
            }
            state => {
                // Another registration holds the cell: `register` runs from one task at a time.
                debug_assert!(state == REGISTERING || state == REGISTERING | WAKING, "state {state}");
            }
        }
    }

    /// Wakes the registered waker, if any, and empties the cell.
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }

    /// Empties the cell, dropping its waker.
    pub(crate) fn clear(&self) {
        drop(self.take());
    }

    fn take(&self) -> Option<Waker> {
        // AcqRel: acquires the registration's write of the waker.
        match self.state.fetch_or(WAKING, Ordering::AcqRel) {
            WAITING => {
                // SAFETY: WAKING from WAITING: we hold the cell.
                let waker = self.waker.with_mut(|cell| unsafe { (*cell).take() });
                // Release: our take is visible to the next holder.
                self.state.fetch_and(!WAKING, Ordering::Release);
                waker
            }
            // A registration holds the cell (it will see WAKING and wake its waker), or another
            // wake does.
            _ => None,
        }
    }
}
