//! The state a batcher's handles, callers, driver and batch tasks share. Everything above this
//! module (the handle, the driver, the callers' futures) reaches the others only through it.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::Error;
use crate::clock::Clock;
use crate::ring::Ring;
use crate::settings::Overflow;
use crate::signals::{self, Signals};
use crate::stats::StatsCells;
use crate::sync::{AtomicBool, Ordering};

/// What every caller of one batch reads: the one shared map, or the one shared error.
pub(crate) type Outcome<K, V, E> = Result<StdArc<HashMap<K, V>>, Error<E>>;

/// The user's batch function, type-erased (one boxed future per batch).
pub(crate) type BatchFuture<K, V, E> =
    Pin<Box<dyn Future<Output = Result<HashMap<K, V>, E>> + Send + 'static>>;
pub(crate) type BatchFn<K, V, E> = StdArc<dyn Fn(Vec<K>) -> BatchFuture<K, V, E> + Send + Sync>;

/// A batch call awaited by [`await_batch`]: its outcome, and its future to drop afterwards.
pub(crate) type AwaitedBatch<K, V, E> = Pin<Box<dyn Future<Output = (Outcome<K, V, E>, BatchFuture<K, V, E>)> + Send>>;

/// A batch's outcome as a slot holds it: dropping it runs the user's `Drop` of the map (its
/// keys and values) or of the error, and a panic there is caught, so that it cannot unwind
/// through whoever releases the slot last.
#[derive(Debug)]
pub(crate) struct Held<K, V, E>(Option<Outcome<K, V, E>>);

impl<K, V, E> Held<K, V, E> {
    pub(crate) fn new(outcome: Outcome<K, V, E>) -> Self {
        Held(Some(outcome))
    }

    pub(crate) fn outcome(&self) -> &Outcome<K, V, E> {
        self.0.as_ref().expect("taken only by drop")
    }
}

impl<K, V, E> Drop for Held<K, V, E> {
    fn drop(&mut self) {
        if let Some(outcome) = self.0.take() {
            drop_quietly(outcome);
        }
    }
}

/// A key as a seat holds it. The slot drops it when it is reset, after every caller of its
/// batch has been answered; its drop (user code) catches a panic, so that the reset always
/// completes and the slot returns to the pool. (An `Option`, not `ManuallyDrop`, to stay free
/// of `unsafe`: no size for keys with a niche, one word for the others.)
#[derive(Debug)]
pub(crate) struct SeatKey<K>(Option<K>);

impl<K> SeatKey<K> {
    #[inline]
    pub(crate) fn new(key: K) -> Self {
        SeatKey(Some(key))
    }

    #[inline]
    pub(crate) fn get(&self) -> &K {
        self.0.as_ref().expect("taken only by drop or into_inner")
    }

    pub(crate) fn into_inner(mut self) -> K {
        self.0.take().expect("taken only by drop or into_inner")
    }
}

impl<K> Drop for SeatKey<K> {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            drop_quietly(key);
        }
    }
}

/// The ring of a batcher with keys `K`.
pub(crate) type SeatRing<K, V, E> = Ring<SeatKey<K>, Held<K, V, E>>;
/// One of its batch slots.
pub(crate) type Slot<K, V, E> = crate::slot::Slot<SeatKey<K>, Held<K, V, E>>;

/// Drops `value`, catching a panic from its `Drop` (user code: keys, values, errors, futures).
/// Returns whether it panicked.
pub(crate) fn drop_quietly<T>(value: T) -> bool {
    std::panic::catch_unwind(AssertUnwindSafe(move || drop(value))).is_err()
}

pub(crate) struct Shared<K, V, E> {
    pub(crate) ring: SeatRing<K, V, E>,
    pub(crate) signals: Signals,
    /// Producers that found the bus full and wait for the next one (see `Ring::want_room`).
    pub(crate) room: Notify,
    /// Set by the driver when it has finished (every accepted request answered).
    pub(crate) finished: AtomicBool,
    pub(crate) finished_notify: Notify,
    pub(crate) overflow: Overflow,
    pub(crate) batch_fn: BatchFn<K, V, E>,
    /// A batch call running longer is dropped and its callers get `Error::Timeout`.
    pub(crate) batch_timeout: Option<Duration>,
    pub(crate) stats: StatsCells,
    pub(crate) clock: Clock,
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
    /// Asks the driver to send what is queued, refuse new requests and stop.
    pub(crate) fn request_shutdown(&self) {
        self.signals.request_shutdown();
    }

    /// Drops `n` references to `slot`, waking the driver if that freed it. The last reference
    /// resets the slot, dropping keys and the outcome: `SeatKey` and `Held` catch a panic in
    /// their user code, so the reset completes and the slot returns to the pool.
    pub(crate) fn release(&self, slot: usize, n: i64) {
        signals::release(&self.ring, &self.signals, slot, n);
    }

    /// Whether the driver has finished.
    pub(crate) fn is_finished(&self) -> bool {
        // Acquire: pairs with the driver's Release store in `finish`.
        self.finished.load(Ordering::Acquire)
    }

    /// The driver has finished: every accepted request has its answer.
    pub(crate) fn finish(&self) {
        // Release: pairs with the Acquire load in `is_finished`.
        self.finished.store(true, Ordering::Release);
        self.finished_notify.notify_waiters();
    }
}

/// Polls `batch` to completion (a panic is caught) or until `timeout`; hands the future back
/// so that the caller decides when to drop it.
pub(crate) async fn await_batch<K, V, E>(
    mut batch: BatchFuture<K, V, E>,
    timeout: Option<Duration>,
) -> (Outcome<K, V, E>, BatchFuture<K, V, E>) {
    let finished = {
        let polled = AssertUnwindSafe(batch.as_mut()).catch_unwind();
        match timeout {
            Some(timeout) => tokio::time::timeout(timeout, polled).await.ok(),
            None => Some(polled.await),
        }
    };
    let outcome = match finished {
        Some(Ok(Ok(map))) => Ok(StdArc::new(map)),
        Some(Ok(Err(e))) => Err(Error::Batch(StdArc::new(e))),
        Some(Err(_panic)) => Err(Error::Panicked),
        None => Err(Error::Timeout),
    };
    (outcome, batch)
}

