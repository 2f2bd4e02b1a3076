//! The ring's head word: claims (one `fetch_add`) against the driver's seal (one `swap`), and
//! claims past the seats (`Claim::Full`) against the seals that open the next bus.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Dispatch, Ledger, Ring, TestRing, Wakers, assert_dispatched_once, assert_reached,
    board, board_waiting, dispatch, model, wait_and_read,
};

/// Executions in which the two requests rode different batches (one claim before the seal, one
/// after), and in which a claim came after the close.
static SPLIT: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Executions in which a request found the bus full and was then seated on a later one.
static FULL_THEN_SEATED: AtomicUsize = AtomicUsize::new(0);

/// Two producers board while the driver seals the boarding slot, then closes the ring (the
/// close seals whatever boarded after the seal).
fn claim_vs_seal() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 2));
    let ledger = Ledger::new(2);
    let producers: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
            loom::thread::spawn(move || match board(&ring, ledger.key(id)) {
                Boarded::Seated { slot, index } => Some((slot, index)),
                Boarded::Closed(_) => None,
                Boarded::Full { .. } => panic!("two producers cannot fill two seats past capacity"),
            })
        })
        .collect();

    let first = seal(&ring).expect("slot 1 is free");
    let first = dispatch(&ring, first, &ledger);
    let last = dispatch(&ring, close(&ring), &ledger);
    let seats: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();

    // Every seated request is in exactly one batch, the one of the slot it was seated in, and a
    // refused one is in none.
    let dispatches = [first.clone(), last.clone()];
    let seated: Vec<usize> = (0..2).filter(|&id| seats[id].is_some()).collect();
    assert_dispatched_once(&dispatches, &seated);
    if first.ids().len() == 1 && last.ids().len() == 1 {
        SPLIT.fetch_add(1, SeqCst);
    }
    if seated.len() < 2 {
        REFUSED.fetch_add(1, SeqCst);
    }
    for (id, seat) in seats.iter().enumerate() {
        if let Some((slot, _)) = seat {
            let batch: &Dispatch = if first.ids().contains(&id) {
                &first
            } else {
                &last
            };
            assert_eq!(
                batch.sealed.slot, *slot,
                "request {id} ran in the batch of another slot"
            );
        }
    }
    // Each caller reads its own batch's outcome and releases; both slots end up free.
    let wakers = Wakers::new();
    for (id, seat) in seats.iter().enumerate() {
        if let Some((slot, index)) = *seat {
            wait_and_read(&ring, slot, index, id, &wakers, &ledger);
        }
    }
    assert_eq!(ledger.frees(), 2, "each sealed slot freed exactly once");
    for id in seated {
        assert_eq!(ledger.drops(id), 1, "the reset dropped key {id}");
    }
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: a claim racing the epoch swap lands in exactly one batch (the seal's or the next
/// one's, never both, never neither), which is dispatched exactly once and read by its caller.
#[test]
fn claim_vs_seal_lands_in_exactly_one_batch() {
    model("claim_vs_seal", claim_vs_seal);
    assert_reached(
        &SPLIT,
        "an execution put the two requests in different batches",
    );
    assert_reached(&REFUSED, "an execution refused a claim after the close");
}

/// A ring of one seat: two producers claim past capacity while the driver seals and then closes.
/// A producer that finds the bus full waits until the head moves on and claims again.
fn full_ring() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(3, 1));
    let ledger = Ledger::new(2);
    let producers: Vec<_> = (0..2)
        .map(|id| {
            let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
            loom::thread::spawn(move || board_waiting(&ring, ledger.key(id)))
        })
        .collect();

    let mut dispatches = vec![];
    for _ in 0..2 {
        let sealed = seal(&ring).expect("a free slot");
        dispatches.push(dispatch(&ring, sealed, &ledger));
    }
    dispatches.push(dispatch(&ring, close(&ring), &ledger));
    let rides: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();

    // One seat per epoch: a full bus lets nothing on; the seal discards the count past the seat.
    for d in &dispatches {
        assert!(d.sealed.count <= 1, "{d:?}");
    }
    // Each request met Full at most once per epoch it saw, then was seated exactly once (in one
    // batch) or refused with Closed.
    for ride in &rides {
        assert!(
            ride.fulls <= 2,
            "full more often than there were epochs: {ride:?}"
        );
        if ride.fulls > 0 && ride.seat.is_some() {
            FULL_THEN_SEATED.fetch_add(1, SeqCst);
        }
    }
    let seated: Vec<usize> = (0..2).filter(|&id| rides[id].seat.is_some()).collect();
    assert_dispatched_once(&dispatches, &seated);

    let wakers = Wakers::new();
    for (id, ride) in rides.iter().enumerate() {
        if let Some((slot, index)) = ride.seat {
            wait_and_read(&ring, slot, index, id, &wakers, &ledger);
        }
    }
    assert_eq!(ledger.frees(), 3, "each sealed slot freed exactly once");
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: producers claiming past capacity each get exactly one of Seat, Full or Closed per
/// claim; a Full one writes nothing, retries on the next epoch and is then seated exactly once
/// (or refused once the ring is closed).
#[test]
fn full_ring_meets_the_overflow_policy_once() {
    model("full_ring", full_ring);
    assert_reached(
        &FULL_THEN_SEATED,
        "an execution seated a request that had found the bus full",
    );
}
