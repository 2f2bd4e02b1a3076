//! A slot's reference count (`remaining`, which releases before the seal drive below zero) and
//! the ring's free mask (`fetch_or` by whoever frees a slot, `fetch_and` by the driver's seal).
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Ledger, Ring, TestRing, Wakers, assert_reached, board, dispatch, give_up, model,
    seal_when_free, two_seated, wait_and_read,
};

/// Executions in which the batch did not run (both callers gone before the collect).
static NOT_RUN: AtomicUsize = AtomicUsize::new(0);

/// Two seated callers both give up while the driver seals and dispatches their batch.
fn releases_vs_seal() {
    let (ring, ledger) = two_seated();
    let quitters: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
            loom::thread::spawn(move || give_up(&ring, 0, id, &ledger))
        })
        .collect();

    let sealed = seal(&ring).expect("slot 1 is free");
    let dispatched = dispatch(&ring, sealed, &ledger);
    for quitter in quitters {
        quitter.join().unwrap();
    }
    if dispatched.ran.is_none() {
        NOT_RUN.fetch_add(1, SeqCst);
    }
    // `remaining` went { -2..=0 } before the seal, `+ 3` at the seal, and exactly one of the
    // three releases brought it to zero.
    assert_eq!(ledger.frees(), 1, "the count reached zero exactly once");
    assert_eq!(
        (ledger.drops(0), ledger.drops(1)),
        (1, 1),
        "the reset dropped both keys"
    );
    // The free bit is back: the next seal opens slot 0 again, and its seats are empty.
    assert_eq!(seal(&ring).map(|s| (s.slot, s.count)), Some((1, 0)));
    assert!(
        matches!(
            board(&ring, ledger.key(0)),
            Boarded::Seated { slot: 0, index: 0 }
        ),
        "slot 0 reopened, empty"
    );
    drop(ring);
    assert_eq!(
        (ledger.drops(0), ledger.drops(1)),
        (2, 1),
        "the ring's drop dropped the new key"
    );
}

/// Proves: with every caller's release racing the seal (one, both or neither before it, so the
/// count dips below zero), the count reaches zero exactly once, the batch without callers is
/// not run (reached in some execution) and the slot returns to the free mask, reset.
#[test]
fn release_count_reaches_zero_once() {
    model("releases_vs_seal", releases_vs_seal);
    assert_reached(&NOT_RUN, "an execution found every caller gone");
}

/// A ring of three slots of one seat, two of them sealed with one caller each: the callers read
/// and release (freeing their slots, each with a `fetch_or` on the free mask) while the driver
/// seals twice, each seal taking a free slot (`fetch_and`).
fn free_mask() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(3, 1));
    let ledger = Ledger::new(2);
    for id in 0..2 {
        assert!(
            matches!(board(&ring, ledger.key(id)), Boarded::Seated { slot, index: 0 } if slot == id)
        );
        let sealed = seal(&ring).expect("a free slot");
        assert_eq!(dispatch(&ring, sealed, &ledger).ran, Some(vec![id]));
    }
    // Slots 0 and 1 are held by one caller each; slot 2 boards; no slot is free.
    assert!(!ring.has_free_slot());
    let wakers = Wakers::new();
    let callers: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger, wakers) =
                (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
            loom::thread::spawn(move || wait_and_read(&ring, id, 0, id, &wakers, &ledger))
        })
        .collect();

    let first = seal_when_free(&ring);
    assert_eq!(first.slot, 2);
    let second = seal_when_free(&ring);
    assert!(
        second.slot < 2,
        "the second seal sealed the slot the first one reopened"
    );
    for caller in callers {
        caller.join().unwrap();
    }
    // The slot the second seal opened is the other of 0 and 1: no bit was lost or duplicated.
    let last = close(&ring);
    assert_eq!(last.slot, 1 - second.slot, "{first:?} {second:?} {last:?}");
    for sealed in [first, second, last] {
        assert_eq!(
            dispatch(&ring, sealed, &ledger).ran,
            None,
            "nobody boarded after the callers"
        );
    }
    assert_eq!(ledger.frees(), 2 + 3, "each slot freed once per epoch");
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: concurrent releases of different slots (each `fetch_or` of its bit) and the driver's
/// seals (`fetch_and` of the bit it takes) never lose or duplicate a bit of the free mask, and
/// a slot freed by a caller's thread is reopened after its reset (loom's cell tracking).
#[test]
fn free_mask_keeps_every_bit() {
    model("free_mask", free_mask);
}

/// Regression test: reproduces a bug `Ring::live_slots` (core/src/ring.rs) had: it computed
/// `slots - 1 - free`, assuming one slot is always boarding, but after `close` the boarding
/// slot is sealed too and, once released, returns to the free mask: `free == slots`, and the
/// subtraction underflowed (a panic in debug builds, `usize::MAX` in release builds), so
/// `Batcher::live_slots` after `shutdown` panicked or lied instead of returning 0.
#[test]
fn regression_live_slots_after_close() {
    model("live_slots_after_close", || {
        let ring: TestRing = Ring::new(2, 1);
        let ledger = Ledger::new(0);
        dispatch(&ring, close(&ring), &ledger);
        assert_eq!(ring.live_slots(), 0, "every slot is free after the close");
    });
}
