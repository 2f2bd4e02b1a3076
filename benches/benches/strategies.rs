//! `strategies`: each of busline's other coalescing strategies against its nearest peer, in the
//! same run, on a 2-worker runtime (workers pinned as for every bench, see README.md).
//!
//! - `single_flight`: 1,000 tasks × 100 sequential calls over 64 hot keys (an execution yields
//!   once); busline's `SingleFlight` against `async_singleflight`'s `Group`.
//! - `serial`: 8 tasks × 2,000 calls, one at a time; busline's `Serial` against a
//!   `tokio::sync::Mutex` held around the call (what a user writes by hand).
//! - `use_last`: bursts of 1,000 calls, each superseding the last, all awaited; busline's
//!   `UseLast` against a hand-written "abort the previous task, publish through a `watch`".
//! - `debounce`: 1,000 callers joining one cohort (1 ms quiet), repeated; busline's `Debounce`
//!   against the hand-written "each caller sleeps `quiet`, the newest runs".
//! - `aggregate`: 1,000 tasks × 100 sequential inputs, natural batching; busline's `Coalescer`
//!   (a sum) against the keyed `Batcher` (unique keys), the engine it is built on.
//!
//! Every answer is checked. Elements are calls (inputs), so criterion reports calls/s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busline_benches::adapters::value_of;
use busline_benches::scenarios;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Runs `scenario` `iters` times on `rt` and returns the total time.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut scenario: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            scenario().await;
        }
        start.elapsed()
    })
}

fn group<'a>(c: &'a mut Criterion, name: &str, elements: u64) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(elements));
    group
}

// --- single_flight ---------------------------------------------------------------------------

const SF_TASKS: u64 = 1_000;
const SF_CALLS: u64 = 100;
const SF_KEYS: u64 = 64;

async fn expensive(key: u64) -> Result<u64, ()> {
    tokio::task::yield_now().await;
    Ok(value_of(key))
}

async fn single_flight_round<F, Fut>(call: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u64, ()>> + Send,
{
    let tasks: Vec<_> = (0..SF_TASKS)
        .map(|t| {
            let call = call.clone();
            tokio::spawn(async move {
                for i in 0..SF_CALLS {
                    let key = (t + i) % SF_KEYS;
                    assert_eq!(call(key).await, Ok(value_of(key)));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn single_flight(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let mut group = group(c, "single_flight", SF_TASKS * SF_CALLS);
    let sf = busline::SingleFlight::<u64, u64, ()>::new();
    group.bench_function(BenchmarkId::new("busline", "64_keys"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let sf = sf.clone();
                single_flight_round(move |key| {
                    let sf = sf.clone();
                    async move { sf.run(key, || expensive(key)).await.map_err(|_| ()) }
                })
            })
        })
    });
    let group_peer = Arc::new(async_singleflight::Group::<u64, u64, ()>::new());
    group.bench_function(BenchmarkId::new("async_singleflight", "64_keys"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let g = Arc::clone(&group_peer);
                single_flight_round(move |key| {
                    let g = Arc::clone(&g);
                    async move { g.work(&key, expensive(key)).await.map_err(|_| ()) }
                })
            })
        })
    });
    group.finish();
}

// --- serial ----------------------------------------------------------------------------------

const SERIAL_TASKS: u64 = 8;
const SERIAL_CALLS: u64 = 2_000;

async fn serial_round<F, Fut>(call: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let tasks: Vec<_> = (0..SERIAL_TASKS)
        .map(|t| {
            let call = call.clone();
            tokio::spawn(async move {
                for i in 0..SERIAL_CALLS {
                    let x = t * SERIAL_CALLS + i;
                    assert_eq!(call(x).await, value_of(x));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn serial(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let mut group = group(c, "serial", SERIAL_TASKS * SERIAL_CALLS);
    let s = busline::Serial::new(|x: u64| async move { Ok::<_, Infallible>(value_of(x)) });
    group.bench_function(BenchmarkId::new("busline", "8_tasks"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let s = s.clone();
                serial_round(move |x| {
                    let s = s.clone();
                    async move { s.call(x).await.unwrap() }
                })
            })
        })
    });
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    group.bench_function(BenchmarkId::new("tokio_mutex", "8_tasks"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let lock = Arc::clone(&lock);
                serial_round(move |x| {
                    let lock = Arc::clone(&lock);
                    async move {
                        let _turn = lock.lock().await;
                        async move { value_of(x) }.await
                    }
                })
            })
        })
    });
    group.finish();
}

// --- use_last --------------------------------------------------------------------------------

const BURST: u64 = 1_000;

/// The hand-written use-last: number each call, abort the previous task, publish the newest
/// result through a `watch`; a caller waits for a result at least as new as its call.
#[derive(Clone)]
struct HandUseLast {
    state: Arc<Mutex<(u64, Option<AbortHandle>)>>,
    results: watch::Sender<(u64, u64)>,
}

impl HandUseLast {
    fn new() -> HandUseLast {
        HandUseLast { state: Arc::new(Mutex::new((0, None))), results: watch::channel((0, 0)).0 }
    }

    async fn call(&self, x: u64) -> u64 {
        let mut rx = self.results.subscribe();
        // The lock is released at the end of this block, before the wait below.
        let number = {
            let mut state = self.state.lock().unwrap();
            state.0 += 1;
            let number = state.0;
            if let Some(previous) = state.1.take() {
                previous.abort();
            }
            let results = self.results.clone();
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                let v = value_of(x);
                results.send_if_modified(|current| {
                    let newer = current.0 < number;
                    if newer {
                        *current = (number, v);
                    }
                    newer
                });
            });
            state.1 = Some(task.abort_handle());
            number
        };
        rx.wait_for(|&(n, _)| n >= number).await.unwrap().1
    }
}

async fn burst<F, Fut>(call: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    let mut answered = Vec::new();
    let mut waiting = Vec::new();
    // Each call's first poll supersedes the previous one. (On 2 workers an execution can end
    // before its own caller waits: that caller is answered at once, with its round's result.)
    for x in 0..BURST {
        let mut c = Box::pin(call(x));
        match std::future::poll_fn(|cx| std::task::Poll::Ready(c.as_mut().poll(cx))).await {
            std::task::Poll::Ready(v) => answered.push((x, v)),
            std::task::Poll::Pending => waiting.push((x, c)),
        }
    }
    let (xs, calls): (Vec<_>, Vec<_>) = waiting.into_iter().unzip();
    answered.extend(xs.into_iter().zip(futures_util::future::join_all(calls).await));
    let last = answered.iter().find(|&&(x, _)| x == BURST - 1).expect("the last call answered");
    assert_eq!(last.1, value_of(BURST - 1), "the newest call gets its own result");
}

fn use_last(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let mut group = group(c, "use_last", BURST);
    let u = busline::UseLast::new(|x: u64| async move {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(value_of(x))
    });
    group.bench_function(BenchmarkId::new("busline", "burst_1000"), |b| {
        b.iter_custom(|iters| timed(&rt, iters, || burst(|x| { let u = u.clone(); async move { u.call(x).await.unwrap() } })))
    });
    let hand = HandUseLast::new();
    group.bench_function(BenchmarkId::new("abort_and_watch", "burst_1000"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let hand = hand.clone();
                burst(move |x| {
                    let hand = hand.clone();
                    async move { hand.call(x).await }
                })
            })
        })
    });
    group.finish();
}

// --- debounce --------------------------------------------------------------------------------

const QUIET: Duration = Duration::from_millis(1);
const COHORT: u64 = 1_000;

/// The hand-written debounce: each call stores its input and sleeps `quiet`; the call still
/// newest when it wakes runs and publishes; the others wait for a result at least as new.
#[derive(Clone)]
struct HandDebounce {
    state: Arc<Mutex<(u64, u64)>>,
    results: watch::Sender<(u64, u64)>,
}

impl HandDebounce {
    fn new() -> HandDebounce {
        HandDebounce { state: Arc::new(Mutex::new((0, 0))), results: watch::channel((0, 0)).0 }
    }

    async fn call(&self, x: u64) -> u64 {
        let mut rx = self.results.subscribe();
        let number = {
            let mut state = self.state.lock().unwrap();
            state.0 += 1;
            state.1 = x;
            state.0
        };
        tokio::time::sleep(QUIET).await;
        let newest = {
            let state = self.state.lock().unwrap();
            (state.0 == number).then_some(state.1)
        };
        if let Some(input) = newest {
            let v = value_of(input);
            self.results.send_replace((number, v));
            return v;
        }
        rx.wait_for(|&(n, _)| n >= number).await.unwrap().1
    }
}

async fn cohort<F, Fut>(call: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    let results = futures_util::future::join_all((0..COHORT).map(call)).await;
    // Usually one run for all; on a slow pass, the calls polled before a pause of `quiet` form
    // a cohort of their own. Either way the last call gets its own input's result.
    assert_eq!(results[COHORT as usize - 1], value_of(COHORT - 1));
}

fn debounce(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let mut group = group(c, "debounce", COHORT);
    let _context = rt.enter();
    let d = busline::Debounce::builder(|x: u64| async move { Ok::<_, Infallible>(value_of(x)) })
        .quiet(QUIET)
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("busline", "quiet_1ms"), |b| {
        b.iter_custom(|iters| timed(&rt, iters, || cohort(|x| { let d = d.clone(); async move { d.call(x).await.unwrap() } })))
    });
    let hand = HandDebounce::new();
    group.bench_function(BenchmarkId::new("sleep_per_call", "quiet_1ms"), |b| {
        b.iter_custom(|iters| timed(&rt, iters, || cohort(|x| { let hand = hand.clone(); async move { hand.call(x).await } })))
    });
    group.finish();
}

// --- aggregate -------------------------------------------------------------------------------

const AGG_TASKS: u64 = 1_000;
const AGG_INPUTS: u64 = 100;

async fn aggregate_round<F, Fut>(call: F, first: u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..AGG_TASKS)
        .map(|t| {
            let call = call.clone();
            tokio::spawn(async move {
                for i in 0..AGG_INPUTS {
                    call(first + t * AGG_INPUTS + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn aggregate(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let _context = rt.enter();
    let mut group = group(c, "aggregate", AGG_TASKS * AGG_INPUTS);
    // A departure's result: how many inputs it folded and their sum.
    let coalescer = busline::Coalescer::builder(
        || (0u64, 0u64),
        |acc: &mut (u64, u64), x: u64| {
            acc.0 += 1;
            acc.1 = acc.1.wrapping_add(x);
        },
        |acc: (u64, u64)| async move { Ok::<_, Infallible>(acc) },
    )
    .build()
    .unwrap();
    let mut next = 0u64;
    group.bench_function(BenchmarkId::new("busline_coalescer", "window_0"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let first = next;
                next += AGG_TASKS * AGG_INPUTS;
                let c = coalescer.clone();
                aggregate_round(
                    move |x| {
                        let c = c.clone();
                        async move {
                            let (n, _) = *c.coalesce(x).await.unwrap();
                            assert!(n >= 1);
                        }
                    },
                    first,
                )
            })
        })
    });
    let batcher = busline::Batcher::builder(|keys: Vec<u64>| async move {
        Ok::<_, Infallible>(keys.into_iter().map(|k| (k, value_of(k))).collect::<HashMap<_, _>>())
    })
    .build()
    .unwrap();
    let mut next = 0u64;
    group.bench_function(BenchmarkId::new("busline_batcher", "window_0"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let first = next;
                next += AGG_TASKS * AGG_INPUTS;
                let batcher = batcher.clone();
                aggregate_round(
                    move |k| {
                        let batcher = batcher.clone();
                        async move { assert_eq!(batcher.load(k).await.unwrap(), Some(value_of(k))) }
                    },
                    first,
                )
            })
        })
    });
    group.finish();
}

criterion_group!(benches, single_flight, serial, use_last, debounce, aggregate);
criterion_main!(benches);
