//! `Debounce`: one run `quiet` after the last call, with its input, for every caller since the
//! previous run; `max_wait` bounds the postponement; a cohort everyone left never runs.
//! Timing semantics are checked under tokio's paused clock (virtual time, exact and
//! deterministic); contention on a multi-thread runtime in real time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Debounce, Error};
use crate::support::{DropBomb, Live, assert_send, came_from_work, chaos, eventually, poll_at_most, poll_once, quiet_injected_panics, value_of, without_panic};
use tokio::time::{Instant, sleep};

const MS: Duration = Duration::from_millis(1);

/// Each run's input and virtual start time.
type Runs = Arc<Mutex<Vec<(u64, Instant)>>>;

/// A debounce that records its runs.
fn recording(quiet: Duration, max_wait: Option<Duration>) -> (Debounce<u64, u64, u64>, Runs) {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let r = runs.clone();
    let mut builder = Debounce::builder(move |x: u64| {
        r.lock().unwrap().push((x, Instant::now()));
        async move { Ok(value_of(x)) }
    })
    .quiet(quiet);
    if let Some(max_wait) = max_wait {
        builder = builder.max_wait(max_wait);
    }
    (builder.build().unwrap(), runs)
}

#[test]
fn futures_are_send_and_bad_settings_are_config_errors() {
    let d = Debounce::builder(|x: u64| async move { Ok::<_, ()>(x) }).quiet(MS).build().unwrap();
    assert_send(&d.call(1));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Debounce<u64, u64, ()>>();
    let err = Debounce::builder(|x: u64| async move { Ok::<_, ()>(x) }).quiet(Duration::ZERO).build().unwrap_err();
    assert_eq!((err.setting(), err.to_string().as_str()), ("quiet", "invalid quiet: must be positive"));
    let err = Debounce::builder(|x: u64| async move { Ok::<_, ()>(x) }).build().unwrap_err();
    assert_eq!(err.setting(), "quiet");
    let err = Debounce::builder(|x: u64| async move { Ok::<_, ()>(x) })
        .quiet(MS)
        .max_wait(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "max_wait");
}

#[tokio::test(start_paused = true)]
async fn runs_once_quiet_after_the_last_call_with_its_input_for_every_caller() {
    let (d, runs) = recording(10 * MS, None);
    let t0 = Instant::now();
    let calls = (0..3u64).map(|i| {
        let d = d.clone();
        async move {
            sleep(3 * MS * i as u32).await;
            d.call(i).await
        }
    });
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.ok(), Some(value_of(2)), "the last call's input, for every caller");
    }
    assert_eq!(*runs.lock().unwrap(), vec![(2, t0 + 16 * MS)], "one run, 10 ms after the last call at 6 ms");
    // The next call opens a new cohort.
    assert_eq!(d.call(7).await.ok(), Some(value_of(7)));
    assert_eq!(runs.lock().unwrap().len(), 2);
    assert_eq!(d.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn max_wait_bounds_the_postponement() {
    let (d, runs) = recording(10 * MS, Some(30 * MS));
    let t0 = Instant::now();
    // A call every 4 ms for 100 ms: never quiet for 10 ms.
    let calls = (0..25u64).map(|i| {
        let d = d.clone();
        async move {
            sleep(4 * MS * i as u32).await;
            (i, d.call(i).await)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let runs = runs.lock().unwrap().clone();
    let at: Vec<_> = runs.iter().map(|&(_, t)| t - t0).collect();
    // Cohorts open at 0, 32, 64 and 96 ms; each runs 30 ms after its first call, except the
    // last, which the calls stop postponing: 10 ms after its only call.
    assert_eq!(at, vec![30 * MS, 62 * MS, 94 * MS, 106 * MS]);
    for (i, answer) in answers {
        let cohort_run = runs.iter().find(|&&(last, _)| last >= i).expect("every call ran in some cohort");
        assert_eq!(answer.ok(), Some(value_of(cohort_run.0)), "call {i} got its own cohort's result");
    }
}

#[tokio::test(start_paused = true)]
async fn if_every_caller_leaves_nothing_runs() {
    let (d, runs) = recording(10 * MS, None);
    let mut a = Box::pin(d.call(1));
    let mut b = Box::pin(d.call(2));
    assert!(poll_once(&mut a).await.is_none());
    assert!(poll_once(&mut b).await.is_none());
    drop(b);
    sleep(5 * MS).await;
    drop(a);
    sleep(50 * MS).await;
    assert!(runs.lock().unwrap().is_empty(), "nobody left to answer: nothing ran");
    assert_eq!(d.pending(), 0);
    // One of two callers leaves: the other still gets the cohort's result (the last input,
    // even though its caller left).
    let mut c = Box::pin(d.call(3));
    let mut e = Box::pin(d.call(4));
    assert!(poll_once(&mut c).await.is_none());
    assert!(poll_once(&mut e).await.is_none());
    drop(e);
    assert_eq!(c.await.ok(), Some(value_of(4)));
}

#[tokio::test(start_paused = true)]
async fn a_run_in_progress_is_dropped_when_its_callers_leave() {
    let live = Arc::new(AtomicI64::new(0));
    let l = live.clone();
    let d = Debounce::builder(move |_: u64| {
        let l = l.clone();
        async move {
            let _alive = Live::new(&l);
            std::future::pending::<()>().await;
            Ok::<u64, ()>(0)
        }
    })
    .quiet(MS)
    .build()
    .unwrap();
    let mut a = Box::pin(d.call(1));
    assert!(poll_once(&mut a).await.is_none());
    sleep(5 * MS).await;
    assert_eq!(live.load(Ordering::SeqCst), 1, "the run started");
    drop(a);
    eventually(10, "the run is dropped", || live.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test(start_paused = true)]
async fn errors_and_panics_reach_the_whole_cohort() {
    quiet_injected_panics();
    let d = Debounce::builder(|x: u64| async move {
        match x {
            1 => Err(x),
            2 => panic!("injected"),
            _ => Ok(x),
        }
    })
    .quiet(MS)
    .build()
    .unwrap();
    let (a, b) = tokio::join!(d.call(0), d.call(1));
    let (Err(Error::Batch(ea)), Err(Error::Batch(eb))) = (&a, &b) else { panic!("{a:?} {b:?}") };
    assert!(Arc::ptr_eq(ea, eb) && **ea == 1, "one shared, unwrapped error");
    let (a, b) = tokio::join!(d.call(0), d.call(2));
    assert!(matches!((a, b), (Err(Error::Panicked), Err(Error::Panicked))));
    assert_eq!(d.call(3).await.ok(), Some(3), "it keeps serving");
}

/// A million calls from 1,000 tasks over 2 worker threads in real time (1 ms quiet and
/// max_wait: tokio's resolution), random cancellation at a random poll, injected errors and
/// panics. Checked: every value is one a run produced; the caller whose input a run used, if
/// it waited, got that run's result; nothing hangs; nothing is left waiting or running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_million_calls() {
    quiet_injected_panics();
    const TASKS: u64 = 1_000;
    const CALLS: u64 = 1_000_000 / TASKS;
    let live = Arc::new(AtomicI64::new(0));
    let runs = Arc::new(AtomicU64::new(0));
    let d: Debounce<u64, (u64, u64), u64> = {
        let (live, runs) = (live.clone(), runs.clone());
        Debounce::builder(move |x: u64| {
            runs.fetch_add(1, Ordering::Relaxed);
            let live = live.clone();
            async move {
                let _alive = Live::new(&live);
                match x % 64 {
                    13 => Err(x),
                    29 => panic!("injected"),
                    _ => Ok((x, value_of(x))),
                }
            }
        })
        .quiet(MS)
        .max_wait(MS)
        .build()
        .unwrap()
    };
    let handle = d.clone();
    let c = chaos(TASKS, CALLS, move |x, polls| {
        let d = handle.clone();
        async move { came_from_work(poll_at_most(d.call(x), polls).await) }
    })
    .await;
    c.check_own();
    assert_eq!(d.pending(), 0, "nobody left waiting");
    eventually(30, "every run dropped", || live.load(Ordering::SeqCst) == 0).await;
    let runs = runs.load(Ordering::Relaxed);
    assert!(runs < TASKS * CALLS / 10, "calls were coalesced ({runs} runs)");
    println!("debounce chaos: {} ok, {} failed, {} panicked, {} cancelled, {runs} runs", c.ok, c.failed, c.panicked, c.cancelled);
}

/// The caller that holds the round last drops the value: a panicking `Drop` is caught there.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_values_drop_that_panics_never_reaches_a_caller() {
    quiet_injected_panics();
    let d = Debounce::builder(|_: u32| async { Ok::<_, ()>(DropBomb::new()) }).quiet(10 * MS).build().unwrap();
    let answered = without_panic(async move { d.call(1).await.is_ok() }).await;
    assert_eq!(answered, Ok(true));
}

/// `Duration::MAX` as `max_wait` means no bound: the run comes `quiet` after the last call
/// (the deadline `first call + max_wait` overflowed `Instant` and closed every call).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unbounded_max_wait_leaves_the_run_to_the_quiet_period() {
    let (d, runs) = recording(10 * MS, Some(Duration::MAX));
    let start = Instant::now();
    assert_eq!(d.call(5).await.ok(), Some(value_of(5)));
    assert_eq!(*runs.lock().unwrap(), [(5, start + 10 * MS)]);
}

/// A `quiet` of `Duration::MAX` postpones the run for ever (unless `max_wait` bounds it): the
/// calls wait, none fails.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unbounded_quiet_period_waits_for_max_wait_or_for_ever() {
    let (d, runs) = recording(Duration::MAX, None);
    let waited = tokio::time::timeout(Duration::from_secs(3600), d.call(5)).await;
    assert!(waited.is_err(), "still waiting after an hour: {waited:?}");
    assert!(runs.lock().unwrap().is_empty());
    let (d, runs) = recording(Duration::MAX, Some(20 * MS));
    let start = Instant::now();
    assert_eq!(d.call(6).await.ok(), Some(value_of(6)));
    assert_eq!(*runs.lock().unwrap(), [(6, start + 20 * MS)]);
}
