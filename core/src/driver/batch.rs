//! One batch's lifecycle after its seal: collect its keys, run the batch function, publish the
//! outcome. Every piece of user code on the way (the keys' `Hash`, `Eq` and `Clone` in the
//! de-duplication, the batch function's call and its future's polls, the drops of what it
//! leaves behind) runs under `catch_unwind`, so a panic becomes the batch's outcome
//! (`Error::Panicked`) and never unwinds through the driver.

use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc as StdArc;
use std::time::Duration;

use crate::Error;
use crate::ring::Sealed;
use crate::shared::{Held, Outcome, Shared, await_batch, drop_quietly};
use crate::signals;
use crate::stats::StatsCells;

/// A panic in user code, caught.
#[derive(Debug)]
pub(super) struct Panicked;

/// Waits for each sealed seat to be written and gathers the distinct keys of the callers still
/// there into `dedup`, then drains them. The keys' `Hash`, `Eq` and `Clone` run here.
pub(super) fn collect<K, V, E>(
    shared: &Shared<K, V, E>,
    sealed: Sealed,
    dedup: &mut hashbrown::HashSet<K>,
) -> Result<Vec<K>, Panicked>
where
    K: Eq + Hash + Clone,
{
    let slot = shared.ring.slot(sealed.slot);
    let gathered = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: once per seal, by the driver, before the batch's reference is released.
        unsafe {
            slot.collect(sealed.count, |key| {
                dedup.get_or_insert_with(key.get(), K::clone);
            })
        }
    }));
    match gathered {
        // Draining moves the keys out: no user code.
        Ok(_) => Ok(dedup.drain().collect()),
        Err(_) => {
            // The set may hold clones; drop them (their `Drop` is user code too) with the set.
            drop_quietly(std::mem::take(dedup));
            Err(Panicked)
        }
    }
}

/// Calls the batch function with `keys` and runs its future on `runtime`, publishing the
/// outcome through `publisher` (also if the call panics, the future panics, or it runs longer
/// than `timeout`).
pub(super) fn run<K, V, E>(
    runtime: &tokio::runtime::Handle,
    publisher: Publisher<K, V, E>,
    keys: Vec<K>,
    timeout: Option<Duration>,
) where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| (publisher.shared.batch_fn)(keys)));
    match call {
        Ok(batch) => {
            runtime.spawn(async move {
                let (outcome, batch) = await_batch(batch, timeout).await;
                publisher.publish(outcome);
                // After the callers have their answer: a future dropped early (timed out) runs
                // the user's `Drop` of whatever it held.
                drop_quietly(batch);
            });
        }
        Err(_) => publisher.publish(Err(Error::Panicked)),
    }
}

/// Publishes a batch's outcome exactly once: when the batch ends, or, if the batch task is
/// dropped first (its runtime shut down), as [`Error::Closed`].
pub(super) struct Publisher<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
    slot: usize,
    published: bool,
}

impl<K, V, E> Publisher<K, V, E> {
    /// The publisher of the batch sealed in `slot`; holds the batch's reference to it.
    pub(super) fn new(shared: StdArc<Shared<K, V, E>>, slot: usize) -> Self {
        Publisher { shared, slot, published: false }
    }

    /// Publishes `outcome` to the batch's callers and drops the batch's reference.
    pub(super) fn publish(mut self, outcome: Outcome<K, V, E>) {
        self.publish_once(outcome);
    }

    /// Every caller has gone before the batch ran: drops the batch's reference unpublished.
    pub(super) fn discard(mut self) {
        self.published = true;
        self.shared.release(self.slot, 1);
    }

    fn publish_once(&mut self, outcome: Outcome<K, V, E>) {
        if self.published {
            return;
        }
        self.published = true;
        let stats = &self.shared.stats;
        match &outcome {
            Err(Error::Panicked) => StatsCells::bump(&stats.panicked_batches),
            Err(Error::Timeout) => StatsCells::bump(&stats.timed_out_batches),
            Err(_) => StatsCells::bump(&stats.failed_batches),
            Ok(_) => {}
        }
        let shared = &*self.shared;
        // SAFETY: we hold the batch's reference to the slot and publish once.
        unsafe { signals::publish(&shared.ring, &shared.signals, self.slot, Held::new(outcome)) };
    }
}

impl<K, V, E> Drop for Publisher<K, V, E> {
    fn drop(&mut self) {
        self.publish_once(Err(Error::Closed));
    }
}
