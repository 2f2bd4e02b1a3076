//! Memory follows the load, not `max_batch_size`: a counting global allocator measures what a
//! batcher allocates, fresh and with 1k, 100k and 1M requests pending in one bus.
//!
//! Bytes are deterministic (no timing here). One test, so no other test of this binary
//! allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::{Context, Waker};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

type Batcher = busline::Batcher<u64, u64, ()>;

fn batcher(max_batch_size: usize) -> Batcher {
    busline::Batcher::builder(|keys: Vec<u64>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .max_batch_size(max_batch_size)
    .build()
    .expect("valid settings")
}

/// Submits `n` loads, each polled once (claim, write, register) and then kept pending for ever
/// (forgotten: its caller never reads or gives up), without letting the driver run, so all `n`
/// wait in the boarding bus.
fn submit_pending(b: &Batcher, keys: std::ops::Range<u64>) {
    let mut cx = Context::from_waker(Waker::noop());
    for k in keys {
        let mut load = b.load(k);
        assert!(Pin::new(&mut load).poll(&mut cx).is_pending());
        // The future lives in its caller's task, not in the batcher: it is not counted (it is
        // on this stack) and is forgotten so that its request stays pending.
        std::mem::forget(load);
    }
}

#[test]
fn memory_follows_the_pending_requests_not_max_batch_size() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A fresh batcher costs a small constant, whatever `max_batch_size` says.
        let before = allocated();
        let default = batcher(busline::DEFAULT_MAX_BATCH_SIZE);
        let fresh_default = allocated() - before;
        let before = allocated();
        let unlimited = batcher(usize::MAX);
        let fresh_unlimited = allocated() - before;
        eprintln!("fresh batcher: {fresh_default} bytes (max_batch_size 1024), {fresh_unlimited} bytes (unlimited)");
        assert!(
            fresh_unlimited <= fresh_default + 8 * 1024,
            "an unlimited batcher costs {fresh_unlimited} bytes fresh, a default one {fresh_default}"
        );
        std::mem::forget(default);

        // Pending requests cost at most 64 bytes each beyond their key (u64), counted over the
        // whole batcher: seats, their segments' slack, the tables.
        let base = allocated();
        let mut pending = 0;
        for n in [1_000, 100_000, 1_000_000] {
            submit_pending(&unlimited, pending..n);
            pending = n;
            let total = allocated() - base;
            let per_request = total as f64 / n as f64;
            let beyond_key = per_request - std::mem::size_of::<u64>() as f64;
            eprintln!("{n} pending: {total} bytes, {per_request:.1} per request, {beyond_key:.1} beyond the key");
            assert!(beyond_key <= 64.0, "{n} pending requests cost {beyond_key:.1} bytes each beyond the key");
        }
        std::mem::forget(unlimited);

        // And memory follows the load back down: after a burst far above the pool's size, a
        // batcher holds what it held idle before it (the driver's de-duplication table and key
        // vector kept a burst's capacity for the batcher's life: 18.9 MB after a million keys,
        // found by a cold review).
        let b = batcher(usize::MAX);
        let answer = |k: u64| b.load(k);
        assert_eq!(answer(1).await.unwrap(), Some(1));
        let idle = allocated();
        let burst = 20_000u64;
        let answers = futures_util::future::join_all((0..burst).map(answer)).await;
        assert!(answers.iter().enumerate().all(|(k, a)| matches!(a, Ok(Some(v)) if *v == k as u64)));
        drop(answers);
        assert_eq!(answer(2).await.unwrap(), Some(2), "a small batch after the burst");
        let after = allocated();
        eprintln!("idle before a burst of {burst}: {idle} bytes; after it: {after} ({:+})", after - idle);
        assert!(after - idle <= 64 * 1024, "{} bytes kept after a burst of {burst}", after - idle);
    });
    std::mem::forget(rt);
}
