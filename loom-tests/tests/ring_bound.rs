//! The head word's bound: `count` never carries into `slot`, because a producer that sees the
//! bus full does not claim (`Ring::claim` looks first), so past the seats `count` grows by at
//! most one per thread per epoch. Rings constructed with `count` near its limits.
#![cfg(busline_loom)]

use std::sync::Arc;

use busline::model::{head_count, ring_with_count};
use busline_loom_tests::harness::{Bug, Claim, MAX_SEATS, TestRing, model, model_broken};

/// The largest slot with one seat left (`count = MAX_SEATS - 1`): two producers claim twice
/// each.
fn last_seat() {
    let ring: Arc<TestRing> = Arc::new(ring_with_count(2, MAX_SEATS, MAX_SEATS as u64 - 1));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let ring = Arc::clone(&ring);
            loom::thread::spawn(move || [ring.claim(), ring.claim()])
        })
        .collect();
    let claims: Vec<Claim> = producers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let seats = claims
        .iter()
        .filter(|c| matches!(c, Claim::Seat { .. }))
        .count();
    assert_eq!(
        seats, 1,
        "the last seat went to exactly one claim: {claims:?}"
    );
    assert!(claims.iter().all(
        |c| matches!(c, Claim::Seat { slot: 0, index } if *index == MAX_SEATS - 1)
            || matches!(c, Claim::Full { .. })
    ));
    let count = head_count(&ring) as usize;
    assert!(
        count <= MAX_SEATS + 2,
        "at most one claim past the seats per thread: count {count} = MAX_SEATS + {}",
        count - MAX_SEATS
    );
}

/// Proves: with one seat left, two producers claiming twice each seat exactly one request and
/// leave `count` at most one past the seats per thread, whatever the interleaving.
#[test]
fn claims_past_the_seats_are_one_per_thread() {
    model("last_seat", last_seat);
}

/// Proves the model can fail: a claim that does not look first (`Bug::Bound`, the engine before
/// this bound) counts every claim on a full bus.
#[test]
#[should_panic(expected = "at most one claim past the seats per thread")]
fn broken_bound_is_caught() {
    model_broken("broken_bound", Bug::Bound, last_seat);
}

/// A full bus of one seat whose `count` is one below the largest the field holds (a state the
/// bound keeps any real ring from reaching): two producers claim twice each, and the head word's
/// `slot` and `epoch` must not move.
fn near_the_carry() {
    let limit = (1u64 << 40) - 1;
    let ring: Arc<TestRing> = Arc::new(ring_with_count(2, 1, limit - 1));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let ring = Arc::clone(&ring);
            loom::thread::spawn(move || [ring.claim(), ring.claim()])
        })
        .collect();
    let claims: Vec<Claim> = producers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    assert!(
        claims.iter().all(|c| *c == Claim::Full { boarding: 0 }),
        "a claim on the full bus carried into the head word's slot: {claims:?}"
    );
    assert_eq!(head_count(&ring), limit - 1);
    assert_eq!(ring.boarding().slot, 0);
}

/// Proves: at the edge of the `count` field, a full bus is left alone: no claim, no carry.
#[test]
fn a_full_bus_at_the_count_limit_does_not_carry() {
    model("near_the_carry", near_the_carry);
}
