//! Installing a seat's segment (`seats.rs`): two producers racing to install the same segment
//! (one `compare_exchange`, the loser hands its segment to the pool), against the driver's seal
//! and its collect, which waits for a segment that is not installed yet.
//!
//! Under loom the segments hold 1, 1, 2, 2, 4, ... seats: seat 0 is segment 0 (installed when
//! the slot is prepared), seat 1 segment 1, seats 2 and 3 share segment 2.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{close, seal, 
    Boarded, Bug, Ledger, Ring, TestRing, Wakers, assert_dispatched_once, assert_reached, board,
    dispatch, model, model_broken, wait_and_read,
};

/// Executions in which both producers sat in segment 2 of the sealed slot (so both found it
/// missing or one found the other's), and in which a producer landed in the next slot.
static BOTH_IN_SEGMENT_2: AtomicUsize = AtomicUsize::new(0);
static ONE_IN_NEXT: AtomicUsize = AtomicUsize::new(0);

/// Seats 0 and 1 of slot 0 are taken; two producers board (seats 2 and 3, one segment) while
/// the driver seals slot 0, dispatches it, then closes and dispatches what boarded after.
fn install_race() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 4));
    let ledger = Ledger::new(4);
    for id in 0..2 {
        assert!(
            matches!(board(&ring, ledger.key(id)), Boarded::Seated { slot: 0, index } if index == id)
        );
    }
    let producers: Vec<_> = (2..4)
        .map(|id| {
            let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
            loom::thread::spawn(move || match board(&ring, ledger.key(id)) {
                Boarded::Seated { slot, index } => Some((slot, index)),
                Boarded::Closed(_) => None,
                Boarded::Full { .. } => panic!("four seats, four requests"),
            })
        })
        .collect();

    let first = seal(&ring).expect("slot 1 is free");
    let first = dispatch(&ring, first, &ledger);
    let last = dispatch(&ring, close(&ring), &ledger);
    let seats: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();

    let mut seated: Vec<usize> = vec![0, 1];
    seated.extend((2..4).filter(|&id| seats[id - 2].is_some()));
    assert_dispatched_once(&[first.clone(), last.clone()], &seated);
    if seats.iter().all(|s| matches!(s, Some((0, 2 | 3)))) {
        BOTH_IN_SEGMENT_2.fetch_add(1, SeqCst);
    }
    if seats.iter().any(|s| matches!(s, Some((1, _)))) {
        ONE_IN_NEXT.fetch_add(1, SeqCst);
    }
    // Every caller reads its own key and its batch's outcome from the installed segments.
    let wakers = Wakers::new();
    for id in 0..2 {
        wait_and_read(&ring, 0, id, id, &wakers, &ledger);
    }
    for (id, seat) in (2..4).zip(&seats) {
        if let Some((slot, index)) = *seat {
            wait_and_read(&ring, slot, index, id, &wakers, &ledger);
        }
    }
    assert_eq!(ledger.frees(), 2, "each sealed slot freed exactly once");
    drop(ring);
    ledger.assert_all_dropped_once();
    assert_eq!(
        busline::model::live_segments(),
        0,
        "a segment leaked (a lost install race's segment must go to the pool or be freed)"
    );
}

/// Proves: two producers that find their segment missing both install it without waiting for
/// each other, exactly one install wins and both write into the winner's segment (each key
/// collected once, read back by its caller; loom's cell tracking sees the entries' initialisation
/// before every access), the loser's segment is pooled or freed (no leak), and the driver's
/// collect waits for a segment not installed yet.
#[test]
fn racing_installs_share_one_segment() {
    model("install_race", install_race);
    assert!(
        BOTH_IN_SEGMENT_2.load(SeqCst) > 0,
        "an execution seated both producers in the one segment"
    );
    assert_reached(
        &ONE_IN_NEXT,
        "an execution seated a producer in the next slot",
    );
}

/// Proves the model can fail: with a check-then-store install (`Bug::Install`), the second
/// producer's segment replaces the first's, whose key is lost with it: the driver's collect
/// waits for that seat forever (loom stops it at its branch limit).
#[test]
#[should_panic(expected = "maximum number of branches")]
fn broken_install_is_caught() {
    model_broken("broken_install", Bug::Install, install_race);
}
