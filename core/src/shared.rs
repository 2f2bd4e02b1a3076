//! The state a batcher's handles, callers, driver and batch tasks share. Everything above this
//! module (the handle, the driver, the callers' futures) reaches the others only through it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::Error;
use crate::answers::{Answered, Answers};
use crate::clock::Clock;
use crate::observe::{BatchTrace, Observer};
use crate::ring::Ring;
use crate::settings::Overflow;
use crate::signals::{self, Signals};
use crate::stats::StatsCells;
use crate::sync::{AtomicBool, Ordering};

/// What every caller of one batch reads: the one shared answers, or the one shared error.
pub(crate) type Outcome<K, V, E> = Result<Answers<K, V, E>, Error<E>>;

/// The user's batch function, type-erased (one boxed future per batch), its answer in the
/// engine's form (`answers.rs`).
pub(crate) type BatchFuture<K, V, E> =
    Pin<Box<dyn Future<Output = Result<Answered<K, V, E>, E>> + Send + 'static>>;
pub(crate) type BatchFn<K, V, E> = StdArc<dyn Fn(Vec<K>) -> BatchFuture<K, V, E> + Send + Sync>;

/// A batch call awaited by [`await_batch`]: its outcome, and its future to drop afterwards.
pub(crate) type AwaitedBatch<K, V, E> = Pin<Box<dyn Future<Output = (Outcome<K, V, E>, BatchFuture<K, V, E>)> + Send>>;

/// A batch's outcome as a slot holds it, with the batch's trace (its span, under the `tracing`
/// feature; nothing otherwise). Dropping it runs the user's `Drop` of the map (its keys and
/// values) or of the error, and a panic there is caught, so that it cannot unwind through
/// whoever releases the slot last.
#[derive(Debug)]
pub(crate) struct Held<K, V, E> {
    outcome: Option<Outcome<K, V, E>>,
    /// Seats (increasing) whose key panicked before the batch ran: their callers get
    /// `Error::Panicked`, whatever the outcome.
    refused: Option<Box<[usize]>>,
    #[cfg_attr(not(feature = "tracing"), allow(dead_code, reason = "read by the tracing observer only"))]
    trace: BatchTrace,
}

impl<K, V, E> Held<K, V, E> {
    pub(crate) fn new(outcome: Outcome<K, V, E>) -> Self {
        Held::traced(outcome, BatchTrace::default())
    }

    pub(crate) fn traced(outcome: Outcome<K, V, E>, trace: BatchTrace) -> Self {
        Held { outcome: Some(outcome), refused: None, trace }
    }

    /// The same, with `refused` seats answered `Panicked`.
    pub(crate) fn refusing(mut self, refused: Option<Box<[usize]>>) -> Self {
        self.refused = refused;
        self
    }

    /// Whether seat `index`'s key panicked before the batch ran.
    #[inline]
    pub(crate) fn refused(&self, index: usize) -> bool {
        self.refused.as_ref().is_some_and(|seats| seats.binary_search(&index).is_ok())
    }

    pub(crate) fn outcome(&self) -> &Outcome<K, V, E> {
        self.outcome.as_ref().expect("taken only by drop")
    }

    #[cfg_attr(not(feature = "tracing"), allow(dead_code, reason = "read by the tracing observer only"))]
    pub(crate) fn trace(&self) -> &BatchTrace {
        &self.trace
    }
}

impl<K, V, E> Drop for Held<K, V, E> {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            drop_quietly(outcome);
        }
    }
}

/// The ring of a batcher with keys `K`.
pub(crate) type SeatRing<K, V, E> = Ring<K, Held<K, V, E>>;
/// One of its batch slots.
pub(crate) type Slot<K, V, E> = crate::slot::Slot<K, Held<K, V, E>>;

/// Drops `value`, catching a panic from its `Drop` (user code: keys, values, errors, futures,
/// groups). Returns whether it panicked.
pub(crate) fn drop_quietly<T>(value: T) -> bool {
    match std::panic::catch_unwind(AssertUnwindSafe(move || drop(value))) {
        Ok(()) => false,
        Err(payload) => {
            forget_payload(payload);
            true
        }
    }
}

/// Drops a caught panic's payload: its own `Drop` may panic too (and that one's payload is
/// leaked rather than dropped again).
pub(crate) fn forget_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// A holder of something whose `Drop` runs the user's code, dropped as [`drop_quietly`] does:
/// whichever caller, task or epoch guard happens to hold it last (a shared outcome's `Arc`, a
/// partition's copy of a group), a panicking `Drop` does not unwind into its frame.
pub(crate) struct Quiet<T>(Option<T>);

impl<T> Quiet<T> {
    pub(crate) fn new(value: T) -> Quiet<T> {
        Quiet(Some(value))
    }

    /// Holds nothing: for a value that failed to be made, never read.
    pub(crate) fn empty() -> Quiet<T> {
        Quiet(None)
    }

    /// The value, handed on: whoever takes it drops it.
    pub(crate) fn into_inner(mut self) -> T {
        self.0.take().expect("a Quiet is taken only while it holds its value")
    }
}

impl<T> std::ops::Deref for Quiet<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("a Quiet is read only while it holds its value")
    }
}

impl<T> Drop for Quiet<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            drop_quietly(value);
        }
    }
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
    /// Metrics handles and the batch span factory (empty without the `metrics` and `tracing`
    /// features).
    pub(crate) observer: Observer,
    pub(crate) clock: Clock,
    /// The runtime the driver runs on: where a caller running alone makes its timeout's timer
    /// (the caller itself may be anywhere).
    pub(crate) runtime: tokio::runtime::Handle,
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
    /// resets the slot, dropping keys and the outcome: the slot (for keys) and `Held` catch a
    /// panic in their user code, so the reset completes and the slot returns to the pool.
    ///
    /// # Safety
    ///
    /// As for [`Ring::release`](crate::ring::Ring::release): the caller holds `n` references
    /// to `slot` (a seated caller its own, a batch the one its seal took) and gives them up.
    pub(crate) unsafe fn release(&self, slot: usize, n: i64) {
        // SAFETY: forwarded from the caller.
        unsafe { signals::release(&self.ring, &self.signals, slot, n) };
    }

    /// Waits until the bus that was boarding as `{ epoch, slot }` = `boarding` has left (or the
    /// batcher closed), or the stall has ended: register, then announce and check, as a
    /// producer that found the bus full does (`signals::room_or_unstalled`).
    #[cfg(feature = "tower")]
    pub(crate) async fn room_after(&self, boarding: u64) {
        let notified = self.room.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        // Or until the stall ends without a seal (the bus seen full left before `boarding` was
        // read, and the next one is not stuck).
        if signals::room_or_unstalled(&self.ring, &self.signals, boarding) {
            return;
        }
        notified.await;
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
/// so that the caller decides when to drop it. The timeout's timer is made here and counts from
/// now: called in the batcher's runtime context (the driver's task, or a solo run's entered
/// scope in `load.rs`).
pub(crate) fn await_batch<K, V, E>(
    mut batch: BatchFuture<K, V, E>,
    timeout: Option<Duration>,
) -> impl Future<Output = (Outcome<K, V, E>, BatchFuture<K, V, E>)> + use<K, V, E> {
    let deadline = timeout.map(|timeout| Box::pin(tokio::time::sleep(timeout)));
    async move {
        let finished = {
            let polled = std::pin::pin!(AssertUnwindSafe(batch.as_mut()).catch_unwind());
            match deadline {
                Some(deadline) => match futures_util::future::select(polled, deadline).await {
                    futures_util::future::Either::Left((finished, _)) => Some(finished),
                    futures_util::future::Either::Right(_) => None,
                },
                None => Some(polled.await),
            }
        };
        let outcome = match finished {
            Some(Ok(Ok(answered))) => Ok(Answers::from(answered)),
            Some(Ok(Err(e))) => Err(Error::Batch(StdArc::new(e))),
            Some(Err(_panic)) => Err(Error::Panicked),
            None => Err(Error::Timeout),
        };
        (outcome, batch)
    }
}

