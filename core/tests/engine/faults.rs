//! User code that misbehaves inside the engine: keys whose `Hash`, `Eq`, `Clone` or `Drop`
//! panic, values whose `Clone` or `Drop` panic, batch calls that hang. Each fault reaches
//! exactly the callers it concerns as an error, and the batcher keeps serving.
//!
//! Every wait is bounded by `answered` (a generous `timeout`), so that a hang fails the test
//! instead of hanging it; the bound is not a timing under test.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::fill;
use busline::{Batcher, Error, Overflow};

/// The key that misbehaves.
const BAD: u32 = 13;

/// Awaits `fut`, failing the test if it hangs.
async fn answered<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut).await.expect("a caller hung")
}

/// Which of a key's traits panics for `BAD` (also `newcomer.rs`'s keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    Hash,
    Eq,
    Clone,
    Drop,
}

/// A key that panics in one of its traits when its id is `BAD` (and, for `Drop`, only for
/// the copy the caller handed in, so that the test's own copies drop quietly).
#[derive(Debug)]
struct Key {
    id: u32,
    fault: Fault,
    armed: bool,
}

impl Key {
    fn new(id: u32, fault: Fault) -> Key {
        Key { id, fault, armed: true }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert!(!(self.fault == Fault::Hash && self.id == BAD), "Hash panics");
        // Under `Eq` faults every key hashes alike, so that `eq` is called.
        if self.fault != Fault::Eq {
            self.id.hash(state);
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        assert!(!(self.fault == Fault::Eq && (self.id == BAD || other.id == BAD)), "Eq panics");
        self.id == other.id
    }
}

impl Eq for Key {}

impl Clone for Key {
    fn clone(&self) -> Self {
        assert!(!(self.fault == Fault::Clone && self.id == BAD), "Clone panics");
        Key { id: self.id, fault: self.fault, armed: false }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if self.fault == Fault::Drop && self.id == BAD && self.armed && !std::thread::panicking() {
            panic!("Drop panics");
        }
    }
}

/// A batcher of `Key`s answering `id * 10`, with a 5 ms window so that concurrent loads share
/// a bus.
fn keyed() -> Batcher<Key, u32, ()> {
    Batcher::builder(|keys: Vec<Key>| async move {
        Ok(keys.into_iter().map(|k| { let v = k.id * 10; (k, v) }).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(5))
    .max_batch_size(8)
    .build()
    .unwrap()
}

/// Loads `BAD` and a good key together (one bus): the bad key's caller is answered `Panicked`,
/// its bus-mate served (the driver reads the bus again, each key under its own guard, and
/// sends the others); then checks that many later loads (more than the batcher has slots) are
/// served.
async fn the_bad_key_fails_its_own_caller_and_later_loads_work(fault: Fault) {
    let b = keyed();
    let (bad, good) = answered(async { tokio::join!(b.load(Key::new(BAD, fault)), b.load(Key::new(1, fault))) }).await;
    assert!(matches!(bad, Err(Error::Panicked)), "{fault:?}: {bad:?}");
    if fault == Fault::Eq {
        // `eq(1, BAD)` panics whichever side calls it: the key compared second is blamed in
        // the driver, and the reader's own lookup in the answer map compares them again.
        assert!(matches!(good, Ok(Some(10)) | Err(Error::Panicked)), "{fault:?}: the bad key's bus-mate: {good:?}");
    } else {
        assert!(matches!(good, Ok(Some(10))), "{fault:?}: the bad key's bus-mate is served: {good:?}");
    }
    for id in 100..120 {
        assert_eq!(answered(b.load(Key::new(id, fault))).await.unwrap(), Some(id * 10), "{fault:?}");
    }
    assert_eq!(b.stats().panicked_batches, 0, "no batch failed as a whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_hash_panics_fails_its_caller_and_the_batcher_keeps_serving() {
    // Before: the driver unwound inside its dedup, both callers hung, later loads were refused.
    the_bad_key_fails_its_own_caller_and_later_loads_work(Fault::Hash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_eq_panics_fails_its_caller_and_the_batcher_keeps_serving() {
    the_bad_key_fails_its_own_caller_and_later_loads_work(Fault::Eq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_clone_panics_fails_its_caller_and_the_batcher_keeps_serving() {
    the_bad_key_fails_its_own_caller_and_later_loads_work(Fault::Clone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_drop_panics_is_answered_and_the_batcher_keeps_serving() {
    // The key is dropped when its slot is reset, after every caller of the batch has read its
    // answer: nobody is left to tell, and the batcher must go on.
    let b = keyed();
    for round in 0..20 {
        let (bad, good) =
            answered(async { tokio::join!(b.load(Key::new(BAD, Fault::Drop)), b.load(Key::new(1, Fault::Drop))) }).await;
        assert_eq!(bad.unwrap(), Some(BAD * 10), "round {round}");
        assert_eq!(good.unwrap(), Some(10), "round {round}");
    }
    for id in 100..120 {
        assert_eq!(answered(b.load(Key::new(id, Fault::Drop))).await.unwrap(), Some(id * 10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_with_a_key_whose_clone_panics_is_panicked() {
    let b = keyed();
    let many = answered(b.load_many([Key::new(1, Fault::Clone), Key::new(BAD, Fault::Clone)])).await;
    assert!(matches!(many, Err(Error::Panicked)), "{many:?}");
    let many = answered(b.load_many([Key::new(1, Fault::Hash), Key::new(BAD, Fault::Hash)])).await;
    assert!(matches!(many, Err(Error::Panicked)), "{many:?}");
    assert_eq!(answered(b.load(Key::new(2, Fault::Clone))).await.unwrap(), Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_drops_the_keys_it_keeps_from_the_caller_quietly() {
    // `load_many` itself drops the caller's keys it does not hand back: a duplicate, a key
    // whose load failed. Their `Drop` is user code: a duplicate's panic failed the whole call
    // (`Panicked`), and a failed load's unwound out of the caller's poll, where `load` drops
    // its key quietly (found by a cold review).
    let b = keyed();
    let keys = [Key::new(1, Fault::Drop), Key::new(BAD, Fault::Drop), Key::new(BAD, Fault::Drop)];
    let many = answered(b.load_many(keys)).await.expect("a duplicate's Drop does not fail the call");
    // The map holds the caller's first `BAD` key, armed: kept out of this test's drops.
    let mut values: Vec<u32> = many.into_iter().map(|(key, value)| { std::mem::forget(key); value }).collect();
    values.sort_unstable();
    assert_eq!(values, [10, BAD * 10]);
    b.shutdown().await;
    let closed = answered(b.load_many([Key::new(BAD, Fault::Drop), Key::new(2, Fault::Drop)])).await;
    assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
}

/// A value whose `Clone` panics for `BAD`, and whose `Drop` panics for the batch function's
/// own copy of `BAD + 1` (dropped with the result map, after every caller has read it).
#[derive(Debug, PartialEq)]
struct Value {
    id: u32,
    original: bool,
}

impl Clone for Value {
    fn clone(&self) -> Self {
        assert_ne!(self.id, BAD, "Clone panics");
        Value { id: self.id, original: false }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        if self.id == BAD + 1 && self.original && !std::thread::panicking() {
            panic!("Drop panics");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_whose_clone_panics_fails_only_its_caller() {
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, Value { id: k, original: true })).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(5))
    .build()
    .unwrap();
    for _ in 0..10 {
        let (bad, good, dropped) = answered(async { tokio::join!(b.load(BAD), b.load(1), b.load(BAD + 1)) }).await;
        assert!(matches!(bad, Err(Error::Panicked)), "{bad:?}");
        assert_eq!(good.unwrap().map(|v| v.id), Some(1));
        assert_eq!(dropped.unwrap().map(|v| v.id), Some(BAD + 1));
    }
    assert_eq!(answered(b.load(2)).await.unwrap().map(|v| v.id), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_batch_times_out_and_frees_its_place() {
    // One in-flight place: before `batch_timeout`, a hung call held it forever.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        seen.fetch_add(1, Ordering::Relaxed);
        async move {
            if keys.contains(&BAD) {
                std::future::pending::<()>().await;
            }
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_in_flight(1)
    .batch_timeout(Duration::from_millis(50))
    .build()
    .unwrap();
    assert!(matches!(answered(b.load(BAD)).await, Err(Error::Timeout)));
    for k in 0..5 {
        assert_eq!(answered(b.load(k)).await.unwrap(), Some(k));
    }
    let s = b.stats();
    assert_eq!(s.timed_out_batches, 1, "{s:?}");
    assert_eq!(Error::<std::io::Error>::Timeout.to_string(), "batch call timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_solo_run_says_timeout() {
    let (b, gate) = gated_backend(Overflow::RunAlone, Some(Duration::from_millis(50)));
    let _held = fill(&b).await;
    // At capacity: 1 << 20 runs alone, and hangs.
    assert!(matches!(answered(b.load(1 << 20)).await, Err(Error::Timeout)));
    gate.add_permits(100);
}

#[test]
fn batch_timeout_zero_is_a_config_error() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = rt.enter();
    let err = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect()) })
        .batch_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "batch_timeout");
}

/// Keys below 1000 block until the gate opens; 1 << 20 never returns.
fn gated_backend(overflow: Overflow, timeout: Option<Duration>) -> (Batcher<u32, u32, ()>, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let g = g.clone();
        async move {
            if keys.contains(&(1 << 20)) {
                std::future::pending::<()>().await;
            }
            if keys.iter().all(|&k| k < 1000) {
                g.acquire().await.unwrap().forget();
            }
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(2)
    .max_in_flight(1)
    .overflow(overflow);
    let b = match timeout {
        Some(t) => b.batch_timeout(t),
        None => b,
    };
    (b.build().unwrap(), gate)
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waker_whose_clone_panics_costs_its_own_poll_only() {
    // The waker is the caller's executor's code. Its clone panicked after the seat was claimed
    // and before it was written, so the driver waited for that seat, and its whole bus with
    // it, for ever (found by a cold review). Now the clone comes before the claim.
    fn clone(_: *const ()) -> std::task::RawWaker {
        panic!("injected: the waker's clone panics")
    }
    fn ignore(_: *const ()) {}
    static VTABLE: std::task::RawWakerVTable = std::task::RawWakerVTable::new(clone, ignore, ignore, ignore);
    // SAFETY: the vtable's functions never read the data pointer (null), and the contract on
    // clone is kept by never returning.
    let waker = unsafe { std::task::Waker::from_raw(std::task::RawWaker::new(std::ptr::null(), &VTABLE)) };
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(5))
    .build()
    .unwrap();
    let mut load = Box::pin(b.load(1));
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load.as_mut().poll(&mut std::task::Context::from_waker(&waker))
    }));
    assert!(polled.is_err(), "the clone's panic reaches its own poll");
    drop(load);
    // Its bus and the next ones leave as usual.
    assert_eq!(answered(b.load(2)).await.unwrap(), Some(2));
    assert_eq!(answered(b.load(3)).await.unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_whose_drop_panics_is_refused_without_a_panic() {
    // A refused caller's key is handed back and dropped by the engine: its `Drop` (user code)
    // must not panic out of the caller's poll, neither at capacity (`Overloaded`) nor after
    // shutdown (`Closed`).
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<Key>| {
        let g = g.clone();
        async move {
            if keys.iter().any(|k| k.id == 0) {
                g.acquire().await.unwrap().forget();
            }
            Ok::<_, ()>(keys.into_iter().map(|k| { let v = k.id * 10; (k, v) }).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(Overflow::Reject)
    .policy(busline::Policy::Car)
    .build()
    .unwrap();
    // The one place is held by key 0's batch; key 1 fills the next bus (one seat).
    let held = tokio::spawn({
        let b = b.clone();
        async move { b.load(Key::new(0, Fault::Drop)).await }
    });
    while b.stats().batches == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut queued = Box::pin(b.load(Key::new(1, Fault::Drop)));
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(queued.as_mut().poll(cx))).await;
    assert!(polled.is_pending(), "boarded the next bus");
    assert!(matches!(answered(b.load(Key::new(BAD, Fault::Drop))).await, Err(Error::Overloaded)));
    gate.add_permits(1);
    assert_eq!(answered(held).await.unwrap().unwrap(), Some(0));
    assert_eq!(answered(queued).await.unwrap(), Some(10));
    b.shutdown().await;
    assert!(matches!(answered(b.load(Key::new(BAD, Fault::Drop))).await, Err(Error::Closed)));
}
