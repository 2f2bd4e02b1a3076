//! A counting global allocator: the bytes a batcher holds, measured rather than estimated.
//!
//! It forwards every call to the system allocator and, while counting is on, adds the requested
//! sizes of allocations (and subtracts those of deallocations) to one signed counter. Live bytes
//! taken at two instants within one counting span differ by exactly what was allocated and not
//! freed in between, whichever thread did it; blocks allocated before the span and freed during
//! it count negative, as they should. Off, it costs one relaxed load per call, so the throughput
//! sections (which run with counting off) pay nothing measurable.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The allocator the compare binary installs.
pub(crate) struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if ON.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Starts counting (a no-op if on).
pub(crate) fn start() {
    ON.store(true, Ordering::SeqCst);
}

/// Stops counting.
pub(crate) fn stop() {
    ON.store(false, Ordering::SeqCst);
}

/// Bytes allocated and not freed since counting started (summed over spans).
pub(crate) fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are ours; the counting touches only two atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size), which we pass on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator (hence from `System`)
        // with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr` came from `System` with `layout` and that
        // `new_size` is valid for it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this binary, so no other test thread allocates during its span.
    #[test]
    fn counts_what_is_allocated_and_not_freed() {
        start();
        let base = live();
        let mut v: Vec<u8> = Vec::with_capacity(1000);
        assert_eq!(live() - base, 1000);
        v.reserve_exact(3000);
        assert_eq!(live() - base, v.capacity() as isize, "a realloc counts its new size");
        // black_box: an unused Box is otherwise elided by the optimiser (tests build at opt-level 2).
        let boxed = std::hint::black_box(Box::new([0u64; 16]));
        assert_eq!(live() - base, v.capacity() as isize + 128);
        drop(v);
        drop(boxed);
        assert_eq!(live() - base, 0, "freed blocks count negative");
        stop();
        let off = live();
        let untracked = vec![0u8; 4096];
        assert_eq!(live(), off, "nothing counts while counting is off");
        drop(untracked);
    }
}
