//! busline tried cold, through its public API only, the way a new user would (issue 9's
//! "What to build" items 2–4): user code that panics everywhere, hung backends, shutdown under
//! every overflow policy, paused clocks, other runtimes and plain threads, large settings,
//! cancellation storms, keys that break the `Hash`/`Eq` contract, misuse of the builder.
//!
//! A test marked `#[ignore = "defect: ..."]` shows a defect that is not fixed yet: it fails
//! when run (`cargo test -p busline --features tower --test engine newcomer -- --ignored`; its
//! comment says what is observed, what is expected and where the cause is).
//!
//! No test asserts a timing: a bound of tens of seconds only turns a hang into a failure.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use busline::{Batcher, Error, Overflow, Policy};

use super::faults::Fault;
use super::groups::Nan;
use tokio::sync::Semaphore;

/// Turns a hang into a failure (never a timing assertion: a healthy call takes microseconds).
const HANG: Duration = Duration::from_secs(30);

async fn answered<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(HANG, fut).await.unwrap_or_else(|_| panic!("hung: {what}"))
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// A minimal executor on the calling thread, outside any tokio context.
fn block_on_plain_thread<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let start = std::time::Instant::now();
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < HANG, "hung on a plain thread");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn doubling() -> Batcher<u32, u32, ()> {
    Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>()) })
        .build()
        .unwrap()
}

/// Waits (on tokio's clock, a few ms at a time) until `cond` holds; a hang fails the test.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    answered(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// A backend that holds every batch containing key 0 until `gate` gets a permit, counts its
/// calls, and records whether a call started after `closed` was set.
struct Gated {
    gate: Arc<Semaphore>,
    calls: Arc<AtomicUsize>,
    /// Set by the test once `shutdown()` has returned.
    closed: Arc<AtomicBool>,
    late_calls: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Gated {
        Gated { gate: Arc::new(Semaphore::new(0)), calls: Arc::default(), closed: Arc::default(), late_calls: Arc::default() }
    }

    fn builder(&self) -> busline::Builder<u32, u32, ()> {
        let (gate, calls, closed, late) = (self.gate.clone(), self.calls.clone(), self.closed.clone(), self.late_calls.clone());
        Batcher::builder(move |keys: Vec<u32>| {
            calls.fetch_add(1, Ordering::SeqCst);
            if closed.load(Ordering::SeqCst) {
                late.fetch_add(1, Ordering::SeqCst);
            }
            let gate = gate.clone();
            async move {
                if keys.contains(&0) {
                    gate.acquire().await.unwrap().forget();
                }
                Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
            }
        })
    }

    /// Loads key 0 on a task of its own and waits until its batch has started: the gate then
    /// holds that batch (and its in-flight place) until the test opens it.
    async fn hold(&self, b: &Batcher<u32, u32, ()>) -> tokio::task::JoinHandle<Result<Option<u32>, Error<()>>> {
        let held = {
            let b = b.clone();
            tokio::spawn(async move { b.load(0).await })
        };
        until("the held batch started", || self.calls.load(Ordering::SeqCst) == 1).await;
        held
    }
}

// ---------------------------------------------------------------------------------------------
// Faults: user code that panics.

/// A value whose `Drop` panics when armed; its clones (what callers get) are not armed.
#[derive(Debug, PartialEq)]
struct DropBomb(u32, bool);

impl Clone for DropBomb {
    fn clone(&self) -> Self {
        DropBomb(self.0, false)
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        if self.1 && !std::thread::panicking() {
            panic!("value Drop panics");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_whose_drop_panics_in_the_result_map_costs_nobody_an_answer() {
    // The batch's map (armed values) is dropped by whoever releases the slot last: a caller,
    // the batch task, or the driver. None of them may unwind.
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, DropBomb(k, true))).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(1))
    .build()
    .unwrap();
    for round in 0..20u32 {
        let loads: Vec<_> = (0..8).map(|k| b.load(round * 8 + k)).collect();
        let answers = answered("loads of armed values", futures_util::future::join_all(loads)).await;
        for (k, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), Some(DropBomb(round * 8 + k as u32, false)));
        }
    }
    until("every slot released", || b.live_slots() == 0).await;
    answered("shutdown", b.shutdown()).await;
}

/// A key that panics in its `Hash`, `Eq`, `Clone` or `Drop` when it carries `BAD`, and only
/// after `ARMED` is set (so that building the test's own maps does not panic).
#[derive(Debug)]
struct Touchy(u32, Fault);


const BAD: u32 = 13;

impl Touchy {
    fn bad(&self, fault: Fault) -> bool {
        self.0 == BAD && self.1 == fault && !std::thread::panicking()
    }
}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.bad(Fault::Hash) {
            panic!("key Hash panics");
        }
        self.0.hash(state);
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        if self.bad(Fault::Eq) || other.bad(Fault::Eq) {
            panic!("key Eq panics");
        }
        self.0 == other.0
    }
}

impl Eq for Touchy {}

impl Clone for Touchy {
    fn clone(&self) -> Self {
        if self.bad(Fault::Clone) {
            panic!("key Clone panics");
        }
        Touchy(self.0, self.1)
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        if self.bad(Fault::Drop) {
            panic!("key Drop panics");
        }
    }
}

/// Every batch function answers `Touchy(k)` with `k`, without hashing the bad key (the map is
/// keyed by a fresh, harmless copy of each key), so the panic happens inside busline.
fn touchy_batcher(policy: Policy, overflow: Overflow) -> Batcher<Touchy, u32, ()> {
    Batcher::builder(|keys: Vec<Touchy>| async move {
        let map = keys.iter().map(|k| (Touchy(k.0, Fault::Hash), k.0)).filter(|(k, _)| k.0 != BAD).collect::<HashMap<_, _>>();
        // The batch's own copies of the keys (clones made by busline) are dropped here: a
        // panicking `Drop` is the batch function's own panic.
        std::mem::forget(keys);
        Ok::<_, ()>(map)
    })
    .policy(policy)
    .overflow(overflow)
    .build()
    .unwrap()
}

/// `one_bus`: every load of a round shares one bus (a window), so the key's `Eq` meets its
/// duplicate in the driver's de-duplication.
async fn a_touchy_key_fails_only_its_callers_and_the_batcher_keeps_serving(policy: Policy, fault: Fault, one_bus: bool) {
    let b = touchy_batcher(policy, Overflow::Wait);
    for round in 0..3u32 {
        let good = (0..4).map(|k| 100 * (round + 1) + k).collect::<Vec<_>>();
        let loads = good.iter().map(|&k| b.load(Touchy(k, fault))).collect::<Vec<_>>();
        // Twice, so that the driver compares the two (`Eq`).
        let bad = futures_util::future::join(b.load(Touchy(BAD, fault)), b.load(Touchy(BAD, fault)));
        let (good_answers, (bad_answer, bad_twin)) = answered("a batch with a touchy key", async { tokio::join!(futures_util::future::join_all(loads), bad) }).await;
        match fault {
            // Drop: nobody is affected, every caller is answered (the batch function left the
            // bad key out).
            Fault::Drop => {
                assert!(matches!(bad_answer, Ok(None)), "{fault:?}: {bad_answer:?}");
                assert!(matches!(bad_twin, Ok(None)), "{fault:?}: {bad_twin:?}");
                for a in &good_answers {
                    assert!(matches!(a, Ok(Some(_))), "{fault:?}: {a:?}");
                }
            }
            // `Eq` runs only if the two bad keys met in one bus.
            Fault::Eq if !one_bus => {
                assert!(matches!(bad_answer, Ok(None) | Err(Error::Panicked)), "{fault:?}: {bad_answer:?}");
            }
            // In one bus, the driver's `eq(first, second)` panics and the key compared second
            // is refused; the first is sent, and the batch function leaves it out.
            Fault::Eq => {
                let panicked = [&bad_answer, &bad_twin].iter().filter(|a| matches!(a, Err(Error::Panicked))).count();
                assert!(panicked >= 1, "{fault:?}: {bad_answer:?} / {bad_twin:?}");
                for a in [&bad_answer, &bad_twin] {
                    assert!(matches!(a, Ok(None) | Err(Error::Panicked)), "{fault:?}: {a:?}");
                }
            }
            _ => {
                assert!(matches!(bad_answer, Err(Error::Panicked)), "{fault:?}: {bad_answer:?}");
                assert!(matches!(bad_twin, Err(Error::Panicked)), "{fault:?}: {bad_twin:?}");
            }
        }
        // The other callers of the batch are answered, either with their value or (if the key
        // shared their batch) with `Panicked`; never left waiting.
        for a in &good_answers {
            assert!(matches!(a, Ok(Some(_)) | Err(Error::Panicked)), "{fault:?}: {a:?}");
        }
        // And the batcher keeps serving: a later load of a good key alone is answered.
        let later = answered("a later load", b.load(Touchy(7, fault))).await;
        assert!(matches!(later, Ok(Some(7))), "{fault:?} round {round}: {later:?}");
    }
    until("every slot released", || b.live_slots() == 0).await;
    answered("shutdown", b.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touchy_keys_under_natural_batching() {
    for fault in [Fault::Hash, Fault::Eq, Fault::Clone, Fault::Drop] {
        a_touchy_key_fails_only_its_callers_and_the_batcher_keeps_serving(Policy::natural(), fault, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touchy_keys_under_a_window() {
    for fault in [Fault::Hash, Fault::Eq, Fault::Clone, Fault::Drop] {
        a_touchy_key_fails_only_its_callers_and_the_batcher_keeps_serving(Policy::window(Duration::from_millis(2)), fault, true).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn touchy_keys_on_a_current_thread_runtime() {
    for fault in [Fault::Hash, Fault::Eq, Fault::Clone, Fault::Drop] {
        a_touchy_key_fails_only_its_callers_and_the_batcher_keeps_serving(Policy::window(Duration::from_micros(200)), fault, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touchy_keys_running_alone_at_capacity() {
    touchy_keys_running_alone(&[Fault::Hash, Fault::Eq, Fault::Clone]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_drop_panics_running_alone_is_answered() {
    // Seated, refused (`Overloaded`) or closed, a key whose `Drop` panics is dropped quietly;
    // before the fix, run alone it was dropped by `self.stage = Stage::Done` in `Ticket::poll_stage`
    // (core/src/load.rs, the `Stage::Alone` arm), outside any `catch_unwind`, and the panic
    // unwinds out of `load(..).await` in the caller's task. Expected `Ok(None)` (the batch
    // function left the key out), as when seated.
    touchy_keys_running_alone(&[Fault::Drop]).await;
}

async fn touchy_keys_running_alone(faults: &[Fault]) {
    // At capacity under `RunAlone` the key's `Clone` and the batch function run in the
    // caller's task; the answer's lookup hashes the key there too.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<Touchy>| {
        let g = g.clone();
        async move {
            if keys.iter().any(|k| k.0 == 0) {
                g.acquire().await.unwrap().forget();
            }
            let map = keys.iter().map(|k| (Touchy(k.0, Fault::Hash), k.0)).filter(|(k, _)| k.0 != BAD).collect::<HashMap<_, _>>();
            std::mem::forget(keys);
            Ok::<_, ()>(map)
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(Overflow::RunAlone)
    .build()
    .unwrap();
    let held = {
        let b = b.clone();
        tokio::spawn(async move { b.load(Touchy(0, Fault::Hash)).await })
    };
    until("the held batch started", || b.stats().batches == 1).await;
    let filler = {
        let b = b.clone();
        tokio::spawn(async move { b.load(Touchy(1, Fault::Hash)).await })
    };
    until("the next bus is full: a probe runs alone", || {
        let mut probe = Box::pin(b.load(Touchy(2, Fault::Hash)));
        let _ = poll_once(&mut probe);
        b.stats().ran_alone > 0
    })
    .await;
    for &fault in faults {
        // A panic out of the caller's own poll is not an answer: catch it to say so.
        let answer = answered("a touchy key running alone", futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(b.load(Touchy(BAD, fault))))).await;
        let answer = answer.map_err(|_| "the load's poll panicked");
        match fault {
            // Alone, nothing compares or hashes the key (the lookup in the batch function's
            // empty map does not hash): only its `Clone` (for the batch function's vector)
            // runs; the batch function left the bad key out.
            Fault::Hash | Fault::Eq | Fault::Drop => assert!(matches!(answer, Ok(Ok(None))), "{fault:?}: {answer:?}"),
            Fault::Clone => assert!(matches!(answer, Ok(Err(Error::Panicked))), "{fault:?}: {answer:?}"),
        }
        let good = answered("a good key running alone", b.load(Touchy(5, fault))).await;
        assert!(matches!(good, Ok(Some(5))), "{fault:?}: {good:?}");
    }
    gate.add_permits(1);
    assert!(matches!(answered("held", held).await.unwrap(), Ok(Some(0))));
    assert!(matches!(answered("filler", filler).await.unwrap(), Ok(Some(1))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_future_whose_drop_panics_after_a_timeout_is_answered_timeout() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("the batch future's Drop panics");
            }
        }
    }
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        let guard = PanicOnDrop;
        if keys.contains(&0) {
            std::future::pending::<()>().await;
        }
        std::mem::forget(guard);
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .max_in_flight(1)
    .batch_timeout(Duration::from_millis(50))
    .build()
    .unwrap();
    for _ in 0..3 {
        assert!(matches!(answered("a hung batch", b.load(0)).await, Err(Error::Timeout)));
        assert!(matches!(answered("the next batch", b.load(1)).await, Ok(Some(1))), "the in-flight place was freed");
    }
    assert_eq!(b.stats().timed_out_batches, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_function_that_panics_in_its_call_and_in_its_poll_fails_only_its_batch() {
    let b = Batcher::builder(|keys: Vec<u32>| {
        if keys.contains(&1) {
            panic!("the call panics");
        }
        async move {
            if keys.contains(&2) {
                panic!("the poll panics");
            }
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .policy(Policy::Car)
    .build()
    .unwrap();
    for _ in 0..3 {
        let (one, two, three) = answered("three cars", async { tokio::join!(b.load(1), b.load(2), b.load(3)) }).await;
        assert!(matches!(one, Err(Error::Panicked)), "{one:?}");
        assert!(matches!(two, Err(Error::Panicked)), "{two:?}");
        assert!(matches!(three, Ok(Some(3))), "{three:?}");
    }
    assert_eq!(b.stats().panicked_batches, 6);
}

#[test]
fn a_key_whose_drop_panics_while_the_runtime_shuts_down_is_answered_closed() {
    // Keys boarded on a bus that never left (a long window) when the driver's runtime goes
    // away: the driver's drop answers them `Closed` and drops what it gathered; the keys' own
    // `Drop` panics.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = Batcher::builder(|keys: Vec<Touchy>| async move {
        let map = keys.iter().map(|k| (Touchy(k.0, Fault::Hash), k.0)).collect::<HashMap<_, _>>();
        std::mem::forget(keys);
        Ok::<_, ()>(map)
    })
    .window(Duration::from_secs(3600))
    .runtime(rt.handle().clone())
    .build()
    .unwrap();
    let mut loads: Vec<_> = [10, BAD, 14, BAD].into_iter().map(|k| Box::pin(b.load(Touchy(k, Fault::Drop)))).collect();
    for load in &mut loads {
        assert!(poll_once(load).is_pending());
    }
    // Let the driver see them (and gather them ahead of the deadline, if it does).
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
    drop(rt);
    for load in loads {
        let answer = block_on_plain_thread(load);
        assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
    }
    assert!(matches!(block_on_plain_thread(b.load(Touchy(BAD, Fault::Drop))), Err(Error::Closed)));
}

#[test]
fn a_batch_cut_short_by_its_runtimes_shutdown_is_answered_closed_and_not_counted_failed() {
    // Before: its `Closed` ending was counted in `failed_batches` ("batches whose function
    // returned an error"), though the batch function returned nothing; metrics already said
    // `closed`, not `error`.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = Batcher::builder(|_keys: Vec<u32>| std::future::pending::<Result<HashMap<u32, u32>, ()>>())
        .runtime(rt.handle().clone())
        .build()
        .unwrap();
    let mut load = Box::pin(b.load(1));
    assert!(poll_once(&mut load).is_pending());
    rt.block_on(async {
        while b.stats().batches < 1 {
            tokio::task::yield_now().await;
        }
    });
    drop(rt);
    let answer = block_on_plain_thread(load);
    assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
    let s = b.stats();
    assert_eq!((s.batches, s.failed_batches, s.panicked_batches, s.timed_out_batches), (1, 0, 0, 0), "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// Timeouts and hung backends.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_batch_without_a_timeout_keeps_its_callers_but_shutdown_still_refuses_new_loads() {
    // No `batch_timeout`: a hung call keeps its callers waiting, as documented. But shutdown
    // must still close the batcher at once and send what is queued, whatever `max_in_flight`
    // says (core/README.md: "sends what is queued").
    let backend = Gated::new();
    let b = backend.builder().max_in_flight(1).build().unwrap();
    let hung = backend.hold(&b).await;
    // Seated on the next bus before the shutdown.
    let mut queued = Box::pin(b.load(1));
    assert!(poll_once(&mut queued).is_pending());
    let closing = {
        let b = b.clone();
        tokio::spawn(async move { b.shutdown().await })
    };
    until("closed", || b.is_closed()).await;
    assert!(matches!(answered("a load after shutdown", b.load(2)).await, Err(Error::Closed)));
    // The queued load is sent at shutdown although the one in-flight place is taken.
    assert!(matches!(answered("the queued load", queued).await, Ok(Some(1))));
    assert!(!hung.is_finished() && !closing.is_finished(), "the hung call still holds its callers and the shutdown");
    backend.gate.add_permits(1);
    assert!(matches!(answered("the hung load", hung).await.unwrap(), Ok(Some(0))));
    answered("shutdown", closing).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_frees_every_in_flight_place_under_default_settings() {
    // Default `max_in_flight` (2): two hung calls no longer wedge the batcher.
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        if keys.iter().any(|&k| k < 10) {
            std::future::pending::<()>().await;
        }
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .batch_timeout(Duration::from_millis(100))
    .build()
    .unwrap();
    let hung: Vec<_> = (0..6u32)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        })
        .collect();
    for h in hung {
        assert!(matches!(answered("a hung load", h).await.unwrap(), Err(Error::Timeout)));
    }
    assert!(matches!(answered("a later load", b.load(42)).await, Ok(Some(42))));
    until("every slot released", || b.live_slots() == 0).await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown is final under every overflow policy.

/// Loads from `threads` OS threads (each its own clone, its own current-thread runtime) while
/// the main task shuts down: after `shutdown()` returns, no batch call starts and every load
/// is `Closed`; none hangs.
fn shutdown_while_loading_from_threads(overflow: Overflow) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let backend = Gated::new();
    // Nothing is held at the gate (no key 0): small buses, one place, so that the batcher is
    // at capacity often and the overflow policy is exercised.
    let b = rt.block_on(async { backend.builder().max_batch_size(4).max_in_flight(1).overflow(overflow).build().unwrap() });
    let stop = Arc::new(AtomicBool::new(false));
    let after_close: Arc<Mutex<Vec<String>>> = Arc::default();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (b, stop, closed, after_close) = (b.clone(), stop.clone(), backend.closed.clone(), after_close.clone());
            std::thread::spawn(move || {
                let local = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let closed_before = closed.load(Ordering::SeqCst);
                    let k = 1 + t * 1_000_000 + n;
                    let answer = local.block_on(async { tokio::time::timeout(HANG, b.load(k)).await }).expect("a load hung");
                    if closed_before && !matches!(answer, Err(Error::Closed)) {
                        after_close.lock().unwrap().push(format!("{answer:?}"));
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answered("shutdown", b.shutdown()).await;
    });
    backend.closed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let loads: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(loads > 0);
    assert_eq!(backend.late_calls.load(Ordering::SeqCst), 0, "{overflow:?}: a batch call started after shutdown returned");
    assert!(after_close.lock().unwrap().is_empty(), "{overflow:?}: answered after shutdown: {:?}", after_close.lock().unwrap());
}

#[test]
fn shutdown_is_final_while_threads_load_under_wait() {
    shutdown_while_loading_from_threads(Overflow::Wait);
}

#[test]
fn shutdown_is_final_while_threads_load_under_reject() {
    shutdown_while_loading_from_threads(Overflow::Reject);
}

#[test]
fn shutdown_is_final_while_threads_load_under_run_alone() {
    shutdown_while_loading_from_threads(Overflow::RunAlone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_loads_waiting_for_room_closed() {
    // Under `Wait`, at capacity: a load waiting for room when shutdown runs was never accepted,
    // so it is `Closed`; the one seated on the full bus is sent.
    let backend = Gated::new();
    let b = backend.builder().max_batch_size(1).max_in_flight(1).build().unwrap();
    let spawn = |k: u32| {
        let b = b.clone();
        tokio::spawn(async move { b.load(k).await })
    };
    let hung = spawn(0);
    until("the held batch started", || backend.calls.load(Ordering::SeqCst) == 1).await;
    let mut seated = Box::pin(b.load(1));
    assert!(poll_once(&mut seated).is_pending(), "seated on the next bus");
    let waiting: Vec<_> = (2..6).map(spawn).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "at capacity, waiting for room");
    let closing = {
        let b = b.clone();
        tokio::spawn(async move { b.shutdown().await })
    };
    for w in waiting {
        let answer = answered("a load waiting for room", w).await.unwrap();
        assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
    }
    assert!(matches!(answered("the seated load", seated).await, Ok(Some(1))));
    backend.gate.add_permits(1);
    assert!(matches!(answered("the held load", hung).await.unwrap(), Ok(Some(0))));
    answered("shutdown", closing).await.unwrap();
    backend.closed.store(true, Ordering::SeqCst);
    assert!(matches!(b.load(7).await, Err(Error::Closed)));
    assert_eq!(backend.late_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_solo_run_then_no_call_starts() {
    let backend = Gated::new();
    let b = backend.builder().max_batch_size(1).max_in_flight(1).overflow(Overflow::RunAlone).build().unwrap();
    let spawn = |k: u32| {
        let b = b.clone();
        tokio::spawn(async move { b.load(k).await })
    };
    let hung = spawn(0);
    until("the held batch started", || backend.calls.load(Ordering::SeqCst) == 1).await;
    // Seated on the next bus (one seat) before any probe can take that seat.
    let mut seated = Box::pin(b.load(1));
    assert!(poll_once(&mut seated).is_pending());
    until("the next bus is full: a probe runs alone", || {
        let mut probe = Box::pin(b.load(5));
        let _ = poll_once(&mut probe);
        b.stats().ran_alone > 0
    })
    .await;
    // A solo run that itself hangs at the gate (it holds key 0 too).
    let before = b.stats().ran_alone;
    let alone = spawn(0);
    until("the solo run started", || b.stats().ran_alone > before).await;
    let closing = {
        let b = b.clone();
        tokio::spawn(async move { b.shutdown().await })
    };
    until("closed", || b.is_closed()).await;
    assert!(matches!(b.load(9).await, Err(Error::Closed)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!closing.is_finished(), "shutdown waits for the solo run");
    backend.gate.add_permits(2);
    for (what, h) in [("held", hung), ("alone", alone)] {
        let answer = answered(what, h).await.unwrap();
        assert!(answer.is_ok(), "{what}: {answer:?}");
    }
    assert!(matches!(answered("seated", seated).await, Ok(Some(1))));
    answered("shutdown", closing).await.unwrap();
    backend.closed.store(true, Ordering::SeqCst);
    assert!(matches!(b.load(0).await, Err(Error::Closed)));
    assert_eq!(backend.late_calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// `Reject` and `RunAlone` decide at once, under default batch sizes, on a multi-thread runtime.

async fn at_capacity_with_default_sizes(overflow: Overflow) -> (Gated, Batcher<u32, u32, ()>, Vec<tokio::task::JoinHandle<Result<Option<u32>, Error<()>>>>) {
    let backend = Gated::new();
    let b = backend.builder().max_in_flight(1).overflow(overflow).build().unwrap();
    let mut held = vec![backend.hold(&b).await];
    // Fill the next bus: `DEFAULT_MAX_BATCH_SIZE` seats.
    for k in 1..=busline::DEFAULT_MAX_BATCH_SIZE as u32 {
        let b = b.clone();
        held.push(tokio::spawn(async move { b.load(k).await }));
    }
    (backend, b, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_never_waits_at_capacity_with_default_sizes() {
    let (backend, b, held) = at_capacity_with_default_sizes(Overflow::Reject).await;
    until("rejecting", || {
        let mut probe = Box::pin(b.load(5_000_000));
        matches!(poll_once(&mut probe), Poll::Ready(Err(Error::Overloaded)))
    })
    .await;
    for _ in 0..100 {
        let mut probe = Box::pin(b.load(5_000_001));
        assert!(matches!(poll_once(&mut probe), Poll::Ready(Err(Error::Overloaded))), "decided on the first poll");
    }
    backend.gate.add_permits(1);
    for h in held {
        // A probe that boarded before the bus was full took a held load's seat: that one was
        // refused, as it should be.
        let answer = answered("a held load", h).await.unwrap();
        assert!(matches!(answer, Ok(Some(_)) | Err(Error::Overloaded)), "{answer:?}");
    }
    assert!(matches!(answered("after", b.load(3)).await, Ok(Some(3))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_alone_never_waits_at_capacity_with_default_sizes() {
    let (backend, b, held) = at_capacity_with_default_sizes(Overflow::RunAlone).await;
    until("running alone", || {
        let mut probe = Box::pin(b.load(5_000_000));
        matches!(poll_once(&mut probe), Poll::Ready(Ok(Some(5_000_000))))
    })
    .await;
    let before = backend.calls.load(Ordering::SeqCst);
    for k in 0..100 {
        let mut probe = Box::pin(b.load(6_000_000 + k));
        // The batch function's future is ready at once for these keys: answered on the first poll.
        assert!(matches!(poll_once(&mut probe), Poll::Ready(Ok(Some(v))) if v == 6_000_000 + k));
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), before + 100, "each ran alone");
    backend.gate.add_permits(1);
    for h in held {
        assert!(answered("a held load", h).await.unwrap().is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Time as the runtime sees it.

/// Each batch call: when it started (tokio's clock) and its keys.
type Calls<G> = Arc<Mutex<Vec<(G, Vec<u32>)>>>;

fn recording(policy: Policy) -> (Batcher<u32, u32, ()>, Calls<tokio::time::Instant>) {
    let calls: Calls<tokio::time::Instant> = Arc::default();
    let seen = calls.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        seen.lock().unwrap().push((tokio::time::Instant::now(), keys.clone()));
        async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
    })
    .policy(policy)
    .build()
    .unwrap();
    (b, calls)
}

#[tokio::test(start_paused = true)]
async fn paused_clock_a_window_leaves_at_its_deadline_by_auto_advance() {
    let (b, calls) = recording(Policy::window(Duration::from_millis(50)));
    let start = tokio::time::Instant::now();
    let (x, y, z) = tokio::join!(b.load(1), b.load(2), b.load(3));
    assert_eq!((x.unwrap(), y.unwrap(), z.unwrap()), (Some(1), Some(2), Some(3)));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "one bus");
    let waited = calls[0].0 - start;
    // On the paused clock, deterministic: the window, rounded up to tokio's 1 ms.
    assert!(waited >= Duration::from_millis(50) && waited <= Duration::from_millis(51), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn paused_clock_a_test_sleeping_between_loads_sees_each_window_close() {
    let (b, calls) = recording(Policy::window(Duration::from_millis(10)));
    for k in 0..5 {
        assert_eq!(b.load(k).await.unwrap(), Some(k));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.lock().unwrap().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn paused_clock_with_default_settings_and_a_timeout() {
    // The test's own `timeout` must not fire first.
    let (b, _) = recording(Policy::default());
    let answer = tokio::time::timeout(Duration::from_secs(1), b.load(5)).await;
    assert!(matches!(answer, Ok(Ok(Some(5)))), "{answer:?}");
}

#[tokio::test(start_paused = true)]
async fn paused_clock_a_hung_batch_times_out_by_auto_advance() {
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        if keys.contains(&0) {
            std::future::pending::<()>().await;
        }
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(5))
    .batch_timeout(Duration::from_secs(60))
    .max_in_flight(1)
    .build()
    .unwrap();
    let start = tokio::time::Instant::now();
    assert!(matches!(b.load(0).await, Err(Error::Timeout)));
    assert!(tokio::time::Instant::now() - start >= Duration::from_secs(60));
    assert_eq!(b.load(1).await.unwrap(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn paused_clock_grouped_and_coalescer_windows() {
    let grouped = busline::Grouped::builder(|g: u8, keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k + u32::from(g))).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(20))
    .build()
    .unwrap();
    let (a, c) = tokio::join!(grouped.load(1, 10), grouped.load(2, 10));
    assert_eq!((a.unwrap(), c.unwrap()), (Some(11), Some(12)));
    let sums = busline::Coalescer::builder(|| 0u64, |n: &mut u64, x: u64| *n += x, |n: u64| async move { Ok::<_, ()>(n) })
        .window(Duration::from_millis(20))
        .build()
        .unwrap();
    let (x, y) = tokio::join!(sums.coalesce(1), sums.coalesce(2));
    assert_eq!((*x.unwrap(), *y.unwrap()), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn paused_clock_debounce() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let save = busline::Debounce::builder(move |x: u32| {
        r.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, ()>(x) }
    })
    .quiet(Duration::from_millis(300))
    .build()
    .unwrap();
    let (a, c) = tokio::join!(save.call(1), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        save.call(2).await
    });
    assert_eq!((a.unwrap(), c.unwrap()), (2, 2));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn current_thread_runtime_windows_with_and_without_spin() {
    for spin in [true, false] {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b = Batcher::builder(move |keys: Vec<u32>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
        })
        .window(Duration::from_millis(2))
        .spin(spin)
        .build()
        .unwrap();
        let answers = answered("a window", futures_util::future::join_all((0..50).map(|k| b.load(k)))).await;
        assert!(answers.into_iter().all(|a| a.is_ok()));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "spin({spin}): one bus for 50 loads in one window");
    }
}

#[test]
fn block_on_a_current_thread_runtime_serves_loads() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = rt.block_on(async { Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }).window(Duration::from_millis(1)).build().unwrap() });
    // Each `block_on` drives the driver for as long as it runs.
    for k in 0..5 {
        assert_eq!(rt.block_on(b.load(k)).unwrap(), Some(k));
    }
    assert_eq!(rt.block_on(b.load_many([1, 2, 3])).unwrap().len(), 3);
    rt.block_on(b.shutdown());
    assert!(matches!(rt.block_on(b.load(1)), Err(Error::Closed)));
}

#[test]
fn builder_runtime_from_a_plain_thread_and_a_caller_on_another_runtime() {
    let driver_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // Built outside any runtime: the runtime is given.
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        // The batch's future runs on the driver's runtime: its timer works there.
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_micros(300))
    .runtime(driver_rt.handle().clone())
    .build()
    .unwrap();
    assert_eq!(block_on_plain_thread(b.load(1)).unwrap(), Some(1));
    let other = tokio::runtime::Builder::new_current_thread().build().unwrap(); // no time driver
    assert_eq!(other.block_on(b.load(2)).unwrap(), Some(2));
    // Without a runtime, a clear error.
    let err = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }).build().unwrap_err();
    assert_eq!(err.setting(), "runtime");
}

#[test]
fn a_runtime_without_a_time_driver_serves_spinning_windows_and_refuses_what_needs_timers() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let build = |spin: bool, timeout: Option<Duration>| {
        let mut builder = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
            .window(Duration::from_micros(500))
            .spin(spin)
            .runtime(rt.handle().clone());
        if let Some(t) = timeout {
            builder = builder.batch_timeout(t);
        }
        builder.build()
    };
    let b = build(true, None).unwrap();
    assert_eq!(rt.block_on(b.load(3)).unwrap(), Some(3));
    assert_eq!(build(false, None).unwrap_err().setting(), "runtime");
    assert_eq!(build(true, Some(Duration::from_secs(1))).unwrap_err().setting(), "runtime");
}

#[test]
fn a_solo_run_on_a_plain_thread_runs_a_batch_function_that_uses_tokio() {
    // Before the fix: `Err(Panicked)` ("there is no reactor running"): `Ticket::run_alone` called the
    // batch function, and `Stage::Alone` polls its future, in the caller's context without
    // entering `shared.runtime` (core/src/load.rs; only the timeout's timer is made there, in
    // `shared::await_batch`). On a caller's runtime without a time driver the same happens;
    // on a caller's other runtime the batch's timers and spawns land on that runtime.
    // The crate docs: "batch functions' futures run [on the driver's runtime]". Under
    // `RunAlone` at capacity the batch function's future is polled in the caller's task; a
    // caller on a plain thread (or a runtime without a timer) must still get its answer from
    // a batch function that uses tokio's timer.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let g = g.clone();
        async move {
            if keys.contains(&0) {
                g.acquire().await.unwrap().forget();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(Overflow::RunAlone)
    .runtime(rt.handle().clone())
    .build()
    .unwrap();
    let held = rt.spawn({
        let b = b.clone();
        async move { b.load(0).await }
    });
    while b.stats().batches == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut seated = Box::pin(b.load(1));
    assert!(poll_once(&mut seated).is_pending());
    let alone = block_on_plain_thread(futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(b.load(7))));
    let alone = alone.map_err(|_| "the caller's poll panicked");
    assert!(matches!(alone, Ok(Ok(Some(7)))), "{alone:?}");
    gate.add_permits(1);
    assert!(rt.block_on(held).unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Large settings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_max_batch_size_serves_a_first_load_and_a_burst() {
    for policy in [Policy::natural(), Policy::window(Duration::from_micros(100)), Policy::adaptive(Duration::from_millis(1))] {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b = Batcher::builder(move |keys: Vec<u32>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
        })
        .policy(policy)
        .max_batch_size(usize::MAX)
        .build()
        .unwrap();
        assert_eq!(answered("a first load", b.load(1)).await.unwrap(), Some(1));
        let tasks: Vec<_> = (0..20_000u32)
            .map(|k| {
                let b = b.clone();
                tokio::spawn(async move { b.load(k).await })
            })
            .collect();
        for (k, t) in tasks.into_iter().enumerate() {
            assert_eq!(answered("a burst", t).await.unwrap().unwrap(), Some(k as u32));
        }
        assert!(calls.load(Ordering::SeqCst) < 20_000, "{policy:?}: batched");
        until("every slot released", || b.live_slots() == 0).await;
        answered("shutdown", b.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_max_batch_size_with_a_capacity_bounds_what_is_admitted() {
    // "No limit per batch, at most `capacity` admitted": the capacity sets the bus size
    // (`capacity / (max_in_flight + 1)`), so behind a hung backend the overflow policy acts
    // once the capacity is taken instead of admitting loads without bound.
    let started = Arc::new(AtomicUsize::new(0));
    let b = {
        let started = Arc::clone(&started);
        Batcher::builder(move |_keys: Vec<u32>| {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<HashMap<u32, u32>, ()>>()
        })
        .max_batch_size(usize::MAX)
        .capacity(3_000)
        .overflow(Overflow::Reject)
        .build()
        .expect("an unlimited batch size with a capacity is a valid configuration")
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut seated = Vec::new();
    let mut refused = 0;
    for k in 0..10_000u32 {
        let mut load = Box::pin(b.load(k));
        match load.as_mut().poll(&mut cx) {
            Poll::Pending => seated.push(load),
            Poll::Ready(Err(Error::Overloaded)) => refused += 1,
            Poll::Ready(other) => panic!("load {k}: {other:?}"),
        }
        if k % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(refused > 0, "the capacity bounds what is admitted");
    assert!(seated.len() <= 4 * 1_000, "{} admitted past a capacity of 3,000 (rounded up to whole batches of 1,000)", seated.len());
    until("the hung backend is called", || started.load(Ordering::SeqCst) >= 1).await;
    drop(seated);
}

// ---------------------------------------------------------------------------------------------
// Cancellation storms.

async fn cancellation_storm(b: Batcher<u32, u32, ()>) {
    let mut tasks = Vec::new();
    for i in 0..3_000u32 {
        let b = b.clone();
        let give_up_after = i % 7;
        tasks.push(tokio::spawn(async move {
            let load = b.load(i % 500);
            tokio::pin!(load);
            // Poll the load `give_up_after` times around yields, then drop it (0: never
            // polled), or await it to the end (6).
            if give_up_after == 6 {
                return Some(load.await);
            }
            for _ in 0..give_up_after {
                if let Poll::Ready(answer) = std::future::poll_fn(|cx| Poll::Ready(load.as_mut().poll(cx))).await {
                    return Some(answer);
                }
                tokio::task::yield_now().await;
            }
            None
        }));
    }
    // Abort some tasks at arbitrary points too.
    for (i, t) in tasks.iter().enumerate() {
        if i % 11 == 0 {
            t.abort();
        }
    }
    for t in tasks {
        match answered("a storm task", t).await {
            Ok(Some(answer)) => assert!(matches!(answer, Ok(Some(_))), "{answer:?}"),
            Ok(None) => {}
            Err(e) => assert!(e.is_cancelled()),
        }
    }
    until("every slot released after the storm", || b.live_slots() == 0).await;
    assert_eq!(answered("a load after the storm", b.load(7)).await.unwrap(), Some(14));
    answered("shutdown", b.shutdown()).await;
}

fn storm_batcher(policy: Policy, max_batch_size: usize, overflow: Overflow) -> Batcher<u32, u32, ()> {
    Batcher::builder(|keys: Vec<u32>| async move {
        tokio::task::yield_now().await;
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
    })
    .policy(policy)
    .max_batch_size(max_batch_size)
    .overflow(overflow)
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_storm_natural() {
    cancellation_storm(storm_batcher(Policy::natural(), busline::DEFAULT_MAX_BATCH_SIZE, Overflow::Wait)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_storm_small_buses_waiting_for_room() {
    cancellation_storm(storm_batcher(Policy::window(Duration::from_micros(50)), 4, Overflow::Wait)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_storm_small_buses_running_alone() {
    cancellation_storm(storm_batcher(Policy::natural(), 4, Overflow::RunAlone)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_storm_unlimited_buses() {
    cancellation_storm(storm_batcher(Policy::window(Duration::from_micros(200)), usize::MAX, Overflow::Wait)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn cancellation_storm_current_thread() {
    cancellation_storm(storm_batcher(Policy::window(Duration::from_micros(100)), 8, Overflow::Wait)).await;
}

// ---------------------------------------------------------------------------------------------
// Keys that break the `Hash`/`Eq` contract, slow values.

/// A key whose `Hash` differs on every call (inconsistent with its `Eq`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fickle(u32);

static FICKLE: AtomicUsize = AtomicUsize::new(0);

impl Hash for Fickle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        FICKLE.fetch_add(1, Ordering::Relaxed).hash(state);
    }
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_break_hash_and_eq_get_answers_and_the_batcher_keeps_serving() {
    let fickle = Batcher::builder(|keys: Vec<Fickle>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k.clone(), k.0)).collect::<HashMap<_, _>>()) })
        .window(Duration::from_millis(1))
        .build()
        .unwrap();
    let answers = answered("fickle keys", futures_util::future::join_all((0..200).map(|i| fickle.load(Fickle(i % 10))))).await;
    // Whatever each gets (its value, or None when the lookup missed), every caller is answered.
    assert!(answers.iter().all(|a| matches!(a, Ok(Some(_)) | Ok(None))), "{answers:?}");
    until("fickle: slots released", || fickle.live_slots() == 0).await;
    let nan = Batcher::builder(|keys: Vec<Nan>| async move {
        let n = keys.len();
        Ok::<_, ()>(keys.into_iter().map(|k| (k.clone(), n)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(1))
    .build()
    .unwrap();
    let answers = answered("NaN keys", futures_util::future::join_all((0..200u64).map(|i| nan.load(Nan(i % 10))))).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(None))), "a NaN key is never found: {answers:?}");
    assert!(matches!(answered("NaN after", nan.load(Nan(1))).await, Ok(None)));
    until("NaN: slots released", || nan.live_slots() == 0).await;
}

/// A value whose `Clone` is slow (runs in each reader's task).
#[derive(Debug, PartialEq)]
struct Slow(u32);

impl Clone for Slow {
    fn clone(&self) -> Self {
        std::thread::sleep(Duration::from_millis(2));
        Slow(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_value_clones_answer_everyone() {
    let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, Slow(k))).collect::<HashMap<_, _>>()) }).build().unwrap();
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.load(i % 3).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(answered("a slow clone", t).await.unwrap().unwrap(), Some(Slow(i as u32 % 3)));
    }
}

// ---------------------------------------------------------------------------------------------
// Handles.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_while_loads_are_pending_answers_them() {
    let backend = Gated::new();
    let b = backend.builder().window(Duration::from_millis(5)).build().unwrap();
    let tasks: Vec<_> = (1..100u32)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        })
        .collect();
    drop(b);
    for t in tasks {
        let answer = answered("a load whose handle went", t).await.unwrap();
        assert!(matches!(answer, Ok(Some(_)) | Err(Error::Closed)), "{answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_per_request_serves_every_request() {
    let b = doubling();
    let tasks: Vec<_> = (0..5_000u32)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        })
        .collect();
    for (k, t) in tasks.into_iter().enumerate() {
        assert_eq!(answered("a clone per request", t).await.unwrap().unwrap(), Some(2 * k as u32));
    }
    assert!(b.stats().batches < 5_000);
}

// ---------------------------------------------------------------------------------------------
// Misuse: a clear error, never a panic or a hang.

#[tokio::test]
async fn bad_settings_are_config_errors() {
    let builder = || Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) });
    let cases: Vec<(&str, busline::Builder<u32, u32, ()>)> = vec![
        ("max_batch_size", builder().max_batch_size(0)),
        ("max_in_flight", builder().max_in_flight(0)),
        ("max_in_flight", builder().max_in_flight(usize::MAX)),
        ("capacity", builder().capacity(0)),
        ("capacity", builder().capacity(1)),
        ("capacity", builder().capacity(usize::MAX)),
        ("batch_timeout", builder().batch_timeout(Duration::ZERO)),
        ("policy.threshold", builder().policy(Policy::gated(Duration::from_millis(1), 0))),
    ];
    for (setting, b) in cases {
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.build())).expect("build panicked");
        let err = err.map(drop).unwrap_err();
        assert_eq!(err.setting(), setting, "{err}");
        assert!(!err.reason().is_empty());
    }
    // Extreme but valid settings build and serve.
    for b in [
        builder().window(Duration::MAX).max_batch_size(1),
        builder().batch_timeout(Duration::MAX),
        builder().policy(Policy::adaptive(Duration::MAX)),
        builder().policy(Policy::gated(Duration::MAX, usize::MAX)),
        builder().max_in_flight(62),
    ] {
        let b = b.build().expect("valid");
        assert_eq!(answered("an extreme setting", b.load(4)).await.unwrap(), Some(4));
    }
    let grouped = busline::Grouped::builder(|_: u8, keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
        .max_groups(0)
        .build();
    assert_eq!(grouped.map(drop).unwrap_err().setting(), "max_groups");
    let debounce = busline::Debounce::builder(|x: u32| async move { Ok::<_, ()>(x) }).quiet(Duration::ZERO).build();
    assert_eq!(debounce.map(drop).unwrap_err().setting(), "quiet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_with_a_zero_budget_is_refused_or_serves() {
    let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
        .policy(Policy::adaptive(Duration::ZERO))
        .build();
    if let Ok(b) = b {
        assert_eq!(answered("a zero budget", b.load(1)).await.unwrap(), Some(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Grouped and the other strategies, as the README shows them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_keeps_groups_apart_refuses_past_max_groups_and_reclaims() {
    let seen: Calls<u8> = Arc::default();
    let s = seen.clone();
    let gate = Arc::new(Semaphore::new(0));
    let g1 = gate.clone();
    let grouped = busline::Grouped::builder(move |g: u8, keys: Vec<u32>| {
        s.lock().unwrap().push((g, keys.clone()));
        let gate = (g == 1).then(|| g1.clone());
        async move {
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 10 + u32::from(g))).collect::<HashMap<_, _>>())
        }
    })
    .window(Duration::from_millis(2))
    .max_groups(1)
    .build()
    .unwrap();
    let (a, other) = tokio::join!(grouped.load(1, 3), async {
        // Group 1 is live (its batch held at the gate) when group 2 comes.
        until("group 1's batch started", || !seen.lock().unwrap().is_empty()).await;
        let other = grouped.load(2, 3).await;
        gate.add_permits(1);
        other
    });
    assert_eq!(a.unwrap(), Some(31));
    assert!(matches!(other, Err(Error::Overloaded)), "{other:?}");
    until("the group reclaimed", || grouped.live_groups() == 0).await;
    assert_eq!(answered("another group now", grouped.load(2, 3)).await.unwrap(), Some(32));
    assert!(seen.lock().unwrap().iter().all(|(_, keys)| keys == &[3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_as_the_readme_shows_them() {
    // SingleFlight: concurrent callers share one execution.
    let runs = Arc::new(AtomicUsize::new(0));
    let flights = busline::SingleFlight::<u32, u32, ()>::new();
    let run = |runs: Arc<AtomicUsize>| move || async move {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, ()>(7)
    };
    let (x, y) = tokio::join!(flights.run(1, run(runs.clone())), flights.run(1, run(runs.clone())));
    assert_eq!((x.unwrap(), y.unwrap(), runs.load(Ordering::SeqCst)), (7, 7, 1));
    // UseLast: the newest call wins.
    let search = busline::UseLast::new(|q: u32| async move {
        if q == 1 {
            // Never finishes by itself: superseded, it is dropped.
            std::future::pending::<()>().await;
        }
        Ok::<_, ()>(q)
    });
    let (a, b) = tokio::join!(search.call(1), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        search.call(2).await
    });
    assert_eq!((a.unwrap(), b.unwrap()), (2, 2));
    // Serial: one at a time, in arrival order.
    let busy = Arc::new(AtomicBool::new(false));
    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (bz, o) = (busy.clone(), order.clone());
    let journal = busline::Serial::new(move |x: u32| {
        let (bz, o) = (bz.clone(), o.clone());
        async move {
            assert!(!bz.swap(true, Ordering::SeqCst), "two at once");
            o.lock().unwrap().push(x);
            tokio::task::yield_now().await;
            bz.store(false, Ordering::SeqCst);
            Ok::<_, ()>(x)
        }
    });
    let answers = futures_util::future::join_all((0..20).map(|x| journal.call(x))).await;
    assert!(answers.into_iter().all(|a| a.is_ok()));
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    // Per group.
    let ledger = busline::Serial::per_group(|account: u8, x: u32| async move { Ok::<_, ()>(u32::from(account) + x) }).build().unwrap();
    assert_eq!(ledger.call(1, 2).await.unwrap(), 3);
    until("reclaimed", || ledger.live_groups() == 0).await;
}

// ---------------------------------------------------------------------------------------------
// The `tower` feature.

#[cfg(feature = "tower")]
mod tower {
    use super::*;
    use tower05::{Service, ServiceExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_answers_and_says_closed_after_shutdown() {
        let mut svc = doubling();
        let answer = answered("oneshot", svc.clone().oneshot(21)).await;
        assert_eq!(answer.unwrap(), Some(42));
        let ready = answered("ready", svc.ready()).await.unwrap();
        assert_eq!(answered("call", ready.call(4)).await.unwrap(), Some(8));
        svc.shutdown().await;
        assert!(matches!(answered("ready after shutdown", svc.ready()).await, Err(Error::Closed)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seated_service_futures_are_answered_after_the_last_handle_goes() {
        // A service future owns its batcher: seated, it is sent by the shutdown that dropping
        // the last handle requests.
        let b = doubling();
        let mut futs: Vec<_> = (0..10u32).map(|k| b.clone().call(k)).collect();
        for f in &mut futs {
            assert!(poll_once(f).is_pending());
        }
        drop(b);
        for (k, f) in futs.into_iter().enumerate() {
            assert_eq!(answered("a seated service future", f).await.unwrap(), Some(2 * k as u32));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_future_outlives_the_last_handle() {
        // tower's `oneshot` drops the service as soon as it has called it, before the future's
        // first poll. Before the fix (the future held only the shared state), the request made
        // through the last handle was refused `Closed`: that handle's drop had requested
        // shutdown before the future boarded.
        let b = doubling();
        let fut = b.oneshot(5);
        let answer = answered("oneshot through the last handle", fut).await;
        assert!(matches!(answer, Ok(Some(10))), "{answer:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn load_shed_sheds_at_capacity() {
        let gate = Arc::new(Semaphore::new(0));
        let g = gate.clone();
        let b = Batcher::builder(move |keys: Vec<u32>| {
            let g = g.clone();
            async move {
                if keys.contains(&0) {
                    g.acquire().await.unwrap().forget();
                }
                Ok::<_, std::io::Error>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
            }
        })
        .max_batch_size(1)
        .max_in_flight(1)
        .build()
        .unwrap();
        let held: Vec<_> = (0..2u32)
            .map(|k| {
                let b = b.clone();
                tokio::spawn(async move { b.load(k).await })
            })
            .collect();
        until("the held batch started", || b.stats().batches == 1).await;
        let mut shed = tower05::ServiceBuilder::new().load_shed().service(b.clone());
        let mut shed_seen = false;
        for _ in 0..1000 {
            let svc = answered("load_shed ready", shed.ready()).await.unwrap();
            let mut call = Box::pin(svc.call(9));
            match poll_once(&mut call) {
                Poll::Ready(Err(e)) if e.is::<tower05::load_shed::error::Overloaded>() => {
                    shed_seen = true;
                    break;
                }
                other => assert!(other.is_pending(), "boarded or shed, nothing else: {:?}", other.map(|r| r.map_err(|e| e.to_string()))),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(shed_seen, "load_shed never shed at capacity");
        gate.add_permits(1);
        for h in held {
            assert!(answered("held", h).await.unwrap().is_ok());
        }
        // Ready again once the bus left.
        assert_eq!(answered("after", b.load(3)).await.unwrap(), Some(3));
    }
}

// ---------------------------------------------------------------------------------------------
// Second pass: more of what users do.

#[tokio::test(flavor = "current_thread")]
async fn load_many_far_beyond_capacity_on_one_thread_waits_for_room_and_answers_all() {
    // Small buses, one place: most keys wait for room inside one task's `join_all`.
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        tokio::task::yield_now().await;
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k + 1)).collect::<HashMap<_, _>>())
    })
    .max_batch_size(8)
    .max_in_flight(1)
    .build()
    .unwrap();
    let found = answered("load_many of 10,000 keys", b.load_many(0..10_000u32)).await.unwrap();
    assert_eq!(found.len(), 10_000);
    assert!(found.iter().all(|(k, v)| *v == k + 1));
    assert!(b.stats().batches >= 10_000 / 8);
}

#[test]
fn shutdown_from_a_plain_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
        .window(Duration::from_millis(1))
        .runtime(rt.handle().clone())
        .build()
        .unwrap();
    assert_eq!(block_on_plain_thread(b.load(1)).unwrap(), Some(1));
    block_on_plain_thread(b.shutdown());
    assert!(b.is_closed());
    assert!(matches!(block_on_plain_thread(b.load(2)), Err(Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_whose_drop_panics_seated_at_shutdown_are_sent_and_answered() {
    let b = Batcher::builder(|keys: Vec<Touchy>| async move {
        let map = keys.iter().map(|k| (Touchy(k.0, Fault::Hash), k.0)).filter(|(k, _)| k.0 != BAD).collect::<HashMap<_, _>>();
        // The batch function's copies of the bad key panic in their `Drop` here, in its call:
        // that is the batch's own panic.
        std::mem::forget(keys);
        Ok::<_, ()>(map)
    })
    .window(Duration::from_secs(3600))
    .build()
    .unwrap();
    let loads = futures_util::future::join_all([1, BAD, 2, BAD].map(|k| b.load(Touchy(k, Fault::Drop))));
    let (answers, ()) = answered("shutdown with armed keys seated", async {
        tokio::join!(loads, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            b.shutdown().await
        })
    })
    .await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.map_err(|e| format!("{e:?}"))).collect();
    assert_eq!(answers, [Ok(Some(1)), Ok(None), Ok(Some(2)), Ok(None)]);
    assert_eq!(b.live_slots(), 0);
}

#[tokio::test(start_paused = true)]
async fn paused_clock_a_caller_giving_up_before_the_window_closes() {
    let (b, calls) = recording(Policy::window(Duration::from_millis(50)));
    assert!(tokio::time::timeout(Duration::from_millis(10), b.load(1)).await.is_err(), "the caller gave up first");
    assert_eq!(b.load(2).await.unwrap(), Some(2));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.iter().map(|(_, keys)| keys.clone()).collect::<Vec<_>>(), [vec![2]], "the gone caller's key was not sent");
    drop(calls);
    assert_eq!(b.live_slots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_hung_batch_times_out_and_the_group_is_reclaimed() {
    let grouped = busline::Grouped::builder(|g: u8, keys: Vec<u32>| async move {
        if g == 0 {
            std::future::pending::<()>().await;
        }
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .batch_timeout(Duration::from_millis(50))
    .build()
    .unwrap();
    let (hung, fine) = answered("grouped", async { tokio::join!(grouped.load(0, 1), grouped.load(1, 1)) }).await;
    assert!(matches!(hung, Err(Error::Timeout)), "{hung:?}");
    assert_eq!(fine.unwrap(), Some(1));
    until("groups reclaimed", || grouped.live_groups() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documented limit (crate docs, nested loads): a batch function that loads through its own batcher deeper than max_in_flight deadlocks"]
async fn a_batch_function_that_loads_through_its_own_batcher() {
    // DataLoader-style nesting: the batch for key k loads k - 1 through the same batcher (a
    // tree of entities, each resolved through one loader). With the default `max_in_flight`
    // of 2, the third level waits for an in-flight place that its own ancestors hold: every
    // caller hangs, and nothing in the docs says so. Expected: answered (or documented and
    // refused with an error); observed: hung (with no `batch_timeout`, forever).
    type Nested = Batcher<u32, u32, String>;
    let cell: Arc<std::sync::OnceLock<Nested>> = Arc::default();
    let inner = cell.clone();
    let b: Nested = Batcher::builder(move |keys: Vec<u32>| {
        let me = inner.get().expect("set before the first load").clone();
        async move {
            let mut out = HashMap::new();
            for k in keys {
                let below = if k == 0 { 0 } else { me.load(k - 1).await.map_err(|e| format!("{e:?}"))?.unwrap_or(0) };
                out.insert(k, below + 1);
            }
            Ok::<_, String>(out)
        }
    })
    .build()
    .unwrap();
    let _ = cell.set(b.clone());
    let depth = answered("a nested load three levels deep", b.load(3)).await;
    assert!(matches!(depth, Ok(Some(4))), "{depth:?}");
}

#[cfg(feature = "tower")]
mod tower_readiness {
    use super::*;
    use tower05::ServiceExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_waiting_at_capacity_is_answered_by_shutdown() {
        let backend = Gated::new();
        let b = backend.builder().max_batch_size(1).max_in_flight(1).build().unwrap();
        let mut held = vec![backend.hold(&b).await];
        // The next bus (one seat) full.
        let mut seated = Box::pin(b.load(1));
        assert!(poll_once(&mut seated).is_pending());
        held.push({
            let b = b.clone();
            tokio::spawn(async move { b.load(2).await })
        });
        // Once the driver has seen the full bus stuck, readiness is `Pending`.
        let mut svc = b.clone();
        until("not ready at capacity", || {
            use tower05::Service;
            svc.poll_ready(&mut Context::from_waker(std::task::Waker::noop())).is_pending()
        })
        .await;
        let ready = tokio::spawn(async move { svc.ready().await.map(drop) });
        let closing = {
            let b = b.clone();
            tokio::spawn(async move { b.shutdown().await })
        };
        let readiness = answered("readiness after shutdown", ready).await.unwrap();
        assert!(matches!(readiness, Err(Error::Closed)), "{readiness:?}");
        backend.gate.add_permits(1);
        assert!(matches!(answered("held", held.remove(0)).await.unwrap(), Ok(Some(0))));
        assert!(matches!(answered("seated", seated).await, Ok(Some(1))));
        // Key 2 either waited for room (refused `Closed` by the shutdown) or never boarded.
        assert!(matches!(answered("the third", held.remove(0)).await.unwrap(), Err(Error::Closed)));
        answered("shutdown", closing).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_batchers_dropped_without_shutdown_leave_no_task_behind() {
    // A service that builds a batcher per burst and drops it: every driver and batch task
    // ends once its last handle is gone.
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for round in 0..200u32 {
        let policy = match round % 4 {
            0 => Policy::natural(),
            1 => Policy::window(Duration::from_micros(200)),
            2 => Policy::window(Duration::from_secs(3600)),
            _ => Policy::adaptive(Duration::from_millis(1)),
        };
        let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
            .policy(policy)
            .max_batch_size(if round % 2 == 0 { usize::MAX } else { 64 })
            .build()
            .unwrap();
        if round % 4 != 2 {
            assert_eq!(answered("a load on a fresh batcher", b.load(round)).await.unwrap(), Some(round));
        }
        drop(b);
    }
    until("every driver ended", || metrics.num_alive_tasks() <= baseline).await;
}

/// Loads that give up at every stage (boarding, seated, waiting for room, running alone) while
/// `shutdown()` runs, on fresh batchers: every load ends, shutdown returns, and every slot
/// comes back.
async fn cancellations_racing_shutdown(overflow: Overflow, max_batch_size: usize) {
    let (mut served, mut closed) = (0, 0);
    for round in 0..30u32 {
        let b = storm_batcher(Policy::window(Duration::from_micros(u64::from(round % 3) * 50)), max_batch_size, overflow);
        let tasks: Vec<_> = (0..400u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let load = b.load(i % 50);
                    tokio::pin!(load);
                    for _ in 0..(i % 5) {
                        if let Poll::Ready(answer) = std::future::poll_fn(|cx| Poll::Ready(load.as_mut().poll(cx))).await {
                            return Some(answer);
                        }
                        tokio::task::yield_now().await;
                    }
                    if i % 5 == 4 { Some(load.await) } else { None }
                })
            })
            .collect();
        // Shut down at a different point of the storm each round (some rounds after it).
        let mut yields = 0;
        while b.stats().requests < u64::from(round % 10) * 30 && yields < 10_000 {
            tokio::task::yield_now().await;
            yields += 1;
        }
        answered("shutdown racing cancellations", b.shutdown()).await;
        for t in tasks {
            if let Some(answer) = answered("a racing load", t).await.unwrap() {
                match answer {
                    Ok(Some(_)) => served += 1,
                    Err(Error::Closed) => closed += 1,
                    Err(Error::Overloaded) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        until("every slot released after shutdown", || b.live_slots() == 0).await;
    }
    // The storm met the shutdown at many points: both outcomes happened.
    assert!(served > 0 && closed > 0, "served {served}, closed {closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_racing_shutdown_under_wait() {
    cancellations_racing_shutdown(Overflow::Wait, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_racing_shutdown_under_reject() {
    cancellations_racing_shutdown(Overflow::Reject, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_racing_shutdown_under_run_alone() {
    cancellations_racing_shutdown(Overflow::RunAlone, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_racing_shutdown_unlimited() {
    cancellations_racing_shutdown(Overflow::Wait, usize::MAX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strategies_answer_a_panic_as_panicked_and_keep_serving() {
    // SingleFlight: every waiter of the panicking flight gets `Panicked`; the next run works.
    let flights = busline::SingleFlight::<u32, u32, ()>::new();
    let boom = || async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if true {
            panic!("flight panics");
        }
        Ok::<u32, ()>(0)
    };
    let (x, y) = answered("flights", async { tokio::join!(flights.run(1, boom), flights.run(1, boom)) }).await;
    assert!(matches!((x, y), (Err(Error::Panicked), Err(Error::Panicked))));
    assert_eq!(answered("next flight", flights.run(1, || async { Ok::<_, ()>(5) })).await.unwrap(), 5);
    // Serial: a panic is its own call's alone.
    let serial = busline::Serial::new(|x: u32| async move {
        if x == 13 {
            panic!("serial call panics");
        }
        Ok::<_, ()>(x)
    });
    let answers = answered("serial", futures_util::future::join_all([1, 13, 2].map(|x| serial.call(x)))).await;
    assert!(matches!(answers[..], [Ok(1), Err(Error::Panicked), Ok(2)]), "{answers:?}");
    // UseLast and Debounce: the run's callers get `Panicked`; the next call runs.
    let last = busline::UseLast::new(|x: u32| async move {
        if x == 13 {
            panic!("use-last panics");
        }
        Ok::<_, ()>(x)
    });
    assert!(matches!(answered("use-last", last.call(13)).await, Err(Error::Panicked)));
    assert_eq!(answered("use-last after", last.call(3)).await.unwrap(), 3);
    let debounce = busline::Debounce::builder(|x: u32| async move {
        if x == 13 {
            panic!("debounce panics");
        }
        Ok::<_, ()>(x)
    })
    .quiet(Duration::from_millis(5))
    .build()
    .unwrap();
    assert!(matches!(answered("debounce", debounce.call(13)).await, Err(Error::Panicked)));
    assert_eq!(answered("debounce after", debounce.call(4)).await.unwrap(), 4);
    // Coalescer: a panicking fold fails its departure only.
    let sums = busline::Coalescer::builder(
        || 0u64,
        |n: &mut u64, x: u64| {
            if x == 13 {
                panic!("fold panics");
            }
            *n += x
        },
        |n: u64| async move { Ok::<_, ()>(n) },
    )
    .build()
    .unwrap();
    assert!(matches!(answered("coalesce", sums.coalesce(13)).await, Err(Error::Panicked)));
    assert_eq!(*answered("coalesce after", sums.coalesce(2)).await.unwrap(), 2);
}

#[test]
fn a_runtime_handle_whose_runtime_is_gone_gives_closed_loads_not_a_panic() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let handle = rt.handle().clone();
    drop(rt);
    for timeout in [None, Some(Duration::from_secs(1))] {
        let mut builder = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
            .window(Duration::from_millis(1))
            .runtime(handle.clone());
        if let Some(t) = timeout {
            builder = builder.batch_timeout(t);
        }
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build())).expect("build panicked");
        match built {
            Ok(b) => assert!(matches!(block_on_plain_thread(b.load(1)), Err(Error::Closed))),
            Err(e) => assert_eq!(e.setting(), "runtime"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_giving_up_on_a_solo_run_whose_future_panics_in_drop() {
    // Before the fix: dropping a `Load` that runs alone dropped the batch function's future in
    // the caller's `drop` (core/src/load.rs: `Stage::Alone` was dropped with the `Ticket`, no
    // `drop_quietly`), so its panicking `Drop` unwound into whatever dropped the load: here
    // tokio's `timeout`, in the caller's task. A batch's future dropped by the engine (a
    // timed-out batch) is dropped quietly. Expected: the caller sees its own `Elapsed`.
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("the batch future's Drop panics");
            }
        }
    }
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let g = g.clone();
        async move {
            let guard = PanicOnDrop;
            if keys.contains(&0) || keys.contains(&7) {
                g.acquire().await.unwrap().forget();
            }
            std::mem::forget(guard);
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(Overflow::RunAlone)
    .build()
    .unwrap();
    let held = {
        let b = b.clone();
        tokio::spawn(async move { b.load(0).await })
    };
    until("the held batch started", || b.stats().batches == 1).await;
    until("the next bus is full: a probe runs alone", || {
        let mut probe = Box::pin(b.load(5));
        let _ = poll_once(&mut probe);
        b.stats().ran_alone > 0
    })
    .await;
    let gave_up = {
        let b = b.clone();
        tokio::spawn(async move { tokio::time::timeout(Duration::from_millis(20), b.load(7)).await.is_err() })
    };
    let gave_up = answered("the caller that gives up", gave_up).await;
    assert!(matches!(gave_up, Ok(true)), "the caller's task: {:?}", gave_up.map_err(|e| e.is_panic()));
    gate.add_permits(2);
    assert!(answered("held", held).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn car_sends_each_request_at_once_only_up_to_max_in_flight() {
    // `Policy::Car`'s docs: "Every request departs alone, at once". It departs at once only
    // while a place is free: `max_in_flight` (default 2) bounds the concurrent calls under Car
    // too, and a third request waits (the docs now say so).
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let (r, m) = (r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .policy(Policy::Car)
    .build()
    .unwrap();
    let answers = answered("cars", futures_util::future::join_all((0..8).map(|k| b.load(k)))).await;
    assert!(answers.into_iter().all(|a| a.is_ok()));
    assert!(most.load(Ordering::SeqCst) <= busline::DEFAULT_MAX_IN_FLIGHT, "Car's concurrency is bounded by max_in_flight");
}

#[test]
fn a_driver_on_a_dedicated_current_thread_runtime_serves_callers_elsewhere() {
    // A current_thread runtime driven by a thread of its own (`block_on` of a future that
    // never ends), given to `Builder::runtime`; callers on a multi-thread runtime.
    let driver_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let handle = driver_rt.handle().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver_thread = std::thread::spawn(move || driver_rt.block_on(async move { stop_rx.await.ok() }));
    let callers = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        tokio::time::sleep(Duration::from_micros(100)).await;
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 3)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_micros(500))
    .batch_timeout(Duration::from_secs(10))
    .runtime(handle)
    .build()
    .unwrap();
    callers.block_on(async {
        let tasks: Vec<_> = (0..1000u32)
            .map(|k| {
                let b = b.clone();
                tokio::spawn(async move { b.load(k).await })
            })
            .collect();
        for (k, t) in tasks.into_iter().enumerate() {
            assert_eq!(answered("a caller elsewhere", t).await.unwrap().unwrap(), Some(3 * k as u32));
        }
        answered("shutdown", b.shutdown()).await;
    });
    stop_tx.send(()).unwrap();
    driver_thread.join().unwrap();
}

#[cfg(feature = "tower")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_alone_service_is_ready_at_capacity() {
    // `Overflow::RunAlone`: "decide at once and never wait". Through the tower service,
    // `poll_ready` must not hold a caller at capacity (it was `Pending` on the stall flag): its
    // request runs alone at once.
    use tower05::ServiceExt;
    let backend = Gated::new();
    let b = backend.builder().max_batch_size(1).max_in_flight(1).overflow(Overflow::RunAlone).build().unwrap();
    let held = backend.hold(&b).await;
    let mut seated = Box::pin(b.load(1));
    assert!(poll_once(&mut seated).is_pending());
    // Let the driver (woken by the bus's last seat) see the full bus stuck and raise its stall
    // flag, which readiness reads.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut svc = b.clone();
    let ready = tokio::time::timeout(Duration::from_secs(1), svc.ready()).await.map(|r| r.map(drop));
    backend.gate.add_permits(1);
    assert!(answered("held", held).await.unwrap().is_ok());
    assert!(matches!(ready, Ok(Ok(()))), "{ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waker_whose_wake_panics_costs_nobody_else_an_answer() {
    // The waker is the caller's executor's code, called by the batch task that publishes (or
    // the driver). A panic in it must not keep the other callers of the batch from their
    // answers, nor stop the batcher.
    struct Bad;
    impl std::task::Wake for Bad {
        fn wake(self: Arc<Self>) {
            panic!("injected: the waker's wake panics");
        }
        fn wake_by_ref(self: &Arc<Self>) {
            panic!("injected: the waker's wake_by_ref panics");
        }
    }
    let bad = std::task::Waker::from(Arc::new(Bad));
    let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
        .window(Duration::from_millis(5))
        .build()
        .unwrap();
    for round in 0..3u32 {
        let mut first = Box::pin(b.load(1000 + round));
        assert!(first.as_mut().poll(&mut Context::from_waker(&bad)).is_pending());
        let others = futures_util::future::join_all((0..20).map(|k| b.load(round * 100 + k)));
        let answers = answered("the batch of a caller whose waker panics", others).await;
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
        // The caller itself, polled again with a sound waker, has its answer.
        assert_eq!(answered("the caller", first).await.unwrap(), Some(1000 + round));
    }
    assert_eq!(answered("a later load", b.load(7)).await.unwrap(), Some(7));
    until("every slot released", || b.live_slots() == 0).await;
    answered("shutdown", b.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_fails_only_its_own_callers_not_its_co_passengers() {
    // Before the fix the batch was the unit ("fails exactly that batch"); issue 9 asks that
    // a panic reach "each affected caller". The callers of the bus's other keys are not
    // affected by key 13's `Hash`, yet they got `Panicked` too: the de-duplication
    // (core/src/driver/batch.rs, `collect`) runs under one `catch_unwind` for the whole bus
    // and publishes one outcome. Expected: the other keys sent and answered, key 13's callers
    // `Panicked`.
    for fault in [Fault::Hash, Fault::Clone] {
        let b = touchy_batcher(Policy::window(Duration::from_millis(5)), Overflow::Wait);
        let loads = futures_util::future::join_all([1, 2, BAD, 3].map(|k| b.load(Touchy(k, fault))));
        let answers = answered("a bus with a poison key", loads).await;
        let answers: Vec<_> = answers.into_iter().map(|a| a.map_err(|e| format!("{e:?}"))).collect();
        assert_eq!(answers, [Ok(Some(1)), Ok(Some(2)), Err("Panicked".to_string()), Ok(Some(3))], "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shared_of_a_per_key_batcher_and_a_failed_key() {
    // `builder_per_key`: "a key's own error reaches only that key's callers, as
    // `Error::Key`". Before the fix, through `load_shared` it did not: the caller of the failed key got
    // `Ok(map)`, its key simply absent, as if "not found" (core/src/load.rs: `WholeMap::read`
    // returns `answers.values` without looking at the failures). Expected `Err(Key(..))`.
    let b = Batcher::builder_per_key(|ids: Vec<u32>| async move {
        Ok::<_, String>(ids.into_iter().map(|id| (id, if id == 13 { Err(format!("row {id}")) } else { Ok(id) })).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(2))
    .build()
    .unwrap();
    let (good, bad, plain) = answered("per-key", async { tokio::join!(b.load_shared(1), b.load_shared(13), b.load(13)) }).await;
    assert_eq!(good.unwrap().get(&1), Some(&1));
    assert_eq!(plain.unwrap_err().key_error().map(String::as_str), Some("row 13"));
    let bad = bad.map(|map| map.len());
    assert!(matches!(&bad, Err(e) if e.key_error().map(String::as_str) == Some("row 13")), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_code_blocking_on_loads_from_blocking_threads_and_block_in_place() {
    let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
        .window(Duration::from_micros(300))
        .build()
        .unwrap();
    let handle = tokio::runtime::Handle::current();
    let blocking: Vec<_> = (0..16u32)
        .map(|k| {
            let (b, handle) = (b.clone(), handle.clone());
            tokio::task::spawn_blocking(move || handle.block_on(b.load(k)))
        })
        .collect();
    for (k, t) in blocking.into_iter().enumerate() {
        assert_eq!(answered("spawn_blocking + Handle::block_on", t).await.unwrap().unwrap(), Some(k as u32));
    }
    let in_place = tokio::task::block_in_place(|| handle.block_on(b.load(99)));
    assert_eq!(in_place.unwrap(), Some(99));
}

#[tokio::test(flavor = "current_thread")]
async fn spawn_blocking_on_a_current_thread_runtime() {
    let b = Batcher::builder(|keys: Vec<u32>| async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
        .window(Duration::from_micros(300))
        .build()
        .unwrap();
    let handle = tokio::runtime::Handle::current();
    let t = tokio::task::spawn_blocking({
        let b = b.clone();
        move || handle.block_on(b.load(5))
    });
    // The test's task awaits, so the runtime (and its driver) runs meanwhile.
    assert_eq!(answered("spawn_blocking on current_thread", t).await.unwrap().unwrap(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_code_panics_fails_only_its_caller() {
    // `Grouped` and `PerGroup`: the group's `Hash`, `Eq`, `Clone` or `Drop` panicking reaches
    // only the caller that ran it (the README's "Per group" list).
    for fault in [Fault::Hash, Fault::Eq, Fault::Clone, Fault::Drop] {
        let grouped = busline::Grouped::builder(|g: Touchy, keys: Vec<u32>| {
            let id = g.0;
            std::mem::forget(g);
            async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k + id)).collect::<HashMap<_, _>>()) }
        })
        .window(Duration::from_millis(1))
        .build()
        .unwrap();
        let bad = answered("a touchy group", futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(grouped.load(Touchy(BAD, fault), 1)))).await;
        let bad = bad.map_err(|_| "the load's poll panicked");
        match fault {
            // Seen once, the group's `Eq` never needs to run; its `Drop` is caught.
            Fault::Eq | Fault::Drop => assert!(matches!(bad, Ok(Ok(Some(14)))), "{fault:?}: {bad:?}"),
            _ => assert!(matches!(bad, Ok(Err(Error::Panicked))), "{fault:?}: {bad:?}"),
        }
        assert_eq!(answered("a sound group", grouped.load(Touchy(2, fault), 1)).await.unwrap(), Some(3), "{fault:?}");
        until("groups reclaimed", || grouped.live_groups() == 0).await;
        let serial = busline::Serial::per_group(|g: Touchy, x: u32| {
            let id = g.0;
            std::mem::forget(g);
            async move { Ok::<_, ()>(x + id) }
        })
        .build()
        .unwrap();
        let bad = answered("a touchy serial group", futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(serial.call(Touchy(BAD, fault), 1)))).await;
        let bad = bad.map_err(|_| "the call's poll panicked");
        match fault {
            Fault::Eq | Fault::Drop => assert!(matches!(bad, Ok(Ok(14))), "{fault:?}: {bad:?}"),
            _ => assert!(matches!(bad, Ok(Err(Error::Panicked))), "{fault:?}: {bad:?}"),
        }
        assert_eq!(answered("a sound serial group", serial.call(Touchy(2, fault), 1)).await.unwrap(), 3, "{fault:?}");
        until("serial groups reclaimed", || serial.live_groups() == 0).await;
    }
}

/// One run of a paused-clock scenario on a fresh runtime: 200 tasks, each sleeping a
/// different virtual time and then loading, through a windowed batcher. Returns each batch
/// call's virtual time (from the start) and keys.
fn paused_scenario(policy: Policy) -> Vec<(Duration, Vec<u32>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let (b, calls) = recording(policy);
        let tasks: Vec<_> = (0..200u32)
            .map(|k| {
                let b = b.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(u64::from(k * 7919 % 20_000))).await;
                    b.load(k).await
                })
            })
            .collect();
        for (k, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), Some(k as u32));
        }
        let calls = calls.lock().unwrap();
        calls.iter().map(|(at, keys)| (*at - start, keys.clone())).collect()
    })
}

#[test]
fn paused_clock_runs_are_deterministic_with_spawned_tasks() {
    for policy in [Policy::window(Duration::from_millis(3)), Policy::window(Duration::from_micros(300)), Policy::gated(Duration::from_millis(2), 4), Policy::adaptive(Duration::from_millis(2))] {
        let first = paused_scenario(policy);
        assert!(first.len() > 1 && first.len() < 200, "{policy:?}: batched: {}", first.len());
        for _ in 0..3 {
            assert_eq!(paused_scenario(policy), first, "{policy:?}: the same batches at the same virtual times");
        }
    }
}
