//! Configuring a [`Batcher`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant as StdInstant};

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::batcher::Batcher;
use crate::driver::Driver;
use crate::policy::{Limits, Policy, Scheduler};
use crate::ring::{MAX_SLOTS, Ring};
use crate::shared::{BatchFn, BatchFuture, Shared};
use crate::stats::StatsCells;
use crate::sync::{AtomicBool, AtomicU64, WakerCell};
use crate::ConfigError;

/// Default `max_batch_size`: TF Serving's default `max_batch_size` is 1000, and 1024 keys keep
/// an `IN (...)` list well within every mainstream database's limits.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1024;
/// Default `max_in_flight`: 2, one batch running and one leaving. Natural batching accumulates
/// only while every in-flight place is busy, so this limit is what makes buses fill under load:
/// with 1,000 callers and an instant backend (benches' `compare`, 5 rounds) 2 gave 6.1 M loads/s
/// at ~470 keys per batch, 4 gave 6.2 M at ~145, 1 gave 3.8 M. Raise it for a slow backend with
/// a large connection pool, where concurrent batches do run in parallel.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;

/// What a request does when the bus is full and cannot leave yet.
///
/// The bus is full when `max_batch_size` requests wait. It leaves at once unless the batcher is
/// at capacity: `max_in_flight` batches already run, or every batch slot is still in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for the next bus (backpressure, like a bounded channel's `send().await`).
    #[default]
    Wait,
    /// Fail at once with [`Error::Overloaded`](crate::Error::Overloaded) when at capacity.
    Reject,
    /// When at capacity, call the batch function for this one key, in the caller's task.
    RunAlone,
}

/// Builds a [`Batcher`]; see [`Batcher::builder`].
pub struct Builder<K, V, E> {
    batch_fn: BatchFn<K, V, E>,
    policy: Policy,
    max_batch_size: usize,
    max_in_flight: usize,
    capacity: Option<usize>,
    overflow: Overflow,
}

impl<K, V, E> fmt::Debug for Builder<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("policy", &self.policy)
            .field("max_batch_size", &self.max_batch_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl<K, V, E> Builder<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn new<F, Fut>(batch_fn: F) -> Builder<K, V, E>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    {
        let batch_fn: BatchFn<K, V, E> =
            StdArc::new(move |keys| Box::pin(batch_fn(keys)) as BatchFuture<K, V, E>);
        Builder {
            batch_fn,
            policy: Policy::Natural,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            capacity: None,
            overflow: Overflow::Wait,
        }
    }

    /// A fixed collection window: the bus waits this long after its first passenger.
    /// `Duration::ZERO` is natural batching: the bus leaves as soon as the driver runs, with
    /// every request already queued, and no timer. Shorthand for
    /// `.policy(Policy::window(window))`.
    pub fn window(mut self, window: Duration) -> Self {
        self.policy = Policy::window(window);
        self
    }

    /// The departure policy. Default: [`Policy::Natural`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The most keys one batch function call receives; a full bus leaves at once.
    /// Default [`DEFAULT_MAX_BATCH_SIZE`]. Zero is a [`ConfigError`]; `usize::MAX` means no limit.
    /// Seats are allocated as requests arrive, so a large limit costs no memory until a batch
    /// grows that large.
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.max_batch_size = max_batch_size;
        self
    }

    /// The most batch function calls running at once. Default [`DEFAULT_MAX_IN_FLIGHT`];
    /// at most 62.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// The most requests admitted at once (waiting, in flight, or being answered), rounded up to
    /// whole batches. Default `(max_in_flight + 2) × max_batch_size`: one bus boarding,
    /// `max_in_flight` running, one being read. It must hold `max_in_flight + 1` batches and at
    /// most 64.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// What a request does when the batcher is at capacity. Default [`Overflow::Wait`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Starts the batcher's driver on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting if one is out of range, or `runtime` if called
    /// outside a tokio runtime.
    pub fn build(self) -> Result<Batcher<K, V, E>, ConfigError> {
        if self.max_batch_size == 0 {
            return Err(ConfigError::new("max_batch_size", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if self.max_in_flight > MAX_SLOTS - 2 {
            return Err(ConfigError::new("max_in_flight", format!("must be at most {}", MAX_SLOTS - 2)));
        }
        let scheduler = Scheduler::new(
            self.policy,
            Limits { max_batch_size: self.max_batch_size, max_in_flight: self.max_in_flight },
        )?;
        // Under `Car` every request is its own batch: one seat per bus.
        let seats = scheduler.limits().max_batch_size;
        let slots = match self.capacity {
            None => (self.max_in_flight + 2).min(MAX_SLOTS),
            Some(0) => return Err(ConfigError::new("capacity", "must be at least 1")),
            Some(capacity) => {
                let slots = capacity.div_ceil(seats);
                if slots < self.max_in_flight + 1 {
                    return Err(ConfigError::new(
                        "capacity",
                        format!(
                            "must hold max_in_flight + 1 = {} batches of {seats}, i.e. at least {}",
                            self.max_in_flight + 1,
                            (self.max_in_flight + 1).saturating_mul(seats)
                        ),
                    ));
                }
                if slots > MAX_SLOTS {
                    return Err(ConfigError::new(
                        "capacity",
                        format!("must be at most {MAX_SLOTS} batches of {seats}, i.e. {}", MAX_SLOTS.saturating_mul(seats)),
                    ));
                }
                slots
            }
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError::new("runtime", "build() must be called within a tokio runtime"))?;
        let shared = StdArc::new(Shared {
            ring: Ring::new(slots, seats),
            driver: CachePadded::new(WakerCell::new()),
            completed: CachePadded::new(AtomicU64::new(0)),
            room: Notify::new(),
            stalled: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            handles: AtomicU64::new(1),
            finished: AtomicBool::new(false),
            finished_notify: Notify::new(),
            overflow: self.overflow,
            batch_fn: self.batch_fn,
            stats: StatsCells::new(),
            origin: StdInstant::now(),
        });
        runtime.spawn(Driver::new(StdArc::clone(&shared), scheduler, runtime.clone()).run());
        Ok(Batcher::from_shared(shared))
    }
}
