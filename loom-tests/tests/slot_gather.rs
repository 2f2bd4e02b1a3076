//! The driver reading a boarding bus's keys ahead of its seal (`Slot::gather`, in the last
//! stretch before a deadline) against a caller giving up meanwhile, then the seal and the
//! collect of the rest (`Slot::collect_rest`), which must notice the cancel.
#![cfg(busline_loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use busline_loom_tests::harness::{
    Bug, Gathered, assert_reached, give_up, model, model_broken, release, two_seated,
    wait_and_read, Wakers,
};

/// Executions in which the gather read key 0 as written (then its caller gave up) and in which
/// it already found the seat cancelled.
static GATHERED_LIVE: AtomicUsize = AtomicUsize::new(0);
static GATHERED_GONE: AtomicUsize = AtomicUsize::new(0);

/// Two callers seated in slot 0. The caller of key 0 gives up while the driver gathers; the
/// driver then waits for it to be gone (a cancel that happened before the departure), seals,
/// and collects the rest. The batch must run with key 1 alone, whatever the gather saw.
fn gather_vs_cancel() {
    let (ring, ledger) = two_seated();
    let wakers = Wakers::new();
    let quitter = {
        let (ring, ledger) = (Arc::clone(&ring), Arc::clone(&ledger));
        loom::thread::spawn(move || give_up(&ring, 0, 0, &ledger))
    };
    let waiter = {
        let (ring, ledger, wakers) = (Arc::clone(&ring), Arc::clone(&ledger), Arc::clone(&wakers));
        loom::thread::spawn(move || wait_and_read(&ring, 0, 1, 1, &wakers, &ledger))
    };

    let slot = ring.slot(0);
    let mut ids = Vec::new();
    // SAFETY: by the driver, on the boarding slot, first gather of this epoch; 2 seats claimed.
    let gathered = unsafe { slot.gather(Gathered::NONE, 2, |key| ids.push(key.id())) };
    assert_eq!(gathered.upto, 2, "both seats were written before the gather");
    match gathered.cancelled {
        0 => GATHERED_LIVE.fetch_add(1, SeqCst),
        _ => GATHERED_GONE.fetch_add(1, SeqCst),
    };
    quitter.join().unwrap();

    let sealed = ring.seal().expect("slot 1 is free");
    assert_eq!(sealed.count, 2);
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    let cancelled = match unsafe { slot.collect_rest(sealed.count, gathered, |key| ids.push(key.id())) } {
        Some(cancelled) => cancelled,
        None => {
            // A seat gathered ahead was cancelled since: start again.
            ids.clear();
            // SAFETY: as above; nothing else was collected from this seal.
            unsafe { slot.collect(sealed.count, |key| ids.push(key.id())) }
        }
    };
    assert_eq!(
        (ids.clone(), cancelled),
        (vec![1], 1),
        "the batch runs without the caller who gave up before it departed"
    );
    // SAFETY: we hold the batch's reference and publish once.
    unsafe { slot.publish(ids) };
    release(&ring, 0, &ledger);
    assert_eq!(waiter.join().unwrap(), vec![1], "the other caller reads its outcome");
    // Three references (two callers, the batch), the quitter's perhaps before the seal.
    assert_eq!(ledger.frees(), 1, "the slot is freed exactly once");
    drop(ring);
    ledger.assert_all_dropped_once();
    assert_eq!(wakers.live(), 0, "no waker outlives the batch");
}

/// Proves: a key read ahead of the seal is left out of the batch if its caller gives up before
/// the departure (the gather read it live, then the cancel, both orders reached), the other
/// caller still reads its outcome, and every key is dropped once.
#[test]
fn a_cancel_after_the_gather_leaves_the_key_out() {
    model("gather_vs_cancel", gather_vs_cancel);
    assert_reached(&GATHERED_LIVE, "the gather read key 0 live, its caller gave up after");
    assert_reached(&GATHERED_GONE, "the gather found key 0 cancelled");
}

/// Proves the model can fail: trusting the gathered keys without the cancel count
/// (`Bug::Gather`) sends the key of a caller who gave up.
#[test]
#[should_panic(expected = "the batch runs without the caller who gave up")]
fn broken_gather_is_caught() {
    model_broken("broken_gather", Bug::Gather, gather_vs_cancel);
}
