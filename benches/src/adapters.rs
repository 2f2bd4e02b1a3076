//! One small adapter per contender, so every implementation runs the same scenario.
//!
//! Each adapter implements [`Loader`]: `load(key) -> value`, answering `value_of(key)`. Every
//! batch function builds its `HashMap` at once from the keys it got (see [`answer`]) and counts
//! its calls in [`Counters`], so keys per batch are measured the same way for every contender
//! (not taken from a crate's own statistics).
//!
//! The adapters are generic-free concrete types and the scenarios are generic over [`Loader`],
//! so a load costs what the crate costs: no boxing, no dynamic dispatch. [`with_loader!`]
//! turns a [`Contender`] value into the matching concrete adapter. busline and the naive port
//! live here; the peer crates' adapters are in [`crate::peers`], behind the `peers` feature.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What every contender's `load` does: return the value of one key through a batch.
pub trait Loader: Clone + Send + Sync + 'static {
    /// Loads `key` through the next batch and returns its value.
    fn load(&self, key: u64) -> impl Future<Output = u64> + Send;

    /// Loads `key` through a handle of its own, as a service's request handler does with the
    /// clone it was given: the scenarios call `loader.clone().load_owned(key)` per request, so
    /// each request pays for cloning the handle and for dropping it after its answer.
    fn load_owned(self, key: u64) -> impl Future<Output = u64> + Send {
        async move { self.load(key).await }
    }
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
    /// The most keys in one batch; [`NO_LIMIT`] asks each contender for its largest setting
    /// ([`Contender::max_batch_size`] says which that is).
    pub max_batch_size: usize,
    /// The most batches running at once for the peers that have such a limit (batch-aint-one,
    /// tower-batch-control); busline runs with its own default.
    pub max_in_flight: usize,
}

/// The concurrency limit given to the peers that have one: 8, a typical pool size.
pub const PEER_MAX_IN_FLIGHT: usize = 8;

/// `Setup::max_batch_size` meaning "no limit": each contender maps it to its own largest setting.
pub const NO_LIMIT: usize = usize::MAX;

/// busline's "no limit" with a core whose builder refuses `usize::MAX` (before issue 9's seats
/// that follow the load, the core preallocated every batch slot's seats, 40 bytes each for u64
/// keys): 2^24, the "no limit" a user tried in issue 9 (0.64 GB per slot). Such a builder accepted
/// up to 2^30, but 40 GB per slot does not fit in these machines' 24 GB.
pub const BUSLINE_FALLBACK_NO_LIMIT: usize = 1 << 24;

/// What busline runs with when asked for [`NO_LIMIT`]: `usize::MAX` if its builder accepts it
/// (it does since its seats follow the load, issue 9), else [`BUSLINE_FALLBACK_NO_LIMIT`]. Asked of the
/// builder once per process; call within a tokio runtime.
pub fn busline_no_limit() -> usize {
    static NO_LIMIT_SETTING: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *NO_LIMIT_SETTING.get_or_init(|| {
        let probe = busline::Batcher::<u64, u64, Infallible>::builder(|_keys: Vec<u64>| async {
            Ok::<HashMap<u64, u64>, Infallible>(HashMap::new())
        })
        .max_batch_size(usize::MAX)
        .build();
        match probe {
            Ok(_) => usize::MAX,
            Err(_) => BUSLINE_FALLBACK_NO_LIMIT,
        }
    })
}

impl Setup {
    /// `window` with 1,024 keys per batch, and `PEER_MAX_IN_FLIGHT` for the peers.
    pub fn with_window(window: Duration) -> Setup {
        Setup { window, max_batch_size: busline::DEFAULT_MAX_BATCH_SIZE, max_in_flight: PEER_MAX_IN_FLIGHT }
    }

    /// `window` with `max_batch_size` (or [`NO_LIMIT`]), and `PEER_MAX_IN_FLIGHT` for the peers.
    pub fn new(window: Duration, max_batch_size: usize) -> Setup {
        Setup { window, max_batch_size, max_in_flight: PEER_MAX_IN_FLIGHT }
    }
}

/// Every implementation the benches compare. The peer crates' variants exist only with the
/// `peers` feature (on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// busline itself.
    Busline,
    /// async-graphql 7's `DataLoader` (no cache).
    #[cfg(feature = "peers")]
    AsyncGraphql,
    /// batch-aint-one 0.16.
    #[cfg(feature = "peers")]
    BatchAintOne,
    /// tower-batch-control 1.1.
    #[cfg(feature = "peers")]
    TowerBatch,
    /// dataloader 0.18 (`non_cached::Loader`, tokio runtime).
    #[cfg(feature = "peers")]
    Dataloader,
    /// A naive `Mutex<HashMap<key, Vec<oneshot>>>` port, written here.
    Naive,
}

impl Contender {
    /// Every contender built in, busline first.
    pub const ALL: &'static [Contender] = &[
        Contender::Busline,
        #[cfg(feature = "peers")]
        Contender::AsyncGraphql,
        #[cfg(feature = "peers")]
        Contender::BatchAintOne,
        #[cfg(feature = "peers")]
        Contender::TowerBatch,
        #[cfg(feature = "peers")]
        Contender::Dataloader,
        Contender::Naive,
    ];

    /// Every contender but busline.
    pub fn peers() -> impl Iterator<Item = Contender> {
        Contender::ALL.iter().copied().filter(|&c| c != Contender::Busline)
    }

    /// The `max_batch_size` this contender is configured with when `Setup` asks for
    /// `requested` ([`NO_LIMIT`]: its largest setting, see [`no_limit_note`](Contender::no_limit_note)).
    /// busline's answer needs a tokio runtime the first time (it asks its builder).
    pub fn max_batch_size(self, requested: usize) -> usize {
        if requested != NO_LIMIT {
            return requested;
        }
        match self {
            Contender::Busline => busline_no_limit(),
            #[cfg(feature = "peers")]
            Contender::BatchAintOne => crate::peers::BAO_NO_LIMIT,
            #[cfg(feature = "peers")]
            Contender::TowerBatch => crate::peers::TOWER_NO_LIMIT,
            #[cfg(feature = "peers")]
            Contender::AsyncGraphql | Contender::Dataloader => usize::MAX,
            Contender::Naive => usize::MAX,
        }
    }

    /// What "no limit" means for this contender, for the reports.
    pub fn no_limit_note(self) -> &'static str {
        match self {
            Contender::Busline => {
                "`usize::MAX` if its builder accepts it, else 2^24 (a core that preallocates every slot's seats)"
            }
            #[cfg(feature = "peers")]
            Contender::BatchAintOne => {
                "2^56 (tokio's semaphore limit ÷ 32): its queue bounds default to max_batch_size × max_key_concurrency × 2 and more, \
                 which must stay within tokio's channel limit, and it multiplies max_batch_size by batches acquiring"
            }
            #[cfg(feature = "peers")]
            Contender::TowerBatch => {
                "2^58 (tokio's semaphore limit ÷ 8): it sizes a semaphore of max_batch_size × max_batches permits"
            }
            #[cfg(feature = "peers")]
            Contender::AsyncGraphql | Contender::Dataloader => "`usize::MAX` (only compared against)",
            Contender::Naive => "`usize::MAX` (only compared against)",
        }
    }

    /// The name used in benchmark ids and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Contender::Busline => "busline",
            #[cfg(feature = "peers")]
            Contender::AsyncGraphql => "async-graphql",
            #[cfg(feature = "peers")]
            Contender::BatchAintOne => "batch-aint-one",
            #[cfg(feature = "peers")]
            Contender::TowerBatch => "tower-batch-control",
            #[cfg(feature = "peers")]
            Contender::Dataloader => "dataloader",
            Contender::Naive => "naive-mutex-map",
        }
    }

    /// Whether the contender can be configured with this window. dataloader 0.18 has no time
    /// window (it yields 10 times to the runtime; its `with_custom_wait_for_work` takes `self` by
    /// value and returns `()`, so it cannot be used), so it only runs at window 0.
    pub fn supports(self, window: Duration) -> bool {
        #[cfg(feature = "peers")]
        if self == Contender::Dataloader {
            return window.is_zero();
        }
        let _ = window;
        true
    }

    /// Parses [`name`](Contender::name) among the contenders built in.
    pub fn parse(name: &str) -> Option<Contender> {
        Contender::ALL.iter().copied().find(|c| c.name() == name)
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
            // Evaluated in the calling crate: only this package's targets use the macro, and they
            // share its features.
            #[cfg(feature = "peers")]
            __a::Contender::AsyncGraphql => {
                let $loader = $crate::peers::AsyncGraphqlLoader::new($setup, $counters);
                $body
            }
            #[cfg(feature = "peers")]
            __a::Contender::BatchAintOne => {
                let $loader = $crate::peers::BatchAintOneLoader::new($setup, $counters);
                $body
            }
            #[cfg(feature = "peers")]
            __a::Contender::TowerBatch => {
                let $loader = $crate::peers::TowerBatchLoader::new($setup, $counters);
                $body
            }
            #[cfg(feature = "peers")]
            __a::Contender::Dataloader => {
                let $loader = $crate::peers::DataloaderLoader::new($setup, $counters);
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
        .max_batch_size(Contender::Busline.max_batch_size(setup.max_batch_size))
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

    #[inline]
    async fn load_owned(self, key: u64) -> u64 {
        self.0.load(key).await.expect("busline load").expect("key answered")
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
