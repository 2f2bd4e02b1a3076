//! Use-last: a new call supersedes the one running; every caller gets the newest result.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

use super::pending::Pending;
use super::per_group::{PerGroup, PerGroupBuilder, Partitioned};
use super::round::{Abort, Round, Waiter, lock};
use super::user::{BoxFn, GroupFn, Quiet, box_fn, clone_outcome, drop_quietly, group_fn, guarded, settle};
use crate::{ConfigError, Error};

/// Each call supersedes the execution in progress, which is dropped; every caller since the
/// last result, superseded ones included, gets the result of the newest call (FlowSync's "use
/// last", the search box that only cares about the latest keystroke's query).
///
/// - `call(input)` starts `f(input)` at once, as its own task on the tokio runtime, and drops
///   (aborts) the execution it supersedes.
/// - The callers since the last result form a *round*; when the newest execution ends, every
///   caller of the round reads its outcome (one shared outcome, the value cloned per caller),
///   and the next call opens a new round.
/// - A caller that gives up leaves the round to the others; when every caller of a round has
///   gone, its execution is dropped too.
/// - Errors and panics are the newest call's outcome like a value: [`Error::Batch`] (shared,
///   not wrapped), [`Error::Panicked`].
///
/// No recursion anywhere: a superseded execution is aborted (tokio drops it on its own
/// worker), and a round's callers are woken by one loop over a list. 100,000 supersessions in
/// a row run in flat stack, and the superseded executions are freed as they go.
///
/// Cloning is cheap (an `Arc`); clones share the rounds.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), busline::Error<std::io::Error>> {
/// let search = busline::UseLast::new(|query: String| async move {
///     tokio::task::yield_now().await; // the backend's round trip
///     Ok::<_, std::io::Error>(format!("results for {query:?}"))
/// });
/// // Keystrokes: each query supersedes the previous one; everyone sees the newest results.
/// let (a, ab) = tokio::join!(search.call("a".into()), search.call("ab".into()));
/// assert_eq!(a?, r#"results for "ab""#);
/// assert_eq!(ab?, r#"results for "ab""#);
/// # Ok(()) }
/// ```
pub struct UseLast<In, Out, E> {
    inner: Arc<Inner<In, Out, E>>,
}

struct Inner<In, Out, E> {
    f: BoxFn<In, Out, E>,
    state: Mutex<State<Out, E>>,
    pending: Pending,
}

struct State<Out, E> {
    /// The number of the newest call: only its execution may answer the round.
    newest: u64,
    /// The callers since the last outcome.
    round: Arc<Round<Out, E>>,
    /// The newest call's execution, once spawned, until it answers.
    running: Option<AbortHandle>,
}

// # How a call goes
//
// Under the state's lock (a few loads and stores, no user code): number the call, count it in
// the current round, take the running execution's abort handle. Outside it: abort the
// superseded execution, call `f(input)`, spawn its future wrapped in an `Execution`; then,
// under the lock again, record the new task's abort handle unless a newer call has come
// meanwhile (then abort it at once, outside the lock).
//
// An execution that ends checks, under the lock, that it is still the newest call's. If so it
// takes the round (leaving a fresh one for later calls) and publishes its outcome to it,
// outside the lock. If not, it was superseded while finishing: its outcome is dropped.
//
// A caller that leaves before the outcome uncounts itself under the lock; if it was the
// round's last and the round is still current, it takes the running execution's handle and
// aborts it. A call that comes after that supersedes the aborted one as usual, so nothing is
// lost either way.

impl<In, Out, E> UseLast<In, Out, E>
where
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Use-last calls of `f`.
    pub fn new<F, Fut>(f: F) -> UseLast<In, Out, E>
    where
        F: Fn(In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        UseLast::from_boxed(box_fn(f))
    }

    fn from_boxed(f: BoxFn<In, Out, E>) -> UseLast<In, Out, E> {
        UseLast {
            inner: Arc::new(Inner {
                f,
                state: Mutex::new(State { newest: 0, round: Round::new(), running: None }),
                pending: Pending::new(),
            }),
        }
    }

    /// A `UseLast` per group: `f` receives the group with the input; each group's calls
    /// supersede only that group's execution. See [`PerGroup`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Search-as-you-type, one search box per user: a user's keystroke supersedes only
    /// // that user's search.
    /// let search = busline::UseLast::per_group(|user: u32, query: String| async move {
    ///         tokio::task::yield_now().await; // the index's round trip
    ///         Ok::<_, std::io::Error>(format!("{user}: results for {query:?}"))
    ///     })
    ///     .max_groups(100_000)
    ///     .build()?;
    /// let (a, ab, other) =
    ///     tokio::join!(search.call(1, "a".into()), search.call(1, "ab".into()), search.call(2, "a".into()));
    /// assert_eq!((a?, ab?), (r#"1: results for "ab""#.to_string(), r#"1: results for "ab""#.to_string()));
    /// assert_eq!(other?, r#"2: results for "a""#, "user 2's search is its own");
    /// # Ok(()) }
    /// ```
    pub fn per_group<G, F, Fut>(f: F) -> PerGroupBuilder<G, UseLast<In, Out, E>>
    where
        G: Eq + Hash + Clone + Send + Sync + 'static,
        F: Fn(G, In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        PerGroupBuilder::new(group_fn(f))
    }

    /// Starts `f(input)`, superseding the execution in progress, and returns the result of the
    /// newest call made before a result came.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] with the newest execution's error, [`Error::Panicked`] if it (or `f`)
    /// panicked or the value's `Clone` did, [`Error::Closed`] if the runtime shut down before
    /// it ended.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the execution is spawned on it), as `tokio::spawn` does.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the round to its other callers; when the last one goes, the
    /// execution in progress is dropped.
    pub async fn call(&self, input: In) -> Result<Out, Error<E>> {
        self.call_holding(input, || ()).await
    }

    /// [`call`](UseLast::call), with `hold()` kept by the spawned execution until it ends: a
    /// per-group form's occupancy of its group, so that the group is not reclaimed while its
    /// execution still runs.
    async fn call_holding<H: Send + 'static>(&self, input: In, hold: impl FnOnce() -> H) -> Result<Out, Error<E>> {
        let runtime = tokio::runtime::Handle::current();
        let inner = &self.inner;
        let _counted = inner.pending.enter();
        let (number, round, superseded) = {
            let mut state = lock(&inner.state);
            state.newest += 1;
            state.round.join();
            (state.newest, Arc::clone(&state.round), state.running.take())
        };
        // Whoever holds the round last drops its value (the user's `Drop`): maybe this caller.
        let round = Quiet::new(round);
        let waiter = Waiter::new(&inner.state, &round, abandon);
        if let Some(superseded) = superseded {
            superseded.abort();
        }
        let mut execution = Execution { inner: Arc::clone(inner), number, done: false, _hold: hold() };
        let fut = guarded(|| (inner.f)(input));
        let task = runtime.spawn(async move {
            let outcome = match fut {
                Ok(fut) => settle(fut).await,
                Err(e) => Err(e),
            };
            execution.finish(outcome);
        });
        let superseded_meanwhile = {
            let mut state = lock(&inner.state);
            if state.newest == number {
                state.running = Some(task.abort_handle());
                false
            } else {
                true
            }
        };
        if superseded_meanwhile {
            task.abort();
        }
        clone_outcome(waiter.wait().await)
    }

    /// Callers waiting for a result. Zero when every call has ended: nothing stays behind.
    pub fn pending(&self) -> usize {
        self.inner.pending.get()
    }
}

/// Run by the last caller of a round to leave before its outcome: if the round is still the
/// current one, its running execution is wanted by nobody; it is aborted once the lock is
/// released.
fn abandon<Out, E>(state: &mut State<Out, E>, round: &Arc<Round<Out, E>>) -> Option<Abort> {
    if Arc::ptr_eq(&state.round, round) { state.running.take().map(Abort) } else { None }
}

/// One call's execution: answers the round if it is still the newest when it ends. Dropped
/// unfinished while still the newest (its runtime shut down, or its round emptied), it answers
/// [`Error::Closed`].
struct Execution<In, Out, E, H> {
    inner: Arc<Inner<In, Out, E>>,
    number: u64,
    done: bool,
    /// Kept until the execution has answered (dropped after `inner`: fields drop in order).
    _hold: H,
}

impl<In, Out, E, H> Execution<In, Out, E, H> {
    fn finish(&mut self, outcome: Result<Out, Error<E>>) {
        self.done = true;
        let mut state = lock(&self.inner.state);
        if state.newest != self.number {
            // Superseded while finishing: a newer call answers the round.
            drop(state);
            drop_quietly(outcome);
            return;
        }
        let round = Quiet::new(std::mem::replace(&mut state.round, Round::new()));
        state.running = None;
        drop(state);
        round.outcome.publish(outcome);
    }
}

impl<In, Out, E, H> Drop for Execution<In, Out, E, H> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(Error::Closed));
        }
    }
}

impl<In, Out, E> Clone for UseLast<In, Out, E> {
    fn clone(&self) -> Self {
        UseLast { inner: Arc::clone(&self.inner) }
    }
}

impl<In, Out, E> fmt::Debug for UseLast<In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UseLast").field("pending", &self.inner.pending.get()).finish()
    }
}

/// A group's `UseLast`: built from the user's function of the group and the input.
impl<G, In, Out, E> Partitioned<G> for UseLast<In, Out, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Recipe = GroupFn<G, In, Out, E>;

    fn prepare(recipe: Self::Recipe) -> Result<Self::Recipe, ConfigError> {
        Ok(recipe)
    }

    fn make(recipe: &Self::Recipe, group: &G) -> Result<Self, ConfigError> {
        Ok(UseLast::from_boxed(super::user::bind(recipe, group)))
    }
}

impl<G, In, Out, E> PerGroup<G, UseLast<In, Out, E>>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Starts `f(group, input)`, superseding `group`'s execution in progress (and no other
    /// group's), and returns the result of the group's newest call made before a result came.
    ///
    /// The group stays live while its callers wait *and* while its execution runs (a
    /// superseded or abandoned execution is aborted, and tokio drops it at its next `.await`):
    /// a call that comes meanwhile supersedes it as usual, so one group never has two
    /// instances, nor an execution of a reclaimed instance still answering.
    ///
    /// # Errors, panics, cancel safety
    ///
    /// As [`UseLast::call`], and as every [per-group call](PerGroup#calls).
    pub async fn call(&self, group: G, input: In) -> Result<Out, Error<E>> {
        let entered = self.enter(&group);
        drop_quietly(group);
        let (entered, input) = super::user::admitted(entered, input)?;
        entered.call_holding(input, || entered.hold(self.partition())).await
    }
}
