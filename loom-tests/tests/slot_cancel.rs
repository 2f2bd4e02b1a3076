//! A seat's cancel (`cancel` then `release`, as a dropped `Load` does) against its batch's
//! departure (`seal`, `collect`, `publish`, `release`).
#![cfg(busline_loom)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{seal, Wakers, dispatch, model, spawn_give_up, spawn_wait_and_read, two_seated};

/// Executions in which the batch ran without the caller who gave up, and with it.
static RAN_WITHOUT: AtomicUsize = AtomicUsize::new(0);
static RAN_WITH: AtomicUsize = AtomicUsize::new(0);

/// Two callers seated in the boarding slot: one gives up (cancel, release) while the driver
/// seals and dispatches the batch; the other waits for the outcome.
fn cancel_vs_dispatch() {
    let (ring, ledger) = two_seated();
    let wakers = Wakers::new();
    let quitter = spawn_give_up(&ring, 0, 0, &ledger);
    let waiter = spawn_wait_and_read(&ring, (0, 1, 1), &wakers, &ledger);

    let sealed = seal(&ring).expect("slot 1 is free");
    assert_eq!(sealed.count, 2, "a cancelled seat still counts in the seal");
    let dispatched = dispatch(&ring, sealed, &ledger);
    quitter.join().unwrap();
    let read = waiter.join().unwrap();

    // The batch ran, with or without the caller who gave up, and the other read its outcome.
    match dispatched.ids() {
        [1] => RAN_WITHOUT.fetch_add(1, SeqCst),
        [0, 1] => RAN_WITH.fetch_add(1, SeqCst),
        other => panic!("the batch ran with {other:?}"),
    };
    assert_eq!(dispatched.cancelled + dispatched.ids().len(), 2);
    assert_eq!(
        Some(read),
        dispatched.ran,
        "the waiter read its batch's outcome"
    );
    // Three references (two callers, the batch), released in any order, some perhaps before
    // the seal: exactly one release freed the slot, and its reset dropped both keys.
    assert_eq!(ledger.frees(), 1, "the slot is freed exactly once");
    assert_eq!(
        (ledger.drops(0), ledger.drops(1)),
        (1, 1),
        "the reset dropped both keys"
    );
    assert_eq!(
        wakers.live(),
        0,
        "a seat's waker cell kept a waker past the reset"
    );
    assert_eq!(
        seal(&ring).map(|s| s.slot),
        Some(1),
        "slot 0 is free again and opens next"
    );
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: a caller giving up while its batch departs leaves the batch running with or without
/// its key (both cases are reached), the slot is freed exactly once whatever the order of the
/// three releases (some may precede the seal), the other caller still reads its outcome, and no
/// key or waker outlives the reset.
#[test]
fn cancel_vs_dispatch_runs_with_or_without_it() {
    model("cancel_vs_dispatch", cancel_vs_dispatch);
    assert!(
        RAN_WITHOUT.load(SeqCst) > 0 && RAN_WITH.load(SeqCst) > 0,
        "both outcomes of the race were explored"
    );
}
