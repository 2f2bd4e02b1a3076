//! A caller's first registration, stored with its key (`Slot::write_with_waker`, a plain store
//! under the claim's exclusive access) against a batch published without its collect (as when
//! a key's `Hash` panicked mid-collect), whose wake must wait for the seat's write.
#![cfg(busline_loom)]

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use busline::model::Claim;
use busline_loom_tests::harness::{seal, Bug, Ledger, Ring, TestRing, Wakers, model, model_broken, release};

/// A ring of 2 slots of 1 seat. The caller claims seat 0 and, in its first poll, writes its key
/// with a counted waker and returns pending (as `Ticket::poll` does); later polls check for the
/// outcome. The driver seals as soon as the claim is counted (perhaps before the write) and
/// publishes without collecting, then releases the batch's reference.
fn first_waker_vs_uncollected_publish() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let ledger = Ledger::new(1);
    let wakers = Wakers::new();
    assert_eq!(ring.claim(), Claim::Seat { slot: 0, index: 0 });
    let caller = {
        let (ring, ledger, wakers) = (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
        loom::thread::spawn(move || {
            let seat = ring.slot(0);
            let mut key = Some(ledger.key(0));
            loom::future::block_on(poll_fn(|cx| match key.take() {
                Some(key) => {
                    // SAFETY: seat 0 was claimed for this caller; written once.
                    unsafe { seat.write_with_waker(0, key, wakers.tracked(cx)) };
                    Poll::Pending
                }
                None => {
                    let waker = wakers.tracked(cx);
                    seat.poll_done(0, &mut std::task::Context::from_waker(&waker))
                }
            }));
            // SAFETY: we hold seat 0 and `poll_done` returned Ready.
            let outcome = unsafe { seat.read(0, |outcome, _| outcome.clone()) };
            release(&ring, 0, &ledger);
            outcome
        })
    };
    let sealed = seal(&ring).expect("slot 1 is free");
    assert_eq!(sealed.count, 1);
    // SAFETY: we hold the batch's reference (the seal) and publish once, without collecting.
    unsafe { ring.slot(0).publish(vec![7]) };
    release(&ring, 0, &ledger);
    assert_eq!(caller.join().unwrap(), vec![7], "the caller was woken and read the outcome");
    assert_eq!(ledger.frees(), 1, "the slot is freed exactly once");
    assert_eq!(wakers.live(), 0, "no waker outlives the batch");
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// Proves: the waker stored with the key is never touched before the seat's write is visible
/// (loom's `UnsafeCell` checks the plain store against the publisher's take), a publication
/// that did not collect still wakes the caller, and every waker and key is dropped.
#[test]
fn a_first_waker_is_stored_with_the_key_and_woken_once_written() {
    model("first_waker_vs_uncollected_publish", first_waker_vs_uncollected_publish);
}

/// Proves the model can fail: a wake that does not wait for the seat's write
/// (`Bug::WakeUnwritten`) races the producer's plain store of its waker.
#[test]
#[should_panic(expected = "Causality violation")]
fn broken_wake_unwritten_is_caught() {
    model_broken("broken_wake_unwritten", Bug::WakeUnwritten, first_waker_vs_uncollected_publish);
}
