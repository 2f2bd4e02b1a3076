//! Shutdown under each overflow policy, with the stall flag: a caller decides through the real
//! `signals::admit` (gate, claim, overflow policy, solo-run admission) while a handle requests
//! shutdown and the driver closes and finishes. Once the driver has finished, no batch call
//! starts, and every caller gets exactly one answer, at once unless it waits for room.
#![cfg(busline_loom)]

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::Poll;

use busline::model::{Admission, Bug, Overflow, Ring, Signals, abandon, admit, board, break_on_purpose, release};
use busline_loom_tests::harness::{Ledger, TestRing, model};

/// What the caller ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Seated, and read the outcome the driver published at its close.
    Served,
    Overloaded,
    RanAlone,
    Closed,
}

/// 2 slots of 1 seat; request 0 already fills the boarding bus. If `stalled`, the driver has
/// marked the batcher at capacity. Concurrently: a handle requests shutdown; a caller under
/// `overflow` asks for a seat (and, under `Wait`, waits for room and asks again); the driver
/// waits for the shutdown request, closes (the lock-free part of its close: `abandon`), clears
/// the stall flag, waits until no solo run is going, and finishes.
fn shutdown_vs_caller(overflow: Overflow, stalled: bool) -> Answer {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 1));
    let signals = Arc::new(Signals::new());
    let ledger = Ledger::new(2);
    assert!(matches!(board(&ring, &signals, ledger.key(0), std::task::Waker::noop(), |_| {}), busline::model::Boarded::Seat { .. }));
    let _ = signals.set_stalled(stalled);
    let finished = Arc::new(loom::sync::atomic::AtomicBool::new(false));
    // Set if a solo run started once the driver had finished (std: bookkeeping, not modelled).
    let late_run = Arc::new(AtomicBool::new(false));

    let handle = {
        let signals = Arc::clone(&signals);
        loom::thread::spawn(move || signals.request_shutdown())
    };
    let caller = {
        let (ring, signals, ledger) = (Arc::clone(&ring), Arc::clone(&signals), Arc::clone(&ledger));
        let (finished, late_run) = (Arc::clone(&finished), Arc::clone(&late_run));
        loom::thread::spawn(move || {
            let mut key = ledger.key(1);
            loop {
                match admit(&ring, &signals, overflow, key, std::task::Waker::noop(), |_| {}) {
                    Admission::Seated { slot, index } => {
                        // Only a close can send this bus (the driver sends nothing else here):
                        // its outcome is published by `abandon`.
                        loom::future::block_on(poll_fn(|cx| ring.slot(slot).poll_done(index, cx)));
                        // SAFETY: our seat's reference, given up unread.
                        unsafe { release(&ring, &signals, slot, 1) };
                        return Answer::Served;
                    }
                    Admission::WaitForRoom { boarding, key: back } => {
                        assert_eq!(overflow, Overflow::Wait, "only Wait waits for room");
                        key = back;
                        while !ring.has_moved_on(boarding) {
                            loom::thread::yield_now();
                        }
                    }
                    Admission::Overloaded(_) => return Answer::Overloaded,
                    Admission::RunAlone(_) => {
                        // The batch call starts here: it must not come after the finish.
                        // (A read-modify-write reads the latest value in loom's execution.)
                        if finished.fetch_or(false, loom::sync::atomic::Ordering::AcqRel) {
                            late_run.store(true, SeqCst);
                        }
                        signals.end_alone();
                        return Answer::RanAlone;
                    }
                    Admission::Closed(_) => return Answer::Closed,
                }
            }
        })
    };

    // The driver: wait for the shutdown request, close, then wait for the solo runs.
    loom::future::block_on(poll_fn(|cx| {
        if signals.look(&ring, cx.waker()).shutdown { Poll::Ready(()) } else { Poll::Pending }
    }));
    // SAFETY: this thread is the model's driver, its one sealer.
    let closed = unsafe { abandon(&ring, &signals, vec![usize::MAX]) }.expect("closed once");
    assert_eq!(closed.count, 1, "the close sent request 0 (the bus has one seat)");
    let _ = signals.set_stalled(false);
    loom::future::block_on(poll_fn(|cx| {
        let _ = signals.look(&ring, cx.waker());
        if signals.solo_runs() == 0 { Poll::Ready(()) } else { Poll::Pending }
    }));
    finished.store(true, loom::sync::atomic::Ordering::Release);

    handle.join().unwrap();
    let answer = caller.join().unwrap();
    assert!(!late_run.load(SeqCst), "a solo run started after the driver finished");
    // Request 0's caller reads nothing and releases; the slot is then freed and reset.
    // SAFETY: request 0's seat reference, held by this thread since it boarded.
    unsafe { release(&ring, &signals, 0, 1) };
    drop(ring);
    ledger.assert_all_dropped_once();
    answer
}

/// Runs the scenario under `overflow` and checks that every answer it allows was reached.
fn check(name: &'static str, overflow: Overflow, stalled: bool, allowed: &'static [Answer]) {
    let reached: Arc<Vec<AtomicUsize>> = Arc::new(allowed.iter().map(|_| AtomicUsize::new(0)).collect());
    let seen = Arc::clone(&reached);
    model(name, move || {
        let answer = shutdown_vs_caller(overflow, stalled);
        let at = allowed.iter().position(|&a| a == answer);
        let at = at.unwrap_or_else(|| panic!("{overflow:?}: answered {answer:?}, not one of {allowed:?}"));
        seen[at].fetch_add(1, SeqCst);
    });
    for (answer, count) in allowed.iter().zip(reached.iter()) {
        assert!(count.load(SeqCst) > 0, "{name}: {answer:?} never reached");
    }
}

/// Proves: under `RunAlone` at capacity (stall flag set), a solo run is either admitted before
/// the driver's last look at the run count (and the driver waits for it) or refused `Closed`;
/// none starts after the driver has finished. Both outcomes are reached.
#[test]
fn shutdown_vs_run_alone_at_capacity() {
    check("shutdown_vs_run_alone", Overflow::RunAlone, true, &[Answer::RanAlone, Answer::Closed]);
}

/// Proves: under `Reject`, a request that finds the bus full but the batcher not yet marked
/// stalled is refused at once (`Overloaded`), or `Closed` once shutdown was requested; it never
/// waits. Both outcomes are reached.
#[test]
fn shutdown_vs_reject_on_a_full_bus() {
    check("shutdown_vs_reject", Overflow::Reject, false, &[Answer::Overloaded, Answer::Closed]);
}

/// Proves: under `Wait`, a request that finds the bus full waits until the close moves the
/// ring on, then is refused `Closed`: the close leaves nobody waiting.
#[test]
fn shutdown_vs_wait_on_a_full_bus() {
    check("shutdown_vs_wait", Overflow::Wait, false, &[Answer::Closed]);
}

/// Proves the model can fail: with the solo run's admission reading the flags with a plain load
/// (`Bug::SoloAdmission`), the caller can miss the shutdown while the driver
/// reads a run count from before the admission, and a batch call starts after the finish.
#[test]
#[should_panic(expected = "a solo run started after the driver finished")]
fn broken_solo_admission_is_caught() {
    break_on_purpose(Some(Bug::SoloAdmission));
    model("broken_solo_admission", || {
        shutdown_vs_caller(Overflow::RunAlone, true);
    });
}

/// A load first polled after shutdown was requested (the requesting thread joined before it
/// starts), on a bus with room, while the driver closes: under every policy it is refused
/// `Closed`, never seated in the bus the close sends.
fn load_after_the_request(overflow: Overflow) -> Answer {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 2));
    let signals = Arc::new(Signals::new());
    let ledger = Ledger::new(2);
    assert!(matches!(board(&ring, &signals, ledger.key(0), std::task::Waker::noop(), |_| {}), busline::model::Boarded::Seat { .. }));
    let caller = {
        let (ring, signals, ledger) = (Arc::clone(&ring), Arc::clone(&signals), Arc::clone(&ledger));
        loom::thread::spawn(move || {
            let requester = {
                let signals = Arc::clone(&signals);
                loom::thread::spawn(move || signals.request_shutdown())
            };
            requester.join().unwrap();
            match admit(&ring, &signals, overflow, ledger.key(1), std::task::Waker::noop(), |_| {}) {
                Admission::Seated { slot, index } => {
                    loom::future::block_on(poll_fn(|cx| ring.slot(slot).poll_done(index, cx)));
                    // SAFETY: our seat's reference, given up unread.
                    unsafe { release(&ring, &signals, slot, 1) };
                    Answer::Served
                }
                Admission::Closed(_) => Answer::Closed,
                other => panic!("{overflow:?}: {other:?} with room in the bus"),
            }
        })
    };
    loom::future::block_on(poll_fn(|cx| {
        if signals.look(&ring, cx.waker()).shutdown { Poll::Ready(()) } else { Poll::Pending }
    }));
    // SAFETY: this thread is the model's driver, its one sealer.
    let _ = unsafe { abandon(&ring, &signals, vec![usize::MAX]) }.expect("closed once");
    let answer = caller.join().unwrap();
    assert_eq!(answer, Answer::Closed, "{overflow:?}: a load after the shutdown request was {answer:?}");
    // SAFETY: request 0's seat reference, held by this thread since it boarded.
    unsafe { release(&ring, &signals, 0, 1) };
    drop(ring);
    ledger.assert_all_dropped_once();
    answer
}

/// Proves: a load after the shutdown request is refused under `Wait`, `Reject` and `RunAlone`
/// alike, though the driver has not closed the ring yet (`admit` reads the shutdown flag first).
#[test]
fn a_load_after_the_shutdown_request_is_refused_under_every_policy() {
    for (name, overflow) in [("after_request_wait", Overflow::Wait), ("after_request_reject", Overflow::Reject), ("after_request_run_alone", Overflow::RunAlone)] {
        model(name, move || {
            load_after_the_request(overflow);
        });
    }
}

/// Proves the model can fail: with `Wait` ignoring the shutdown flag (`Bug::ShutdownGate`, the
/// engine before a review), the load boards the bus the driver has not closed yet and is served.
#[test]
#[should_panic(expected = "a load after the shutdown request was Served")]
fn broken_shutdown_gate_is_caught() {
    break_on_purpose(Some(Bug::ShutdownGate));
    model("broken_shutdown_gate", || {
        load_after_the_request(Overflow::Wait);
    });
}
