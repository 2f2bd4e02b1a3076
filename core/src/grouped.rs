//! Partitions: one independent bus line per group (a tenant, a shard, a table, an auth context).
//!
//! # Why
//!
//! A shared loader once returned another tenant's data (graph-gophers/dataloader#121): a batch
//! ran with its first caller's context. [`Grouped`] makes that impossible by construction:
//! requests of different groups never share a batch, and the batch function receives the group
//! beside the keys, so the context travels with the batch rather than with one of its callers.
//!
//! # How
//!
//! Each live group owns a [`Batcher`] (its own ring, policy and driver task), so groups coalesce
//! and depart independently and in parallel. The batchers live in a partition
//! (`partition.rs`, shared with the strategies' per-group forms): a lock-free map in which
//! finding an existing group takes no lock, where a group with no load in it is reclaimed, and
//! which holds at most `max_groups` groups; its essay explains the races. A group's load
//! occupies it from the call until it is answered or dropped, and a batch call occupies it
//! while it runs: a group whose callers have all given up is not reclaimed while its batch
//! still runs, so its `max_in_flight` holds across callers that time out (a new batcher beside
//! the running batch would start another). Reclaiming the group drops its `Batcher` handle,
//! which shuts its driver down.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::partition::Partition;
use crate::shared::drop_quietly;
use crate::{Batcher, Builder, ConfigError, Error, Overflow, Policy};

/// The user's batch function, shared by every group.
type GroupFn<G, K, V, E> = Arc<dyn Fn(G, Vec<K>) -> crate::shared::BatchFuture<K, V, E> + Send + Sync>;

/// Batchers partitioned by a group: requests of different groups never share a batch.
///
/// Each group coalesces and departs on its own, with the settings given to the builder; its
/// batch function receives the group with the keys. A group with nothing pending and no batch
/// call running is reclaimed; at most [`max_groups`](GroupedBuilder::max_groups) groups live at once.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // One batch per tenant: the tenant travels with the batch, not with one of its callers.
/// let users = busline::Grouped::builder(|tenant: String, ids: Vec<u32>| async move {
///         Ok::<_, std::io::Error>(ids.into_iter().map(|id| (id, format!("{tenant}/{id}"))).collect::<HashMap<_, _>>())
///     })
///     .window(Duration::from_micros(200))
///     .max_groups(10_000)
///     .build()?;
///
/// assert_eq!(users.load("acme".to_string(), 7).await?, Some("acme/7".to_string()));
/// assert_eq!(users.load("globex".to_string(), 7).await?, Some("globex/7".to_string()));
/// # Ok(()) }
/// ```
pub struct Grouped<G, K, V, E> {
    inner: Arc<Inner<G, K, V, E>>,
}

struct Inner<G, K, V, E> {
    groups: Arc<Partition<G, Batcher<K, V, E>>>,
    batch_fn: GroupFn<G, K, V, E>,
    /// The settings every group's batcher is built with (its batch function is replaced).
    template: Builder<K, V, E>,
}

impl<G, K, V, E> Grouped<G, K, V, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Starts configuring a grouped batcher around `batch_fn`, which receives a group and the
    /// distinct keys of one batch of that group.
    pub fn builder<F, Fut>(batch_fn: F) -> GroupedBuilder<G, K, V, E>
    where
        F: Fn(G, Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<std::collections::HashMap<K, V>, E>> + Send + 'static,
    {
        let batch_fn: GroupFn<G, K, V, E> = Arc::new(move |group, keys| {
            Box::pin(batch_fn(group, keys).map(|answer| answer.map(crate::answers::Answered::plain)))
        });
        GroupedBuilder {
            batch_fn,
            template: Batcher::builder(|_keys: Vec<K>| async { unreachable!("the template's batch function is replaced per group") }),
            max_groups: DEFAULT_MAX_GROUPS,
        }
    }

    /// Loads `key` through the next batch of `group`.
    ///
    /// # Errors
    ///
    /// As for [`Batcher::load`], and [`Error::Overloaded`] if `group` is new and
    /// [`max_groups`](GroupedBuilder::max_groups) groups are live; [`Error::Panicked`] if the
    /// group's `Hash` or `Eq` panicked.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the request, as for [`Batcher::load`]; a group it leaves
    /// idle is reclaimed.
    pub async fn load(&self, group: G, key: K) -> Result<Option<V>, Error<E>> {
        let inner = &*self.inner;
        let batcher = inner.groups.enter(&group, |group, presence| {
            let batch_fn = Arc::clone(&inner.batch_fn);
            let name = group.clone();
            // A batch occupies its group while it runs: `max_in_flight` holds across loads
            // that give up (a group reclaimed with its batch running would start another).
            let per_group: crate::shared::BatchFn<K, V, E> = Arc::new(move |keys| {
                match presence.occupy() {
                    Some(occupancy) => Box::pin(occupancy.over(batch_fn(name.clone(), keys))),
                    // Retired: nobody of the group waits on this batch.
                    None => Box::pin(std::future::ready(Ok(crate::answers::Answered::plain(std::collections::HashMap::new())))),
                }
            });
            inner.template.with_batch_fn(per_group).build().map_err(|_| Error::Closed)
        });
        // The caller's group, dropped here where its `Drop` cannot unwind into the caller; and
        // its key, if the group refused it.
        drop_quietly(group);
        match batcher {
            Ok(batcher) => batcher.load(key).await,
            Err(refused) => {
                drop_quietly(key);
                Err(refused)
            }
        }
    }
}

impl<G, K, V, E> Grouped<G, K, V, E> {
    /// Groups now live: with a load pending, or not yet reclaimed. Back to 0 once every load
    /// has been answered or given up.
    pub fn live_groups(&self) -> usize {
        self.inner.groups.live_groups()
    }
}

impl<G, K, V, E> Clone for Grouped<G, K, V, E> {
    fn clone(&self) -> Self {
        Grouped { inner: Arc::clone(&self.inner) }
    }
}

impl<G, K, V, E> fmt::Debug for Grouped<G, K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grouped")
            .field("live_groups", &self.inner.groups.live_groups())
            .field("max_groups", &self.inner.groups.max_groups())
            .finish_non_exhaustive()
    }
}

/// Default [`GroupedBuilder::max_groups`]: each live group holds a batcher (a driver task and a
/// few hundred bytes of state when idle), so a million groups cost a few hundred megabytes at
/// most; past this a new group is refused, never merged into another.
pub const DEFAULT_MAX_GROUPS: usize = 1 << 20;

/// Builds a [`Grouped`]; see [`Grouped::builder`]. Every setting of [`Builder`] applies to each
/// group's batcher.
pub struct GroupedBuilder<G, K, V, E> {
    batch_fn: GroupFn<G, K, V, E>,
    template: Builder<K, V, E>,
    max_groups: usize,
}

impl<G, K, V, E> fmt::Debug for GroupedBuilder<G, K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupedBuilder")
            .field("template", &self.template)
            .field("max_groups", &self.max_groups)
            .finish_non_exhaustive()
    }
}

impl<G, K, V, E> GroupedBuilder<G, K, V, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// See [`Builder::window`].
    pub fn window(mut self, window: std::time::Duration) -> Self {
        self.template = self.template.window(window);
        self
    }

    /// See [`Builder::policy`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.template = self.template.policy(policy);
        self
    }

    /// See [`Builder::max_batch_size`].
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.template = self.template.max_batch_size(max_batch_size);
        self
    }

    /// See [`Builder::max_in_flight`]; per group.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.template = self.template.max_in_flight(max_in_flight);
        self
    }

    /// See [`Builder::capacity`]; per group.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.template = self.template.capacity(capacity);
        self
    }

    /// See [`Builder::overflow`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.template = self.template.overflow(overflow);
        self
    }

    /// See [`Builder::batch_timeout`].
    pub fn batch_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.template = self.template.batch_timeout(timeout);
        self
    }

    /// See [`Builder::spin`].
    pub fn spin(mut self, spin: bool) -> Self {
        self.template = self.template.spin(spin);
        self
    }

    /// The runtime every group's driver runs on. Default: the runtime `build` is called in.
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.template = self.template.runtime(runtime);
        self
    }

    /// See [`Builder::name`]: every group's batcher reports under this one name.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.template = self.template.name(name);
        self
    }

    /// The most groups live at once; a load for a new group beyond it fails with
    /// [`Error::Overloaded`]. Default [`DEFAULT_MAX_GROUPS`]; zero is a [`ConfigError`].
    pub fn max_groups(mut self, max_groups: usize) -> Self {
        self.max_groups = max_groups;
        self
    }

    /// Checks the settings and returns the grouped batcher. No group exists until its first
    /// load.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`]: a [`ConfigError`] naming the setting if one is out of range, or
    /// `runtime` if called outside a tokio runtime, or if the runtime lacks the time driver a
    /// setting needs.
    pub fn build(self) -> Result<Grouped<G, K, V, E>, ConfigError> {
        if self.max_groups == 0 {
            return Err(ConfigError::new("max_groups", "must be at least 1"));
        }
        // Groups are created inside loads, wherever those are polled: pin them to one runtime,
        // checked here as a batcher's `build` checks it.
        let template = self.template.pinned()?;
        Ok(Grouped {
            inner: Arc::new(Inner {
                groups: Arc::new(Partition::new(self.max_groups)),
                batch_fn: self.batch_fn,
                template,
            }),
        })
    }
}
