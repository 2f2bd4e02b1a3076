//! The peer crates' adapters (the `peers` feature): the crates a user would pick instead of
//! busline, each configured as `benches/README.md` says. See [`crate::adapters`] for the
//! trait they implement and how their batch functions count.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::adapters::{Contender, Counters, Loader, Setup, answer};

/// batch-aint-one's largest safe `max_batch_size`: tokio's semaphore limit (its item channel's
/// bound) ÷ 32. Its defaults derive `max_key_queued_items = max_batch_size × max_key_concurrency
/// × 2` and `max_items_awaiting_worker = max_batch_size × max_key_concurrency +` that (24 ×
/// max_batch_size with our concurrency of 8), and its policy multiplies max_batch_size by the
/// batches acquiring (up to 8): ÷ 32 keeps all of them in range.
pub const BAO_NO_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS / 32;

/// tower-batch-control's largest `max_items_weight_in_batch`: it sizes a tokio semaphore of
/// `max_items_weight_in_batch × max_batches` permits (max_batches = 8 here).
pub const TOWER_NO_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS / crate::adapters::PEER_MAX_IN_FLIGHT;

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
            .max_batch_size(Contender::AsyncGraphql.max_batch_size(setup.max_batch_size));
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
                    .max_batch_size(Contender::BatchAintOne.max_batch_size(setup.max_batch_size))
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
            Contender::TowerBatch.max_batch_size(setup.max_batch_size),
            setup.max_in_flight,
            setup.window,
        ))
    }
}

impl Loader for TowerBatchLoader {
    #[inline]
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send {
        self.clone().load_owned(key)
    }

    /// tower's `oneshot` consumes a service handle: the request's own clone is that handle.
    #[inline]
    fn load_owned(self, key: u64) -> impl Future<Output = u64> + Send {
        use tower::ServiceExt;
        async move { self.0.oneshot(TowerKey(key)).await.expect("tower-batch-control call") }
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
        DataloaderLoader(dataloader::non_cached::Loader::new(DlBatch(counters)).with_max_batch_size(Contender::Dataloader.max_batch_size(setup.max_batch_size)))
    }
}

impl Loader for DataloaderLoader {
    #[inline]
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send {
        self.0.load(key)
    }
}

