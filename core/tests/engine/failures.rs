//! Failure semantics: errors and panics reach exactly the callers of their batch; shutdown and
//! dropped handles leave nobody hanging; overflow policies; cancellation frees everything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{assert_slots_released, fill, shutdown_started};
use busline::{Batcher, Error, Overflow, Policy};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::Semaphore;

/// Polls `fut` once (boarding it, for a `Load`) and reports what it said.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

#[derive(Debug, PartialEq)]
struct Boom(u32);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom {}", self.0)
    }
}

impl std::error::Error for Boom {}

/// Keys 100..200 make their batch fail, 200..300 panic.
fn faulty() -> Batcher<u32, u32, Boom> {
    Batcher::builder(|keys: Vec<u32>| async move {
        if let Some(k) = keys.iter().find(|k| (100..200).contains(*k)) {
            return Err(Boom(*k));
        }
        if keys.iter().any(|k| (200..300).contains(k)) {
            panic!("injected");
        }
        Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(20))
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_error_reaches_exactly_its_callers() {
    let b = faulty();
    // Two batches: the first (keys 1, 2, 150) fails, the second (3, 4) does not.
    let (x, y, z) = tokio::join!(b.load(1), b.load(2), b.load(150));
    for a in [&x, &y, &z] {
        match a {
            Err(Error::Batch(e)) => assert_eq!(**e, Boom(150)),
            other => panic!("expected the batch error, got {other:?}"),
        }
    }
    // The error is shared, not cloned.
    let (Err(Error::Batch(e1)), Err(Error::Batch(e2))) = (&x, &y) else { unreachable!() };
    assert!(Arc::ptr_eq(e1, e2));
    assert_eq!(x.unwrap_err().to_string(), "batch failed: boom 150");
    let (p, q) = tokio::join!(b.load(3), b.load(4));
    assert_eq!((p.unwrap(), q.unwrap()), (Some(3), Some(4)));
    assert_eq!(b.stats().failed_batches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_caught_and_later_batches_work() {
    let b = faulty();
    let (x, y) = tokio::join!(b.load(5), b.load(250));
    assert!(matches!(x, Err(Error::Panicked)), "{x:?}");
    assert!(matches!(y, Err(Error::Panicked)), "{y:?}");
    for k in 0..5 {
        assert_eq!(b.load(k).await.unwrap(), Some(k));
    }
    assert_eq!(b.stats().panicked_batches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_function_that_panics_before_its_future_is_caught_too() {
    let b = Batcher::builder(|keys: Vec<u32>| {
        assert!(!keys.contains(&13), "unlucky");
        async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
    })
    .build()
    .unwrap();
    assert!(matches!(b.load(13).await, Err(Error::Panicked)));
    assert_eq!(b.load(12).await.unwrap(), Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_is_queued_then_refuses() {
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_secs(3600)) // only shutdown can send this bus
    .build()
    .unwrap();
    let waiting: Vec<_> = (0..10)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        })
        .collect();
    // Let them board.
    while b.stats().requests == 0 && b.live_slots() == 0 {
        tokio::task::yield_now().await;
        if waiting.iter().all(|h| !h.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            break;
        }
    }
    b.shutdown().await;
    assert!(b.is_closed());
    for (k, h) in waiting.into_iter().enumerate() {
        // Each was either on the bus (answered) or arrived after the close (refused).
        match h.await.unwrap() {
            Ok(v) => assert_eq!(v, Some(k as u32)),
            Err(Error::Closed) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(matches!(b.load(1).await, Err(Error::Closed)));
    b.shutdown().await; // idempotent
}

#[tokio::test(flavor = "current_thread")]
async fn a_load_after_shutdown_was_requested_is_refused_under_wait() {
    // `shutdown` refuses new loads from the moment it is called, under `Overflow::Wait` too:
    // before the driver has run to close the ring (found by a cold review: such a load ran a
    // batch and was answered).
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let b = Batcher::builder(move |keys: Vec<u32>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>()) }
    })
    .window(Duration::from_millis(5))
    .build()
    .unwrap();
    tokio::task::yield_now().await;
    let mut shutdown = Box::pin(b.shutdown());
    // Its first poll requests the shutdown; the driver has not run since.
    assert!(poll_once(shutdown.as_mut()).await.is_pending());
    assert!(b.is_closed());
    assert!(matches!(b.load(21).await, Err(Error::Closed)));
    shutdown.await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no batch call after shutdown was requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_live_slot() {
    // Regression: `live_slots` underflowed on a closed ring whose slots were all released.
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .build()
    .unwrap();
    assert_eq!(b.load(1).await.unwrap(), Some(1));
    b.shutdown().await;
    assert_eq!(b.live_slots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rejections_at_capacity_leave_the_batcher_working() {
    // Refused requests used to claim a seat number first, so a long stall could grow the head
    // word's count without bound (now they do not claim; see ring.rs). Refuse many while
    // stalled, then check the batcher still seats, answers and counts correctly.
    let (b, gate) = gated_backend(1, Overflow::Reject);
    let held = fill(&b).await;
    for k in 0..10_000 {
        assert!(matches!(b.load(100 + k).await, Err(Error::Overloaded)));
    }
    gate.add_permits(100);
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
    for k in 0..10 {
        assert_eq!(b.load(20_000 + k).await.unwrap(), Some(20_000 + k));
    }
    assert_eq!(b.stats().rejected, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_callers_already_seated() {
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_secs(3600))
    .build()
    .unwrap();
    // Seated callers must be answered by the shutdown, not left to the hour-long window.
    let b = Arc::new(b);
    let callers: Vec<_> = (0..5)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move {
                let load = b.load(k);
                tokio::pin!(load);
                assert!(poll_once(load.as_mut()).await.is_pending());
                load.await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.shutdown().await;
    for (k, c) in callers.into_iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(10), c).await.expect("a caller hung");
        assert_eq!(answer.unwrap().unwrap(), Some(k as u32));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_driver_and_frees_everything() {
    // The batch function owns `token`; it is freed only when the batcher's shared state is,
    // which needs the driver to have finished.
    let token = Arc::new(());
    let owned = token.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let _ = &owned;
        async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
    })
    .build()
    .unwrap();
    assert_eq!(b.load(1).await.unwrap(), Some(1));
    let clone = b.clone();
    drop(b);
    assert!(!clone.is_closed(), "a clone is still alive");
    assert_eq!(clone.load(2).await.unwrap(), Some(2));
    drop(clone);
    for _ in 0..1_000 {
        if Arc::strong_count(&token) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the driver did not stop after the last handle was dropped");
}

#[test]
fn a_driver_whose_runtime_dies_answers_its_callers_closed() {
    let driver_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let b = driver_rt.block_on(async {
        Batcher::builder(|keys: Vec<u32>| async move {
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .window(Duration::from_secs(3600))
        .build()
        .unwrap()
    });
    let caller_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (boarded_tx, boarded_rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    let caller = caller_rt.spawn(async move {
        let load = b2.load(9);
        tokio::pin!(load);
        assert!(poll_once(load.as_mut()).await.is_pending());
        boarded_tx.send(()).unwrap();
        load.await
    });
    boarded_rx.recv().unwrap();
    drop(driver_rt); // drops the driver task mid-window
    let answer = caller_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), caller).await })
        .expect("the caller hung")
        .unwrap();
    assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
    assert!(matches!(caller_rt.block_on(b.load(1)), Err(Error::Closed)));
}

/// A batcher whose batches block until the test releases them.
fn gated_backend(max_in_flight: usize, overflow: Overflow) -> (Batcher<u32, u32, ()>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let g = g.clone();
        async move {
            if keys.iter().all(|&k| k < 1000) {
                g.acquire().await.unwrap().forget();
            }
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(2)
    .max_in_flight(max_in_flight)
    .overflow(overflow)
    .build()
    .unwrap();
    (b, gate)
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_reject_says_overloaded() {
    let (b, gate) = gated_backend(1, Overflow::Reject);
    let held = fill(&b).await;
    assert!(matches!(b.load(50).await, Err(Error::Overloaded)));
    assert_eq!(b.stats().rejected, 1);
    gate.add_permits(10);
    for (k, h) in held.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), Some(k as u32));
    }
    assert_eq!(b.load(51).await.unwrap(), Some(51), "accepts again once there is room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_run_alone_calls_the_function_for_the_one_key() {
    let (b, gate) = gated_backend(1, Overflow::RunAlone);
    let held = fill(&b).await;
    assert_eq!(b.load(5000).await.unwrap(), Some(5000));
    assert_eq!(b.stats().ran_alone, 1);
    gate.add_permits(10);
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_wait_waits_for_room() {
    let (b, gate) = gated_backend(1, Overflow::Wait);
    let held = fill(&b).await;
    let late = {
        let b = b.clone();
        tokio::spawn(async move { b.load(60).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!late.is_finished(), "must wait while at capacity");
    gate.add_permits(10);
    assert_eq!(late.await.unwrap().unwrap(), Some(60));
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_gone_before_departure_are_not_sent() {
    let calls: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
    let seen = calls.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        seen.lock().unwrap().push(keys.clone());
        async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
    })
    .policy(Policy::window(Duration::from_millis(100)))
    .build()
    .unwrap();
    // Board 1 and 2, then drop 2 long before the window closes.
    let one = b.load(1);
    tokio::pin!(one);
    let mut two = Box::pin(b.load(2));
    assert!(poll_once(one.as_mut()).await.is_pending());
    assert!(poll_once(two.as_mut()).await.is_pending());
    drop(two);
    assert_eq!(one.await.unwrap(), Some(1));
    assert_eq!(*calls.lock().unwrap(), vec![vec![1]]);
    // A bus whose every caller left is not run at all.
    {
        let three = b.load(3);
        tokio::pin!(three);
        assert!(poll_once(three.as_mut()).await.is_pending());
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(b.live_slots(), 0, "cancelled seats were released");
    let s = b.stats();
    assert_eq!((s.cancelled, s.batches, s.requests), (2, 1, 3), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_gone_after_departure_leave_nothing_allocated() {
    let (b, gate) = gated_backend(2, Overflow::Wait);
    let loads: Vec<_> = (0..2)
        .map(|k| {
            let b = b.clone();
            tokio::spawn(async move { b.load(k).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(b.live_slots() > 0, "the buses are in flight");
    for l in &loads {
        l.abort();
    }
    gate.add_permits(10);
    assert_slots_released(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_set_aside_holds_its_slot_until_it_is_read() {
    // Two slots (one boarding, one for a batch), one key per batch.
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
    let answered_tx = Mutex::new(Some(answered_tx));
    let b: Batcher<u32, u32, ()> = Batcher::builder(move |keys: Vec<u32>| {
        let tx = answered_tx.lock().unwrap().take();
        async move {
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
            Ok(keys.into_iter().map(|k| (k, k * 10)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .capacity(2)
    .build()
    .unwrap();

    let mut aside = Box::pin(b.load(1));
    assert!(poll_once(aside.as_mut()).await.is_pending(), "boarded");
    answered_rx.await.unwrap();
    // `aside` is answered (or about to be) but not polled: its slot stays taken, so the next
    // bus has no slot to leave in.
    let mut next = tokio::spawn({
        let b = b.clone();
        async move { b.load(2).await }
    });
    assert!(tokio::time::timeout(Duration::from_millis(50), &mut next).await.is_err(), "left without a slot");
    assert_eq!(b.live_slots(), 1);
    // Reading the answer frees the slot, and the next bus leaves.
    assert!(matches!(aside.await, Ok(Some(10))));
    let next = tokio::time::timeout(Duration::from_secs(10), next).await.expect("the next bus left");
    assert!(matches!(next.unwrap(), Ok(Some(20))));
    assert_slots_released(&b).await;
}

#[test]
fn a_caller_outside_tokio_runs_alone_under_the_batch_timeout() {
    // A load polled on a plain thread (no tokio context) that runs alone at capacity with a
    // batch timeout: its timer is made on the batcher's runtime. Before, tokio panicked in the
    // caller ("there is no reactor running"; found by a cold review).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let g = g.clone();
        async move {
            if keys.contains(&0) {
                g.acquire().await.unwrap().forget();
            }
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(1)
    .max_in_flight(1)
    .overflow(Overflow::RunAlone)
    .batch_timeout(Duration::from_secs(30))
    .policy(Policy::Car)
    .runtime(rt.handle().clone())
    .build()
    .unwrap();
    // The one place is taken by a batch held at the gate; the next bus (one seat) is full.
    let held = rt.spawn({
        let b = b.clone();
        async move { b.load(0).await }
    });
    while b.stats().batches == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut queued = Box::pin(b.load(1));
    let polled = queued.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    assert!(polled.is_pending(), "boarded the next bus");
    // At capacity: this caller, on a plain thread, runs alone under the timeout.
    let alone = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(b.load(7)));
    let answer = block_on_this_thread(alone);
    assert!(matches!(answer, Ok(Ok(Some(14)))), "{:?}", answer.map_err(|_| "panicked"));
    assert_eq!(b.stats().ran_alone, 1);
    gate.add_permits(1);
    let held = rt.block_on(held).unwrap();
    assert!(matches!(held, Ok(Some(0))), "{held:?}");
    assert!(matches!(block_on_this_thread(queued), Ok(Some(2))));
}

/// A minimal executor on the calling thread (no tokio context): polls `f`, parking between
/// wake-ups.
fn block_on_this_thread<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_final_under_run_alone_at_capacity() {
    // Before: at capacity, `RunAlone` kept calling the batch function after shutdown and
    // answered `Ok`.
    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = calls.clone();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        seen.lock().unwrap().extend(&keys);
        let g = g.clone();
        async move {
            if keys.iter().all(|&k| k < 1000) {
                g.acquire().await.unwrap().forget();
            }
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(2)
    .max_in_flight(1)
    .overflow(Overflow::RunAlone)
    .build()
    .unwrap();
    let held = fill(&b).await;
    assert_eq!(b.load(5000).await.unwrap(), Some(5000), "at capacity, runs alone");
    let closing = shutdown_started(&b).await;
    assert!(matches!(b.load(5001).await, Err(Error::Closed)), "refused from the moment shutdown is called");
    gate.add_permits(10);
    closing.await.unwrap();
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
    assert!(matches!(b.load(5002).await, Err(Error::Closed)));
    assert!(!calls.lock().unwrap().iter().any(|&k| k > 5000), "a batch call started after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_final_under_reject_at_capacity() {
    let (b, gate) = gated_backend(1, Overflow::Reject);
    let held = fill(&b).await;
    let closing = shutdown_started(&b).await;
    assert!(matches!(b.load(50).await, Err(Error::Closed)), "Closed, not Overloaded, once shut down");
    gate.add_permits(10);
    closing.await.unwrap();
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
}

/// Boards `keys` on a current-thread runtime without letting the driver run (it is a task of
/// the same thread): the bus fills, and the driver has not seen it yet.
async fn board_without_the_driver(b: &Batcher<u32, u32, ()>, keys: [u32; 2]) -> Vec<Pin<Box<busline::Load<'_, u32, u32, ()>>>> {
    let mut seated = Vec::new();
    for k in keys {
        let mut load = Box::pin(b.load(k));
        assert!(poll_once(load.as_mut()).await.is_pending(), "seated");
        seated.push(load);
    }
    seated
}

#[tokio::test(flavor = "current_thread")]
async fn reject_decides_at_once_when_the_bus_is_full() {
    // Before: a request that found the bus full before the driver marked the batcher stalled
    // waited for room under `Reject`, like `Wait`.
    let (b, gate) = gated_backend(1, Overflow::Reject);
    let seated = board_without_the_driver(&b, [1, 2]).await;
    let mut third = Box::pin(b.load(3));
    match poll_once(third.as_mut()).await {
        Poll::Ready(Err(Error::Overloaded)) => {}
        other => panic!("expected Overloaded at the first poll, got {other:?}"),
    }
    gate.add_permits(10);
    for load in seated {
        assert!(load.await.is_ok());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn run_alone_decides_at_once_when_the_bus_is_full() {
    let (b, gate) = gated_backend(1, Overflow::RunAlone);
    let seated = board_without_the_driver(&b, [1, 2]).await;
    // Key 2000 does not wait for the gate: its solo run answers at its first poll.
    let mut alone = Box::pin(b.load(2000));
    match poll_once(alone.as_mut()).await {
        Poll::Ready(Ok(Some(2000))) => {}
        other => panic!("expected a solo run at the first poll, got {other:?}"),
    }
    assert_eq!(b.stats().ran_alone, 1);
    gate.add_permits(10);
    for load in seated {
        assert!(load.await.is_ok());
    }
}
