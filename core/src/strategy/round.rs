//! A round: the callers that share one outcome (`UseLast`'s callers since the last result,
//! `Debounce`'s cohort), and the rule both strategies follow when those callers give up: the
//! last one to leave before the outcome takes the round's work away, so nothing runs for nobody.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::task::AbortHandle;

use super::rendezvous::Rendezvous;
use super::user::drop_quietly;
use crate::Error;
use crate::sync::{AtomicU64, Ordering};

/// Locks one of our mutexes. Nothing that can panic runs under them (a few loads and stores,
/// never user code), so a poisoned state is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The callers of one round, and the outcome they all read.
pub(crate) struct Round<Out, E> {
    pub(crate) outcome: Rendezvous<Result<Out, Error<E>>>,
    /// Callers still waiting. Changed only under the lock of the strategy's state (atomic only
    /// so that the round is `Sync`): joining a round and leaving it as its last caller are then
    /// never interleaved.
    waiters: AtomicU64,
    /// The one task that answers the round, if one does for the whole round (`Debounce`'s
    /// timer-then-run; `UseLast`'s executions change within a round and live in its state).
    pub(crate) task: OnceLock<AbortHandle>,
}

impl<Out, E> Round<Out, E> {
    /// A round with no caller yet.
    pub(crate) fn new() -> Arc<Round<Out, E>> {
        Arc::new(Round { outcome: Rendezvous::new(), waiters: AtomicU64::new(0), task: OnceLock::new() })
    }

    /// Counts a caller in. Call under the strategy's lock, the one [`Waiter`] takes.
    pub(crate) fn join(&self) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
    }
}

/// Aborts a task when dropped (outside the strategy's lock).
#[derive(Debug)]
pub(crate) struct Abort(pub(crate) AbortHandle);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A caller's place in its round, from joining it until it reads the outcome: dropped before
/// that (the caller gave up), it counts the caller out, and the last caller out runs `abandon`
/// under the lock of the strategy's state `S`. What `abandon` takes out of the state (the work
/// only this round wanted: an abort handle, an input) is dropped after the lock is released.
pub(crate) struct Waiter<'a, S, Out, E, A> {
    state: &'a Mutex<S>,
    round: &'a Arc<Round<Out, E>>,
    abandon: fn(&mut S, &Arc<Round<Out, E>>) -> A,
    answered: bool,
}

impl<'a, S, Out, E, A> Waiter<'a, S, Out, E, A> {
    /// The place of a caller already counted in `round` (by [`Round::join`]).
    pub(crate) fn new(
        state: &'a Mutex<S>,
        round: &'a Arc<Round<Out, E>>,
        abandon: fn(&mut S, &Arc<Round<Out, E>>) -> A,
    ) -> Self {
        Waiter { state, round, abandon, answered: false }
    }

    /// Waits for the round's outcome; the caller is then answered and no longer counted.
    pub(crate) async fn wait(mut self) -> &'a Result<Out, Error<E>> {
        let round = self.round;
        let outcome = round.outcome.wait().await;
        self.answered = true;
        outcome
    }
}

impl<S, Out, E, A> Drop for Waiter<'_, S, Out, E, A> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut state = lock(self.state);
        let last = self.round.waiters.fetch_sub(1, Ordering::Relaxed) == 1;
        let abandoned = last.then(|| (self.abandon)(&mut state, self.round));
        drop(state);
        drop_quietly(abandoned);
    }
}
