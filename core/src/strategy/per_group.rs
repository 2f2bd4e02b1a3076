//! The strategies' per-group form: one instance of a strategy per group (a tenant, a user, a
//! device), created on the group's first call, reclaimed when the group is idle, at most
//! `max_groups` at once; the user's function receives the group with the input.
//!
//! It is the partition of [`Grouped`](crate::Grouped) (`partition.rs`) holding strategy
//! instances instead of batchers: one mechanism, whatever the strategy. Each strategy says how
//! a group's instance is built (`Partitioned`) and how a call goes in its group (its `call` or
//! `coalesce` on `PerGroup<G, ItsType>`, in its own file).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use crate::partition::{Entered, Partition, Presence};
use crate::{ConfigError, DEFAULT_MAX_GROUPS, Error};

/// How a strategy builds one group's instance: implemented by [`Coalescer`](crate::Coalescer),
/// [`Serial`](crate::Serial), [`UseLast`](crate::UseLast) and [`Debounce`](crate::Debounce).
/// (Sealed: it lives in a private module.)
pub trait Partitioned<G>: Sized + Send + Sync + 'static {
    /// The user's function of the group and the input, with the strategy's settings.
    type Recipe: Send + Sync + 'static;

    /// Checks the settings (and pins what must be pinned, such as the runtime), once, in
    /// [`PerGroupBuilder::build`].
    fn prepare(recipe: Self::Recipe) -> Result<Self::Recipe, ConfigError>;

    /// Builds `group`'s instance.
    fn make(recipe: &Self::Recipe, group: &G) -> Result<Self, ConfigError>;

    /// Builds `group`'s instance, which may keep `presence`: work it runs on the group's
    /// behalf outside its callers' calls (a `Coalescer`'s departure) occupies the group through
    /// it, so that the group is not reclaimed, and no second instance made, while that work
    /// runs. By default, [`make`](Partitioned::make).
    fn make_present(recipe: &Self::Recipe, group: &G, presence: Presence<G, Self>) -> Result<Self, ConfigError> {
        drop(presence);
        Self::make(recipe, group)
    }
}

/// A strategy per group: calls of different groups never share anything (a run, a round, a
/// queue, a departure), and the user's function receives the group with the input, so a
/// tenant's or a user's context travels with its own work.
///
/// Built by [`Coalescer::per_group`](crate::Coalescer::per_group),
/// [`Serial::per_group`](crate::Serial::per_group),
/// [`UseLast::per_group`](crate::UseLast::per_group) and
/// [`Debounce::per_group`](crate::Debounce::per_group); `S` is the strategy of each group, and
/// its calls are `call(group, input)` (`coalesce(group, input)` for the `Coalescer`), with
/// the strategy's own semantics within the group.
///
/// - A group's instance is created on its first call and reclaimed once nothing of the group
///   is left: no caller waiting, and nothing the strategy runs on the group's behalf (a
///   `UseLast` execution, a `Debounce` run, a `Coalescer` departure) still running. After 100,000 distinct groups have
///   come and gone, [`live_groups`](PerGroup::live_groups) is back to 0.
/// - A call is never lost to a reclamation: it enters the live instance of its group, or a new
///   one, and two instances of one group never have callers at once. So `Serial`'s one at a
///   time and `UseLast`'s newest-wins hold per group across reclamations.
/// - At most [`max_groups`](PerGroupBuilder::max_groups) groups live at once: a call for a new
///   group beyond it fails with [`Error::Overloaded`], never joins another group.
/// - One group's failures, panics and cancellations stay in that group.
/// - Finding an existing group takes no lock (a concurrent map, an epoch pin and two atomic
///   increments); creating one builds the strategy's instance. The map does not shrink: after
///   a burst of N distinct groups it keeps a table sized for N (0.3 to 0.6 MB after 30,000
///   groups) for the life of the `PerGroup`, though every group is reclaimed.
///
/// [`SingleFlight`](crate::SingleFlight) has no per-group form: it is keyed already, and a key
/// exists only while its flight runs, so a group is just part of the key (`(tenant, key)`),
/// reclaimed with it; the function is the caller's own closure, which captures the group.
///
/// # Calls
///
/// A per-group call (`call(group, input)`, `coalesce(group, input)`) behaves as the strategy's
/// own call within the group, and besides:
///
/// - fails with [`Error::Overloaded`] if `group` is new and `max_groups` groups are live (or,
///   at the bound, after about a second waiting for its own group's creation, if that group's
///   `Clone` or factory hangs), and with [`Error::Panicked`] if the group's `Hash`, `Eq` or `Clone` panicked (for this caller
///   only; the partition stays consistent);
/// - fails with [`Error::Closed`] if a new group's `Coalescer` engine cannot start (its runtime
///   has shut down);
/// - is cancel safe as the strategy's call is; a group it leaves idle is reclaimed.
///
/// Cloning is cheap (an `Arc`); clones share the groups.
pub struct PerGroup<G, S: Partitioned<G>> {
    partition: Arc<Partition<G, S>>,
    recipe: Arc<S::Recipe>,
}

impl<G, S> PerGroup<G, S>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    S: Partitioned<G>,
{
    /// Enters `group`'s instance, creating it if need be.
    pub(crate) fn enter<E>(&self, group: &G) -> Result<Entered<'_, G, S>, Error<E>> {
        // The only `make` that can fail builds a Coalescer's engine on a runtime gone away.
        self.partition.enter(group, |group, presence| S::make_present(&self.recipe, group, presence).map_err(|_| Error::Closed))
    }

    /// The partition, for an [`Entered::hold`].
    pub(crate) fn partition(&self) -> &Arc<Partition<G, S>> {
        &self.partition
    }
}

impl<G, S: Partitioned<G>> PerGroup<G, S> {
    /// Groups now live: with a caller waiting or work running, or not yet reclaimed. Back to 0
    /// once every call has ended.
    pub fn live_groups(&self) -> usize {
        self.partition.live_groups()
    }
}

impl<G, S: Partitioned<G>> Clone for PerGroup<G, S> {
    fn clone(&self) -> Self {
        PerGroup { partition: Arc::clone(&self.partition), recipe: Arc::clone(&self.recipe) }
    }
}

impl<G, S: Partitioned<G>> fmt::Debug for PerGroup<G, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerGroup")
            .field("strategy", &std::any::type_name::<S>())
            .field("live_groups", &self.partition.live_groups())
            .field("max_groups", &self.partition.max_groups())
            .finish()
    }
}

/// Builds a [`PerGroup`]: [`max_groups`](PerGroupBuilder::max_groups), and the settings of the
/// strategy (`quiet` and `max_wait` for a `Debounce`, the `Batcher`'s for a `Coalescer`),
/// which apply to every group's instance.
pub struct PerGroupBuilder<G, S: Partitioned<G>> {
    pub(crate) recipe: S::Recipe,
    max_groups: usize,
}

impl<G, S> PerGroupBuilder<G, S>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    S: Partitioned<G>,
{
    pub(crate) fn new(recipe: S::Recipe) -> Self {
        PerGroupBuilder { recipe, max_groups: DEFAULT_MAX_GROUPS }
    }

    /// The most groups live at once; a call for a new group beyond it fails with
    /// [`Error::Overloaded`]. Default [`DEFAULT_MAX_GROUPS`]; zero is a [`ConfigError`].
    pub fn max_groups(mut self, max_groups: usize) -> Self {
        self.max_groups = max_groups;
        self
    }

    /// Checks the settings. No group exists until its first call.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting if one is out of range (`max_groups`, or the
    /// strategy's own, as its builder would), or `runtime` if a `Coalescer`'s is built outside
    /// a tokio runtime.
    pub fn build(self) -> Result<PerGroup<G, S>, ConfigError> {
        if self.max_groups == 0 {
            return Err(ConfigError::new("max_groups", "must be at least 1"));
        }
        Ok(PerGroup { partition: Arc::new(Partition::new(self.max_groups)), recipe: Arc::new(S::prepare(self.recipe)?) })
    }
}

impl<G, S: Partitioned<G>> fmt::Debug for PerGroupBuilder<G, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerGroupBuilder")
            .field("strategy", &std::any::type_name::<S>())
            .field("max_groups", &self.max_groups)
            .finish_non_exhaustive()
    }
}
