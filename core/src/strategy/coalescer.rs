//! The generic aggregate: fold the inputs of one departure into an accumulator, run it once,
//! share the result among that departure's callers.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;

use super::per_group::{PerGroup, PerGroupBuilder, Partitioned};
use super::user::BoxFuture;
use crate::answers::Answered;
use crate::policy::Policy;
use crate::partition::Presence;
use crate::shared::{BatchFuture, drop_quietly};
use crate::{Batcher, Builder, ConfigError, Error, Overflow, Stats};

/// Coalesces concurrent inputs into one accumulator per departure, runs it once, and hands
/// every caller of that departure the one shared result (FlowSync's "aggregate": a seed
/// factory, a fold, a run).
///
/// - `seed()` makes a fresh accumulator for each departure; `fold(&mut acc, input)` adds one
///   caller's input to it; `run(acc)` consumes it and produces the departure's result.
/// - When a departure leaves is the [`Batcher`]'s business, with the same settings
///   ([`policy`](CoalescerBuilder::policy), [`window`](CoalescerBuilder::window),
///   [`max_batch_size`](CoalescerBuilder::max_batch_size) inputs per departure,
///   [`max_in_flight`](CoalescerBuilder::max_in_flight) departures running at once,
///   [`capacity`](CoalescerBuilder::capacity), [`overflow`](CoalescerBuilder::overflow),
///   [`batch_timeout`](CoalescerBuilder::batch_timeout) for a `run` that hangs):
///   when the road is empty an input leaves alone at once, under load a bus fills.
/// - Every caller of one departure gets the same `Arc`; each caller gets its own departure's
///   result, never a later one's. Inputs that arrive while a departure runs go to the next one,
///   with a fresh seed: nothing is lost and a running accumulator is never touched again (it
///   was moved into `run`).
/// - A caller that gives up before its departure leaves is left out: its input is never
///   folded. A departure with no caller left does not run.
/// - `seed`, `fold` and `run` run in the departure's own task, under no lock; their errors
///   reach that departure's callers as [`Error::Batch`] (one `Arc`, not wrapped), their panics
///   as [`Error::Panicked`]; later departures run normally.
/// - Inputs are folded in no particular order: `fold` should not depend on it (a sum, a set,
///   a merge).
///
/// # One engine with the keyed Batcher
///
/// The keyed [`Batcher`] is this aggregate with a set of keys: seed an empty set, fold inserts
/// the key, run calls the batch function with the set and each caller reads its own entry.
/// Conversely, a `Coalescer` *is* a `Batcher` underneath: each input boards the engine's
/// wait-free ring as a ticket (its input, behind a pointer that is the ticket's identity), the
/// scheduler decides the departure exactly as for keys, and the departure's batch function
/// seeds, folds the tickets' inputs and runs. So the ring, the policies, the precise timer,
/// the bounds, cancellation, shutdown and the panic handling are the Batcher's own code, and
/// the Batcher pays nothing for the Coalescer's existence. What the Coalescer adds per input is
/// one small allocation (the ticket) and one pointer hash in the engine's de-duplication
/// (which never merges two tickets); per departure, a one-entry map around the result.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Page views of many requests, counted in one `UPDATE ... SET views = views + n`.
/// let views = busline::Coalescer::builder(
///         || 0u64,                                    // seed: a fresh count per departure
///         |n: &mut u64, page_views: u64| *n += page_views, // fold one caller's input
///         |n: u64| async move {                       // run: one write for the departure
///             Ok::<_, std::io::Error>(n)
///         },
///     )
///     .window(Duration::from_millis(1))
///     .build()?;
/// let (a, b) = tokio::join!(views.coalesce(2), views.coalesce(3));
/// let (a, b) = (a?, b?);
/// assert_eq!((*a, *b), (5, 5));
/// assert!(std::sync::Arc::ptr_eq(&a, &b), "one result, shared");
/// # Ok(()) }
/// ```
pub struct Coalescer<In, Out, E> {
    batcher: Batcher<Ticket<In>, Arc<Out>, E>,
}

/// Builds a [`Coalescer`]; see [`Coalescer::builder`]. The settings are the [`Builder`]'s.
pub struct CoalescerBuilder<In, Out, E> {
    builder: Builder<Ticket<In>, Arc<Out>, E>,
}

/// One caller's input on its way to a departure: the engine's key. Its identity is its
/// allocation, so two tickets are never equal and the engine's de-duplication keeps them all;
/// hashing it hashes a pointer, no user code.
struct Ticket<In>(Arc<Mutex<Option<In>>>);

impl<In> Ticket<In> {
    /// The input, taken out once by the departure that folds it.
    fn take(&self) -> Option<In> {
        // Nothing that can panic runs under this lock (a move out of an `Option`).
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

impl<In> Clone for Ticket<In> {
    fn clone(&self) -> Self {
        Ticket(Arc::clone(&self.0))
    }
}

impl<In> PartialEq for Ticket<In> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<In> Eq for Ticket<In> {}

impl<In> Hash for Ticket<In> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

/// One departure's answer: its result, under one of its tickets.
type Departure<In, Out, E> = Result<HashMap<Ticket<In>, Arc<Out>>, E>;

/// The departures' function of a group (`()` for a plain `Coalescer`) and the tickets.
type DepartFn<G, In, Out, E> = Arc<dyn Fn(G, Vec<Ticket<In>>) -> BoxFuture<Departure<In, Out, E>> + Send + Sync>;

/// A departure, from the user's seed, fold and run: seeds an accumulator, folds the inputs of
/// the tickets still boarded, runs it with the group, and answers every caller with one `Arc`.
fn departures<G, In, Out, E, Acc, S, F, R, Fut>(seed: S, fold: F, run: R) -> DepartFn<G, In, Out, E>
where
    G: Send + 'static,
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
    Acc: Send + 'static,
    S: Fn() -> Acc + Send + Sync + 'static,
    F: Fn(&mut Acc, In) + Send + Sync + 'static,
    R: Fn(G, Acc) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, E>> + Send + 'static,
{
    let aggregate = Arc::new((seed, fold, run));
    Arc::new(move |group, tickets| {
        let aggregate = Arc::clone(&aggregate);
        // Everything happens in the departure's task, not in the engine's driver: the fold
        // may be as slow as the user makes it.
        Box::pin(async move {
            let (seed, fold, run) = &*aggregate;
            let mut acc = seed();
            for ticket in &tickets {
                if let Some(input) = ticket.take() {
                    fold(&mut acc, input);
                }
            }
            let out = Arc::new(run(group, acc).await?);
            // One entry (under any of the departure's tickets): every caller reads the map's
            // one value, the same `Arc`.
            let any = tickets.into_iter().next().expect("the engine never runs an empty departure");
            Ok(HashMap::from([(any, out)]))
        })
    })
}

impl<In, Out, E> Coalescer<In, Out, E>
where
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Starts configuring a coalescer from its seed factory, its fold and its run. Defaults
    /// are the [`Batcher`]'s: [`Policy::Natural`], [`DEFAULT_MAX_BATCH_SIZE`](crate::DEFAULT_MAX_BATCH_SIZE)
    /// inputs per departure, [`DEFAULT_MAX_IN_FLIGHT`](crate::DEFAULT_MAX_IN_FLIGHT) departures running at once.
    pub fn builder<Acc, S, F, R, Fut>(seed: S, fold: F, run: R) -> CoalescerBuilder<In, Out, E>
    where
        Acc: Send + 'static,
        S: Fn() -> Acc + Send + Sync + 'static,
        F: Fn(&mut Acc, In) + Send + Sync + 'static,
        R: Fn(Acc) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        let depart = departures(seed, fold, move |(), acc| run(acc));
        CoalescerBuilder { builder: Batcher::builder(move |tickets| depart((), tickets)) }
    }

    /// A `Coalescer` per group: `run` receives the group with the accumulator; each group's
    /// inputs are folded and run only with that group's, every group departs on its own, with
    /// the settings given to the builder (the `Batcher`'s: `window`, `policy`, ...). See
    /// [`PerGroup`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Page views counted per site: one `UPDATE` per site and departure, never a sum of two
    /// // sites' views.
    /// let views = busline::Coalescer::per_group(
    ///         || 0u64,
    ///         |n: &mut u64, page_views: u64| *n += page_views,
    ///         |site: &'static str, n: u64| async move { Ok::<_, std::io::Error>(format!("{site} +{n}")) },
    ///     )
    ///     .window(Duration::from_millis(1))
    ///     .max_groups(10_000)
    ///     .build()?;
    /// let (a, b, c) = tokio::join!(views.coalesce("a.example", 2), views.coalesce("a.example", 3), views.coalesce("b.example", 1));
    /// assert_eq!((a?.as_str(), b?.as_str(), c?.as_str()), ("a.example +5", "a.example +5", "b.example +1"));
    /// # Ok(()) }
    /// ```
    pub fn per_group<G, Acc, S, F, R, Fut>(seed: S, fold: F, run: R) -> PerGroupBuilder<G, Coalescer<In, Out, E>>
    where
        G: Eq + Hash + Clone + Send + Sync + 'static,
        Acc: Send + 'static,
        S: Fn() -> Acc + Send + Sync + 'static,
        F: Fn(&mut Acc, In) + Send + Sync + 'static,
        R: Fn(G, Acc) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        let template = Batcher::builder(|_tickets: Vec<Ticket<In>>| async {
            unreachable!("the template's batch function is replaced per group")
        });
        PerGroupBuilder::new(CoalescerRecipe { depart: departures(seed, fold, run), template })
    }

    /// Adds `input` to the next departure and returns that departure's result, shared with
    /// its other callers.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] with `run`'s error for this departure, [`Error::Panicked`] if `seed`,
    /// `fold` or `run` panicked for it, [`Error::Timeout`] if it ran past the
    /// [`batch_timeout`](CoalescerBuilder::batch_timeout), [`Error::Closed`] after shutdown,
    /// [`Error::Overloaded`] at capacity under [`Overflow::Reject`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before its departure leaves takes the input out of it (it is never
    /// folded; a departure with nobody left does not run); after, discards the answer.
    pub async fn coalesce(&self, input: In) -> Result<Arc<Out>, Error<E>> {
        let ticket = Ticket(Arc::new(Mutex::new(Some(input))));
        let departure = self.batcher.load_shared(ticket).await?;
        Ok(Arc::clone(departure.values().next().expect("every departure's map holds its result")))
    }

    /// Sends what is queued, waits until every accepted input has its answer, and refuses new
    /// ones with [`Error::Closed`]; as [`Batcher::shutdown`].
    pub async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }

    /// The engine's counters: `requests` are inputs, `batches` departures that ran.
    pub fn stats(&self) -> Stats {
        self.batcher.stats()
    }

    /// Departures sealed and still in use; zero when every caller has been answered or has
    /// gone: nothing stays allocated.
    pub fn live_slots(&self) -> usize {
        self.batcher.live_slots()
    }

    /// Whether the coalescer refuses new inputs.
    pub fn is_closed(&self) -> bool {
        self.batcher.is_closed()
    }
}

impl<In, Out, E> CoalescerBuilder<In, Out, E>
where
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A fixed collection window; see [`Builder::window`].
    pub fn window(self, window: Duration) -> Self {
        CoalescerBuilder { builder: self.builder.window(window) }
    }

    /// The departure policy; see [`Builder::policy`].
    pub fn policy(self, policy: Policy) -> Self {
        CoalescerBuilder { builder: self.builder.policy(policy) }
    }

    /// The most inputs one departure folds; see [`Builder::max_batch_size`].
    pub fn max_batch_size(self, max_batch_size: usize) -> Self {
        CoalescerBuilder { builder: self.builder.max_batch_size(max_batch_size) }
    }

    /// The most departures running at once; see [`Builder::max_in_flight`].
    pub fn max_in_flight(self, max_in_flight: usize) -> Self {
        CoalescerBuilder { builder: self.builder.max_in_flight(max_in_flight) }
    }

    /// The most inputs admitted at once; see [`Builder::capacity`].
    pub fn capacity(self, capacity: usize) -> Self {
        CoalescerBuilder { builder: self.builder.capacity(capacity) }
    }

    /// What an input does at capacity; see [`Builder::overflow`]. Under
    /// [`Overflow::RunAlone`] it seeds, folds itself alone and runs, in the caller's task.
    pub fn overflow(self, overflow: Overflow) -> Self {
        CoalescerBuilder { builder: self.builder.overflow(overflow) }
    }

    /// The longest a departure's `run` may take; see [`Builder::batch_timeout`]. A departure
    /// still running after `timeout` is dropped (its `run` future with it), its callers get
    /// [`Error::Timeout`], and its in-flight place is freed.
    pub fn batch_timeout(self, timeout: Duration) -> Self {
        CoalescerBuilder { builder: self.builder.batch_timeout(timeout) }
    }

    /// Whether windows may spend CPU to close on time; see [`Builder::spin`].
    pub fn spin(self, spin: bool) -> Self {
        CoalescerBuilder { builder: self.builder.spin(spin) }
    }

    /// The runtime the engine's driver and every departure run on; see [`Builder::runtime`].
    pub fn runtime(self, runtime: tokio::runtime::Handle) -> Self {
        CoalescerBuilder { builder: self.builder.runtime(runtime) }
    }

    /// The name the coalescer's metrics and spans report; see [`Builder::name`].
    pub fn name(self, name: impl Into<Arc<str>>) -> Self {
        CoalescerBuilder { builder: self.builder.name(name) }
    }

    /// Starts the coalescer's engine on its runtime (by default, the current one).
    ///
    /// # Errors
    ///
    /// As [`Builder::build`]: a [`ConfigError`] naming the setting out of range, or `runtime`
    /// outside a tokio runtime or on one without the time driver a setting needs.
    pub fn build(self) -> Result<Coalescer<In, Out, E>, ConfigError> {
        Ok(Coalescer { batcher: self.builder.build()? })
    }
}

impl<In, Out, E> Clone for Coalescer<In, Out, E> {
    fn clone(&self) -> Self {
        Coalescer { batcher: self.batcher.clone() }
    }
}

impl<In, Out, E> fmt::Debug for Coalescer<In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer").field("engine", &self.batcher).finish()
    }
}

impl<In, Out, E> fmt::Debug for CoalescerBuilder<In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalescerBuilder").field("settings", &self.builder).finish()
    }
}

/// What builds a group's `Coalescer` (see [`Coalescer::per_group`]): the departures' function
/// and the engine's settings.
pub struct CoalescerRecipe<G, In, Out, E> {
    depart: DepartFn<G, In, Out, E>,
    template: Builder<Ticket<In>, Arc<Out>, E>,
}

impl<G, In, Out, E> fmt::Debug for CoalescerRecipe<G, In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalescerRecipe").field("settings", &self.template).finish_non_exhaustive()
    }
}

/// A group's `Coalescer`: the engine's settings around the departures of that group.
impl<G, In, Out, E> Partitioned<G> for Coalescer<In, Out, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Recipe = CoalescerRecipe<G, In, Out, E>;

    fn prepare(recipe: Self::Recipe) -> Result<Self::Recipe, ConfigError> {
        // Groups are created inside calls, wherever those are polled: pin their engines to one
        // runtime (the one given, or the one `build` is called in), checked as `Grouped` does.
        Ok(CoalescerRecipe { depart: recipe.depart, template: recipe.template.pinned()? })
    }

    fn make(recipe: &Self::Recipe, group: &G) -> Result<Self, ConfigError> {
        Self::engine(recipe, group, None)
    }

    fn make_present(recipe: &Self::Recipe, group: &G, presence: Presence<G, Self>) -> Result<Self, ConfigError> {
        Self::engine(recipe, group, Some(presence))
    }
}

impl<In, Out, E> Coalescer<In, Out, E>
where
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A group's engine. With its member's `presence`, a departure occupies the group while it
    /// runs: `max_in_flight` holds across callers that give up (a group reclaimed with its
    /// departure running would start another on its next call).
    fn engine<G>(recipe: &CoalescerRecipe<G, In, Out, E>, group: &G, presence: Option<Presence<G, Self>>) -> Result<Self, ConfigError>
    where
        G: Eq + Hash + Clone + Send + Sync + 'static,
    {
        let (depart, group) = (Arc::clone(&recipe.depart), group.clone());
        let batch_fn = Arc::new(move |tickets| {
            let departure = || depart(group.clone(), tickets).map(|answer| answer.map(Answered::plain));
            let run: BatchFuture<Ticket<In>, Arc<Out>, E> = match presence.as_ref().map(Presence::occupy) {
                None => Box::pin(departure()),
                Some(Some(occupancy)) => Box::pin(occupancy.over(departure())),
                // Retired: nobody of the group waits on this departure.
                Some(None) => Box::pin(std::future::ready(Ok(Answered::plain(HashMap::new())))),
            };
            run
        });
        Ok(Coalescer { batcher: recipe.template.with_batch_fn(batch_fn).build()? })
    }
}

impl<G, In, Out, E> PerGroupBuilder<G, Coalescer<In, Out, E>>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Each group's fixed collection window; see [`Builder::window`].
    pub fn window(mut self, window: Duration) -> Self {
        self.recipe.template = self.recipe.template.window(window);
        self
    }

    /// Each group's departure policy; see [`Builder::policy`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.recipe.template = self.recipe.template.policy(policy);
        self
    }

    /// The most inputs one departure of a group folds; see [`Builder::max_batch_size`].
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.recipe.template = self.recipe.template.max_batch_size(max_batch_size);
        self
    }

    /// The most departures of one group running at once; see [`Builder::max_in_flight`].
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.recipe.template = self.recipe.template.max_in_flight(max_in_flight);
        self
    }

    /// The most inputs of one group admitted at once; see [`Builder::capacity`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.recipe.template = self.recipe.template.capacity(capacity);
        self
    }

    /// What an input does at its group's capacity; see [`CoalescerBuilder::overflow`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.recipe.template = self.recipe.template.overflow(overflow);
        self
    }

    /// The longest one departure of a group may run; see [`CoalescerBuilder::batch_timeout`].
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.recipe.template = self.recipe.template.batch_timeout(timeout);
        self
    }

    /// Whether each group's windows may spend CPU to close on time; see [`Builder::spin`].
    pub fn spin(mut self, spin: bool) -> Self {
        self.recipe.template = self.recipe.template.spin(spin);
        self
    }

    /// The runtime every group's engine runs on. Default: the runtime `build` is called in.
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.recipe.template = self.recipe.template.runtime(runtime);
        self
    }

    /// The name every group's engine reports under; see [`Builder::name`].
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.recipe.template = self.recipe.template.name(name);
        self
    }
}

impl<G, In, Out, E> PerGroup<G, Coalescer<In, Out, E>>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Adds `input` to the next departure of `group` and returns that departure's result,
    /// shared with its other callers (all of `group`): `run(group, fold(seed(), inputs))`.
    ///
    /// A call occupies its group until it is answered or dropped, and a departure occupies it
    /// while it runs (as in [`Grouped`](crate::Grouped)): a group whose callers have all given
    /// up is not reclaimed while its departure runs, so the group's `max_in_flight` holds
    /// across callers that time out.
    ///
    /// # Errors, panics, cancel safety
    ///
    /// As [`Coalescer::coalesce`], and as every [per-group call](PerGroup#calls).
    pub async fn coalesce(&self, group: G, input: In) -> Result<Arc<Out>, Error<E>> {
        let coalescer = self.enter(&group);
        // The caller's group, dropped here where its `Drop` cannot unwind into the caller.
        drop_quietly(group);
        let (coalescer, input) = super::user::admitted(coalescer, input)?;
        coalescer.coalesce(input).await
    }
}
