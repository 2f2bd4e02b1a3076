//! Serial (FlowSync's "queue"): calls run one at a time, in arrival order.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::pending::Pending;
use super::user::{BoxFn, box_fn, call_boxed};
use crate::Error;

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
        Serial { inner: Arc::new(Inner { turn: Semaphore::new(1), f: box_fn(f), pending: Pending::new() }) }
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
        // Never closed: the semaphore lives as long as this handle.
        let Ok(_turn) = inner.turn.acquire().await else { return Err(Error::Closed) };
        call_boxed(&inner.f, input).await
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
