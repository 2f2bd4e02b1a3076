//! A caller that polls once and then gives up, as a `Load` under `tokio::time::timeout` does:
//! its waker is registered in its seat, then it cancels and releases, while the driver seals
//! and dispatches (or, with every caller gone, does not run the batch and the reset must clear
//! the wakers left in the seats).
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{seal, 
    Bug, Polled, Wakers, assert_clean_end, assert_reached, dispatch, model, model_broken,
    poll_then_give_up, two_seated,
};

/// Executions in which both callers gave up before the collect (the batch did not run), and in
/// which a caller read the outcome at its poll.
static NOT_RUN: AtomicUsize = AtomicUsize::new(0);
static READ: AtomicUsize = AtomicUsize::new(0);

/// Two seated callers each poll once (registering a waker) and give up unless the outcome is
/// there, while the driver seals and dispatches their batch.
fn poll_then_give_up_model() {
    let (ring, ledger) = two_seated();
    let wakers = Wakers::new();
    let callers: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger, wakers) =
                (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
            loom::thread::spawn(move || poll_then_give_up(&ring, 0, id, &wakers, &ledger))
        })
        .collect();

    let sealed = seal(&ring).expect("slot 1 is free");
    let dispatched = dispatch(&ring, sealed, &ledger);
    let polled: Vec<Polled> = callers.into_iter().map(|c| c.join().unwrap()).collect();

    if dispatched.ran.is_none() {
        NOT_RUN.fetch_add(1, SeqCst);
    }
    for p in &polled {
        if let Polled::Read(outcome) = p {
            assert_eq!(
                Some(outcome),
                dispatched.ran.as_ref(),
                "read its batch's outcome"
            );
            READ.fetch_add(1, SeqCst);
        }
    }
    assert_eq!(ledger.frees(), 1, "the slot is freed exactly once");
    assert_eq!(
        (ledger.drops(0), ledger.drops(1)),
        (1, 1),
        "the reset dropped both keys"
    );
    assert_clean_end(ring, &wakers, &ledger);
}

/// Proves: callers that register a waker and then give up (before, during or after the
/// dispatch) leave no waker behind once their slot is reset, whether the batch ran (its
/// publication takes the wakers) or not (the reset clears them); the slot is freed once.
#[test]
fn giving_up_after_a_poll_leaves_no_waker() {
    model("poll_then_give_up", poll_then_give_up_model);
    assert_reached(&NOT_RUN, "an execution found every caller gone");
    assert_reached(&READ, "an execution read the outcome at its poll");
}

/// Proves the model can fail: with `reset` not clearing the wakers of an unpublished batch
/// (`Bug::Reset`), the wakers of the callers who gave up stay in the seats past the reset.
#[test]
#[should_panic(expected = "kept a waker past the reset")]
fn broken_reset_is_caught() {
    model_broken("broken_reset", Bug::Reset, poll_then_give_up_model);
}
