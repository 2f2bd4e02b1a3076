//! The loom facade: every synchronisation primitive the engine uses, from std or from loom.
//!
//! Under `--cfg busline_loom` the atomics, `UnsafeCell`, thread yields, spin hints and the
//! waker cell come from loom, so the `loom-tests` crate model-checks the engine's real code.
//! (A namespaced cfg, because plain `cfg(loom)` also switches tokio's internals.) Nothing else
//! in the crate names `std::sync::atomic` directly.

#[cfg(not(busline_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
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

    /// A cell holding the waker of one task, woken by another: `atomic_waker::AtomicWaker`.
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

        pub(crate) fn clear(&self) {
            drop(self.0.take());
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
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
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

        pub(crate) fn clear(&self) {
            drop(self.0.take_waker());
        }
    }

    /// Under loom a spin is a yield, so the model explores the other threads.
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;
