//! Reuse of a batch slot: the release that frees it, the free mask, and the driver preparing and
//! reopening it for a new epoch while producers and waiters of older epochs are still about.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Bug, Ledger, Ring, TestRing, Wakers, assert_clean_end, assert_dispatched_once,
    assert_reached, board, board_waiting, dispatch, model, model_broken, seal_when_free,
    wait_and_read,
};

/// Executions in which the driver reopened slot 0 while a request of its first epoch was still
/// seated in it when the driver first tried (it had to wait), and executions in which a request
/// was served from the reopened slot 0.
static WAITED_FOR_REUSE: AtomicUsize = AtomicUsize::new(0);
static SERVED_FROM_REUSED: AtomicUsize = AtomicUsize::new(0);

/// A ring of two slots of one seat. Two producers each submit one request (waiting for the next
/// bus while full) and wait for its outcome; the driver seals twice (the second seal reopens
/// slot 0, so it must wait for slot 0's callers to finish) and then closes.
fn slot_reuse() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let ledger = Ledger::new(2);
    let wakers = Wakers::new();
    let producers: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger, wakers) =
                (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
            loom::thread::spawn(move || {
                let ride = board_waiting(&ring, ledger.key(id));
                // A late waiter: reads its outcome whenever it gets to run, perhaps after the
                // driver has sealed further epochs.
                let outcome = ride.seat.map(|(slot, index)| {
                    (
                        slot,
                        index,
                        wait_and_read(&ring, slot, index, id, &wakers, &ledger),
                    )
                });
                (ride, outcome)
            })
        })
        .collect();

    let mut dispatches = vec![];
    let first = seal(&ring).expect("slot 1 is free");
    assert_eq!(first.slot, 0);
    dispatches.push(dispatch(&ring, first, &ledger));
    // Slot 1 boards; slot 0 is free only once its caller (if any) has read and released.
    if !ring.has_free_slot() {
        WAITED_FOR_REUSE.fetch_add(1, SeqCst);
    }
    let second = seal_when_free(&ring);
    assert_eq!(
        second.slot, 1,
        "slot 0 reopened: the second seal took slot 1"
    );
    dispatches.push(dispatch(&ring, second, &ledger));
    let last = close(&ring);
    assert_eq!(last.slot, 0, "the third epoch boarded in the reused slot 0");
    dispatches.push(dispatch(&ring, last, &ledger));

    let results: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    let seated: Vec<usize> = (0..2).filter(|&id| results[id].0.seat.is_some()).collect();
    assert_dispatched_once(&dispatches, &seated);
    for (id, (_, outcome)) in results.iter().enumerate() {
        if let Some((slot, _, outcome)) = outcome {
            // The outcome it read is that of the batch it ran in, in the slot it was seated in,
            // not that of an earlier or later epoch of the same slot.
            let batch = dispatches
                .iter()
                .find(|d| d.ids().contains(&id))
                .expect("dispatched");
            assert_eq!(batch.sealed.slot, *slot);
            assert_eq!(
                batch.ran.as_ref(),
                Some(outcome),
                "request {id} read another batch's outcome"
            );
            if batch == &dispatches[2] {
                SERVED_FROM_REUSED.fetch_add(1, SeqCst);
            }
        }
    }
    assert_eq!(
        ledger.frees(),
        3,
        "each of the three batches freed its slot exactly once"
    );
    assert_clean_end(ring, &wakers, &ledger);
}

/// Proves: while the driver recycles a ring of two slots, a slow producer or a late waiter of
/// an old epoch never sees its slot reopened under it: the reopening (`prepare`, loom's cell
/// tracking of the entries and result) happens after its last access, it never writes into a
/// recycled slot nor reads another epoch's outcome, and every slot is freed once per epoch.
#[test]
fn slot_reuse_waits_for_old_epochs() {
    model("slot_reuse", slot_reuse);
    assert_reached(
        &WAITED_FOR_REUSE,
        "the driver had to wait for slot 0 in some execution",
    );
    assert_reached(
        &SERVED_FROM_REUSED,
        "a request was served from the reused slot in some execution",
    );
}

/// Executions in which the producer was seated in the reopened slot 0.
static SEATED_IN_REOPENED: AtomicUsize = AtomicUsize::new(0);

/// Two slots of one seat. Key 0's batch (slot 0) is dispatched; its caller reads it on its own
/// thread, and that release resets slot 0 (dropping key 0) and frees it. A producer boards key 1
/// meanwhile, while the driver seals again as soon as slot 0 is free (reopening it), waits for
/// the producer, then closes: the producer lands in slot 1 or in the reopened slot 0, whose
/// reset happened on the caller's thread.
fn reopened_slot() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let ledger = Ledger::new(2);
    let wakers = Wakers::new();
    assert!(matches!(
        board(&ring, ledger.key(0)),
        Boarded::Seated { slot: 0, index: 0 }
    ));
    let first = seal(&ring).expect("slot 1 is free");
    let first = dispatch(&ring, first, &ledger);
    let caller = {
        let (ring, ledger, wakers) = (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
        loom::thread::spawn(move || wait_and_read(&ring, 0, 0, 0, &wakers, &ledger))
    };
    let producer = {
        let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
        loom::thread::spawn(move || match board(&ring, ledger.key(1)) {
            Boarded::Seated { slot, index } => (slot, index),
            other => panic!("one request per bus of one seat: {other:?}"),
        })
    };
    let second = seal_when_free(&ring);
    let second = dispatch(&ring, second, &ledger);
    // The producer has boarded (slot 1 before the second seal, the reopened slot 0 after it)
    // before the close, which dispatches slot 0.
    let (slot, index) = producer.join().unwrap();
    let last = dispatch(&ring, close(&ring), &ledger);
    assert_eq!(caller.join().unwrap(), vec![0]);
    if slot == 0 {
        SEATED_IN_REOPENED.fetch_add(1, SeqCst);
    }
    assert_dispatched_once(&[first, second, last], &[0, 1]);
    wait_and_read(&ring, slot, index, 1, &wakers, &ledger);
    assert_eq!(ledger.frees(), 3);
    assert_clean_end(ring, &wakers, &ledger);
}

/// Proves: a producer seated in a slot reopened after its reset on another thread writes its
/// key after that reset (loom's cell tracking of the seat's key: the reset's Release on the free
/// mask, the driver's Acquire there and Release seal, the producer's Acquire claim), reached.
#[test]
fn a_reopened_slot_is_written_after_its_reset() {
    model("reopened_slot", reopened_slot);
    assert_reached(
        &SEATED_IN_REOPENED,
        "an execution seated the producer in the reopened slot",
    );
}

/// Proves the model can fail: with `claim`'s `fetch_add` Relaxed instead of Acquire
/// (`Bug::Claim`), a producer seated in the reopened slot 0 writes its key without a
/// happens-before edge to the reset that dropped the seat's previous key, and loom reports the
/// causality violation.
#[test]
#[should_panic(expected = "Causality violation")]
fn broken_claim_is_caught() {
    model_broken("broken_claim", Bug::Claim, reopened_slot);
}

/// Proves the model can fail: with the seal's swap lacking Release (`Bug::Seal`), a producer
/// claiming in the reopened slot 0 does not see its reset (the driver acquired it from the free
/// mask but does not pass it on), and loom reports the causality violation.
#[test]
#[should_panic(expected = "Causality violation")]
fn broken_seal_is_caught() {
    model_broken("broken_seal", Bug::Seal, reopened_slot);
}
