//! Shutdown: the driver's `close` (one swap that sets `closed` and seals the boarding slot)
//! against producers submitting and waiting for their outcome.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Ledger, Ring, TestRing, Wakers, assert_dispatched_once, assert_reached, board,
    dispatch, model, wait_and_read,
};

/// Executions in which one request was served and the other refused.
static SPLIT: AtomicUsize = AtomicUsize::new(0);

/// Two producers submit and wait for their outcome while the driver dispatches one epoch and
/// then shuts down (closes, and dispatches what boarded).
fn shutdown_vs_submit() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 2));
    let ledger = Ledger::new(2);
    let wakers = Wakers::new();
    let producers: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger, wakers) =
                (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
            loom::thread::spawn(move || match board(&ring, ledger.key(id)) {
                Boarded::Seated { slot, index } => {
                    Some(wait_and_read(&ring, slot, index, id, &wakers, &ledger))
                }
                Boarded::Closed(_) => None,
                Boarded::Full { .. } => panic!("two requests cannot fill two seats past capacity"),
            })
        })
        .collect();

    let first = seal(&ring).expect("slot 1 is free");
    let first = dispatch(&ring, first, &ledger);
    let last = dispatch(&ring, close(&ring), &ledger);
    assert!(ring.is_closed());
    assert!(
        matches!(board(&ring, ledger.key(0)), Boarded::Closed(_)),
        "a claim after the close is refused"
    );

    // Every request is served (by exactly one of the two batches) or refused; none hangs (a
    // waiter that is never woken is a loom deadlock).
    let answers: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    let served: Vec<usize> = (0..2).filter(|&id| answers[id].is_some()).collect();
    assert_dispatched_once(&[first.clone(), last.clone()], &served);
    if served.len() == 1 {
        SPLIT.fetch_add(1, SeqCst);
    }
    assert_eq!(ledger.frees(), 2, "both sealed slots freed exactly once");
    assert_eq!(
        wakers.live(),
        0,
        "a seat's waker cell kept a waker past the reset"
    );
    drop(ring);
    // Each key dropped once: by a reset if it was served, by its producer if refused (and the
    // probe key above).
    for id in 0..2 {
        assert_eq!(ledger.drops(id), if id == 0 { 2 } else { 1 });
    }
}

/// Proves: a submit racing the shutdown is either served by a batch (exactly one) or refused
/// with `Closed`, never both, and never left waiting; claims after the close are refused; both
/// slots are freed once.
#[test]
fn shutdown_serves_or_refuses_every_request() {
    model("shutdown_vs_submit", shutdown_vs_submit);
    assert_reached(
        &SPLIT,
        "an execution served one request and refused the other",
    );
}
