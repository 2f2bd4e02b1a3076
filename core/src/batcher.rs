//! The handle services hold: [`Batcher`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc as StdArc;

use std::panic::AssertUnwindSafe;

use crate::Error;
use crate::load::{Load, LoadShared};
use crate::shared::{Quiet, Shared, drop_quietly};
use crate::stats::Stats;

/// Coalesces concurrent loads of keys into batched calls of one batch function.
///
/// Each [`load`](Batcher::load) boards the bus now at the stop; the [`Policy`](crate::policy::Policy)
/// decides when it leaves; the batch function gets the distinct keys of that bus once, and every
/// caller reads its own entry of the one map it returns. Cloning is cheap (one `Arc` increment);
/// every clone drives the same batches, and dropping the last one shuts the batcher down.
///
/// # Examples
///
/// ```
/// use std::collections::{HashMap, HashSet};
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
    handle: StdArc<Handle<K, V, E>>,
    /// `tower::Service::poll_ready`'s wait for room, if it is waiting (per clone).
    #[cfg(feature = "tower")]
    pub(crate) readiness: Option<Readiness>,
}

/// A wait for room, as `poll_ready` keeps it between polls.
#[cfg(feature = "tower")]
pub(crate) type Readiness = std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

/// What the handles share: the batcher's state, and, in its `Drop`, the shutdown that the last
/// handle's drop requests. One `Arc` for every clone, so that cloning and dropping a handle
/// costs one atomic increment or decrement.
struct Handle<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
}

impl<K, V, E> Drop for Handle<K, V, E> {
    fn drop(&mut self) {
        self.shared.request_shutdown();
    }
}

impl<K, V, E> Batcher<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn from_shared(shared: StdArc<Shared<K, V, E>>) -> Self {
        Batcher {
            handle: StdArc::new(Handle { shared }),
            #[cfg(feature = "tower")]
            readiness: None,
        }
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
        Load::new(self.shared(), key)
    }

    /// Like [`load`](Batcher::load), but answers with the whole map the batch function returned
    /// for this request's batch: one `Arc`, the same instance for every caller of that batch.
    ///
    /// # Errors
    ///
    /// As for [`load`](Batcher::load).
    pub fn load_shared(&self, key: K) -> LoadShared<'_, K, V, E> {
        LoadShared::new(self.shared(), key)
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
        // The keys' `Hash`, `Eq` and `Clone` are user code: a panic there fails this call.
        // Their `Drop` is too, and this call drops the caller's keys it does not hand back (a
        // duplicate, one not found or failed) and its own copies: each quietly, as `load`
        // drops its key, so that a panic there neither fails the call nor unwinds into the
        // caller (a panic while another unwinds is beyond catching).
        let caught = |f: &mut dyn FnMut()| std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::Panicked);
        let mut keys = Some(keys);
        let mut distinct: Vec<(Quiet<K>, Quiet<K>)> = Vec::new();
        let deduplicated = caught(&mut || {
            let mut seen = HashSet::new();
            for key in keys.take().into_iter().flatten() {
                if seen.contains(&key) {
                    drop_quietly(key);
                } else {
                    seen.insert(key.clone());
                    distinct.push((Quiet::new(key.clone()), Quiet::new(key)));
                }
            }
            drop_quietly(seen);
        });
        if let Err(panicked) = deduplicated {
            drop_quietly(distinct);
            return Err(panicked);
        }
        let loads = distinct.into_iter().map(|(load_key, key)| {
            let load = self.load(load_key.into_inner());
            // `key` drops quietly unless handed back, also if this future is dropped.
            async move { load.await.map(|value| value.map(|value| (key.into_inner(), value))) }
        });
        let mut answers = futures_util::future::join_all(loads).await;
        let mut found = HashMap::new();
        let mut first_error = None;
        let gathered = caught(&mut || {
            for answer in answers.drain(..) {
                match answer {
                    Ok(Some((key, value))) => {
                        drop_quietly(found.insert(key, value));
                    }
                    Ok(None) => {}
                    Err(e) if first_error.is_none() => first_error = Some(e),
                    // Maybe the last holder of its error, whose `Drop` is user code.
                    Err(e) => {
                        drop_quietly(e);
                    }
                }
            }
        });
        let failed = match (gathered, first_error) {
            (Ok(()), None) => return Ok(found),
            (Ok(()), Some(e)) => e,
            (Err(panicked), first_error) => {
                drop_quietly(first_error);
                panicked
            }
        };
        drop_quietly(found);
        drop_quietly(answers);
        Err(failed)
    }

    /// Sends what is queued, waits until every accepted request has its answer, and refuses new
    /// loads with [`Error::Closed`] from the moment it is called. Idempotent; every clone of
    /// the handle sees the batcher closed. A batch call that never completes keeps this waiting
    /// unless the batcher has a [`batch_timeout`](crate::Builder::batch_timeout); bound the
    /// wait yourself (`tokio::time::timeout`) if it may hang: the batcher is closed either way.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.request_shutdown();
        loop {
            let finished = shared.finished_notify.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if shared.is_finished() {
                return;
            }
            finished.await;
        }
    }

    /// A snapshot of the batcher's counters.
    pub fn stats(&self) -> Stats {
        self.shared().stats.snapshot()
    }

    /// Batch slots sealed and still in use (running, or being read by their callers). Zero when
    /// every request has been answered and released: nothing stays allocated per request.
    pub fn live_slots(&self) -> usize {
        self.shared().ring.live_slots()
    }

    /// Whether the batcher refuses new loads.
    pub fn is_closed(&self) -> bool {
        let shared = self.shared();
        shared.ring.is_closed() || shared.signals.is_shutdown()
    }
}

impl<K, V, E> Batcher<K, V, E> {
    pub(crate) fn shared(&self) -> &StdArc<Shared<K, V, E>> {
        &self.handle.shared
    }
}

impl<K, V, E> Clone for Batcher<K, V, E> {
    fn clone(&self) -> Self {
        Batcher {
            handle: StdArc::clone(&self.handle),
            #[cfg(feature = "tower")]
            readiness: None,
        }
    }
}

impl<K, V, E> fmt::Debug for Batcher<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").field("shared", &self.handle.shared).finish()
    }
}
