//! Under tokio's paused clock (`start_paused = true`, how time-dependent async code is tested)
//! windows, gates, the adaptive policy and batch timeouts follow tokio's clock: auto-advance
//! moves them, and the order of events is the same in every run.
//!
//! The instants asserted here are tokio's paused clock, not wall-clock timings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Batcher, Error, Policy};
use tokio::time::Instant;

type Calls = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

/// A batcher under `policy` whose batch function records, on tokio's clock, when each call
/// came and with which keys.
fn recording(policy: Policy) -> (Batcher<u32, u32, ()>, Calls, Instant) {
    let start = Instant::now();
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let b = Batcher::builder(move |mut keys: Vec<u32>| {
        keys.sort_unstable();
        seen.lock().unwrap().push((start.elapsed(), keys.clone()));
        async move { Ok(keys.into_iter().map(|k| (k, k * 2)).collect::<HashMap<_, _>>()) }
    })
    .policy(policy)
    .build()
    .unwrap();
    (b, calls, start)
}

/// Fails the test if `fut` has not finished within an hour of tokio's (paused) time: with the
/// clock paused, a batcher that never sends its bus lets auto-advance reach this timeout.
async fn within_an_hour<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), fut).await.expect("the batch never ran")
}

#[tokio::test(start_paused = true)]
async fn a_window_closes_on_tokios_clock() {
    // Before: the window's deadline went to a thread on the OS clock, and the test's own
    // timeout fired first.
    let window = Duration::from_millis(10);
    let (b, calls, start) = recording(Policy::window(window));
    let answers = within_an_hour(async { tokio::join!(b.load(1), b.load(2), b.load(3)) }).await;
    assert_eq!((answers.0.unwrap(), answers.1.unwrap(), answers.2.unwrap()), (Some(2), Some(4), Some(6)));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, vec![1, 2, 3]);
    assert!(calls[0].0 >= window, "left at {:?}, before the window closed", calls[0].0);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_sub_millisecond_window_closes_on_tokios_clock() {
    let window = Duration::from_micros(200);
    let (b, calls, _) = recording(Policy::window(window));
    let (x, y) = within_an_hour(async { tokio::join!(b.load(1), b.load(2)) }).await;
    assert_eq!((x.unwrap(), y.unwrap()), (Some(2), Some(4)));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].0 >= window);
}

#[tokio::test(start_paused = true)]
async fn windows_follow_each_other_in_the_same_order_every_run() {
    let window = Duration::from_millis(5);
    let (b, calls, _) = recording(Policy::window(window));
    // Three waves 20 ms apart on tokio's clock: three calls, in order, one per wave.
    for wave in 0..3u32 {
        let keys = [wave * 10, wave * 10 + 1];
        let answers = within_an_hour(async { tokio::join!(b.load(keys[0]), b.load(keys[1])) }).await;
        assert!(answers.0.is_ok() && answers.1.is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = calls.lock().unwrap();
    let keys: Vec<_> = calls.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(keys, vec![vec![0, 1], vec![10, 11], vec![20, 21]]);
    for pair in calls.windows(2) {
        assert!(pair[1].0 >= pair[0].0 + Duration::from_millis(20), "{calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_gated_window_closes_on_tokios_clock() {
    let (b, calls, _) = recording(Policy::gated(Duration::from_millis(5), 2));
    let answers = within_an_hour(async { tokio::join!(b.load(1), b.load(2), b.load(3)) }).await;
    assert!(answers.0.is_ok() && answers.1.is_ok() && answers.2.is_ok());
    let total: usize = calls.lock().unwrap().iter().map(|(_, k)| k.len()).sum();
    assert_eq!(total, 3);
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_policy_runs_on_tokios_clock() {
    let (b, calls, _) = recording(Policy::adaptive(Duration::from_millis(2)));
    for round in 0..20u32 {
        let keys = [round * 4, round * 4 + 1, round * 4 + 2];
        let answers = within_an_hour(async { tokio::join!(b.load(keys[0]), b.load(keys[1]), b.load(keys[2])) }).await;
        assert_eq!(answers.0.unwrap(), Some(keys[0] * 2));
        assert!(answers.1.is_ok() && answers.2.is_ok());
        tokio::time::sleep(Duration::from_micros(700)).await;
    }
    let total: usize = calls.lock().unwrap().iter().map(|(_, k)| k.len()).sum();
    assert_eq!(total, 60);
}

#[tokio::test(start_paused = true)]
async fn a_batch_timeout_fires_on_tokios_clock() {
    let start = Instant::now();
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        if keys.contains(&13) {
            std::future::pending::<()>().await;
        }
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .max_in_flight(1)
    .batch_timeout(Duration::from_secs(30))
    .build()
    .unwrap();
    assert!(matches!(within_an_hour(b.load(13)).await, Err(Error::Timeout)));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31), "{waited:?}");
    assert_eq!(within_an_hour(b.load(1)).await.unwrap(), Some(1), "the in-flight place was freed");
}

#[tokio::test(start_paused = true)]
async fn spinning_off_keeps_windows_on_tokios_clock_too() {
    let start = Instant::now();
    let b = Batcher::builder(|keys: Vec<u32>| async move {
        Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
    })
    .window(Duration::from_millis(3))
    .spin(false)
    .build()
    .unwrap();
    let (x, y) = within_an_hour(async { tokio::join!(b.load(1), b.load(2)) }).await;
    assert_eq!((x.unwrap(), y.unwrap()), (Some(1), Some(2)));
    assert!(start.elapsed() >= Duration::from_millis(3));
    assert_eq!(b.stats().batches, 1);
}

#[tokio::test]
async fn a_clock_paused_after_the_batcher_ran_on_a_running_one_is_followed_at_once() {
    // `tokio::time::pause()` mid-test, after the driver has stepped on the running clock: the
    // first window after it closes on tokio's clock. Before, the driver noticed the pause only
    // from two equal readings, so that window went to the OS-clock timer thread and
    // auto-advance reached this test's hour first (found by a cold review).
    let (b, calls, _) = recording(Policy::window(Duration::from_millis(50)));
    assert_eq!(b.load(1).await.unwrap(), Some(2));
    tokio::time::sleep(Duration::from_millis(5)).await;
    tokio::time::pause();
    let paused_at = Instant::now();
    assert_eq!(within_an_hour(b.load(2)).await.unwrap(), Some(4));
    // The window closed on the paused clock (auto-advance to its deadline, rounded up to
    // tokio's millisecond tick), not at the hour.
    assert!(paused_at.elapsed() <= Duration::from_millis(52), "{:?}", paused_at.elapsed());
    assert_eq!(calls.lock().unwrap().len(), 2);
}

/// A batcher at capacity under `RunAlone` whose batch function hangs for `HANGS`, fails for
/// `FAILS`, panics in its future for `PANICS` and in its call for `PANICS_AT_CALL`; the batch
/// of key 0 waits for the returned gate.
fn solo_faults() -> (Batcher<u32, u32, ()>, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let b = Batcher::builder(move |keys: Vec<u32>| {
        assert!(!keys.contains(&PANICS_AT_CALL), "the batch function panics when called");
        let g = g.clone();
        async move {
            if keys.contains(&0) {
                g.acquire().await.unwrap().forget();
            }
            if keys.contains(&HANGS) {
                std::future::pending::<()>().await;
            }
            assert!(!keys.contains(&PANICS), "the batch function's future panics");
            if keys.contains(&FAILS) {
                return Err(());
            }
            Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        }
    })
    .max_batch_size(2)
    .max_in_flight(1)
    .overflow(busline::Overflow::RunAlone)
    .batch_timeout(Duration::from_secs(30))
    .build()
    .unwrap();
    (b, gate)
}

const HANGS: u32 = 1 << 20;
const FAILS: u32 = HANGS + 1;
const PANICS: u32 = HANGS + 2;
const PANICS_AT_CALL: u32 = HANGS + 3;

#[tokio::test(start_paused = true)]
async fn a_solo_runs_timeout_failure_and_panic_are_counted_as_a_batchs_are() {
    // Before: `timed_out_batches`, `failed_batches` and `panicked_batches` counted only the
    // batches the driver sent; a solo run that timed out, failed or panicked was only in
    // `ran_alone`, so a hung backend met by solo runs showed no timeout at all.
    let (b, gate) = solo_faults();
    let held = super::support::fill(&b).await;
    assert!(matches!(b.load(FAILS).await, Err(Error::Batch(_))));
    assert!(matches!(b.load(PANICS).await, Err(Error::Panicked)));
    assert!(matches!(b.load(PANICS_AT_CALL).await, Err(Error::Panicked)));
    let hung = {
        let b = b.clone();
        tokio::spawn(async move { b.load(HANGS).await })
    };
    while b.stats().ran_alone < 4 {
        tokio::task::yield_now().await;
    }
    // The filling batches end well before the hung solo run's timeout.
    gate.add_permits(10);
    for load in held {
        assert!(within_an_hour(load).await.unwrap().is_ok());
    }
    assert!(matches!(within_an_hour(hung).await.unwrap(), Err(Error::Timeout)));
    let s = b.stats();
    assert_eq!(s.ran_alone, 4, "{s:?}");
    assert_eq!((s.timed_out_batches, s.failed_batches, s.panicked_batches), (1, 1, 2), "{s:?}");
    assert_eq!(s.batches, 2, "solo runs are not batches sent: {s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_solo_run_given_up_is_counted_cancelled() {
    // Before: only a seated caller that gave up was counted; one running alone was not,
    // though `cancelled` promised "requests whose caller dropped its future before the answer".
    let (b, gate) = solo_faults();
    let held = super::support::fill(&b).await;
    assert!(tokio::time::timeout(Duration::from_secs(1), b.load(HANGS)).await.is_err());
    let s = b.stats();
    assert_eq!((s.ran_alone, s.cancelled, s.timed_out_batches), (1, 1, 0), "{s:?}");
    gate.add_permits(10);
    for load in held {
        assert!(within_an_hour(load).await.unwrap().is_ok());
    }
}
