//! The handle services hold: [`Batcher`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc as StdArc;

use crate::builder::Builder;
use crate::load::{Load, LoadShared};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::sync::Ordering;
use crate::Error;

/// Coalesces concurrent loads of keys into batched calls of one batch function.
///
/// Each [`load`](Batcher::load) boards the bus now at the stop; the [`Policy`](crate::policy::Policy)
/// decides when it leaves; the batch function gets the distinct keys of that bus once, and every
/// caller reads its own entry of the one map it returns. Cloning is cheap (an `Arc`); every clone
/// drives the same batches.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use std::time::Duration;
///
/// # #[derive(Clone, Debug, PartialEq)] struct User { id: u32 }
/// # async fn fetch_users(ids: &[u32]) -> Result<HashMap<u32, User>, std::io::Error> {
/// #     Ok(ids.iter().map(|&id| (id, User { id })).collect())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let users = busline::Batcher::builder(|ids: Vec<u32>| async move {
///         fetch_users(&ids).await // one `WHERE id IN (...)` for the whole bus
///     })
///     .window(Duration::from_micros(500))
///     .max_batch_size(1024)
///     .build()?;
///
/// let user = users.load(42).await?;
/// assert_eq!(user, Some(User { id: 42 }));
/// let some = users.load_many([1, 2, 3]).await?;
/// assert_eq!(some.len(), 3);
/// # Ok(()) }
/// ```
pub struct Batcher<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
}

impl<K, V, E> Batcher<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Starts configuring a batcher around `batch_fn`, which receives the distinct keys of one
    /// batch (each once, at most `max_batch_size`) and returns their values. A key missing from
    /// the map is answered `Ok(None)`.
    pub fn builder<F, Fut>(batch_fn: F) -> Builder<K, V, E>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    {
        Builder::new(batch_fn)
    }

    pub(crate) fn from_shared(shared: StdArc<Shared<K, V, E>>) -> Self {
        Batcher { shared }
    }

    /// Loads one key through the next batch.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] if the batch function failed for this request's batch,
    /// [`Error::Panicked`] if it panicked, [`Error::Closed`] after shutdown,
    /// [`Error::Overloaded`] at capacity under [`Overflow::Reject`](crate::Overflow::Reject).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the request; see [`Load`].
    pub fn load(&self, key: K) -> Load<'_, K, V, E> {
        Load::new(&self.shared, key)
    }

    /// Like [`load`](Batcher::load), but answers with the whole map the batch function returned
    /// for this request's batch: one `Arc`, the same instance for every caller of that batch.
    ///
    /// # Errors
    ///
    /// As for [`load`](Batcher::load).
    pub fn load_shared(&self, key: K) -> LoadShared<'_, K, V, E> {
        LoadShared::new(&self.shared, key)
    }

    /// Loads several keys (duplicates once) and returns those the batch function found.
    ///
    /// # Errors
    ///
    /// The first error any of the keys met; see [`load`](Batcher::load).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up every key it still waits for.
    pub async fn load_many(&self, keys: impl IntoIterator<Item = K>) -> Result<HashMap<K, V>, Error<E>> {
        let mut distinct: Vec<K> = keys.into_iter().collect();
        let mut seen = std::collections::HashSet::with_capacity(distinct.len());
        distinct.retain(|k| seen.insert(k.clone()));
        let loads = distinct.into_iter().map(|key| {
            let load = self.load(key.clone());
            async move { load.await.map(|value| (key, value)) }
        });
        let mut found = HashMap::new();
        for answer in futures_util::future::join_all(loads).await {
            if let (key, Some(value)) = answer? {
                found.insert(key, value);
            }
        }
        Ok(found)
    }

    /// Sends what is queued, waits until every accepted request has its answer, and refuses new
    /// loads with [`Error::Closed`] from the moment it is called. Idempotent; every clone of
    /// the handle sees the batcher closed.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.request_shutdown();
        loop {
            let finished = shared.finished_notify.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            // Acquire: pairs with the driver's Release store.
            if shared.finished.load(Ordering::Acquire) {
                return;
            }
            finished.await;
        }
    }

    /// A snapshot of the batcher's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Batch slots sealed and still in use (running, or being read by their callers). Zero when
    /// every request has been answered and released: nothing stays allocated per request.
    pub fn live_slots(&self) -> usize {
        self.shared.ring.live_slots()
    }

    /// Whether the batcher refuses new loads.
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `Shared::request_shutdown`.
        self.shared.ring.is_closed() || self.shared.shutdown.load(Ordering::Acquire)
    }
}

impl<K, V, E> Clone for Batcher<K, V, E> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Batcher { shared: StdArc::clone(&self.shared) }
    }
}

impl<K, V, E> Drop for Batcher<K, V, E> {
    fn drop(&mut self) {
        // AcqRel: the last handle's drop sees every other handle's work.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.request_shutdown();
        }
    }
}

impl<K, V, E> fmt::Debug for Batcher<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").field("shared", &self.shared).finish()
    }
}
