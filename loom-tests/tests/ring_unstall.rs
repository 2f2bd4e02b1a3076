//! The end of a stall (`signals::update_stall`) against a waiter for room that does not claim
//! (`signals::room_or_unstalled`: a `tower` caller's readiness, `Shared::room_after`). The
//! waiter saw the stall, then read the boarding word; in between, the driver may have sealed the
//! full bus (which it saw, so its seal's notification went to nobody) and found the next one
//! not stuck. The waiter must then see the stall's end itself, or be notified of it.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline::model::{Gate, Signals, room_or_unstalled, update_stall};
use busline_loom_tests::harness::{
    Boarded, Bug, Ledger, Ring, Room, TestRing, assert_reached, board, expect_deadlock_in_child,
    model, model_broken, seal_and_notify,
};

/// Executions in which the waiter saw the stall's end (or the seal) itself, and in which it
/// slept and was notified.
static WENT_ON: AtomicUsize = AtomicUsize::new(0);
static NOTIFIED: AtomicUsize = AtomicUsize::new(0);

/// A bus of one seat, taken and stuck (the stall flag set). The waiter reads the gate (stalled)
/// and the boarding word, registers, and checks, as `Service::poll_ready` and `room_after` do;
/// the driver seals the full bus (notifying as `driver.rs` does), then finds the next bus not
/// stuck and ends the stall. A waiter left asleep is a loom deadlock.
fn unstall() {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let signals = Arc::new(Signals::new());
    let room = Arc::new(Room::new());
    let ledger = Ledger::new(1);
    assert!(matches!(board(&ring, ledger.key(0)), Boarded::Seated { slot: 0, index: 0 }));
    assert!(!update_stall(&ring, &signals, true), "stuck: nothing to notify");
    let waiter = {
        let (ring, signals, room) = (Arc::clone(&ring), Arc::clone(&signals), Arc::clone(&room));
        loom::thread::spawn(move || {
            if signals.gate() != Gate::Stalled {
                return WENT_ON.fetch_add(1, SeqCst);
            }
            let boarding = ring.boarding_word();
            let notified = room.notified();
            if room_or_unstalled(&ring, &signals, boarding) {
                WENT_ON.fetch_add(1, SeqCst)
            } else {
                room.wait(notified);
                NOTIFIED.fetch_add(1, SeqCst)
            }
        })
    };
    let sealed = seal_and_notify(&ring, &room).expect("slot 1 is free");
    assert_eq!(sealed.count, 1);
    if update_stall(&ring, &signals, false) {
        room.notify_waiters();
    }
    waiter.join().unwrap();
}

/// Proves: a waiter for room is never left asleep when the stall ends without a seal it could
/// see: it sees the new epoch or the cleared flag itself, or the driver sees its announcement
/// (both reached), on the real `update_stall`, `room_or_unstalled`, `seal` and
/// `take_room_wanted`.
#[test]
fn the_end_of_a_stall_is_never_lost() {
    model("unstall", unstall);
    assert_reached(&WENT_ON, "an execution went on without sleeping");
    assert_reached(&NOTIFIED, "an execution slept and was notified");
}

/// The model of [`broken_unstall_is_caught`], run in a child process (its failure aborts).
#[test]
#[ignore = "run by broken_unstall_is_caught in a child process"]
fn broken_unstall_model() {
    model_broken("broken_unstall", Bug::Unstall, unstall);
}

/// Proves the model can fail: when the end of a stall does not take the waiters'
/// announcements (`Bug::Unstall`), a waiter that read the boarding word after the seal and
/// announced before the flag was cleared sleeps for ever: loom reports the deadlock.
#[test]
fn broken_unstall_is_caught() {
    expect_deadlock_in_child("broken_unstall_model");
}
