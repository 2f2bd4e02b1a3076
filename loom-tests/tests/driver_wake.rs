//! The driver's own wake-ups: it registers its waker, then looks (`Signals::look`), and parks
//! when the look shows nothing to do. A freed slot (`signals::release`) and a first seat
//! (`signals::board`) each store, then wake. Racing both against the driver's look, it must
//! never sleep through either.
#![cfg(busline_loom)]

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use busline::model::{Boarded, Bug, Ring, Sealed, Signals, board, break_on_purpose, publish, release};
use busline_loom_tests::harness::{seal, Ledger, TestRing, model};

/// 2 slots of 1 seat. Before the threads start, request 0 is seated in slot 0 and sealed:
/// slot 1 boards, and no slot is free. Then, concurrently:
/// - the batch publishes slot 0's outcome (counting a completion) and its caller releases its
///   seat, which frees slot 0 (`release` wakes the driver);
/// - a producer boards slot 1, the bus's first seat (`board` wakes the driver);
/// - the driver parks (`block_on`) until one look shows a passenger aboard and a free slot,
///   then seals slot 1.
fn wake_on_release_and_first_seat() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let signals = Arc::new(Signals::new());
    let ledger = Ledger::new(2);
    assert!(matches!(board(&ring, &signals, ledger.key(0), std::task::Waker::noop(), |_| {}), Boarded::Seat { slot: 0, index: 0 }));
    let sealed = seal(&ring).expect("slot 1 is free");
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    unsafe { ring.slot(0).collect(sealed.count, |_| {}) };

    let batch = {
        let (ring, signals) = (Arc::clone(&ring), Arc::clone(&signals));
        loom::thread::spawn(move || {
            // SAFETY: the batch's reference to slot 0 is this thread's; published once.
            unsafe { publish(&ring, &signals, 0, vec![0]) };
            // Request 0's caller leaves without reading: its release frees the slot.
            // SAFETY: request 0's seat reference, handed to this thread with the batch's.
            unsafe { release(&ring, &signals, 0, 1) };
        })
    };
    let producer = {
        let (ring, signals, ledger) = (Arc::clone(&ring), Arc::clone(&signals), Arc::clone(&ledger));
        loom::thread::spawn(move || board(&ring, &signals, ledger.key(1), std::task::Waker::noop(), |_| {}))
    };

    let mut completed = 0;
    loom::future::block_on(poll_fn(|cx| {
        let look = signals.look(&ring, cx.waker());
        completed += look.completed;
        if look.boarding.count == 1 && look.free_slot { Poll::Ready(()) } else { Poll::Pending }
    }));
    let sealed = seal(&ring).expect("the look saw a free slot");
    assert_eq!(sealed, Sealed { slot: 1, count: 1 });
    batch.join().unwrap();
    assert!(matches!(producer.join().unwrap(), Boarded::Seat { slot: 1, index: 0 }));
    // The completion is counted exactly once, by this look or a later one.
    completed += signals.look(&ring, std::task::Waker::noop()).completed;
    assert_eq!(completed, 1, "the batch's completion was counted {completed} times");

    // Finish slot 1's batch, so that every key is dropped.
    // SAFETY: once per seal, by the driver; then published once by the batch's holder; then
    // request 1's seat reference, held by this thread since its producer joined, given up.
    unsafe {
        ring.slot(1).collect(1, |_| {});
        publish(&ring, &signals, 1, vec![1]);
        release(&ring, &signals, 1, 1);
    }
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: the driver, registering before it looks, is woken by a slot freed and by a bus's
/// first seat whatever their interleaving with its look (else loom reports a deadlock), and
/// counts the completion once.
#[test]
fn driver_wakes_on_release_and_first_seat() {
    model("driver_wake", wake_on_release_and_first_seat);
}

/// The model of [`broken_look_is_caught`], run in a child process (its failure aborts).
#[test]
#[ignore = "run by broken_look_is_caught in a child process"]
fn broken_look_model() {
    break_on_purpose(Some(Bug::DriverLook));
    model("broken_look", wake_on_release_and_first_seat);
}

/// Proves the model can fail: with the driver's look reading before it registers
/// (`Bug::DriverLook`), a release or a first seat between the two wakes nobody and
/// the driver sleeps on a boarding bus: loom reports the deadlock. (loom then aborts the
/// process while unwinding the blocked `block_on`, so the model runs in a child process.)
#[test]
fn broken_look_is_caught() {
    let (passed, stderr) = busline_loom_tests::harness::run_in_child_process("broken_look_model");
    assert!(!passed, "the model passed with the broken look:\n{stderr}");
    assert!(stderr.contains("deadlock"), "the model failed, but not with loom's deadlock:\n{stderr}");
}
