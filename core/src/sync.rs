//! The loom facade: every synchronisation primitive the engine uses, from std or from loom.
//!
//! Under `--cfg busline_loom` the atomics, `UnsafeCell`, thread yields, spin hints and the
//! driver's waker cell come from loom (and so does everything built on them, `seat_waker.rs`
//! included), so the `loom-tests` crate model-checks the engine's real code.
//! (A namespaced cfg, because plain `cfg(loom)` also switches tokio's internals.) Nothing else
//! in the crate names `std::sync::atomic` directly.

#[cfg(not(busline_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use std::thread::yield_now;

    /// `std::cell::UnsafeCell` with loom's closure-based API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(data: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(data))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// The driver's waker cell, woken by callers and batches: `atomic_waker::AtomicWaker`.
    /// (A seat's is `seat_waker.rs`.)
    #[derive(Debug, Default)]
    pub(crate) struct WakerCell(atomic_waker::AtomicWaker);

    impl WakerCell {
        pub(crate) fn new() -> WakerCell {
            WakerCell(atomic_waker::AtomicWaker::new())
        }

        #[inline]
        pub(crate) fn register(&self, waker: &std::task::Waker) {
            self.0.register(waker);
        }

        #[inline]
        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }

    /// Spin-wait hint.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }
}

#[cfg(busline_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::thread::yield_now;

    /// loom's model of `AtomicWaker`.
    #[derive(Debug, Default)]
    pub(crate) struct WakerCell(loom::future::AtomicWaker);

    impl WakerCell {
        pub(crate) fn new() -> WakerCell {
            WakerCell(loom::future::AtomicWaker::new())
        }

        pub(crate) fn register(&self, waker: &std::task::Waker) {
            self.0.register_by_ref(waker);
        }

        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }

    /// Under loom a spin is a yield, so the model explores the other threads.
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;

#[cfg(busline_loom)]
pub(crate) use broken::broken;
#[cfg(busline_loom)]
pub use broken::{Bug, set as break_on_purpose};

/// Deliberate bugs, switched on one at a time by the loom tests' `*broken*` models to show that
/// a model catches them. They exist only in the `--cfg busline_loom` build (which only the
/// `loom-tests` crate makes); no feature and no other build compiles them.
///
/// A switch is a thread-local: loom runs every thread of a model on the test's OS thread, so a
/// switch set around one `loom::model` breaks that model's engine and no other test's.
#[cfg(busline_loom)]
mod broken {
    use std::cell::Cell;

    /// A deliberate bug, each a plausible slip in the engine's protocol.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum Bug {
        /// `Ring::claim`'s `fetch_add` is `Relaxed` instead of `Acquire`.
        Claim,
        /// `Ring::claim` does not look before claiming, so a full bus counts without bound.
        Bound,
        /// `Ring::seal`'s swap has no Release (`Acquire` instead of `AcqRel`).
        Seal,
        /// `Ring::want_room` announces with a store instead of a read-modify-write.
        Room,
        /// `Slot::publish` stores `done` `Relaxed` instead of `Release`.
        Publish,
        /// `Slot::poll_done` registers the waker after checking `done`.
        Register,
        /// `Slot::reset` does not clear the wakers of a batch that was never published.
        Reset,
        /// A segment is installed with check-then-store instead of a compare-exchange.
        Install,
        /// The pool's take is `Relaxed` instead of `Acquire`.
        PoolTake,
        /// `Signals::look` reads before it registers the driver's waker.
        DriverLook,
        /// `Signals::begin_alone` reads the shutdown flag, and `Signals::solo_runs` the run
        /// count, with plain loads instead of read-modify-writes (the Dekker pair with acquire
        /// loads).
        SoloAdmission,
        /// `signals::abandon` closes the ring without checking whether it is closed already.
        Abandon,
        /// A partition's `Activity::leave` retires its member with a plain store of `DEAD`
        /// instead of a compare-exchange from zero.
        Retire,
        /// `Slot::collect_rest` trusts the keys gathered ahead without re-checking their seats.
        Gather,
        /// `Slot::cancel` stores CANCELLED before counting the cancel.
        CancelOrder,
        /// `Slot::wake` wakes a seat without waiting for it to be written, racing the waker
        /// its producer stores with the key.
        WakeUnwritten,
        /// `signals::update_stall` clears the stall flag without taking the announcements of
        /// waiters for room.
        Unstall,
        /// `signals::admit` reads the shutdown flag only for `Reject` and `RunAlone`.
        ShutdownGate,
        /// `Ring::claim_looked` trusts the seat's place located before the claim whenever the
        /// claimed seat's index is the count it saw, without comparing the slot (a seal between
        /// the look and the claim opens another slot whose count may match).
        Place,
        /// `signals::board_then` does not correct the caller's mark when another producer
        /// claimed the expected seat first, so the caller records a seat not its own.
        Mark,
    }

    thread_local! {
        static BROKEN: Cell<Option<Bug>> = const { Cell::new(None) };
    }

    /// Is `bug` switched on?
    #[inline]
    pub(crate) fn broken(bug: Bug) -> bool {
        BROKEN.with(|b| b.get() == Some(bug))
    }

    /// Switches `bug` on (or every bug off) for the models run on this thread.
    pub fn set(bug: Option<Bug>) {
        BROKEN.with(|b| b.set(bug));
    }
}
