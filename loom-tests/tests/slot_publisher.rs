//! Publishing on another thread than the one that sealed: the batch's `Publisher` runs in its
//! own task (`driver.rs`), so its `publish` and `release` race the driver's next seal (which
//! reopens the slot once it is free) and its close.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Ledger, Ring, TestRing, Wakers, assert_dispatched_once, assert_reached, board,
    dispatch, model, release, wait_and_read,
};

/// Executions in which the driver's second seal found slot 0 free again (the publisher and the
/// caller had released it) and reopened it, and in which it found none and closed instead.
static RESEALED: AtomicUsize = AtomicUsize::new(0);
static NOT_FREE: AtomicUsize = AtomicUsize::new(0);

/// Two slots of one seat. Key 0's batch is sealed and collected by the driver and published
/// by a publisher thread. Key 0's caller reads it, then submits key 1 and waits for it. The
/// driver meanwhile tries to seal again (it succeeds only if slot 0 is free) and then closes.
fn publish_elsewhere() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let ledger = Ledger::new(2);
    let wakers = Wakers::new();
    assert!(matches!(
        board(&ring, ledger.key(0)),
        Boarded::Seated { slot: 0, index: 0 }
    ));
    let sealed = seal(&ring).expect("slot 1 is free");
    let mut ids = vec![];
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    let cancelled = unsafe { ring.slot(0).collect(sealed.count, |key| ids.push(key.id())) };
    assert_eq!((ids.clone(), cancelled), (vec![0], 0));
    let publisher = {
        let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
        loom::thread::spawn(move || {
            // SAFETY: the batch's reference was handed to this thread; it publishes once.
            unsafe { ring.slot(0).publish(ids) };
            release(&ring, 0, &ledger);
        })
    };
    let caller = {
        let (ring, ledger, wakers) = (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
        loom::thread::spawn(move || {
            assert_eq!(wait_and_read(&ring, 0, 0, 0, &wakers, &ledger), vec![0]);
            match board(&ring, ledger.key(1)) {
                Boarded::Seated { slot, index } => {
                    Some(wait_and_read(&ring, slot, index, 1, &wakers, &ledger))
                }
                Boarded::Closed(_) => None,
                Boarded::Full { .. } => None,
            }
        })
    };

    let mut dispatches = vec![];
    match seal(&ring) {
        Some(second) => {
            RESEALED.fetch_add(1, SeqCst);
            assert_eq!(second.slot, 1);
            dispatches.push(dispatch(&ring, second, &ledger));
        }
        None => {
            NOT_FREE.fetch_add(1, SeqCst);
        }
    }
    dispatches.push(dispatch(&ring, close(&ring), &ledger));
    publisher.join().unwrap();
    let answer = caller.join().unwrap();
    if let Some(outcome) = &answer {
        assert_eq!(outcome, &vec![1]);
    }
    let served: Vec<usize> = if answer.is_some() { vec![1] } else { vec![] };
    assert_dispatched_once(&dispatches, &served);
    assert_eq!(
        wakers.live(),
        0,
        "a seat's waker cell kept a waker past the reset"
    );
    drop(ring);
    // Key 1 dropped once: by a reset if it was seated, else with its refusal.
    ledger.assert_all_dropped_once();
}

/// Proves: a batch published and released on another thread than the driver's, racing the
/// driver's next seal (which may reopen the slot the publisher frees: its `prepare` happens
/// after the publisher's and the caller's last accesses, by loom's cell tracking) and the
/// close: the caller reads its outcome, a request submitted meanwhile is served once or
/// refused (or, on a full bus at the close, never seated), and nothing leaks.
#[test]
fn a_publisher_elsewhere_races_the_next_seal_and_close() {
    model("publish_elsewhere", publish_elsewhere);
    assert_reached(
        &RESEALED,
        "an execution sealed again after the slot was freed",
    );
    assert_reached(&NOT_FREE, "an execution found no free slot to seal");
}
