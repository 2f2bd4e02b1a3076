//! Debounce: run once the calls have paused, with the last call's input.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::pending::Pending;
use super::per_group::{PerGroup, PerGroupBuilder, Partitioned};
use super::round::{Abort, Round, Waiter, lock};
use super::user::{BoxFn, GroupFn, Quiet, bind, box_fn, call_boxed, clone_outcome, drop_quietly, group_fn};
use crate::{ConfigError, Error};

/// Runs `f` once the calls have paused for `quiet`, with the last call's input; every caller
/// since the previous run gets that run's result (FlowSync's "debounce"; the autosave that
/// waits for the typing to stop).
///
/// - The first call after a run opens a *cohort* and starts its timer. Each call joins the
///   cohort, replaces its input (the previous input is dropped unused) and postpones the run
///   to `quiet` after itself.
/// - [`max_wait`](DebounceBuilder::max_wait), if set, bounds the postponement: the run starts
///   at most `max_wait` after the cohort's first call, however the calls keep coming.
/// - When the run starts, the cohort closes: later calls form the next cohort (whose run may
///   overlap this one; each caller gets its own cohort's result).
/// - A caller that gives up leaves the cohort to the others; if every caller gives up, nothing
///   runs (or the run in progress is dropped).
/// - Errors and panics are the run's outcome like a value: [`Error::Batch`] (shared, not
///   wrapped), [`Error::Panicked`].
///
/// The timer is tokio's (`tokio::time`): quiet periods are milliseconds to seconds, tokio's
/// millisecond resolution suits them, and tests can drive them with a paused clock. (The
/// sub-millisecond timer of the [`Batcher`](crate::Batcher)'s windows would not honour it.)
///
/// Cloning is cheap (an `Arc`); clones share the cohorts.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let save = busline::Debounce::builder(|draft: String| async move {
///         Ok::<_, std::io::Error>(draft.len()) // write the draft once the typing pauses
///     })
///     .quiet(Duration::from_millis(300))
///     .max_wait(Duration::from_secs(2))
///     .build()?;
/// let (a, b) = tokio::join!(save.call("hel".into()), save.call("hello".into()));
/// assert_eq!((a?, b?), (5, 5), "one save, of the last draft, for both");
/// # Ok(()) }
/// ```
pub struct Debounce<In, Out, E> {
    inner: Arc<Inner<In, Out, E>>,
}

/// Builds a [`Debounce`]; see [`Debounce::builder`].
pub struct DebounceBuilder<In, Out, E> {
    f: BoxFn<In, Out, E>,
    settings: Settings,
}

/// `quiet` and `max_wait`, as given.
#[derive(Debug, Clone, Copy, Default)]
struct Settings {
    quiet: Option<Duration>,
    max_wait: Option<Duration>,
}

impl Settings {
    /// `quiet` and `max_wait`, checked.
    fn checked(self) -> Result<(Duration, Option<Duration>), ConfigError> {
        let quiet = match self.quiet {
            None => return Err(ConfigError::new("quiet", "must be set")),
            Some(quiet) if quiet.is_zero() => return Err(ConfigError::new("quiet", "must be positive")),
            Some(quiet) => quiet,
        };
        if self.max_wait.is_some_and(|m| m.is_zero()) {
            return Err(ConfigError::new("max_wait", "must be positive"));
        }
        Ok((quiet, self.max_wait))
    }
}

/// What builds a group's `Debounce` (see [`Debounce::per_group`]).
pub struct DebounceRecipe<G, In, Out, E> {
    f: GroupFn<G, In, Out, E>,
    settings: Settings,
}

struct Inner<In, Out, E> {
    f: BoxFn<In, Out, E>,
    quiet: Duration,
    max_wait: Option<Duration>,
    /// The cohort waiting for its run, if any.
    waiting: Mutex<Option<Cohort<In, Out, E>>>,
    pending: Pending,
}

/// The calls since the last run began.
struct Cohort<In, Out, E> {
    /// The last call's input.
    input: In,
    first_at: Instant,
    last_at: Instant,
    round: Arc<Round<Out, E>>,
}

// # How it goes
//
// A call, under the `waiting` lock (no user code): join the waiting cohort (swap in its input,
// move its `last_at`, count itself) or open one. Outside it: drop the replaced input; the
// opener spawns the cohort's task. The task sleeps until the cohort is due
// (`min(last_at + quiet, first_at + max_wait)`, re-read under the lock after each sleep, since
// calls move it), then takes the cohort out of `waiting`, under the lock, and runs `f` with its
// input, outside it. From then on the cohort is closed: calls open the next one.
//
// A caller that leaves before the outcome uncounts itself under the lock; the last one takes
// the cohort out of `waiting` if it is still there (so it never runs) and aborts the task
// (its timer or its run).

impl<In, Out, E> Debounce<In, Out, E>
where
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Starts configuring a debounce around `f`. [`quiet`](DebounceBuilder::quiet) is
    /// required.
    pub fn builder<F, Fut>(f: F) -> DebounceBuilder<In, Out, E>
    where
        F: Fn(In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        DebounceBuilder { f: box_fn(f), settings: Settings::default() }
    }

    fn from_boxed(f: BoxFn<In, Out, E>, quiet: Duration, max_wait: Option<Duration>) -> Debounce<In, Out, E> {
        Debounce { inner: Arc::new(Inner { f, quiet, max_wait, waiting: Mutex::new(None), pending: Pending::new() }) }
    }

    /// A `Debounce` per group: `f` receives the group with the input; each group's calls
    /// postpone and join only that group's run. [`quiet`](PerGroupBuilder::quiet) is required,
    /// as for [`builder`](Debounce::builder). See [`PerGroup`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Autosave, one document per group: each document saves once its own edits pause.
    /// let save = busline::Debounce::per_group(|doc: u32, draft: String| async move {
    ///         Ok::<_, std::io::Error>(format!("doc {doc}: saved {draft:?}"))
    ///     })
    ///     .quiet(Duration::from_millis(300))
    ///     .max_wait(Duration::from_secs(2))
    ///     .build()?;
    /// let (a, b, c) = tokio::join!(save.call(1, "hel".into()), save.call(1, "hello".into()), save.call(2, "hi".into()));
    /// assert_eq!((a?, b?), (r#"doc 1: saved "hello""#.to_string(), r#"doc 1: saved "hello""#.to_string()));
    /// assert_eq!(c?, r#"doc 2: saved "hi""#);
    /// # Ok(()) }
    /// ```
    pub fn per_group<G, F, Fut>(f: F) -> PerGroupBuilder<G, Debounce<In, Out, E>>
    where
        G: Eq + Hash + Clone + Send + Sync + 'static,
        F: Fn(G, In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, E>> + Send + 'static,
    {
        PerGroupBuilder::new(DebounceRecipe { f: group_fn(f), settings: Settings::default() })
    }

    /// Joins the current cohort (or opens one) with `input`, and returns the result of the
    /// cohort's run: `f` with the cohort's last input.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] with the run's error, [`Error::Panicked`] if `f`, its future or the
    /// value's `Clone` panicked, [`Error::Closed`] if the runtime shut down first.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the cohort's timer is spawned on it), as `tokio::spawn` does.
    /// On a runtime without its time driver the timer cannot sleep: the cohort's callers get
    /// [`Error::Closed`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the cohort to its other callers; when the last one goes,
    /// nothing runs for the cohort (or its run in progress is dropped). The input a caller
    /// gave stays the cohort's input if it was the last one.
    pub async fn call(&self, input: In) -> Result<Out, Error<E>> {
        self.call_holding(input, || ()).await
    }

    /// [`call`](Debounce::call), with `hold()` kept by the cohort's task, if this call opens
    /// the cohort, until the task ends: a per-group form's occupancy of its group, so that the
    /// group is not reclaimed while its run still runs.
    async fn call_holding<H: Send + 'static>(&self, input: In, hold: impl FnOnce() -> H) -> Result<Out, Error<E>> {
        let runtime = tokio::runtime::Handle::current();
        let inner = &self.inner;
        let _counted = inner.pending.enter();
        let now = Instant::now();
        let (round, replaced) = {
            let mut waiting = lock(&inner.waiting);
            match &mut *waiting {
                Some(cohort) => {
                    cohort.last_at = now;
                    cohort.round.join();
                    (Arc::clone(&cohort.round), Some(std::mem::replace(&mut cohort.input, input)))
                }
                None => {
                    let round = Round::new();
                    round.join();
                    *waiting = Some(Cohort { input, first_at: now, last_at: now, round: Arc::clone(&round) });
                    (round, None)
                }
            }
        };
        let opened = replaced.is_none();
        drop_quietly(replaced);
        // Whoever holds the round last drops its value (the user's `Drop`): maybe this caller.
        let round = Quiet::new(round);
        let waiter = Waiter::new(&inner.waiting, &round, abandon);
        if opened {
            let task = runtime.spawn(run_when_due(Arc::clone(inner), Quiet::new(Arc::clone(&round)), hold()));
            let _ = round.task.set(task.abort_handle());
        }
        clone_outcome(waiter.wait().await)
    }

    /// Callers waiting for a run's result. Zero when every call has ended.
    pub fn pending(&self) -> usize {
        self.inner.pending.get()
    }
}

/// The cohort's task: wait until it is due, close it, run `f` with its last input, answer.
/// `hold` is kept until the task ends (declared first, dropped last).
async fn run_when_due<In, Out, E, H>(inner: Arc<Inner<In, Out, E>>, round: Quiet<Arc<Round<Out, E>>>, hold: H) {
    let _hold = hold;
    let answer = Answer { round: Quiet::new(Arc::clone(&round)) };
    let input = loop {
        let due = {
            let mut waiting = lock(&inner.waiting);
            let Some(cohort) = waiting.as_ref().filter(|c| Arc::ptr_eq(&c.round, &round)) else {
                // Every caller left: the last one took the cohort out; nothing runs.
                return;
            };
            let mut due = after(cohort.last_at, inner.quiet);
            if let Some(max_wait) = inner.max_wait {
                due = due.min(after(cohort.first_at, max_wait));
            }
            if due <= Instant::now() {
                let cohort = waiting.take().expect("checked above");
                break cohort.input;
            }
            due
        };
        tokio::time::sleep_until(due).await;
    };
    let outcome = call_boxed(&inner.f, input).await;
    answer.round.outcome.publish(outcome);
}

/// `at + wait`, or a time too far off to ever come if that overflows (a `quiet` or `max_wait`
/// of `Duration::MAX` means "no bound": the run then waits for the other bound, or for ever).
fn after(at: Instant, wait: Duration) -> Instant {
    // Thirty years, tokio's own "far future": past any process's life, within every clock's range.
    at.checked_add(wait).unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// Answers a cohort's callers with [`Error::Closed`] if its task is dropped before it answers
/// (its runtime shut down; when it was aborted, nobody is left to read it).
struct Answer<Out, E> {
    round: Quiet<Arc<Round<Out, E>>>,
}

impl<Out, E> Drop for Answer<Out, E> {
    fn drop(&mut self) {
        if self.round.outcome.get().is_none() {
            self.round.outcome.publish(Err(Error::Closed));
        }
    }
}

/// Run by the last caller of a cohort to leave before its outcome: takes the cohort out of
/// `waiting` if it is still there (so it never runs; its input is dropped once the lock is
/// released), and aborts its task (its timer, or its run).
fn abandon<In, Out, E>(
    waiting: &mut Option<Cohort<In, Out, E>>,
    round: &Arc<Round<Out, E>>,
) -> (Option<Cohort<In, Out, E>>, Option<Abort>) {
    let cohort = waiting.take_if(|c| Arc::ptr_eq(&c.round, round));
    (cohort, round.task.get().cloned().map(Abort))
}

impl<In, Out, E> DebounceBuilder<In, Out, E>
where
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// How long the calls must pause before the run starts. Required; zero is a
    /// [`ConfigError`] (it would run on every call, which is no debounce).
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.settings.quiet = Some(quiet);
        self
    }

    /// The longest the calls can postpone a run: it starts at most this long after the
    /// cohort's first call. Default: unbounded (a steady stream of calls closer together than
    /// `quiet` postpones the run for as long as it lasts), as is `Duration::MAX`. Zero is a
    /// [`ConfigError`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.settings.max_wait = Some(max_wait);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `quiet` if it is unset or zero, `max_wait` if it is zero.
    pub fn build(self) -> Result<Debounce<In, Out, E>, ConfigError> {
        let (quiet, max_wait) = self.settings.checked()?;
        Ok(Debounce::from_boxed(self.f, quiet, max_wait))
    }
}

impl<In, Out, E> Clone for Debounce<In, Out, E> {
    fn clone(&self) -> Self {
        Debounce { inner: Arc::clone(&self.inner) }
    }
}

impl<In, Out, E> fmt::Debug for Debounce<In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Debounce")
            .field("quiet", &self.inner.quiet)
            .field("max_wait", &self.inner.max_wait)
            .field("pending", &self.inner.pending.get())
            .finish()
    }
}

impl<In, Out, E> fmt::Debug for DebounceBuilder<In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebounceBuilder")
            .field("quiet", &self.settings.quiet)
            .field("max_wait", &self.settings.max_wait)
            .finish_non_exhaustive()
    }
}

impl<G, In, Out, E> fmt::Debug for DebounceRecipe<G, In, Out, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebounceRecipe").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// A group's `Debounce`: built from the user's function of the group and the input, with the
/// settings given to the [`PerGroupBuilder`].
impl<G, In, Out, E> Partitioned<G> for Debounce<In, Out, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Recipe = DebounceRecipe<G, In, Out, E>;

    fn prepare(recipe: Self::Recipe) -> Result<Self::Recipe, ConfigError> {
        recipe.settings.checked()?;
        Ok(recipe)
    }

    fn make(recipe: &Self::Recipe, group: &G) -> Result<Self, ConfigError> {
        let (quiet, max_wait) = recipe.settings.checked()?;
        Ok(Debounce::from_boxed(bind(&recipe.f, group), quiet, max_wait))
    }
}

impl<G, In, Out, E> PerGroupBuilder<G, Debounce<In, Out, E>>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Each group's quiet period; see [`DebounceBuilder::quiet`]. Required.
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.recipe.settings.quiet = Some(quiet);
        self
    }

    /// Each group's bound on postponement; see [`DebounceBuilder::max_wait`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.recipe.settings.max_wait = Some(max_wait);
        self
    }
}

impl<G, In, Out, E> PerGroup<G, Debounce<In, Out, E>>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    In: Send + 'static,
    Out: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Joins `group`'s cohort (or opens one) with `input`, and returns the result of that
    /// cohort's run: `f(group, last input)`. Other groups' calls neither join nor postpone it.
    ///
    /// The group stays live while its callers wait *and* while its cohort's task (the timer,
    /// then the run) has not ended, so a reclaimed group never has a run still going.
    ///
    /// # Errors, panics, cancel safety
    ///
    /// As [`Debounce::call`], and as every [per-group call](PerGroup#calls).
    pub async fn call(&self, group: G, input: In) -> Result<Out, Error<E>> {
        let entered = self.enter(&group);
        drop_quietly(group);
        let (entered, input) = super::user::admitted(entered, input)?;
        entered.call_holding(input, || entered.hold(self.partition())).await
    }
}
