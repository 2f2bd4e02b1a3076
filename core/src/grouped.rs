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
//! and depart independently and in parallel. The groups sit in a lock-free concurrent map
//! (`papaya`): finding an existing group takes no lock, only an epoch pin and two atomic
//! increments (the entry's `Arc` and its activity count).
//!
//! # Reclaiming idle groups
//!
//! A group's `active` word counts the loads between entering and leaving it; its top bit,
//! `DEAD`, is set once and for all when the group is retired. A load *enters* with a
//! `fetch_add(1)`: if the previous value had `DEAD`, the group is gone and the load retries with
//! a fresh one (the increment on a dead word is harmless: nothing reads it again). A load *leaves*
//! with a `fetch_sub(1)`; whoever brings the count to zero tries to retire the group with a CAS
//! `0 → DEAD`. The CAS fails if a load entered meanwhile (the group lives on); if it succeeds, no
//! load is in the group and none can enter, so the retirer removes it from the map (only if the
//! map still holds this very entry) and drops its count of live groups. Dropping the entry drops
//! the group's `Batcher` handle, which shuts its driver down once any batch still in flight (its
//! callers all gone) has finished.
//!
//! # Races (and why they are safe)
//!
//! - Enter vs retire: both act on `active` by RMW, so one precedes the other in its modification
//!   order. If the enter comes first the CAS from 0 fails; if the retire comes first the enter
//!   sees `DEAD`.
//! - Two loads creating the same group: both build an entry; `try_insert` lets one win; the loser
//!   drops its unused batcher and enters the winner's.
//! - A dead entry still in the map (its retirer between the CAS and the removal): a load that
//!   finds it removes it itself (`remove_if` on pointer identity) and creates a new one.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;

use crate::{Batcher, Builder, ConfigError, Error, Policy};
use crate::Overflow;

/// Set in a group's `active` word once the group is retired. Grants nothing: a load that sees it
/// must find or create another entry.
const DEAD: usize = 1 << (usize::BITS - 1);

/// The user's batch function, shared by every group.
type GroupFn<G, K, V, E> = Arc<dyn Fn(G, Vec<K>) -> crate::shared::BatchFuture<K, V, E> + Send + Sync>;

/// Batchers partitioned by a group: requests of different groups never share a batch.
///
/// Each group coalesces and departs on its own, with the settings given to the builder; its
/// batch function receives the group with the keys. A group with nothing pending and nothing in
/// flight is reclaimed; at most [`max_groups`](GroupedBuilder::max_groups) groups live at once.
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
    groups: papaya::HashMap<G, Arc<Group<K, V, E>>>,
    /// Groups in the map (created and not yet retired).
    live: AtomicUsize,
    max_groups: usize,
    batch_fn: GroupFn<G, K, V, E>,
    /// The settings every group's batcher is built with (its batch function is replaced).
    template: Builder<K, V, E>,
}

struct Group<K, V, E> {
    batcher: Batcher<K, V, E>,
    /// Loads in this group, and `DEAD` once retired (see the essay above).
    active: AtomicUsize,
}

impl<K, V, E> Group<K, V, E> {
    /// Counts a load in. `false` if the group is retired.
    fn enter(&self) -> bool {
        // Acquire: pairs with the Release in `leave`, so a load entering a group sees the
        // work of the loads that left it (nothing depends on it today; it keeps the word a
        // proper hand-off).
        self.active.fetch_add(1, Ordering::Acquire) & DEAD == 0
    }

    /// Counts a load out. `true` if the group retired as a result: the caller must remove it.
    fn leave(&self) -> bool {
        // Release: pairs with the Acquire of `enter` and of the retiring CAS.
        if self.active.fetch_sub(1, Ordering::Release) != 1 {
            return false;
        }
        // AcqRel: the retirer sees every load's leave before it retires the group.
        self.active.compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
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
            runtime: None,
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
        let entry = self.enter(&group)?;
        let _leave = Leave { inner: &self.inner, group: &group, entry: &entry };
        entry.batcher.load(key).await
    }

    /// Finds `group`'s entry, or creates it, and counts a load in.
    fn enter(&self, group: &G) -> Result<Arc<Group<K, V, E>>, Error<E>> {
        // User code runs here (the group's Hash, Eq and Clone): a panic reaches this caller only.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.enter(group))).unwrap_or(Err(Error::Panicked))
    }
}

impl<G, K, V, E> Inner<G, K, V, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn enter(&self, group: &G) -> Result<Arc<Group<K, V, E>>, Error<E>> {
        let groups = self.groups.pin();
        loop {
            if let Some(entry) = groups.get(group) {
                if entry.enter() {
                    return Ok(Arc::clone(entry));
                }
                // Retired, its retirer not yet done: take it out ourselves and start afresh.
                let dead = Arc::clone(entry);
                let _ = groups.remove_if(group, |_, e| Arc::ptr_eq(e, &dead));
                continue;
            }
            let seat = Reservation::take(&self.live, self.max_groups)?;
            let batch_fn = Arc::clone(&self.batch_fn);
            let name = group.clone();
            let batcher = self
                .template
                .with_batch_fn(Arc::new(move |keys| batch_fn(name.clone(), keys)))
                .build()
                .map_err(|_| Error::Closed)?;
            // Born entered: our load counts in before anyone can see the group.
            let entry = Arc::new(Group { batcher, active: AtomicUsize::new(1) });
            if groups.try_insert(group.clone(), Arc::clone(&entry)).is_ok() {
                seat.keep();
                return Ok(entry);
            }
            // Another load created it first: ours was never seen (its reservation lapses as
            // `seat` drops); enter theirs.
        }
    }

    /// Takes a retired group out of the map (if it is still there) and out of the count.
    fn remove(&self, group: &G, entry: &Arc<Group<K, V, E>>) {
        let groups = self.groups.pin();
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = groups.remove_if(group, |_, e| Arc::ptr_eq(e, entry));
        }));
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One place among `max_groups`, given back when dropped unless kept (also when user code
/// panics between taking it and inserting the group).
struct Reservation<'a> {
    live: &'a AtomicUsize,
    kept: bool,
}

impl<'a> Reservation<'a> {
    fn take<E>(live: &'a AtomicUsize, max_groups: usize) -> Result<Reservation<'a>, Error<E>> {
        // Relaxed: the count is a bound, not a hand-off.
        let reservation = Reservation { live, kept: false };
        if live.fetch_add(1, Ordering::Relaxed) >= max_groups {
            return Err(Error::Overloaded);
        }
        Ok(reservation)
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts a load out of its group when the load completes or is dropped.
struct Leave<'a, G, K, V, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    inner: &'a Inner<G, K, V, E>,
    group: &'a G,
    entry: &'a Arc<Group<K, V, E>>,
}

impl<G, K, V, E> Drop for Leave<'_, G, K, V, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn drop(&mut self) {
        if self.entry.leave() {
            self.inner.remove(self.group, self.entry);
        }
    }
}

impl<G, K, V, E> Grouped<G, K, V, E> {
    /// Groups now live: with a load pending, or not yet reclaimed. Back to 0 once every load
    /// has been answered or given up.
    pub fn live_groups(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
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
            .field("live_groups", &self.inner.live.load(Ordering::Relaxed))
            .field("max_groups", &self.inner.max_groups)
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
    runtime: Option<tokio::runtime::Handle>,
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
        self.runtime = Some(runtime);
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
    /// A [`ConfigError`] naming the setting if one is out of range, or `runtime` if called
    /// outside a tokio runtime.
    pub fn build(self) -> Result<Grouped<G, K, V, E>, ConfigError> {
        if self.max_groups == 0 {
            return Err(ConfigError::new("max_groups", "must be at least 1"));
        }
        self.template.validate()?;
        // Groups are created inside loads, wherever those are polled: pin them to one runtime.
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => tokio::runtime::Handle::try_current()
                .map_err(|_| ConfigError::new("runtime", "build() must be called within a tokio runtime"))?,
        };
        let template = self.template.runtime(runtime);
        Ok(Grouped {
            inner: Arc::new(Inner {
                // Retired groups are freed in batches once no reader can still see them; the
                // smallest batch (seize lifts it to the number of threads) keeps what a burst of
                // retirements leaves waiting to a few groups, not 32 per thread.
                groups: papaya::HashMap::builder().collector(seize::Collector::new().batch_size(1)).build(),
                live: AtomicUsize::new(0),
                max_groups: self.max_groups,
                batch_fn: self.batch_fn,
                template,
            }),
        })
    }
}
