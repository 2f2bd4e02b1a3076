//! The scenarios, shared by the criterion benches and the `compare` runner.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use busline::policy::Policy;

use crate::adapters::{Counters, Loader, value_of};
use crate::clock;

/// The throughput workload: `tasks` tasks, each doing `loads_per_task` sequential loads of its own
/// keys (`first_key + task * loads_per_task + i`, all distinct), so `tasks` loads are always in
/// flight. Each load goes through a clone of the handle of its own
/// ([`Loader::load_owned`]), as a service's request handler does. Every answer is checked.
/// Returns the wall time from the first spawn to the last answer.
pub async fn throughput<L: Loader>(loader: &L, tasks: usize, loads_per_task: usize, first_key: u64) -> Duration {
    throughput_since(loader, tasks, loads_per_task, first_key, Instant::now()).await
}

/// [`throughput`], timed from `start` instead: the runner takes `start` before building the
/// loader, so a fresh batcher's cold start (its build and first batch) counts.
pub async fn throughput_since<L: Loader>(
    loader: &L,
    tasks: usize,
    loads_per_task: usize,
    first_key: u64,
    start: Instant,
) -> Duration {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let loader = loader.clone();
            let base = first_key + (task * loads_per_task) as u64;
            tokio::spawn(async move {
                for key in base..base + loads_per_task as u64 {
                    let value = loader.clone().load_owned(key).await;
                    assert_eq!(value, value_of(key), "wrong answer for key {key}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("load task");
    }
    start.elapsed()
}

/// Runs `scenario(first_key)` `iters` times on `rt`, each run with `keys` fresh keys from
/// `*next_key` on, and returns the sum of the times the runs report: the body of a criterion
/// `iter_custom` for the scenarios above, which time themselves.
pub fn repeat_timed<F, Fut>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    keys: u64,
    next_key: &mut u64,
    mut scenario: F,
) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Duration>,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            total += scenario(*next_key).await;
            *next_key += keys;
        }
        black_box(total)
    })
}

/// A multi-thread tokio runtime with `workers` workers and the timer on, placed as
/// [`Placement::from_env`](crate::placement::Placement::from_env) says (pinned by default).
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    crate::placement::runtime(workers, crate::placement::Placement::from_env())
}

/// A current-thread tokio runtime with the timer on.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

// ---- window precision ------------------------------------------------------------------------

/// One lone caller's load: the time from calling `load` to the batch function's start (the added
/// wait of a batch's first caller), and to the answer.
#[derive(Debug, Clone, Copy)]
pub struct LoneLoad {
    /// From `load()` to the batch function being called.
    pub to_batch: Duration,
    /// From `load()` to the answer.
    pub round_trip: Duration,
}

/// A lone caller loads `key` and nothing else runs; `counters` must be the loader's.
pub async fn lone_load<L: Loader>(loader: &L, counters: &Counters, key: u64) -> LoneLoad {
    let start = Instant::now();
    let value = loader.load(key).await;
    let round_trip = start.elapsed();
    assert_eq!(value, value_of(key));
    let to_batch = counters.last_call().saturating_duration_since(start);
    LoneLoad { to_batch, round_trip }
}

/// How many lone loads to make at `window` within about `budget` of wall time, at least `min`.
pub fn repetitions(window: Duration, budget: Duration, min: usize, max: usize) -> usize {
    let per = window.max(Duration::from_micros(50));
    ((budget.as_nanos() / per.as_nanos()) as usize).clamp(min, max)
}

// ---- submit cost -----------------------------------------------------------------------------

/// How a submit benchmark holds the futures it boards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Each future is built, polled once where it was built, then moved into the chunk's
    /// vector. Reading a future right after its poll wrote it costs a store-forwarding stall
    /// (the wide loads of the move span the poll's narrower stores): a cost of the move, which
    /// async code never makes (a task polls the future it owns where it lies).
    PollThenMove,
    /// The chunk's futures are built into a vector, then each is polled where it lies, as a
    /// task polls the future it owns. Both steps are timed.
    InPlace,
}

impl Holding {
    /// Both, in the order the reports list them.
    pub const ALL: [Holding; 2] = [Holding::InPlace, Holding::PollThenMove];

    /// As the reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Holding::InPlace => "in place",
            Holding::PollThenMove => "poll then move",
        }
    }
}

/// Builds `n` futures with `make(key)` for keys `first_key..first_key + n` and polls each once
/// with a no-op waker, holding them as `holding` says; returns the time of those builds and
/// polls. The futures are then dropped, untimed. Every poll must leave its future pending.
pub fn board_chunk<F: Future + Unpin>(first_key: u64, n: usize, holding: Holding, mut make: impl FnMut(u64) -> F) -> Duration {
    let mut cx = Context::from_waker(Waker::noop());
    let mut futures = Vec::with_capacity(n);
    let keys = first_key..first_key + n as u64;
    let start = Instant::now();
    match holding {
        Holding::PollThenMove => {
            for key in keys {
                let mut future = make(key);
                let polled = Pin::new(&mut future).poll(&mut cx);
                debug_assert!(polled.is_pending());
                futures.push(future);
            }
        }
        Holding::InPlace => {
            futures.extend(keys.map(&mut make));
            for future in &mut futures {
                let polled = Pin::new(future).poll(&mut cx);
                debug_assert!(polled.is_pending());
            }
        }
    }
    let elapsed = start.elapsed();
    black_box(&futures);
    drop(futures);
    elapsed
}

/// Boards `n` loads on a busline batcher whose window never closes in time: each future is polled
/// once (claim a seat, write the key, register the caller's waker; the first also stamps the
/// window and wakes the driver) and kept, as `holding` says. Returns the time of those `n` first
/// polls (and the futures' building); the futures are then dropped (each cancels its seat),
/// untimed. `n` must leave room in the bus.
pub fn board_only(batcher: &busline::Batcher<u64, u64, Infallible>, first_key: u64, n: usize, holding: Holding) -> Duration {
    board_chunk(first_key, n, holding, |key| batcher.load(key))
}

/// Boards and at once gives up `n` loads (poll once, drop): the board path plus the cancel path.
pub fn board_and_cancel(batcher: &busline::Batcher<u64, u64, Infallible>, first_key: u64, n: usize) -> Duration {
    let mut cx = Context::from_waker(Waker::noop());
    let start = Instant::now();
    for key in first_key..first_key + n as u64 {
        let mut load = batcher.load(key);
        let _ = black_box(Pin::new(&mut load).poll(&mut cx));
    }
    start.elapsed()
}

/// A busline batcher for the board-only measurements: a one-hour window, so the bus leaves only
/// when full (the caller lets the driver seal it between chunks), and nothing is ever run.
pub fn parked_batcher(counters: Arc<Counters>) -> busline::Batcher<u64, u64, Infallible> {
    crate::adapters::BuslineLoader::with_policy(
        Policy::window(Duration::from_secs(3600)),
        crate::adapters::Setup::with_window(Duration::ZERO),
        counters,
    )
    .batcher()
    .clone()
}

/// Lets the batcher's driver (and anything else runnable) run on a current-thread runtime.
pub async fn let_driver_run() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// `concurrency` loads awaited together on the current task (one thread, no spawning): the
/// whole path of a coalesced load (board, the driver's seal and collect, the batch function's
/// map, publish, wake, read, release). Returns the wall time.
pub async fn joined_loads<L: Loader>(loader: &L, first_key: u64, concurrency: usize) -> Duration {
    let start = Instant::now();
    let loads = (first_key..first_key + concurrency as u64).map(|k| loader.load(k));
    let values = futures_util::future::join_all(loads).await;
    let elapsed = start.elapsed();
    assert_eq!(values.last().copied(), Some(value_of(first_key + concurrency as u64 - 1)));
    elapsed
}

// ---- real-time policies ----------------------------------------------------------------------

/// The mock backend of the real-time policy comparison: `pool` connections (a semaphore); a call
/// of `n` keys holds one for `base + n × per_key`, slept on [`clock`] (sub-millisecond, late by
/// its wake-up latency), then answers every key.
#[derive(Debug)]
pub struct MockBackend {
    pool: tokio::sync::Semaphore,
    base: Duration,
    per_key: Duration,
    calls: AtomicU64,
}

impl MockBackend {
    /// A backend with `pool` connections.
    pub fn new(pool: usize, base: Duration, per_key: Duration) -> MockBackend {
        MockBackend { pool: tokio::sync::Semaphore::new(pool), base, per_key, calls: AtomicU64::new(0) }
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// One call with `keys`.
    pub async fn call(&self, keys: Vec<u64>) -> std::collections::HashMap<u64, u64> {
        let _connection = self.pool.acquire().await.expect("pool open");
        self.calls.fetch_add(1, Ordering::Relaxed);
        clock::sleep(self.base + self.per_key * keys.len() as u32).await;
        keys.into_iter().map(|k| (k, value_of(k))).collect()
    }
}

/// Quiet → burst → quiet open-loop arrivals.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Arrivals per second while quiet.
    pub quiet_rate: f64,
    /// Arrivals per second during the burst.
    pub burst_rate: f64,
    /// Length of each quiet phase (before and after).
    pub quiet: Duration,
    /// Length of the burst.
    pub burst: Duration,
}

impl Burst {
    /// Poisson arrival offsets from the start, seeded (splitmix64, exponential gaps).
    pub fn schedule(&self, seed: u64) -> Vec<Duration> {
        let mut state = seed;
        let mut uniform = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let phases = [(self.quiet, self.quiet_rate), (self.burst, self.burst_rate), (self.quiet, self.quiet_rate)];
        let mut out = Vec::new();
        let mut phase_start = 0.0;
        for (length, rate) in phases {
            let end = phase_start + length.as_secs_f64();
            let mut t = phase_start;
            loop {
                t += -uniform().ln() / rate;
                if t >= end {
                    break;
                }
                out.push(Duration::from_secs_f64(t));
            }
            phase_start = end;
        }
        out
    }
}

/// What one replay of a [`Burst`] against one policy measured.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    /// Requests made.
    pub requests: usize,
    /// Backend calls made.
    pub backend_calls: u64,
    /// Caller latencies (scheduled arrival → answer), sorted.
    pub latencies: Vec<Duration>,
    /// From the first arrival to the last answer.
    pub wall: Duration,
}

/// Replays `arrivals` against a busline batcher with `policy` in front of `backend`: each
/// arrival, at its scheduled time, spawns a task that loads a fresh key. Latency is measured
/// from the scheduled arrival, so a late generator counts against the batcher (open loop).
pub async fn replay(policy: Policy, max_in_flight: usize, arrivals: &[Duration], backend: Arc<MockBackend>) -> PolicyRun {
    let counters = Arc::new(Counters::default());
    let calls_before = backend.calls();
    let batcher = {
        let backend = Arc::clone(&backend);
        busline::Batcher::builder(move |keys: Vec<u64>| {
            counters.record(keys.len());
            let backend = Arc::clone(&backend);
            async move { Ok::<_, Infallible>(backend.call(keys).await) }
        })
        .policy(policy)
        .max_in_flight(max_in_flight)
        .build()
        .expect("valid policy")
    };
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(arrivals.len())));
    let start = Instant::now() + Duration::from_millis(5);
    let mut handles = Vec::with_capacity(arrivals.len());
    for (i, offset) in arrivals.iter().enumerate() {
        let at = start + *offset;
        if at > Instant::now() + Duration::from_micros(30) {
            clock::sleep_until(at).await;
        }
        let batcher = batcher.clone();
        let latencies = Arc::clone(&latencies);
        handles.push(tokio::spawn(async move {
            let key = i as u64;
            let value = batcher.load(key).await.expect("load").expect("answered");
            assert_eq!(value, value_of(key));
            let latency = at.elapsed();
            latencies.lock().unwrap().push(latency);
        }));
    }
    for handle in handles {
        handle.await.expect("caller task");
    }
    let wall = start.elapsed();
    batcher.shutdown().await;
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    PolicyRun { requests: arrivals.len(), backend_calls: backend.calls() - calls_before, latencies, wall }
}
