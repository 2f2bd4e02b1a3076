//! Debounce: run once the calls have paused, with the last call's input.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::pending::Pending;
use super::rendezvous::Rendezvous;
use super::user::{BoxFn, box_fn, call_boxed, clone_outcome, drop_quietly};
use crate::sync::{AtomicU64, Ordering};
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
    quiet: Option<Duration>,
    max_wait: Option<Duration>,
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

/// What a cohort's callers wait for, and who is still waiting.
struct Round<Out, E> {
    outcome: Rendezvous<Result<Out, Error<E>>>,
    /// Callers still waiting; changed only under the `waiting` lock (atomic only so that the
    /// round is `Sync`).
    waiters: AtomicU64,
    /// The cohort's task (its timer, then its run), set by the call that opened it.
    task: OnceLock<AbortHandle>,
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
        DebounceBuilder { f: box_fn(f), quiet: None, max_wait: None }
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
        let runtime = tokio::runtime::Handle::current();
        let inner = &self.inner;
        let _counted = inner.pending.enter();
        let now = Instant::now();
        let (round, replaced) = {
            let mut waiting = lock(&inner.waiting);
            match &mut *waiting {
                Some(cohort) => {
                    cohort.last_at = now;
                    cohort.round.waiters.fetch_add(1, Ordering::Relaxed);
                    (Arc::clone(&cohort.round), Some(std::mem::replace(&mut cohort.input, input)))
                }
                None => {
                    let round = Arc::new(Round {
                        outcome: Rendezvous::new(),
                        waiters: AtomicU64::new(1),
                        task: OnceLock::new(),
                    });
                    *waiting = Some(Cohort { input, first_at: now, last_at: now, round: Arc::clone(&round) });
                    (round, None)
                }
            }
        };
        let opened = replaced.is_none();
        drop_quietly(replaced);
        let mut waiter = Waiter { inner, round: &round, answered: false };
        if opened {
            let task = runtime.spawn(run_when_due(Arc::clone(inner), Arc::clone(&round)));
            let _ = round.task.set(task.abort_handle());
        }
        let outcome = round.outcome.wait().await;
        waiter.answered = true;
        clone_outcome(outcome)
    }

    /// Callers waiting for a run's result. Zero when every call has ended.
    pub fn pending(&self) -> usize {
        self.inner.pending.get()
    }
}

/// The cohort's task: wait until it is due, close it, run `f` with its last input, answer.
async fn run_when_due<In, Out, E>(inner: Arc<Inner<In, Out, E>>, round: Arc<Round<Out, E>>) {
    let answer = Answer { round: Arc::clone(&round) };
    let input = loop {
        let due = {
            let mut waiting = lock(&inner.waiting);
            let Some(cohort) = waiting.as_ref().filter(|c| Arc::ptr_eq(&c.round, &round)) else {
                // Every caller left: the last one took the cohort out; nothing runs.
                return;
            };
            let mut due = cohort.last_at + inner.quiet;
            if let Some(max_wait) = inner.max_wait {
                due = due.min(cohort.first_at + max_wait);
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

/// Answers a cohort's callers with [`Error::Closed`] if its task is dropped before it answers
/// (its runtime shut down; when it was aborted, nobody is left to read it).
struct Answer<Out, E> {
    round: Arc<Round<Out, E>>,
}

impl<Out, E> Drop for Answer<Out, E> {
    fn drop(&mut self) {
        if self.round.outcome.get().is_none() {
            self.round.outcome.publish(Err(Error::Closed));
        }
    }
}

/// A caller's place in its cohort.
struct Waiter<'a, In, Out, E> {
    inner: &'a Inner<In, Out, E>,
    round: &'a Arc<Round<Out, E>>,
    answered: bool,
}

impl<In, Out, E> Drop for Waiter<'_, In, Out, E> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut waiting = lock(&self.inner.waiting);
        let last = self.round.waiters.fetch_sub(1, Ordering::Relaxed) == 1;
        let abandoned = if last && waiting.as_ref().is_some_and(|c| Arc::ptr_eq(&c.round, self.round)) {
            waiting.take()
        } else {
            None
        };
        drop(waiting);
        if last {
            if let Some(task) = self.round.task.get() {
                task.abort();
            }
        }
        drop_quietly(abandoned);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing that can panic runs under the lock, so a poisoned state is still consistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        self.quiet = Some(quiet);
        self
    }

    /// The longest the calls can postpone a run: it starts at most this long after the
    /// cohort's first call. Default: unbounded (a steady stream of calls closer together than
    /// `quiet` postpones the run for as long as it lasts). Zero is a [`ConfigError`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `quiet` if it is unset or zero, `max_wait` if it is zero.
    pub fn build(self) -> Result<Debounce<In, Out, E>, ConfigError> {
        let quiet = match self.quiet {
            None => return Err(ConfigError::new("quiet", "must be set")),
            Some(quiet) if quiet.is_zero() => return Err(ConfigError::new("quiet", "must be positive")),
            Some(quiet) => quiet,
        };
        if self.max_wait.is_some_and(|m| m.is_zero()) {
            return Err(ConfigError::new("max_wait", "must be positive"));
        }
        Ok(Debounce {
            inner: Arc::new(Inner {
                f: self.f,
                quiet,
                max_wait: self.max_wait,
                waiting: Mutex::new(None),
                pending: Pending::new(),
            }),
        })
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
            .field("quiet", &self.quiet)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}
