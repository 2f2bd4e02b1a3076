//! The state a batcher's handles, callers, driver and batch tasks share.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::time::Instant as StdInstant;

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::Error;
use crate::builder::Overflow;
use crate::policy::Instant;
use crate::ring::Ring;
use crate::stats::StatsCells;
use crate::sync::{AtomicBool, AtomicU64, Ordering, WakerCell};

/// What every caller of one batch reads: the one shared map, or the one shared error.
pub(crate) type Outcome<K, V, E> = Result<StdArc<HashMap<K, V>>, Error<E>>;

/// The user's batch function, type-erased (one boxed future per batch).
pub(crate) type BatchFuture<K, V, E> =
    Pin<Box<dyn Future<Output = Result<HashMap<K, V>, E>> + Send + 'static>>;
pub(crate) type BatchFn<K, V, E> = StdArc<dyn Fn(Vec<K>) -> BatchFuture<K, V, E> + Send + Sync>;

pub(crate) struct Shared<K, V, E> {
    pub(crate) ring: Ring<K, Outcome<K, V, E>>,
    /// The driver task's waker: woken by the first and the last seat of a bus, by completed
    /// batches, by freed slots and by shutdown.
    pub(crate) driver: CachePadded<WakerCell>,
    /// Batches completed that the driver has not yet counted.
    pub(crate) completed: CachePadded<AtomicU64>,
    /// Producers that found the bus full and wait for the next one (see `Ring::want_room`).
    pub(crate) room: Notify,
    /// Set by the driver while a full bus cannot leave (every in-flight place or every slot
    /// busy): the batcher is at capacity.
    pub(crate) stalled: AtomicBool,
    /// Shutdown requested (by `shutdown()` or the last handle's drop).
    pub(crate) shutdown: AtomicBool,
    /// Live `Batcher` handles.
    pub(crate) handles: AtomicU64,
    /// Set by the driver when it has finished (every accepted request answered).
    pub(crate) finished: AtomicBool,
    pub(crate) finished_notify: Notify,
    pub(crate) overflow: Overflow,
    pub(crate) batch_fn: BatchFn<K, V, E>,
    pub(crate) stats: StatsCells,
    /// The origin of the driver's clock.
    pub(crate) origin: StdInstant,
}

impl<K, V, E> std::fmt::Debug for Shared<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("seats", &self.ring.seats())
            .field("overflow", &self.overflow)
            .field("closed", &self.ring.is_closed())
            .finish_non_exhaustive()
    }
}

impl<K, V, E> Shared<K, V, E> {
    /// The driver clock: time since `origin`.
    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    /// Asks the driver to send what is queued, refuse new requests and stop.
    pub(crate) fn request_shutdown(&self) {
        // Release: pairs with the driver's Acquire load.
        self.shutdown.store(true, Ordering::Release);
        self.wake_driver();
    }

    /// Drops a caller's or a batch's reference to `slot`, waking the driver if that freed it.
    pub(crate) fn release(&self, slot: usize, n: i64) {
        if self.ring.release(slot, n) {
            self.wake_driver();
        }
    }
}
