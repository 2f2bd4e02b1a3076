//! One small adapter per contender, so every implementation runs the same scenario.
//!
//! Each adapter implements [`Loader`]: `load(key) -> value`, answering `value_of(key)`. Every
//! batch function builds its `HashMap` at once from the keys it got (see [`answer`]) and counts
//! its calls in [`Counters`], so keys per batch are measured the same way for every contender
//! (not taken from a crate's own statistics).
//!
//! The adapters are generic-free concrete types and the scenarios are generic over [`Loader`],
//! so a load costs what the crate costs: no boxing, no dynamic dispatch. [`with_loader!`]
//! turns a [`Contender`] value into the matching concrete adapter.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What every contender's `load` does: return the value of one key through a batch.
pub trait Loader: Clone + Send + Sync + 'static {
    /// Loads `key` through the next batch and returns its value.
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send;
}

/// The value every batch function answers for `key`.
#[inline]
pub fn value_of(key: u64) -> u64 {
    key.wrapping_mul(2).wrapping_add(1)
}

/// Counts batch function calls, keys sent, and when the last call started.
#[derive(Debug)]
pub struct Counters {
    batches: AtomicU64,
    keys: AtomicU64,
    origin: Instant,
    /// Nanoseconds since `origin` at which the latest batch function call started.
    last_call_ns: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            batches: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            origin: Instant::now(),
            last_call_ns: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Records one batch function call of `keys` keys, starting now.
    pub fn record(&self, keys: usize) {
        self.last_call_ns.store(self.origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys as u64, Ordering::Relaxed);
    }

    /// (batch calls, keys sent) so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.batches.load(Ordering::Relaxed), self.keys.load(Ordering::Relaxed))
    }

    /// When the latest batch function call started.
    pub fn last_call(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_call_ns.load(Ordering::Relaxed))
    }
}

/// The batch function every contender runs: count the call, build the map at once.
#[inline]
pub fn answer(keys: impl ExactSizeIterator<Item = u64>, counters: &Counters) -> HashMap<u64, u64> {
    counters.record(keys.len());
    keys.map(|k| (k, value_of(k))).collect()
}

/// The settings every contender gets, where it supports them.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Collection window; zero means "no timer" (each crate's closest equivalent, see README).
    pub window: Duration,
    /// The most keys in one batch.
    pub max_batch_size: usize,
    /// The most batches running at once for the peers that have such a limit (batch-aint-one,
    /// tower-batch-control); busline runs with its own default.
    pub max_in_flight: usize,
}

/// The concurrency limit given to the peers that have one: 8, a typical pool size.
pub const PEER_MAX_IN_FLIGHT: usize = 8;

impl Setup {
    /// `window` with 1,024 keys per batch, and `PEER_MAX_IN_FLIGHT` for the peers.
    pub fn with_window(window: Duration) -> Setup {
        Setup { window, max_batch_size: busline::DEFAULT_MAX_BATCH_SIZE, max_in_flight: PEER_MAX_IN_FLIGHT }
    }
}

/// Every implementation the benches compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// busline itself.
    Busline,
    /// async-graphql 7's `DataLoader` (no cache).
    AsyncGraphql,
    /// batch-aint-one 0.16.
    BatchAintOne,
    /// tower-batch-control 1.1.
    TowerBatch,
    /// dataloader 0.18 (`non_cached::Loader`, tokio runtime).
    Dataloader,
    /// A naive `Mutex<HashMap<key, Vec<oneshot>>>` port, written here.
    Naive,
}

impl Contender {
    /// Every contender, busline first.
    pub const ALL: [Contender; 6] = [
        Contender::Busline,
        Contender::AsyncGraphql,
        Contender::BatchAintOne,
        Contender::TowerBatch,
        Contender::Dataloader,
        Contender::Naive,
    ];

    /// The name used in benchmark ids and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Contender::Busline => "busline",
            Contender::AsyncGraphql => "async-graphql",
            Contender::BatchAintOne => "batch-aint-one",
            Contender::TowerBatch => "tower-batch-control",
            Contender::Dataloader => "dataloader",
            Contender::Naive => "naive-mutex-map",
        }
    }

    /// Whether the contender can be configured with this window. dataloader 0.18 has no time
    /// window (it yields 10 times to the runtime; its `with_custom_wait_for_work` takes `self` by
    /// value and returns `()`, so it cannot be used), so it only runs at window 0.
    pub fn supports(self, window: Duration) -> bool {
        self != Contender::Dataloader || window.is_zero()
    }
}

/// Binds `$loader` to the concrete adapter for `$contender`, built from `$setup` and
/// `$counters` (an `Arc<Counters>`), and evaluates `$body` with it. Must run inside a tokio
/// runtime (the crates spawn their workers on build).
#[macro_export]
macro_rules! with_loader {
    ($contender:expr, $setup:expr, $counters:expr, |$loader:ident| $body:expr) => {{
        use $crate::adapters as __a;
        match $contender {
            __a::Contender::Busline => {
                let $loader = __a::BuslineLoader::new($setup, $counters);
                $body
            }
            __a::Contender::AsyncGraphql => {
                let $loader = __a::AsyncGraphqlLoader::new($setup, $counters);
                $body
            }
            __a::Contender::BatchAintOne => {
                let $loader = __a::BatchAintOneLoader::new($setup, $counters);
                $body
            }
            __a::Contender::TowerBatch => {
                let $loader = __a::TowerBatchLoader::new($setup, $counters);
                $body
            }
            __a::Contender::Dataloader => {
                let $loader = __a::DataloaderLoader::new($setup, $counters);
                $body
            }
            __a::Contender::Naive => {
                let $loader = __a::NaiveLoader::new($setup, $counters);
                $body
            }
        }
    }};
}

// ---- busline ---------------------------------------------------------------------------------

/// busline: `Batcher::builder(f).window(w).max_batch_size(n)` with its default `max_in_flight`
/// ([`busline::DEFAULT_MAX_IN_FLIGHT`]); window 0 is busline's natural batching (no timer).
#[derive(Clone, Debug)]
pub struct BuslineLoader(busline::Batcher<u64, u64, Infallible>);

impl BuslineLoader {
    /// Builds the batcher on the current runtime.
    pub fn new(setup: Setup, counters: Arc<Counters>) -> Self {
        BuslineLoader::with_policy(busline::policy::Policy::window(setup.window), setup, counters)
    }

    /// Builds the batcher with any policy on the current runtime.
    pub fn with_policy(policy: busline::policy::Policy, setup: Setup, counters: Arc<Counters>) -> Self {
        let batcher = busline::Batcher::builder(move |keys: Vec<u64>| {
            let map = answer(keys.into_iter(), &counters);
            async move { Ok::<_, Infallible>(map) }
        })
        .policy(policy)
        .max_batch_size(setup.max_batch_size)
        .build()
        .expect("valid busline configuration");
        BuslineLoader(batcher)
    }

    /// The batcher itself.
    pub fn batcher(&self) -> &busline::Batcher<u64, u64, Infallible> {
        &self.0
    }
}

impl Loader for BuslineLoader {
    #[inline]
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send {
        let load = self.0.load(key);
        async move { load.await.expect("busline load").expect("key answered") }
    }
}

// ---- async-graphql ---------------------------------------------------------------------------

/// async-graphql's `DataLoader::new(loader, tokio::spawn).delay(w).max_batch_size(n)` (no
/// cache). Its delay runs on `futures-timer`'s own timer thread.
#[derive(Clone)]
pub struct AsyncGraphqlLoader(Arc<async_graphql::dataloader::DataLoader<GqlBatch>>);

/// async-graphql's batch function.
#[derive(Debug)]
pub struct GqlBatch(Arc<Counters>);

impl async_graphql::dataloader::Loader<u64> for GqlBatch {
    type Value = u64;
    type Error = Arc<str>;

    fn load(&self, keys: &[u64]) -> impl Future<Output = Result<HashMap<u64, u64>, Self::Error>> + Send {
        let map = answer(keys.iter().copied(), &self.0);
        async move { Ok(map) }
    }
}

impl AsyncGraphqlLoader {
    /// Builds the loader; batches are spawned on the current runtime.
    pub fn new(setup: Setup, counters: Arc<Counters>) -> Self {
        let loader = async_graphql::dataloader::DataLoader::new(GqlBatch(counters), tokio::spawn)
            .delay(setup.window)
            .max_batch_size(setup.max_batch_size);
        AsyncGraphqlLoader(Arc::new(loader))
    }
}

impl Loader for AsyncGraphqlLoader {
    #[inline]
    async fn load(&self, key: u64) -> u64 {
        self.0.load_one(key).await.expect("async-graphql load").expect("key answered")
    }
}

// ---- batch-aint-one --------------------------------------------------------------------------

/// batch-aint-one: one batching key (`()`), `Limits { max_batch_size: n, max_key_concurrency: m }`,
/// policy `Immediate` at window 0, else `Duration(w, OnFull::Process)`.
#[derive(Clone)]
pub struct BatchAintOneLoader(batch_aint_one::Batcher<BaoProcessor>);

/// batch-aint-one's processor.
#[derive(Clone, Debug)]
pub struct BaoProcessor(Arc<Counters>);

impl batch_aint_one::Processor for BaoProcessor {
    type Key = ();
    type Input = u64;
    type Output = u64;
    type Error = String;
    type Resources = ();

    async fn acquire_resources(&self, _key: ()) -> Result<(), String> {
        Ok(())
    }

    async fn process(
        &self,
        _key: (),
        inputs: impl Iterator<Item = u64> + Send,
        _resources: (),
    ) -> Result<Vec<u64>, String> {
        // Outputs must come in input order: build the map at once, then read it per input.
        let keys: Vec<u64> = inputs.collect();
        let map = answer(keys.iter().copied(), &self.0);
        Ok(keys.iter().map(|k| map[k]).collect())
    }
}

impl BatchAintOneLoader {
    /// Builds the batcher; its worker is spawned on the current runtime.
    pub fn new(setup: Setup, counters: Arc<Counters>) -> Self {
        use batch_aint_one::{BatchingPolicy, Limits, OnFull};
        let policy = if setup.window.is_zero() {
            BatchingPolicy::Immediate
        } else {
            BatchingPolicy::Duration(setup.window, OnFull::Process)
        };
        let batcher = batch_aint_one::Batcher::builder()
            .name("bench")
            .processor(BaoProcessor(counters))
            .limits(
                Limits::builder()
                    .max_batch_size(setup.max_batch_size)
                    .max_key_concurrency(setup.max_in_flight)
                    .build(),
            )
            .batching_policy(policy)
            .build();
        BatchAintOneLoader(batcher)
    }
}

impl Loader for BatchAintOneLoader {
    #[inline]
    async fn load(&self, key: u64) -> u64 {
        self.0.add((), key).await.expect("batch-aint-one add")
    }
}

// ---- tower-batch-control ---------------------------------------------------------------------

/// tower-batch-control: `Batch::new(inner, n, m, w)`. Its inner service collects
/// `Item(key)`s with a oneshot each and, on `Flush`, builds the map and answers them.
/// A window of 0 is `max_latency = 0`: tokio's `sleep(0)`, which waits for the timer's next tick.
#[derive(Clone)]
pub struct TowerBatchLoader(tower_batch_control::Batch<TowerInner, TowerKey>);

/// The request type (tower-batch-control needs `RequestWeight` on it).
#[derive(Debug, Clone, Copy)]
pub struct TowerKey(pub u64);

impl tower_batch_control::RequestWeight for TowerKey {}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type TowerFuture = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send + 'static>>;

/// The batched service behind tower-batch-control.
#[derive(Debug)]
pub struct TowerInner {
    pending: Vec<(u64, oneshot::Sender<u64>)>,
    counters: Arc<Counters>,
}

impl tower::Service<tower_batch_control::BatchControl<TowerKey>> for TowerInner {
    type Response = u64;
    type Error = BoxError;
    type Future = TowerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tower_batch_control::BatchControl<TowerKey>) -> TowerFuture {
        match req {
            tower_batch_control::BatchControl::Item(TowerKey(key)) => {
                let (tx, rx) = oneshot::channel();
                self.pending.push((key, tx));
                Box::pin(async move { rx.await.map_err(|e| Box::new(e) as BoxError) })
            }
            tower_batch_control::BatchControl::Flush => {
                let pending = std::mem::take(&mut self.pending);
                let map = answer(pending.iter().map(|(k, _)| *k), &self.counters);
                for (key, tx) in pending {
                    let _ = tx.send(map[&key]);
                }
                Box::pin(async { Ok(0) })
            }
        }
    }
}

impl TowerBatchLoader {
    /// Builds the batch service; its worker is spawned on the current runtime.
    pub fn new(setup: Setup, counters: Arc<Counters>) -> Self {
        let inner = TowerInner { pending: Vec::new(), counters };
        TowerBatchLoader(tower_batch_control::Batch::new(
            inner,
            setup.max_batch_size,
            setup.max_in_flight,
            setup.window,
        ))
    }
}

impl Loader for TowerBatchLoader {
    #[inline]
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send {
        use tower::ServiceExt;
        let svc = self.0.clone();
        async move { svc.oneshot(TowerKey(key)).await.expect("tower-batch-control call") }
    }
}

// ---- dataloader ------------------------------------------------------------------------------

/// dataloader 0.18: `non_cached::Loader::new(f).with_max_batch_size(n)`, default wait (10
/// `yield_now`s); no time window.
#[derive(Clone)]
pub struct DataloaderLoader(dataloader::non_cached::Loader<u64, u64, DlBatch>);

/// dataloader's batch function.
#[derive(Debug)]
pub struct DlBatch(Arc<Counters>);

impl dataloader::BatchFn<u64, u64> for DlBatch {
    async fn load(&mut self, keys: &[u64]) -> HashMap<u64, u64> {
        answer(keys.iter().copied(), &self.0)
    }
}

impl DataloaderLoader {
    /// Builds the loader (no background task).
    pub fn new(setup: Setup, counters: Arc<Counters>) -> Self {
        DataloaderLoader(dataloader::non_cached::Loader::new(DlBatch(counters)).with_max_batch_size(setup.max_batch_size))
    }
}

impl Loader for DataloaderLoader {
    #[inline]
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send {
        self.0.load(key)
    }
}

// ---- naive port ------------------------------------------------------------------------------

/// The obvious port of the article's idea: a `Mutex<HashMap<key, Vec<oneshot>>>`. The first key
/// into an empty map spawns a task that sleeps the window (tokio's timer; no sleep at window 0),
/// takes the whole map, builds the values and answers every waiter. A full map is sent at once.
#[derive(Clone)]
pub struct NaiveLoader(Arc<NaiveShared>);

/// The naive port's state.
pub struct NaiveShared {
    pending: Mutex<HashMap<u64, Vec<oneshot::Sender<u64>>>>,
    setup: Setup,
    counters: Arc<Counters>,
}

impl NaiveLoader {
    /// Builds the loader (tasks are spawned on the current runtime per batch).
    pub fn new(setup: Setup, counters: Arc<Counters>) -> Self {
        NaiveLoader(Arc::new(NaiveShared { pending: Mutex::new(HashMap::new()), setup, counters }))
    }
}

impl NaiveShared {
    fn run(&self, batch: HashMap<u64, Vec<oneshot::Sender<u64>>>) {
        let map = answer(batch.keys().copied(), &self.counters);
        for (key, waiters) in batch {
            let value = map[&key];
            for tx in waiters {
                let _ = tx.send(value);
            }
        }
    }
}

impl Loader for NaiveLoader {
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send {
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut pending = self.0.pending.lock().unwrap();
            let opened = pending.is_empty();
            pending.entry(key).or_default().push(tx);
            if pending.len() >= self.0.setup.max_batch_size {
                Some(std::mem::take(&mut *pending))
            } else {
                if opened {
                    let shared = Arc::clone(&self.0);
                    tokio::spawn(async move {
                        if !shared.setup.window.is_zero() {
                            tokio::time::sleep(shared.setup.window).await;
                        }
                        let batch = std::mem::take(&mut *shared.pending.lock().unwrap());
                        if !batch.is_empty() {
                            shared.run(batch);
                        }
                    });
                }
                None
            }
        };
        if let Some(batch) = full {
            self.0.run(batch);
        }
        async move { rx.await.expect("naive batch answered") }
    }
}
