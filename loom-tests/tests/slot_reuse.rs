//! Reuse of a batch slot: the release that frees it, the free mask, and the driver preparing and
//! reopening it for a new epoch while producers and waiters of older epochs are still about.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{
    Ledger, Ring, TestRing, Wakers, assert_dispatched_once, board_waiting, dispatch, model,
    seal_when_free, wait_and_read,
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
    let first = ring.seal().expect("slot 1 is free");
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
    let last = ring.close();
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
    assert_eq!(
        wakers.live(),
        0,
        "a seat's waker cell kept a waker past the reset"
    );
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: while the driver recycles a ring of two slots, a slow producer or a late waiter of
/// an old epoch never sees its slot reopened under it: the reopening (`prepare`, loom's cell
/// tracking of the entries and result) happens after its last access, it never writes into a
/// recycled slot nor reads another epoch's outcome, and every slot is freed once per epoch.
#[test]
#[cfg_attr(feature = "broken", ignore = "the core is built broken on purpose")]
fn slot_reuse_waits_for_old_epochs() {
    model("slot_reuse", slot_reuse);
    assert!(
        WAITED_FOR_REUSE.load(SeqCst) > 0,
        "the driver had to wait for slot 0 in some execution"
    );
    assert!(
        SERVED_FROM_REUSED.load(SeqCst) > 0,
        "a request was served from the reused slot in some execution"
    );
}
