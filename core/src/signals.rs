//! What the driver, its callers and its handles tell one another without a lock: the driver's
//! waker, completed batches, shutdown, the stall flag and the solo runs of `Overflow::RunAlone`,
//! and the few protocol steps built on them (publish an outcome, release a slot, abandon the
//! boarding bus).
//!
//! No tokio and no clock in here: under `--cfg busline_loom` this file compiles against loom's
//! atomics, and `loom-tests/tests/driver_*.rs` model-check these very functions.
//!
//! Items here are `pub` so that `--cfg busline_loom` can re-export them to the loom model
//! checks (`crate::model`); the module itself is private, so they are not part of the API.
#![cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]

use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::ring::{Claim, Ring, Sealed};
use crate::slot::Slot;
use crate::sync::{AtomicU8, AtomicU64, Ordering, WakerCell};

/// The signals of one batcher.
#[derive(Debug)]
pub struct Signals {
    /// The driver task's waker.
    driver: CachePadded<WakerCell>,
    /// Batches published that the driver has not counted yet.
    completed: CachePadded<AtomicU64>,
    /// `SHUTDOWN` and `STALLED`, one word so that a caller under `Reject` or `RunAlone` reads
    /// both with one load.
    flags: AtomicU8,
    /// Solo runs (`Overflow::RunAlone`) admitted and not finished.
    alone: AtomicU64,
}

// The essay.
//
// # Waking the driver
//
// The driver registers its waker, then looks at everything (`Signals::look` and the ring's
// head word and free mask). Every event it must not miss stores first and wakes second: a
// producer's first and last seat of a bus (the `fetch_add` on the head word, then `board`'s
// wake), a publication (`completed`, then the wake), a freed slot (the free mask's `fetch_or`,
// then the wake), a shutdown request (`SHUTDOWN`, then the wake). `WakerCell` is tokio's
// `AtomicWaker`: a `wake` that races a `register` either finds the new waker or makes the
// registration wake at once, so an event after the driver's look wakes it, and an event before
// the look is seen by it.
//
// # Shutdown
//
// `request_shutdown` sets `SHUTDOWN`; the driver then closes the ring (later claims are
// refused), sends what boarded, waits for its batches, and finishes. Solo runs do not board,
// so they are counted apart: a caller admits itself (`alone += 1`, SeqCst) and then checks
// `SHUTDOWN` (SeqCst); the driver finishes only after it has seen `SHUTDOWN` and `alone == 0`
// (SeqCst). In the single total order of these SeqCst operations either the caller's check
// follows the flag (it is refused, `Closed`) or the driver's read follows the admission (it
// waits for the run). So once `shutdown()` has returned, no batch call starts.
//
// # The stall flag
//
// The driver sets `STALLED` while a full bus cannot leave, and clears it when it can. It is
// advice, read Relaxed: a caller under `Reject` or `RunAlone` that sees it does not claim a
// seat at all (a claim past the seats only adds to the head word's count). A caller that misses
// it claims, finds the bus full, and decides then; either way it decides at once.
//
// # Races (and why they are safe)
//
// - A wake racing the driver's registration: `AtomicWaker`, above.
// - A solo run admitted as shutdown is requested: the Dekker pair above.
// - A stale `STALLED` after room has come back: the freed slot or the completion that made room
//   wakes the driver, whose next step stores the new value.

/// Bit of `flags`: shutdown was requested. Grants nothing; a caller that sees it is refused.
const SHUTDOWN: u8 = 1;
/// Bit of `flags`: a full bus cannot leave (every in-flight place or every slot is busy).
/// Grants nothing; a caller under `Reject` or `RunAlone` that sees it does not claim.
const STALLED: u8 = 2;

/// What a caller under `Reject` or `RunAlone` finds before claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Neither stalled nor shut down: claim a seat.
    Open,
    /// At capacity: refuse or run alone, without claiming.
    Stalled,
    /// Shutdown was requested: refuse with `Closed`.
    Shutdown,
}

/// What the driver sees when it looks (after registering its waker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Batches published since the last look.
    pub completed: u64,
    /// Shutdown was requested.
    pub shutdown: bool,
}

impl Default for Signals {
    fn default() -> Signals {
        Signals::new()
    }
}

impl Signals {
    /// No event yet.
    pub fn new() -> Signals {
        Signals {
            driver: CachePadded::new(WakerCell::new()),
            completed: CachePadded::new(AtomicU64::new(0)),
            flags: AtomicU8::new(0),
            alone: AtomicU64::new(0),
        }
    }

    /// Wakes the driver.
    #[inline]
    pub fn wake_driver(&self) {
        self.driver.wake();
    }

    /// Driver: registers `waker`, then collects the events counted here. Anything signalled
    /// after this returns wakes `waker`.
    pub fn look(&self, waker: &Waker) -> Look {
        self.driver.register(waker);
        // Acquire: pairs with the publishers' Release increments in `complete`.
        let completed = self.completed.swap(0, Ordering::Acquire);
        Look { completed, shutdown: self.is_shutdown() }
    }

    /// Asks the driver to send what boarded, refuse new requests and finish.
    pub fn request_shutdown(&self) {
        #[cfg(not(busline_loom_broken = "shutdown_flag"))]
        // SeqCst: one side of the solo-run Dekker pair (see the essay).
        self.flags.fetch_or(SHUTDOWN, Ordering::SeqCst);
        #[cfg(busline_loom_broken = "shutdown_flag")]
        // BROKEN ON PURPOSE (loom-tests): a Release flag no longer orders against the solo
        // run's admission, so a run can start after the driver finished.
        self.flags.fetch_or(SHUTDOWN, Ordering::Release);
        self.wake_driver();
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        // SeqCst: the driver's and the solo run's side of the Dekker pair.
        self.flags.load(Ordering::SeqCst) & SHUTDOWN != 0
    }

    /// Caller under `Reject` or `RunAlone`, before claiming: may it claim?
    #[inline]
    pub fn gate(&self) -> Gate {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & SHUTDOWN != 0 {
            Gate::Shutdown
        } else if flags & STALLED != 0 {
            Gate::Stalled
        } else {
            Gate::Open
        }
    }

    /// Driver: records whether a full bus is stuck. Writes only on a change.
    pub fn set_stalled(&self, stalled: bool) {
        let was = self.flags.load(Ordering::Relaxed) & STALLED != 0;
        if was != stalled {
            if stalled {
                self.flags.fetch_or(STALLED, Ordering::Relaxed);
            } else {
                self.flags.fetch_and(!STALLED, Ordering::Relaxed);
            }
        }
    }

    /// Caller under `RunAlone`: admits a solo run, unless shutdown was requested (then `false`:
    /// answer `Closed`). An admitted run must end with [`end_alone`](Signals::end_alone).
    pub fn begin_alone(&self) -> bool {
        // SeqCst: the caller's side of the Dekker pair (see the essay).
        #[cfg(not(busline_loom_broken = "alone_relaxed"))]
        self.alone.fetch_add(1, Ordering::SeqCst);
        #[cfg(busline_loom_broken = "alone_relaxed")]
        // BROKEN ON PURPOSE (loom-tests): announced Relaxed and checked Relaxed, the driver
        // can finish without seeing the run, and the run can miss the flag.
        self.alone.fetch_add(1, Ordering::Relaxed);
        if self.is_shutdown() {
            self.end_alone();
            return false;
        }
        true
    }

    /// A solo run admitted by [`begin_alone`](Signals::begin_alone) has ended (answered, or
    /// dropped).
    pub fn end_alone(&self) {
        // SeqCst: read by the driver's `solo_runs` in the Dekker pair.
        if self.alone.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_shutdown() {
            self.wake_driver();
        }
    }

    /// Driver: solo runs still going.
    pub fn solo_runs(&self) -> u64 {
        // SeqCst: the driver's side of the Dekker pair.
        self.alone.load(Ordering::SeqCst)
    }

    /// Counts one published batch and wakes the driver.
    fn complete(&self) {
        // Release: pairs with the driver's Acquire swap in `look`.
        self.completed.fetch_add(1, Ordering::Release);
        self.wake_driver();
    }
}

/// Drops `n` references to `slot`, waking the driver if that freed it (it may wait for a slot).
pub fn release<K, R>(ring: &Ring<K, R>, signals: &Signals, slot: usize, n: i64) {
    if ring.release(slot, n) {
        signals.wake_driver();
    }
}

/// Publishes a sealed batch's outcome to its callers, counts the batch complete, and drops the
/// batch's reference to its slot.
///
/// # Safety
///
/// The caller holds the batch's reference to `slot` (sealed, collected), and publishes once.
pub unsafe fn publish<K, R>(ring: &Ring<K, R>, signals: &Signals, slot: usize, outcome: R) {
    // SAFETY: the caller holds the batch's reference and publishes once.
    unsafe { ring.slot(slot).publish(outcome) };
    signals.complete();
    release(ring, signals, slot, 1);
}

/// What a producer's [`board`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Boarded<K> {
    /// Seated in seat `index` of slot `slot`, its key written.
    Seat {
        /// The boarding slot.
        slot: usize,
        /// The seat.
        index: usize,
    },
    /// The bus was full (see [`Claim::Full`]); nothing written, the key handed back.
    Full {
        /// The `{ epoch, slot }` part of the head word that was full.
        boarding: u64,
        /// The key.
        key: K,
    },
    /// The batcher is closed; the key handed back.
    Closed(K),
}

/// A producer: claims a seat and writes `key` into it, waking the driver when the bus opens
/// (`stamp` is called first, to record when) or fills.
#[inline]
pub fn board<K, R>(ring: &Ring<K, R>, signals: &Signals, key: K, stamp: impl FnOnce(&Slot<K, R>)) -> Boarded<K> {
    let (slot, index) = match ring.claim() {
        Claim::Seat { slot, index } => (slot, index),
        Claim::Full { boarding } => return Boarded::Full { boarding, key },
        Claim::Closed => return Boarded::Closed(key),
    };
    let seat = ring.slot(slot);
    // SAFETY: the claim gave us seat `index` of `slot`; we write it once.
    unsafe { seat.write(index, key) };
    if index == 0 {
        // The first passenger opens the window: stamp it, so the window is measured from the
        // arrival and not from when the driver gets to run.
        stamp(seat);
        signals.wake_driver();
    }
    #[cfg(not(busline_loom_broken = "last_seat_wake"))]
    if index + 1 == ring.seats() {
        signals.wake_driver();
    }
    Boarded::Seat { slot, index }
}

/// The driver, going away before it finished (its runtime is shutting down): closes the ring,
/// collects the boarding bus (waiting for seats being written) and publishes `outcome` to it,
/// so nobody waits for a driver that is gone. Returns the bus it closed, or `None` if the ring
/// was already closed.
pub fn abandon<K, R>(ring: &Ring<K, R>, signals: &Signals, outcome: R) -> Option<Sealed> {
    if ring.is_closed() {
        return None;
    }
    let sealed = ring.close();
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    unsafe { ring.slot(sealed.slot).collect(sealed.count, |_| {}) };
    // SAFETY: `close` gave the driver the batch's reference; published once.
    unsafe { publish(ring, signals, sealed.slot, outcome) };
    Some(sealed)
}
