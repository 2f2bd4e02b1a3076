//! Recycling seat segments: a batch's segments go back to the batcher's pool when its slot is
//! reset, and the next epoch's producers take them, while a slow caller of the old batch may
//! still be reading its seat.
//!
//! Under loom seat 0 is segment 0 (kept by its slot) and seat 1 segment 1 (pooled).
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Bug, Ledger, Ring, TestRing, Wakers, assert_clean_end, assert_reached, board,
    dispatch, model, model_broken, wait_and_read,
};

/// Executions in which slot 1's producer took the segment slot 0 had returned (and in which it
/// allocated its own because slot 0 was not reset yet).
static REUSED: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Slot 0's batch (keys 0 and 1, seat 1 in a pooled segment) is sealed and published; its
/// caller of seat 1 reads slowly, and its release resets slot 0 and pools the segment. Meanwhile
/// a producer boards keys 2 and 3 in slot 1, installing slot 1's segment 1 from the pool (if
/// it is back) or a new one.
fn recycle_while_reading() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 2));
    let ledger = Ledger::new(4);
    let wakers = Wakers::new();
    for id in 0..2 {
        assert!(
            matches!(board(&ring, ledger.key(id)), Boarded::Seated { slot: 0, index } if index == id)
        );
    }
    let sealed = seal(&ring).expect("slot 1 is free");
    let first = dispatch(&ring, sealed, &ledger);
    assert_eq!(first.ran, Some(vec![0, 1]));
    // The caller of seat 0 has read; the slow caller of seat 1 reads on its own thread, and its
    // release is the last: it resets slot 0.
    wait_and_read(&ring, 0, 0, 0, &wakers, &ledger);
    let slow = {
        let (ring, ledger, wakers) = (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
        loom::thread::spawn(move || wait_and_read(&ring, 0, 1, 1, &wakers, &ledger))
    };
    let producer = {
        let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
        loom::thread::spawn(move || {
            for (id, index) in [(2, 0), (3, 1)] {
                assert!(
                    matches!(board(&ring, ledger.key(id)), Boarded::Seated { slot: 1, index: i } if i == index),
                    "slot 1 boards"
                );
            }
            // Segments alive now: both slots' segment 0, slot 1's segment 1, and slot 0's
            // segment 1 unless it was recycled into slot 1.
            busline::model::live_segments()
        })
    };
    assert_eq!(
        slow.join().unwrap(),
        vec![0, 1],
        "the slow caller read its own batch"
    );
    match producer.join().unwrap() {
        3 => REUSED.fetch_add(1, SeqCst),
        4 => ALLOCATED.fetch_add(1, SeqCst),
        n => panic!("{n} segments alive"),
    };
    let last = dispatch(&ring, close(&ring), &ledger);
    assert_eq!(last.ran, Some(vec![2, 3]));
    for (id, index) in [(2, 0), (3, 1)] {
        wait_and_read(&ring, 1, index, id, &wakers, &ledger);
    }
    assert_eq!(ledger.frees(), 2, "each sealed slot freed exactly once");
    assert_clean_end(ring, &wakers, &ledger);
    assert_eq!(busline::model::live_segments(), 0, "a segment leaked");
}

/// Proves: a segment goes back to the pool only when its slot is reset (after the slow caller's
/// last read of it), and a producer of the next epoch that takes it from the pool writes into
/// it after that reset (loom's cell tracking of the seats' keys: the pool's Release put and
/// Acquire take order them); both the reuse and a fresh allocation are reached, and no segment
/// leaks.
#[test]
fn recycled_segments_are_reused_after_their_reset() {
    model("recycle_while_reading", recycle_while_reading);
    assert_reached(&REUSED, "an execution reused the pooled segment");
    assert_reached(
        &ALLOCATED,
        "an execution allocated a segment while slot 0 was held",
    );
}

/// Proves the model can fail: with the pool's take Relaxed instead of Acquire (`Bug::PoolTake`),
/// the producer writes its key into a recycled seat without a happens-before edge to the reset
/// that dropped the old key, and loom reports the causality violation.
#[test]
#[should_panic(expected = "Causality violation")]
fn broken_pool_take_is_caught() {
    model_broken("broken_pool_take", Bug::PoolTake, recycle_while_reading);
}
