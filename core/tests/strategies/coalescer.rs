//! `Coalescer`: one accumulator per departure, one shared result per departure, each caller its
//! own departure's result; the seed library's defects, each as a regression test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busline::{Coalescer, Error, Policy};
use crate::support::{Came, assert_send, chaos, eventually, poll_at_most, poll_once, quiet_injected_panics};
use tokio::sync::Notify;

/// A coalescer whose departures collect their inputs (sorted) and return them.
type Collecting = Coalescer<u64, Vec<u64>, Vec<u64>>;

fn collecting(window: Duration) -> Collecting {
    Coalescer::builder(Vec::new, |acc: &mut Vec<u64>, x: u64| acc.push(x), |mut acc: Vec<u64>| async move {
        acc.sort_unstable();
        Ok(acc)
    })
    .window(window)
    .build()
    .unwrap()
}

#[tokio::test]
async fn futures_are_send() {
    let c = collecting(Duration::ZERO);
    assert_send(&c.coalesce(1));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Collecting>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_of_a_departure_gets_the_same_arc() {
    let c = collecting(Duration::from_millis(50));
    let (a, b, d) = tokio::join!(c.coalesce(1), c.coalesce(2), c.coalesce(3));
    let (a, b, d) = (a.unwrap(), b.unwrap(), d.unwrap());
    assert_eq!(*a, vec![1, 2, 3]);
    assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &d));
    assert_eq!(c.stats().batches, 1);
    eventually(10, "the departure released", || c.live_slots() == 0).await;
}

/// FlowSync defects: a "reset" seed dropped the inputs that arrived while a batch ran, and
/// batch 1's callers got batch N's result. Here batch 1 runs (held open) while batch 2 forms
/// and completes first: each caller gets its own batch's result, every input is folded once,
/// each batch into its own fresh accumulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_its_own_batch_and_inputs_during_a_run_go_to_the_next() {
    let gate = Arc::new(Notify::new());
    let seeds = Arc::new(AtomicU64::new(0));
    let c: Collecting = {
        let (gate, seeds) = (gate.clone(), seeds.clone());
        Coalescer::builder(
            move || {
                seeds.fetch_add(1, Ordering::SeqCst);
                Vec::new()
            },
            |acc: &mut Vec<u64>, x| acc.push(x),
            move |mut acc: Vec<u64>| {
                let gate = gate.clone();
                async move {
                    if acc.contains(&1) {
                        gate.notified().await; // batch 1 runs until released
                    }
                    acc.sort_unstable();
                    Ok(acc)
                }
            },
        )
        .policy(Policy::Natural)
        .max_in_flight(2)
        .build()
        .unwrap()
    };
    let mut one = Box::pin(c.coalesce(1));
    assert!(poll_once(&mut one).await.is_none());
    eventually(10, "batch 1 departs", || c.stats().batches == 1).await;
    // Batch 1 is running: these arrive during its run.
    let (x, y) = tokio::join!(c.coalesce(10), c.coalesce(20));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x.contains(&10) && y.contains(&20) && !x.contains(&1), "batch 2's own result: {x:?}");
    gate.notify_one();
    assert_eq!(*one.await.unwrap(), vec![1], "batch 1's result, not a later batch's");
    assert_eq!(seeds.load(Ordering::SeqCst), c.stats().batches, "a fresh seed per departure");
    eventually(10, "every departure released", || c.live_slots() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_arrive_unwrapped_and_panics_stay_in_their_departure() {
    quiet_injected_panics();
    let c: Collecting = Coalescer::builder(
        Vec::new,
        |acc: &mut Vec<u64>, x: u64| {
            assert!(x != 3, "injected fold panic");
            acc.push(x)
        },
        |acc: Vec<u64>| async move {
            if acc.contains(&1) {
                return Err(acc);
            }
            assert!(!acc.contains(&2), "injected run panic");
            Ok(acc)
        },
    )
    .window(Duration::from_millis(20))
    .build()
    .unwrap();
    let (a, b) = tokio::join!(c.coalesce(1), c.coalesce(5));
    let (Err(Error::Batch(ea)), Err(Error::Batch(eb))) = (&a, &b) else { panic!("{a:?} {b:?}") };
    assert!(Arc::ptr_eq(ea, eb), "one error for the departure");
    let mut inputs = (**ea).clone();
    inputs.sort_unstable();
    assert_eq!(inputs, vec![1, 5], "run's own error, not wrapped");
    assert!(matches!(c.coalesce(2).await, Err(Error::Panicked)));
    assert!(matches!(c.coalesce(3).await, Err(Error::Panicked)));
    assert_eq!(*c.coalesce(4).await.unwrap(), vec![4], "later departures run normally");
    assert_eq!(c.stats().panicked_batches, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_whose_caller_left_before_departure_is_never_folded() {
    let c = collecting(Duration::from_millis(50));
    let mut gone = Box::pin(c.coalesce(7));
    assert!(poll_once(&mut gone).await.is_none());
    drop(gone);
    let (a, b) = tokio::join!(c.coalesce(8), c.coalesce(9));
    assert_eq!(*a.unwrap(), vec![8, 9]);
    assert_eq!(*b.unwrap(), vec![8, 9]);
    // Everyone leaves before departure: nothing runs.
    let before = c.stats().batches;
    let mut lone = Box::pin(c.coalesce(1));
    assert!(poll_once(&mut lone).await.is_none());
    drop(lone);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(c.stats().batches, before, "a departure with nobody left does not run");
    eventually(10, "every departure released", || c.live_slots() == 0).await;
}

/// Per group: with a coalescer per group, cancelling every caller of one group does not disturb
/// another's callers. (The partition of issue 11 will key one handle by a group.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_group_does_not_disturb_another() {
    let groups = [collecting(Duration::from_millis(20)), collecting(Duration::from_millis(20))];
    let other = {
        let g = groups[1].clone();
        tokio::spawn(async move { tokio::join!(g.coalesce(1), g.coalesce(2)) })
    };
    for x in 0..100 {
        let mut doomed = Box::pin(groups[0].coalesce(x));
        assert!(poll_once(&mut doomed).await.is_none());
    }
    let (a, b) = other.await.unwrap();
    assert_eq!((a.unwrap().to_vec(), b.unwrap().to_vec()), (vec![1, 2], vec![1, 2]));
    eventually(10, "group 0 holds nothing", || groups[0].live_slots() == 0).await;
}

/// No user code under a lock of ours: a fold and a run that call back into the coalescer
/// (its counters, and a whole nested coalesce) complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_code_runs_under_our_lock() {
    let cell: Arc<Mutex<Option<Collecting>>> = Arc::new(Mutex::new(None));
    let (f, r) = (cell.clone(), cell.clone());
    let c: Collecting = Coalescer::builder(
        Vec::new,
        move |acc: &mut Vec<u64>, x: u64| {
            let c = f.lock().unwrap().clone().unwrap();
            let _ = (c.stats(), c.live_slots());
            acc.push(x)
        },
        move |acc: Vec<u64>| {
            let c = r.lock().unwrap().clone().unwrap();
            async move {
                if acc == [1] {
                    // A nested departure from inside a running one.
                    let nested = c.coalesce(2).await.map_err(|_| vec![])?;
                    return Ok(nested.to_vec());
                }
                Ok(acc)
            }
        },
    )
    .max_in_flight(2)
    .build()
    .unwrap();
    *cell.lock().unwrap() = Some(c.clone());
    assert_eq!(*c.coalesce(1).await.unwrap(), vec![2]);
    *cell.lock().unwrap() = None;
}

/// A million inputs from 64 tasks over 2 worker threads, natural batching: random cancellation
/// at a random poll, injected errors and panics in `run`. Every answer holds its caller's own
/// input (its own departure), nothing hangs, nothing stays allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_million_inputs() {
    quiet_injected_panics();
    const TASKS: u64 = 64;
    const CALLS: u64 = 1_000_000 / TASKS;
    let c: Collecting = Coalescer::builder(Vec::new, |acc: &mut Vec<u64>, x: u64| acc.push(x), |mut acc: Vec<u64>| async move {
        acc.sort_unstable();
        if acc.iter().any(|x| x % 5_000 == 13) {
            return Err(acc);
        }
        assert!(!acc.iter().any(|x| x % 7_000 == 29), "injected");
        Ok(acc)
    })
    .build()
    .unwrap();
    let handle = c.clone();
    let tally = chaos(TASKS, CALLS, move |x, polls| {
        let c = handle.clone();
        async move {
            match poll_at_most(c.coalesce(x), polls).await {
                None => Came::Cancelled,
                Some(Ok(inputs)) => {
                    assert!(inputs.binary_search(&x).is_ok(), "{x} got another departure's result");
                    Came::Ok { by: None }
                }
                Some(Err(Error::Batch(inputs))) => {
                    assert!(inputs.binary_search(&x).is_ok(), "{x} got another departure's error");
                    assert!(inputs.iter().any(|x| x % 5_000 == 13));
                    Came::Failed { by: None }
                }
                Some(Err(Error::Panicked)) => Came::Panicked,
                Some(Err(other)) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(tally.panicked > 0, "{tally:?}");
    eventually(30, "every departure released", || c.live_slots() == 0).await;
    let stats = c.stats();
    assert!(stats.batches < TASKS * CALLS / 4, "inputs were coalesced ({} departures)", stats.batches);
    println!(
        "coalescer chaos: {} ok, {} failed, {} panicked, {} cancelled, {} departures, {:.0} inputs per departure",
        tally.ok,
        tally.failed,
        tally.panicked,
        tally.cancelled,
        stats.batches,
        stats.keys_sent as f64 / stats.batches as f64
    );
}

/// A departure whose inputs include `HANG` runs until `gate` opens; the others answer their sum.
const HANG: u64 = 13;

#[tokio::test(start_paused = true)]
async fn a_hung_departure_times_out_and_frees_its_place() {
    // `CoalescerBuilder` had no `batch_timeout` (the `Batcher`'s did): a `run` that never
    // finished held the only in-flight place and every later input waited for ever.
    let c = Coalescer::builder(
        || 0u64,
        |n: &mut u64, x: u64| *n += x,
        |n: u64| async move {
            if n == HANG {
                std::future::pending::<()>().await;
            }
            Ok::<_, ()>(n)
        },
    )
    .max_in_flight(1)
    .batch_timeout(Duration::from_secs(30))
    .build()
    .unwrap();
    let start = tokio::time::Instant::now();
    let hung = tokio::time::timeout(Duration::from_secs(3600), c.coalesce(HANG)).await.expect("never answered");
    assert!(matches!(hung, Err(Error::Timeout)), "{hung:?}");
    // Instants on tokio's paused clock, not wall-clock timings.
    assert!(start.elapsed() >= Duration::from_secs(30), "answered before the timeout: {:?}", start.elapsed());
    let next = tokio::time::timeout(Duration::from_secs(3600), c.coalesce(2)).await.expect("the place stayed taken");
    assert_eq!(*next.unwrap(), 2);
    assert_eq!(c.stats().timed_out_batches, 1);
}

#[test]
fn a_coalescer_runs_on_the_runtime_it_is_given_and_refuses_one_without_its_timer() {
    // Built outside any runtime, with the runtime given (`CoalescerBuilder` had no `runtime`:
    // it could only start on the runtime `build` ran in).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sum = || Coalescer::builder(|| 0u64, |n: &mut u64, x: u64| *n += x, |n: u64| async move { Ok::<_, ()>(n) });
    let c = sum().window(Duration::from_millis(1)).spin(false).name("views").runtime(rt.handle().clone()).build().unwrap();
    let other = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(*other.block_on(c.coalesce(5)).unwrap(), 5);
    // A runtime without the time driver cannot keep a batch timeout: `build` says so.
    let err = sum().batch_timeout(Duration::from_secs(1)).runtime(other.handle().clone()).build().unwrap_err();
    assert_eq!(err.setting(), "runtime", "{err}");
}
