//! Serial (FlowSync's "queue"): calls run one at a time, in arrival order.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::pending::Pending;
use super::per_group::{PerGroup, PerGroupBuilder, Partitioned};
use super::user::{BoxFn, GroupFn, Quiet, bind, box_fn, call_boxed, drop_quietly, group_fn};
use crate::{ConfigError, Error};

/// Runs calls of one function one at a time, in the order they arrive; each caller gets its own
/// call's result.
///
/// - A call *arrives* when its future is first polled; it then waits for its turn in a fair,
///   first-come first-served queue (tokio's `Semaphore` with one permit).
/// - Its turn comes when every call that arrived before it has finished or gone: then, and only
///   then, `f(input)` is called, and its future runs in the caller's task.
/// - A failure or a panic is that call's alone ([`Error::Batch`], [`Error::Panicked`]); the
///   next call runs normally.
/// - A caller that gives up before its turn is skipped: `f` is never called with its input.
///   One that gives up during its turn drops its call (as dropping any future does), and the
///   next call starts.
///
/// Nothing is coalesced: this is the bus with one seat, for a resource that must not see two
/// calls at once (a file, a device, a rate-limited account, an order-sensitive API). The queue
/// is the only shared state, and no lock of ours is held by a thread while `f` runs: the turn
/// is an async permit, released when the call ends or is dropped.
///
/// Cloning is cheap (an `Arc`); clones share the queue.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), busline::Error<std::io::Error>> {
/// let log = busline::Serial::new(|line: String| async move {
///     // Appends must not interleave: one at a time, in arrival order.
///     Ok::<_, std::io::Error>(line.len())
/// });
/// let (a, b) = tokio::join!(log.call("first".into()), log.call("second".into()));
/// assert_eq!((a?, b?), (5, 6));
/// # Ok(()) }
/// ```
pub struct Serial<In, Out, E> {
    inner: Arc<Inner<In, Out, E>>,
}

struct Inner<In, Out, E> {
    turn: Semaphore,
    f: BoxFn<In, Out, E>,
    pending: Pending,
}

impl<In, Out, E> Serial<In, Out, E>
where
    In: Send + 'static,
    Out: Send + 'static,
    E: Send + Sync + 'static,
{
    /// Serialises the calls of `f`.
    pub fn new<F, Fut>(f: F) -> Serial<In, Out, E>
    where
        F: Fn(In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        Serial::from_boxed(box_fn(f))
    }

    fn from_boxed(f: BoxFn<In, Out, E>) -> Serial<In, Out, E> {
        Serial { inner: Arc::new(Inner { turn: Semaphore::new(1), f, pending: Pending::new() }) }
    }

    /// A `Serial` per group: `f` receives the group with the input; each group's calls run one
    /// at a time in arrival order, and different groups' calls run in parallel. See
    /// [`PerGroup`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // One journal per account: an account's appends never interleave, accounts run in
    /// // parallel, and an idle account's queue is reclaimed.
    /// let journals = busline::Serial::per_group(|account: u64, entry: String| async move {
    ///         Ok::<_, std::io::Error>(format!("{account}: {entry}"))
    ///     })
    ///     .max_groups(100_000)
    ///     .build()?;
    /// let (a, b) = tokio::join!(journals.call(7, "debit".into()), journals.call(8, "credit".into()));
    /// assert_eq!((a?, b?), ("7: debit".to_string(), "8: credit".to_string()));
    /// assert_eq!(journals.live_groups(), 0);
    /// # Ok(()) }
    /// ```
    pub fn per_group<G, F, Fut>(f: F) -> PerGroupBuilder<G, Serial<In, Out, E>>
    where
        G: Eq + Hash + Clone + Send + Sync + 'static,
        F: Fn(G, In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        PerGroupBuilder::new(group_fn(f))
    }

    /// Queues a call of `f(input)` and returns its result once it has run.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] with this call's error, [`Error::Panicked`] if `f` or its future
    /// panicked.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before its turn skips the call (`input` is dropped unused); during
    /// its turn, drops the running call. Either way the next call's turn comes.
    pub async fn call(&self, input: In) -> Result<Out, Error<E>> {
        let inner = &*self.inner;
        let _counted = inner.pending.enter();
        // Held through the wait for the turn: a caller that gives up drops it with this future,
        // quietly (its `Drop` is user code).
        let input = Quiet::new(input);
        // Never closed: the semaphore lives as long as this handle.
        let Ok(_turn) = inner.turn.acquire().await else { return Err(Error::Closed) };
        call_boxed(&inner.f, input.into_inner()).await
    }

    /// Calls queued or running. Zero when every call has ended: nothing stays behind.
    pub fn pending(&self) -> usize {
        self.inner.pending.get()
    }
}

impl<In, Out, E> Clone for Serial<In, Out, E> {
    fn clone(&self) -> Self {
        Serial { inner: Arc::clone(&self.inner) }
    }
}

impl<In, Out, E> fmt::Debug for Serial<In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serial").field("pending", &self.inner.pending.get()).finish()
    }
}

/// A group's `Serial`: built from the user's function of the group and the input.
impl<G, In, Out, E> Partitioned<G> for Serial<In, Out, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Send + 'static,
    E: Send + Sync + 'static,
{
    type Recipe = GroupFn<G, In, Out, E>;

    fn prepare(recipe: Self::Recipe) -> Result<Self::Recipe, ConfigError> {
        Ok(recipe)
    }

    fn make(recipe: &Self::Recipe, group: &G) -> Result<Self, ConfigError> {
        Ok(Serial::from_boxed(bind(recipe, group)))
    }
}

impl<G, In, Out, E> PerGroup<G, Serial<In, Out, E>>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Send + 'static,
    E: Send + Sync + 'static,
{
    /// Queues a call of `f(group, input)` behind `group`'s earlier calls (and no other
    /// group's), and returns its result once it has run.
    ///
    /// A call occupies its group from its arrival until it ends or is dropped, and runs in the
    /// caller's task: a group is reclaimed only when none of its calls is queued or running, so
    /// one group's calls never run two at once, across reclamations too.
    ///
    /// # Errors, panics, cancel safety
    ///
    /// As [`Serial::call`], and as every [per-group call](PerGroup#calls).
    pub async fn call(&self, group: G, input: In) -> Result<Out, Error<E>> {
        let serial = self.enter(&group);
        drop_quietly(group);
        let (serial, input) = super::user::admitted(serial, input)?;
        serial.call(input).await
    }
}
