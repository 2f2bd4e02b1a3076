//! Calling user code: every function, future, `Clone` and `Drop` a strategy runs on the user's
//! behalf goes through here, so a panic becomes [`Error::Panicked`] for the callers it concerns
//! and never unwinds through the strategy's own state.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::Error;
pub(crate) use crate::shared::{Quiet, drop_quietly};
use crate::shared::forget_payload;

/// A user's future, type-erased: one box per call.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A user's function of one input, type-erased, so that a strategy's type names only its
/// input, output and error types (`Serial<In, Out, E>`), as `Batcher<K, V, E>` does.
pub(crate) type BoxFn<In, Out, E> = Box<dyn Fn(In) -> BoxFuture<Result<Out, E>> + Send + Sync>;

/// Erases `f`'s type.
pub(crate) fn box_fn<In, Out, E, F, Fut>(f: F) -> BoxFn<In, Out, E>
where
    F: Fn(In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, E>> + Send + 'static,
{
    Box::new(move |input| Box::pin(f(input)) as BoxFuture<Result<Out, E>>)
}

/// A user's function of a group and one input, type-erased and shared by every group of a
/// per-group form.
pub(crate) type GroupFn<G, In, Out, E> = Arc<dyn Fn(G, In) -> BoxFuture<Result<Out, E>> + Send + Sync>;

/// Erases `f`'s type.
pub(crate) fn group_fn<G, In, Out, E, F, Fut>(f: F) -> GroupFn<G, In, Out, E>
where
    F: Fn(G, In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, E>> + Send + 'static,
{
    Arc::new(move |group, input| Box::pin(f(group, input)) as BoxFuture<Result<Out, E>>)
}

/// One group's function of one input: `f` with `group` (cloned for each call, as the batch
/// function of [`Grouped`](crate::Grouped) receives it).
pub(crate) fn bind<G, In, Out, E>(f: &GroupFn<G, In, Out, E>, group: &G) -> BoxFn<In, Out, E>
where
    G: Clone + Send + Sync + 'static,
    In: 'static,
    Out: 'static,
    E: 'static,
{
    let (f, group) = (Arc::clone(f), group.clone());
    Box::new(move |input| f(group.clone(), input))
}

/// A per-group call's entry into its group, with the caller's input: if the group refused the
/// call, the input is dropped here, quietly (its `Drop` is user code, and the caller's task
/// gets the refusal, not a panic).
pub(crate) fn admitted<T, In, E>(entered: Result<T, Error<E>>, input: In) -> Result<(T, In), Error<E>> {
    match entered {
        Ok(entered) => Ok((entered, input)),
        Err(refused) => {
            drop_quietly(input);
            Err(refused)
        }
    }
}

/// Calls a boxed function; a panic in it is [`Error::Panicked`].
pub(crate) async fn call_boxed<In, Out, E>(f: &BoxFn<In, Out, E>, input: In) -> Result<Out, Error<E>> {
    match guarded(|| f(input)) {
        Ok(fut) => settle(fut).await,
        Err(e) => Err(e),
    }
}

/// Runs `f`, turning a panic into [`Error::Panicked`].
pub(crate) fn guarded<R, E>(f: impl FnOnce() -> R) -> Result<R, Error<E>> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        forget_payload(payload);
        Error::Panicked
    })
}

/// Awaits the user's future: its value, its error as [`Error::Batch`] (shared by every caller
/// that reads it, never wrapped further), or [`Error::Panicked`].
pub(crate) async fn settle<V, E>(fut: impl Future<Output = Result<V, E>>) -> Result<V, Error<E>> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Batch(Arc::new(e))),
        Err(payload) => {
            forget_payload(payload);
            Err(Error::Panicked)
        }
    }
}

/// Clones a shared outcome for one caller; a panicking `Clone` of the value reaches that caller
/// alone, as [`Error::Panicked`].
pub(crate) fn clone_outcome<V: Clone, E>(outcome: &Result<V, Error<E>>) -> Result<V, Error<E>> {
    match outcome {
        Ok(value) => guarded(|| value.clone()),
        Err(e) => Err(e.clone()),
    }
}
