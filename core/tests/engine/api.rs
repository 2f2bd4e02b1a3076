//! The public API: values, missing keys, the shared result, de-duplication, batch limits and
//! configuration errors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Batcher, ConfigError, Policy};

type Calls = Arc<Mutex<Vec<Vec<u32>>>>;

/// A batcher whose batch function records each call's keys and answers `k -> k * 10`, leaving
/// out keys >= 1000.
fn recording(window: Duration, max_batch_size: usize) -> (Batcher<u32, u32, String>, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(keys.clone());
            Ok(keys.into_iter().filter(|&k| k < 1000).map(|k| (k, k * 10)).collect::<HashMap<_, _>>())
        }
    })
    .window(window)
    .max_batch_size(max_batch_size)
    .build()
    .unwrap();
    (b, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_its_own_entry() {
    let (b, _) = recording(Duration::from_micros(200), 64);
    let answers = futures_util::future::join_all((0..50).map(|k| b.load(k))).await;
    for (k, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), Some(k as u32 * 10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_none() {
    let (b, _) = recording(Duration::ZERO, 64);
    assert_eq!(b.load(5000).await.unwrap(), None);
    assert_eq!(b.load(7).await.unwrap(), Some(70));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_gathers_concurrent_callers_into_one_call() {
    // A generous window, so that all 20 boarding callers (joined in one task) catch the bus
    // (under Miri, which runs them a thousand times slower, a very generous one).
    let (b, calls) = recording(Duration::from_millis(if cfg!(miri) { 2_000 } else { 50 }), 64);
    let answers = futures_util::future::join_all((0..20).map(|k| b.load(k))).await;
    assert!(answers.iter().all(|a| a.is_ok()));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_sent_once_and_answered_to_all() {
    let (b, calls) = recording(Duration::from_millis(50), 64);
    let answers = futures_util::future::join_all([3, 3, 4, 3, 4].map(|k| b.load(k))).await;
    let values: Vec<_> = answers.into_iter().map(|a| a.unwrap().unwrap()).collect();
    assert_eq!(values, [30, 30, 40, 30, 40]);
    let calls = calls.lock().unwrap();
    let mut sent: Vec<u32> = calls.iter().flatten().copied().collect();
    sent.sort_unstable();
    assert_eq!(sent, [3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_function_gets_the_keys_in_boarding_order() {
    let (b, calls) = recording(Duration::from_millis(50), 64);
    // `join_all` polls its futures in order: the callers board in this order.
    let keys = [9, 2, 9, 7, 2, 1, 7];
    let answers = futures_util::future::join_all(keys.map(|k| b.load(k))).await;
    assert!(answers.iter().all(|a| a.is_ok()));
    assert_eq!(*calls.lock().unwrap(), [vec![9, 2, 7, 1]], "each key once, where it first boarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_in_the_last_stretch_of_a_window_is_left_out() {
    // The driver reads a bus's keys ahead in the last stretch before its deadline
    // (`driver/batch.rs`, `Ahead`); a caller who gives up after that read, but before the
    // deadline, must still be left out. Its load is dropped at points of the window's last
    // tenth (this task busy-waits, holding one worker; the driver runs on the other).
    // A drop that overshoots the deadline (the test thread preempted on a busy machine)
    // checks nothing: the points are tried again until one lands before it.
    let mut checked = 0;
    for late in [900u64, 930, 950, 970, 980].repeat(20) {
        if checked >= 5 {
            break;
        }
        let (b, calls) = recording(Duration::from_millis(1), 64);
        let stay = b.clone();
        let start = std::time::Instant::now();
        let mut gone = Box::pin(b.load(100));
        // The window opens at this first passenger, after `start`.
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(gone.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "seated");
        let stay = tokio::spawn(async move { futures_util::future::join(stay.load(1), stay.load(2)).await });
        while start.elapsed() < Duration::from_micros(late) {
            std::hint::spin_loop();
        }
        drop(gone);
        let before_deadline = start.elapsed() < Duration::from_millis(1);
        let (one, two) = stay.await.unwrap();
        assert_eq!((one.unwrap(), two.unwrap()), (Some(10), Some(20)));
        if before_deadline {
            // Gone before the deadline, so before the departure: never sent.
            checked += 1;
            let sent: Vec<u32> = calls.lock().unwrap().iter().flatten().copied().collect();
            assert!(!sent.contains(&100), "dropped at {late} us, yet sent: {sent:?}");
        }
    }
    assert!(checked > 0, "all 100 drops overshot the deadline (a preempted test thread): nothing checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_keys_than_max_batch_size_make_more_batches() {
    let (b, calls) = recording(Duration::from_millis(20), 8);
    let answers = futures_util::future::join_all((0..30).map(|k| b.load(k))).await;
    assert!(answers.iter().all(|a| a.is_ok()));
    let calls = calls.lock().unwrap();
    assert!(calls.iter().all(|c| c.len() <= 8), "{calls:?}");
    assert!(calls.len() >= 4, "{calls:?}");
    assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shared_hands_every_caller_of_a_batch_the_same_map() {
    let (b, _) = recording(Duration::from_millis(50), 64);
    let (x, y, z) = tokio::join!(b.load_shared(1), b.load_shared(2), b.load_shared(2000));
    let (x, y, z) = (x.unwrap(), y.unwrap(), z.unwrap());
    assert!(Arc::ptr_eq(&x, &y) && Arc::ptr_eq(&y, &z));
    assert_eq!(x.get(&1), Some(&10));
    assert_eq!(x.get(&2000), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_returns_the_found_keys() {
    let (b, calls) = recording(Duration::from_millis(10), 64);
    let found = b.load_many([1, 2, 2, 5000, 3]).await.unwrap();
    assert_eq!(found, HashMap::from([(1, 10), (2, 20), (3, 30)]));
    assert_eq!(calls.lock().unwrap().iter().map(Vec::len).sum::<usize>(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn car_sends_every_request_alone() {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        seen.lock().unwrap().push(keys.clone());
        async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
    })
    .policy(Policy::Car)
    .build()
    .unwrap();
    let answers = futures_util::future::join_all((0..10).map(|k| b.load(k))).await;
    assert!(answers.iter().all(|a| a.is_ok()));
    assert!(calls.lock().unwrap().iter().all(|c| c.len() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_answers_correctly_under_contention() {
    let policies = [
        Policy::Car,
        Policy::natural(),
        Policy::window(Duration::from_micros(300)),
        Policy::gated(Duration::from_micros(300), 4),
        Policy::adaptive(Duration::from_micros(500)),
    ];
    for policy in policies {
        let b = Batcher::builder(|keys: Vec<u64>| async move {
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k + 1)).collect::<HashMap<_, _>>())
        })
        .policy(policy)
        .build()
        .unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..200 {
                        let k = t * 1000 + i;
                        assert_eq!(b.load(k).await.unwrap(), Some(k + 1));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = b.stats();
        assert_eq!(s.requests, 64 * 200, "{policy:?}: {s:?}");
        assert_eq!(s.keys_sent, 64 * 200, "{policy:?}: {s:?}");
    }
}

fn builder() -> busline::Builder<u32, u32, ()> {
    Batcher::builder(|keys: Vec<u32>| async move { Ok(keys.into_iter().map(|k| (k, k)).collect()) })
}

#[tokio::test]
async fn invalid_settings_are_config_errors() {
    let setting = |r: Result<Batcher<u32, u32, ()>, ConfigError>| r.unwrap_err().setting();
    assert_eq!(setting(builder().max_batch_size(0).build()), "max_batch_size");
    assert_eq!(setting(builder().max_in_flight(0).build()), "max_in_flight");
    assert_eq!(setting(builder().max_in_flight(63).build()), "max_in_flight");
    assert_eq!(setting(builder().capacity(0).build()), "capacity");
    assert_eq!(setting(builder().max_batch_size(100).max_in_flight(4).capacity(400).build()), "capacity");
    assert_eq!(setting(builder().max_batch_size(1).capacity(65).build()), "capacity");
    assert_eq!(setting(builder().policy(Policy::gated(Duration::from_millis(1), 0)).build()), "policy.threshold");
    assert_eq!(setting(builder().policy(Policy::adaptive(Duration::ZERO)).build()), "policy.latency_budget");
    assert!(builder().max_batch_size(100).max_in_flight(4).capacity(500).build().is_ok());
}

#[test]
fn building_outside_a_runtime_is_a_config_error() {
    assert_eq!(builder().build().unwrap_err().setting(), "runtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_concurrent_batches() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let b = Batcher::builder(move |keys: Vec<u32>| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(4)
    .max_in_flight(3)
    .build()
    .unwrap();
    let tasks: Vec<_> = (0..40u32)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    assert_eq!(b.load(t * 10 + i).await.unwrap(), Some(t * 10 + i));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} batches ran at once");
    assert!(peak >= 2, "the limit was never approached: {peak}");
}

#[test]
fn a_batcher_runs_on_the_runtime_it_is_given() {
    // Built outside any runtime, driven by `driver_rt`, loaded from threads with runtimes of
    // their own (current-thread, without a time driver).
    let driver_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let b = builder().window(Duration::from_millis(1)).runtime(driver_rt.handle().clone()).build().unwrap();
    let callers: Vec<_> = (0..4u32)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                (0..10).map(|i| rt.block_on(b.load(t * 100 + i)).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, c) in callers.into_iter().enumerate() {
        let answers = c.join().unwrap();
        assert_eq!(answers, (0..10).map(|i| Some(t as u32 * 100 + i)).collect::<Vec<_>>());
    }
}

#[test]
fn spin_off_with_a_window_needs_the_time_driver_and_build_says_so() {
    // Without the check, the driver panicked at its first deadline (tokio's timer without a
    // time driver) and every load was `Closed` from then on (found by a cold review).
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let refused = builder().window(Duration::from_millis(2)).spin(false).runtime(rt.handle().clone()).build();
    let err = refused.expect_err("refused");
    assert_eq!(err.setting(), "runtime", "{err}");
    // Natural sets alarms too (its holds; a deadline passed while every place was busy): with
    // spin(false) they would go to tokio's timer, so it is refused as well (it was built).
    let natural = builder().policy(Policy::Natural).spin(false).runtime(rt.handle().clone()).build();
    assert_eq!(natural.expect_err("natural refused").setting(), "runtime");
    // Spinning (the timer thread), or `Car` (no alarm at all), needs no time driver.
    let spinning = builder().window(Duration::from_millis(2)).runtime(rt.handle().clone()).build().unwrap();
    assert_eq!(rt.block_on(spinning.load(3)).unwrap(), Some(3));
    let car = builder().policy(Policy::Car).spin(false).runtime(rt.handle().clone()).build().unwrap();
    assert_eq!(rt.block_on(car.load(4)).unwrap(), Some(4));
}

#[test]
fn a_batcher_on_a_current_thread_runtime_is_driven_inside_block_on() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = builder().window(Duration::from_micros(300)).runtime(rt.handle().clone()).build().unwrap();
    let answers = rt.block_on(futures_util::future::join_all((0..20).map(|k| b.load(k))));
    assert!(answers.into_iter().enumerate().all(|(k, a)| a.unwrap() == Some(k as u32)));
    assert_eq!(b.stats().requests, 20);
}
