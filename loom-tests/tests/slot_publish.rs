//! A slot's outcome: the batch's publication (`publish`: write the result, store `done`, wake
//! every seat) against its waiters (`poll_done`: register the waker, check `done`; then `read`).
#![cfg(busline_loom)]

use std::sync::Arc;

use busline_loom_tests::harness::{seal, 
    Bug, Ledger, Sealed, TestRing, Wakers, assert_clean_end, dispatch, model, model_broken,
    release, two_seated, wait_and_read,
};

/// What [`two_waiters`] sets up: the ring, its keys' ledger, the waiters' wakers, the sealed
/// batch, and the two waiting threads.
type TwoWaiters = (
    Arc<TestRing>,
    Arc<Ledger>,
    Arc<Wakers>,
    Sealed,
    Vec<loom::thread::JoinHandle<Vec<usize>>>,
);

/// Two callers seated in one sealed batch (slot 0 of a ring of 2 slots of 2 seats), each waiting
/// for its outcome on a thread of its own (`block_on` over `poll_done`, then `read`).
fn two_waiters() -> TwoWaiters {
    let (ring, ledger) = two_seated();
    let sealed = seal(&ring).expect("slot 1 is free");
    let wakers = Wakers::new();
    let waiters: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger, wakers) =
                (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
            loom::thread::spawn(move || wait_and_read(&ring, 0, id, id, &wakers, &ledger))
        })
        .collect();
    (ring, ledger, wakers, sealed, waiters)
}

/// Both waiters read the published outcome, and the slot was freed exactly once.
fn assert_both_read(waiters: Vec<loom::thread::JoinHandle<Vec<usize>>>, ledger: &Ledger) {
    for waiter in waiters {
        assert_eq!(
            waiter.join().unwrap(),
            vec![0, 1],
            "a waiter read the published outcome"
        );
    }
    assert_eq!(ledger.frees(), 1, "the slot is freed exactly once");
}

/// Two callers seated in one sealed batch wait for its outcome (each in `block_on` over
/// `poll_done`) while the driver publishes it and releases the batch's reference.
fn publish_vs_register() {
    let (ring, ledger, wakers, sealed, waiters) = two_waiters();

    // `dispatch` collects, publishes `[0, 1]` and releases the batch's reference.
    let dispatched = dispatch(&ring, sealed, &ledger);
    assert_eq!(dispatched.ran, Some(vec![0, 1]));
    assert_both_read(waiters, &ledger);
    assert_eq!(
        (ledger.drops(0), ledger.drops(1)),
        (1, 1),
        "the reset dropped both keys"
    );
    assert_clean_end(ring, &wakers, &ledger);
}

/// As [`publish_vs_register`], with the publication in steps as the driver's batch task does it
/// (`signals::Fanout`): the outcome published quietly, seat 0 woken, a yield, then seat 1
/// woken and the batch's reference released. Waiter 1 may poll (and read) before its wake, or
/// register in the gap between the steps.
fn publish_in_steps_vs_register() {
    let (ring, ledger, wakers, sealed, waiters) = two_waiters();

    let slot = ring.slot(sealed.slot);
    let mut ids = Vec::new();
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    let cancelled = unsafe { slot.collect(sealed.count, |key| ids.push(key.id())) };
    assert_eq!((ids.len(), cancelled), (2, 0));
    // SAFETY: we hold the batch's reference and publish once; we release it after the last wake.
    let count = unsafe { slot.publish_quietly(ids) };
    assert_eq!(count, 2);
    slot.wake(0..1);
    loom::thread::yield_now();
    slot.wake(1..2);
    release(&ring, sealed.slot, &ledger);
    assert_both_read(waiters, &ledger);
    assert_clean_end(ring, &wakers, &ledger);
}

/// Proves: publishing in steps loses no wake-up (loom reports a deadlock otherwise), a waiter
/// reads the outcome whether it is woken in the first step, the second, or polls in between,
/// and the slot is freed once, after the last wake, with no waker left.
#[test]
fn publish_in_steps_wakes_every_waiter() {
    model("publish_in_steps", publish_in_steps_vs_register);
}

/// Proves: a waiter racing the publication is always woken (no lost wake-up: loom reports a
/// deadlock otherwise) and reads the published outcome, with the result's write
/// happening-before its read (no torn read: loom's cell tracking); the slot is then freed once
/// and keeps no waker.
#[test]
fn publish_vs_register_wakes_and_reads_the_outcome() {
    model("publish_vs_register", publish_vs_register);
}

/// Proves the model can fail: with `done` stored Relaxed (`Bug::Publish`), a waiter that sees
/// `done` reads `result` without a happens-before edge to its write, and loom reports the
/// causality violation.
#[test]
#[should_panic(expected = "Causality violation")]
fn broken_publish_is_caught() {
    model_broken("broken_publish", Bug::Publish, publish_vs_register);
}

/// The model of [`broken_register_is_caught`], run in a child process (its failure aborts).
#[test]
#[ignore = "run by broken_register_is_caught in a child process"]
fn broken_register_model() {
    model_broken("broken_register", Bug::Register, publish_vs_register);
}

/// Proves the model can fail: with the waker registered after `done` is checked
/// (`Bug::Register`), a publication between the two finds no waker, the waiter sleeps
/// forever, and loom reports the deadlock. (loom then aborts the process while unwinding the
/// blocked `block_on`, so the model runs in a child process and this test reads its report.)
#[test]
fn broken_register_is_caught() {
    let (passed, stderr) =
        busline_loom_tests::harness::run_in_child_process("broken_register_model");
    assert!(
        !passed,
        "the model passed with the broken register:\n{stderr}"
    );
    assert!(
        stderr.contains("deadlock"),
        "the model failed, but not with loom's deadlock:\n{stderr}"
    );
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.starts_with("deadlock") || l.starts_with("loom model"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
