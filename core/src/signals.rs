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

use crate::ring::{Claim, Placed, Ring, Sealed};
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
// driver, once it has seen `SHUTDOWN`, reads `alone` and finishes only at zero. With plain
// acquire loads this Dekker pair is broken (each side may read the other's word from before
// the other's write). So both reads are read-modify-writes (the flags as `fetch_or(0)`, the
// count as `fetch_add(0)`), each reading the latest value of its word: if the caller read the
// flags before `SHUTDOWN` was set, the request's RMW read from the caller's, so the admission
// happens before the driver's read of `alone`, which counts the run; if the driver read
// `alone` before the admission, the admission's RMW read from the driver's, so the caller sees
// the `SHUTDOWN` the driver had seen and answers `Closed`. (Either RMW alone would do; both
// cost nothing on these rare paths. SeqCst loads would do on hardware, but loom treats SeqCst
// as AcqRel; the RMWs make the argument hold without a total order.) So once `shutdown()`
// has returned, no batch call starts.
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
        if !broken(Bug::DriverLook) {
            self.driver.register(waker);
        }
        // Acquire: pairs with the publishers' Release increments in `complete`.
        let completed = self.completed.swap(0, Ordering::Acquire);
        let shutdown = self.is_shutdown();
        // Relaxed: a claim or a free that woke the driver before its registration is ordered
        // before it by the waker cell's own acquire-release; one after it wakes the new waker.
        let boarding = ring.boarding();
        let free_slot = ring.has_free_slot();
        if broken(Bug::DriverLook) {
            // BROKEN ON PURPOSE (loom-tests): looking, then registering, misses a wake-up that
            // lands in between, and the driver sleeps on a bus that is boarding.
            self.driver.register(waker);
        }
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

    /// Caller, before claiming: may it claim (`Stalled` matters to `Reject` and `RunAlone`)?
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

    /// Driver: records whether a full bus is stuck. Writes only on a change; returns whether it
    /// cleared the flag (then the driver must also wake whoever waits for room, see
    /// `Shared::room_after`).
    pub fn set_stalled(&self, stalled: bool) -> bool {
        let was = self.flags.load(Ordering::Relaxed) & STALLED != 0;
        if was != stalled {
            if stalled {
                self.flags.fetch_or(STALLED, Ordering::Relaxed);
            } else {
                self.flags.fetch_and(!STALLED, Ordering::Relaxed);
            }
        }
        was && !stalled
    }

    /// Caller under `RunAlone`: admits a solo run, unless shutdown was requested (then `false`:
    /// answer `Closed`). An admitted run must end with [`end_alone`](Signals::end_alone).
    pub fn begin_alone(&self) -> bool {
        // AcqRel, and the flags read with a read-modify-write: the caller's side of the pair
        // (see the essay).
        self.alone.fetch_add(1, Ordering::AcqRel);
        let flags = if broken(Bug::SoloAdmission) {
            // BROKEN ON PURPOSE (loom-tests): with plain loads on both sides (here and in
            // `solo_runs`), the caller may read the flags from before the shutdown request
            // while the driver reads `alone` from before this admission (store buffering), so
            // the driver finishes and the run starts after.
            self.flags.load(Ordering::Acquire)
        } else {
            self.flags.fetch_or(0, Ordering::AcqRel)
        };
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
        if broken(Bug::SoloAdmission) {
            // BROKEN ON PURPOSE (loom-tests): see `begin_alone`.
            return self.alone.load(Ordering::Acquire);
        }
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
///
/// # Safety
///
/// As for [`Ring::release`]: the caller holds `n` references to `slot` and gives them up.
pub unsafe fn release<K, R>(ring: &Ring<K, R>, signals: &Signals, slot: usize, n: i64) {
    // SAFETY: forwarded from the caller.
    if unsafe { ring.release(slot, n) } {
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
    // SAFETY: the caller held the batch's reference; publishing was its last use.
    unsafe { release(ring, signals, slot, 1) };
}

/// [`publish`] in steps, for a batch whose callers are many: publishes the outcome and counts
/// the batch complete at once, and returns the callers to wake; [`Fanout::wake_next`] wakes
/// them a step at a time, and the batch's reference is released when the last is woken.
///
/// # Safety
///
/// As for [`publish`]; the returned [`Fanout`] takes over the batch's reference.
pub unsafe fn publish_in_steps<K, R>(ring: &Ring<K, R>, signals: &Signals, slot: usize, outcome: R) -> Fanout {
    // SAFETY: the caller holds the batch's reference and publishes once.
    let count = unsafe { ring.slot(slot).publish_quietly(outcome) };
    signals.complete();
    Fanout { slot, next: 0, count, step: Fanout::FIRST_STEP }
}

/// The callers of a batch published by [`publish_in_steps`], not all woken yet. Holds the
/// batch's reference to its slot: [`Fanout::finish`] wakes the rest and releases it.
///
/// Why in steps: the callers a batch answers are, under load, the passengers of the next bus,
/// and the next bus's window opens when the first of them boards again. Waking a thousand
/// tasks takes the publishing worker ~100 µs (each wake schedules a task); the callers woken
/// first cannot run before it yields. Waking a small first step and yielding lets them answer
/// and board at once, while the rest are woken in doubling steps, so a sweep of `n` callers
/// yields about log2(`n` / `FIRST_STEP`) times.
#[derive(Debug)]
#[must_use = "a Fanout holds the batch's slot until `finish` wakes the rest"]
pub struct Fanout {
    slot: usize,
    next: usize,
    count: usize,
    step: usize,
}

impl Fanout {
    /// Callers woken before the first yield: as many as one worker runs in a few microseconds
    /// (a woken task's answer and next load cost well under a microsecond each), so that the
    /// next bus opens without waiting for the whole sweep.
    pub const FIRST_STEP: usize = 16;

    /// Wakes the next step of callers (each step twice the last). Returns whether any are left.
    pub fn wake_next<K, R>(&mut self, ring: &Ring<K, R>) -> bool {
        let end = self.count.min(self.next + self.step);
        ring.slot(self.slot).wake(self.next..end);
        self.next = end;
        self.step = self.step.saturating_mul(2);
        self.next < self.count
    }

    /// Wakes every caller not woken yet and releases the batch's reference to its slot.
    pub fn finish<K, R>(self, ring: &Ring<K, R>, signals: &Signals) {
        ring.slot(self.slot).wake(self.next..self.count);
        // SAFETY: a `Fanout` holds the batch's reference (taken over from `publish_in_steps`),
        // and `finish` consumes it.
        unsafe { release(ring, signals, self.slot, 1) };
    }
}

/// What a producer's [`board`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Boarded<K> {
    /// Seated in seat `index` of slot `slot`, its key written.
    #[cfg_attr(
        not(any(test, busline_loom)),
        allow(dead_code, reason = "built by `board`, for tests and loom models")
    )]
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

/// A producer: claims a seat and writes `key` into it with its caller's `waker` (so the
/// caller's first poll need not register it), waking the driver when the bus opens (`stamp` is
/// called first, to record when) or fills.
#[cfg_attr(
    not(any(test, busline_loom)),
    allow(dead_code, reason = "the engine boards with `admit_then`; tests and loom models with `board`")
)]
#[inline(always)]
pub fn board<K, R>(
    ring: &Ring<K, R>,
    signals: &Signals,
    key: K,
    waker: &Waker,
    stamp: impl FnOnce(&Slot<K, R>),
) -> Boarded<K> {
    // Cloned before the claim: the clone is the caller's executor's code, and a panic in it
    // after the claim would leave a claimed seat unwritten, which the driver waits for.
    board_marked(ring, signals, key, waker, stamp, |_| {})
}

/// [`board`], telling `mark` the seat expected before the claim and the seat got after it, as
/// [`board_then`] does.
#[cfg_attr(
    not(any(test, busline_loom)),
    allow(dead_code, reason = "the engine boards with `admit_then`; tests and loom models with `board_marked`")
)]
#[inline(always)]
pub fn board_marked<K, R>(
    ring: &Ring<K, R>,
    signals: &Signals,
    key: K,
    waker: &Waker,
    stamp: impl FnOnce(&Slot<K, R>),
    mark: impl FnMut(Option<(usize, usize)>),
) -> Boarded<K> {
    // Cloned before the claim, as in `board`.
    let waker = waker.clone();
    let seated = |slot, index| Boarded::Seat { slot, index };
    board_then(ring, signals, key, waker, stamp, mark, seated, |boarded| boarded)
}

/// [`board`] with the caller's waker already cloned (before the claim, as there), handing a
/// seat to `seated` and any other outcome to `other`: the seated path, every load's, then
/// carries no enum of the key (which the compiler would build in memory, and the next claim's
/// locked add would wait for those stores).
///
/// `mark` is told, before the claim, the seat the claim gets unless another producer claims
/// first (`Some`); after the claim, the seat it got instead, or `None` if it got none. So a
/// caller that records its seat (the `Load` future) stores it before the claim, whose locked
/// add drains those stores anyway, and after it only when another producer came first. No
/// user code runs between the claim and `mark`, so a panic never finds the mark wrong. With
/// the bus seen full or the ring closed, `mark` is not called.
#[expect(clippy::too_many_arguments, reason = "the inputs of one step and its three ways on; `admit_then` is its caller")]
#[inline(always)]
pub(crate) fn board_then<K, R, T>(
    ring: &Ring<K, R>,
    signals: &Signals,
    key: K,
    waker: Waker,
    stamp: impl FnOnce(&Slot<K, R>),
    mut mark: impl FnMut(Option<(usize, usize)>),
    seated: impl FnOnce(usize, usize) -> T,
    other: impl FnOnce(Boarded<K>) -> T,
) -> T {
    let seen = match ring.look() {
        Ok(seen) => seen,
        Err(Claim::Full { boarding }) => return other(Boarded::Full { boarding, key }),
        Err(_) => return other(Boarded::Closed(key)),
    };
    mark(Some((seen.slot(), seen.index())));
    let (slot, index, place) = match ring.claim_looked(seen) {
        Placed::Seat { slot, index, place, guessed } => {
            // BROKEN ON PURPOSE (loom-tests) under `Bug::Mark`: the mark is not corrected, so
            // a caller that another producer beat to the expected seat records that seat.
            if !guessed && !broken(Bug::Mark) {
                mark(Some((slot, index)));
            }
            (slot, index, place)
        }
        Placed::Full { boarding } => {
            mark(None);
            return other(Boarded::Full { boarding, key });
        }
        Placed::Closed => {
            mark(None);
            return other(Boarded::Closed(key));
        }
    };
    let seat = ring.slot(slot);
    // SAFETY: the claim gave us seat `index` of `slot`, which lives at `place`; we write it
    // once.
    unsafe { seat.write_placed(place, key, waker) };
    if index == 0 || index + 1 == ring.seats() {
        opened_or_filled(seat, signals, index, stamp);
    }
    seated(slot, index)
}

/// The first passenger opens the window, the last fills the bus: either wakes the driver. Out
/// of line: most passengers do neither.
#[cold]
#[inline(never)]
fn opened_or_filled<K, R>(seat: &Slot<K, R>, signals: &Signals, index: usize, stamp: impl FnOnce(&Slot<K, R>)) {
    if index == 0 {
        // Stamped, so the window is measured from the arrival and not from when the driver
        // gets to run.
        stamp(seat);
    }
    signals.wake_driver();
}

/// Where a caller's request goes, by the overflow policy: [`admit`]'s answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// Seated in seat `index` of slot `slot`, its key written. ([`admit_then`] hands a seat to
    /// its `seated`, never this.)
    #[cfg_attr(
        not(busline_loom),
        allow(dead_code, reason = "built by `admit`, for the loom models")
    )]
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
/// Once shutdown is requested every policy answers `Closed`. `Reject` and `RunAlone` decide at
/// once: at capacity (the stall flag, or a full bus) they answer without waiting.
#[cfg_attr(
    not(busline_loom),
    allow(dead_code, reason = "the engine admits with `admit_then`; the loom models with `admit`")
)]
pub fn admit<K, R>(
    ring: &Ring<K, R>,
    signals: &Signals,
    overflow: Overflow,
    key: K,
    waker: &Waker,
    stamp: impl FnOnce(&Slot<K, R>),
) -> Admission<K> {
    // Cloned before the claim, as in `board`.
    let waker = waker.clone();
    let seated = |slot, index| Admission::Seated { slot, index };
    admit_then(ring, signals, overflow, key, waker, stamp, |_| {}, seated, |admission| admission)
}

/// [`admit`] with the caller's waker already cloned (before the claim, as in `board`): the
/// seat expected and got goes to `mark`, a seat to `seated` (slot, seat), every other answer to
/// `other` (see [`board_then`]).
#[expect(
    clippy::too_many_arguments,
    reason = "the inputs of one step and its three ways on; `Load::board` is its caller"
)]
#[inline(always)]
pub(crate) fn admit_then<K, R, T>(
    ring: &Ring<K, R>,
    signals: &Signals,
    overflow: Overflow,
    key: K,
    waker: Waker,
    stamp: impl FnOnce(&Slot<K, R>),
    mark: impl FnMut(Option<(usize, usize)>),
    seated: impl FnOnce(usize, usize) -> T,
    other: impl FnOnce(Admission<K>) -> T,
) -> T {
    // BROKEN ON PURPOSE (loom-tests) under `Bug::ShutdownGate`: only the policies that decide
    // at once read the gate (the engine before a review), so a `Wait` load after the request
    // boards the bus the driver has not closed yet.
    let gate = if broken(Bug::ShutdownGate) && overflow == Overflow::Wait { Gate::Open } else { signals.gate() };
    match gate {
        Gate::Open => {}
        // Refused from the moment shutdown is requested, under every policy (the ring is
        // closed only when the driver gets to it).
        Gate::Shutdown => return other(Admission::Closed(key)),
        // At capacity, those that decide at once do not even claim: a claim would only count
        // past the seats.
        Gate::Stalled if overflow != Overflow::Wait => return other(at_capacity(signals, overflow, key)),
        Gate::Stalled => {}
    }
    board_then(ring, signals, key, waker, stamp, mark, seated, |boarded| {
        other(match boarded {
            Boarded::Seat { .. } => unreachable!("a seat goes to `seated`"),
            Boarded::Full { boarding, key } if overflow == Overflow::Wait => Admission::WaitForRoom { boarding, key },
            // A full bus is capacity to those that decide at once.
            Boarded::Full { key, .. } => at_capacity(signals, overflow, key),
            Boarded::Closed(key) => Admission::Closed(key),
        })
    })
}

fn at_capacity<K>(signals: &Signals, overflow: Overflow, key: K) -> Admission<K> {
    match overflow {
        Overflow::Reject => Admission::Overloaded(key),
        _ if signals.begin_alone() => Admission::RunAlone(key),
        _ => Admission::Closed(key),
    }
}

/// Driver, after its departures: records whether a full bus is stuck (the stall flag that
/// `Reject`, `RunAlone` and a `tower` caller's readiness read). Returns whether the waiters for
/// room must be notified: the flag was cleared and a wait was announced since the last seal
/// (see [`room_or_unstalled`]).
pub fn update_stall<K, R>(ring: &Ring<K, R>, signals: &Signals, stalled: bool) -> bool {
    let cleared = signals.set_stalled(stalled);
    // BROKEN ON PURPOSE (loom-tests) under `Bug::Unstall`: the end of a stall wakes nobody, so
    // a waiter that read the boarding word after the seal sleeps until the next seal.
    cleared && !broken(Bug::Unstall) && ring.take_room_wanted()
}

/// A waiter for room that does not claim (a `tower` caller whose readiness saw the stall and
/// then the boarding word `boarding`), after it has registered for the notification: announces
/// itself, then returns whether it may go on without waiting: the bus has moved on, or the
/// stall has ended. If not, [`update_stall`] (or the next seal) notifies it.
///
/// The driver clears the flag, then takes the announcement (an AcqRel swap); the waiter
/// announces (an AcqRel swap), then reads the flag. The swaps are ordered: if the driver's
/// came first, the waiter's acquired the clearing; if the waiter's came first, the driver
/// sees the announcement.
#[cfg_attr(
    not(any(feature = "tower", busline_loom)),
    allow(dead_code, reason = "the tower service's readiness and the loom models only")
)]
pub fn room_or_unstalled<K, R>(ring: &Ring<K, R>, signals: &Signals, boarding: u64) -> bool {
    ring.want_room(boarding) || signals.gate() != Gate::Stalled
}

/// The driver, going away before it finished (its runtime is shutting down): closes the ring,
/// collects the boarding bus (waiting for seats being written) and publishes `outcome` to it,
/// so nobody waits for a driver that is gone. Returns the bus it closed, or `None` if the ring
/// was already closed.
///
/// # Safety
///
/// As for [`Ring::close`]: called by the one thread that seals and closes (the driver's).
pub unsafe fn abandon<K, R>(ring: &Ring<K, R>, signals: &Signals, outcome: R) -> Option<Sealed> {
    // BROKEN ON PURPOSE (loom-tests) under `Bug::Abandon`: no check, so a driver dropped
    // after a normal shutdown closes the ring a second time.
    if ring.is_closed() && !broken(Bug::Abandon) {
        return None;
    }
    // SAFETY: the caller is the ring's one sealer.
    let sealed = unsafe { ring.close() };
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    unsafe { ring.slot(sealed.slot).collect(sealed.count, |_| {}) };
    // SAFETY: `close` gave the driver the batch's reference; published once.
    unsafe { publish(ring, signals, sealed.slot, outcome) };
    Some(sealed)
}

// The deliberate bugs of this file's protocol (`crate::sync::Bug`), switched on one at a time
// by the loom tests' `*broken*` models. Outside the loom build they do not exist, and
// `broken` is a constant `false`.
#[cfg(busline_loom)]
use crate::sync::{Bug, broken};

#[cfg(not(busline_loom))]
#[derive(Clone, Copy)]
enum Bug {
    DriverLook,
    SoloAdmission,
    Abandon,
    Unstall,
    ShutdownGate,
    Mark,
}

#[cfg(not(busline_loom))]
#[inline(always)]
const fn broken(_: Bug) -> bool {
    false
}
