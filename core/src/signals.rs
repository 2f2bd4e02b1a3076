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
use crate::settings::Overflow;
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
// so they are counted apart: a caller admits itself (`alone += 1`), then reads the flags; the
// driver, once it has seen `SHUTDOWN`, reads `alone` and finishes only at zero. Every one of
// these is a read-modify-write (the flags read as `fetch_or(0)`, the count as `fetch_add(0)`),
// so each reads the latest value of its word, and the AcqRel chain orders them: if the caller
// read the flags before `SHUTDOWN` was set, the shutdown request synchronises with that read,
// so the admission happens before the driver's read of `alone`, which then counts the run.
// Otherwise the caller sees `SHUTDOWN` and answers `Closed`. (Plain SeqCst loads and stores
// would do on hardware, but loom treats SeqCst as AcqRel, and the RMWs make the argument hold
// without a total order.) So once `shutdown()` has returned, no batch call starts.
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
// - A solo run admitted as shutdown is requested: the read-modify-write pair above.
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
    /// The boarding slot and its seats taken.
    pub boarding: Sealed,
    /// A slot is free for the next bus.
    pub free_slot: bool,
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

    /// Driver: registers `waker`, then looks at every event it must not miss: completions,
    /// shutdown, the boarding bus, a free slot. Anything signalled after this look wakes
    /// `waker`; anything before it is in the look.
    pub fn look<K, R>(&self, ring: &Ring<K, R>, waker: &Waker) -> Look {
        #[cfg(not(busline_loom_broken = "look"))]
        self.driver.register(waker);
        // Acquire: pairs with the publishers' Release increments in `complete`.
        let completed = self.completed.swap(0, Ordering::Acquire);
        let shutdown = self.is_shutdown();
        // Relaxed: a claim or a free that woke the driver before its registration is ordered
        // before it by the waker cell's own acquire-release; one after it wakes the new waker.
        let boarding = ring.boarding();
        let free_slot = ring.has_free_slot();
        #[cfg(busline_loom_broken = "look")]
        // BROKEN ON PURPOSE (loom-tests): looking, then registering, misses a wake-up that
        // lands in between, and the driver sleeps on a bus that is boarding.
        self.driver.register(waker);
        Look { completed, shutdown, boarding, free_slot }
    }

    /// Asks the driver to send what boarded, refuse new requests and finish.
    pub fn request_shutdown(&self) {
        // AcqRel: a read-modify-write, so that a solo run's admission, which reads the flags
        // with one too, is ordered against it (see the essay).
        self.flags.fetch_or(SHUTDOWN, Ordering::AcqRel);
        self.wake_driver();
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        // Acquire: pairs with the AcqRel `fetch_or` in `request_shutdown`.
        self.flags.load(Ordering::Acquire) & SHUTDOWN != 0
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
        // AcqRel, and the flags read with a read-modify-write: the caller's side of the pair
        // (see the essay).
        self.alone.fetch_add(1, Ordering::AcqRel);
        #[cfg(not(busline_loom_broken = "solo_admission"))]
        let flags = self.flags.fetch_or(0, Ordering::AcqRel);
        #[cfg(busline_loom_broken = "solo_admission")]
        // BROKEN ON PURPOSE (loom-tests): a plain load may read the flags from before the
        // shutdown request while the driver reads `alone` from before this admission, so the
        // driver finishes and the run starts after.
        let flags = self.flags.load(Ordering::Acquire);
        if flags & SHUTDOWN != 0 {
            self.end_alone();
            return false;
        }
        true
    }

    /// A solo run admitted by [`begin_alone`](Signals::begin_alone) has ended (answered, or
    /// dropped).
    pub fn end_alone(&self) {
        // AcqRel: if the driver read `alone` before this, its read-modify-write is ordered
        // before ours, and so is the shutdown it had seen: we see it and wake it.
        if self.alone.fetch_sub(1, Ordering::AcqRel) == 1 && self.is_shutdown() {
            self.wake_driver();
        }
    }

    /// Driver, once it has seen shutdown: solo runs still going. A read-modify-write, so that
    /// it reads the latest count (see the essay).
    pub fn solo_runs(&self) -> u64 {
        self.alone.fetch_add(0, Ordering::AcqRel)
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
    if index + 1 == ring.seats() {
        signals.wake_driver();
    }
    Boarded::Seat { slot, index }
}

/// Where a caller's request goes, by the overflow policy: [`admit`]'s answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// Seated in seat `index` of slot `slot`, its key written.
    Seated {
        /// The boarding slot.
        slot: usize,
        /// The seat.
        index: usize,
    },
    /// `Overflow::Wait` and the bus was full: wait until the ring has moved on from
    /// `boarding`, then try again.
    WaitForRoom {
        /// The `{ epoch, slot }` part of the head word that was full.
        boarding: u64,
        /// The key, handed back.
        key: K,
    },
    /// `Overflow::Reject` at capacity: answer `Overloaded`.
    Overloaded(K),
    /// `Overflow::RunAlone` at capacity: run the batch function for this key alone. The run is
    /// admitted; end it with [`Signals::end_alone`].
    RunAlone(K),
    /// Shut down: answer `Closed`.
    Closed(K),
}

/// A caller's request: claims a seat and writes `key` (see [`board`]), or applies `overflow`.
/// `Reject` and `RunAlone` decide at once: at capacity (the stall flag, or a full bus) they
/// answer without waiting, and once shutdown is requested they answer `Closed`.
#[inline]
pub fn admit<K, R>(
    ring: &Ring<K, R>,
    signals: &Signals,
    overflow: Overflow,
    key: K,
    stamp: impl FnOnce(&Slot<K, R>),
) -> Admission<K> {
    if overflow != Overflow::Wait {
        // At capacity, do not even claim: a claim would only count past the seats.
        match signals.gate() {
            Gate::Open => {}
            Gate::Stalled => return at_capacity(signals, overflow, key),
            Gate::Shutdown => return Admission::Closed(key),
        }
    }
    match board(ring, signals, key, stamp) {
        Boarded::Seat { slot, index } => Admission::Seated { slot, index },
        Boarded::Full { boarding, key } if overflow == Overflow::Wait => Admission::WaitForRoom { boarding, key },
        // A full bus is capacity to those that decide at once.
        Boarded::Full { key, .. } => at_capacity(signals, overflow, key),
        Boarded::Closed(key) => Admission::Closed(key),
    }
}

fn at_capacity<K>(signals: &Signals, overflow: Overflow, key: K) -> Admission<K> {
    match overflow {
        Overflow::Reject => Admission::Overloaded(key),
        _ if signals.begin_alone() => Admission::RunAlone(key),
        _ => Admission::Closed(key),
    }
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
