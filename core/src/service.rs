//! The `tower` feature: [`Batcher`] and [`Grouped`] as `tower::Service`s, so that tower's
//! timeout, retry, load-shed, rate-limit and concurrency layers compose around them.
//!
//! Readiness reflects capacity. `poll_ready` is `Ready` while a request would board at once,
//! `Pending` while the batcher is at capacity (a full bus that cannot leave: every in-flight
//! place or every batch slot taken), woken when the next bus leaves, and `Ready(Err(Closed))`
//! after shutdown. So `LoadShed` sheds exactly when busline would make a caller wait, and
//! `ConcurrencyLimit`/`Buffer` hold requests outside the batcher instead of inside it. Readiness
//! is advice, as with any shared service: a request that finds the batcher full after all
//! follows the [`Overflow`](crate::Overflow) policy.
//!
//! `call` returns a boxed future owning a reference to the batcher: one allocation per request,
//! as tower's own `Buffer` makes; use [`Batcher::load`] directly where every nanosecond counts.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::signals::Gate;
use crate::{Batcher, Error, Grouped};

/// A boxed, `Send` future, as the services return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<K, V, E> tower_service::Service<K> for Batcher<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Response = Option<V>;
    type Error = Error<E>;
    type Future = BoxFuture<Result<Option<V>, Error<E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error<E>>> {
        loop {
            if let Some(waiting) = self.readiness.as_mut() {
                std::task::ready!(waiting.as_mut().poll(cx));
                self.readiness = None;
            }
            let shared = self.shared();
            match shared.signals.gate() {
                Gate::Open => return Poll::Ready(Ok(())),
                Gate::Shutdown => return Poll::Ready(Err(Error::Closed)),
                Gate::Stalled => {
                    let shared = Arc::clone(shared);
                    self.readiness = Some(Box::pin(async move { shared.room_after(shared.ring.boarding_word()).await }));
                }
            }
        }
    }

    /// The future holds a handle (not only the shared state) until it is answered: tower's
    /// `oneshot` drops the service right after `call`, before the future's first poll, and a
    /// request made through the last handle would otherwise find the batcher shut down by that
    /// handle's drop and be refused `Closed`.
    fn call(&mut self, key: K) -> Self::Future {
        let batcher = self.clone();
        Box::pin(async move { batcher.load(key).await })
    }
}

impl<G, K, V, E> tower_service::Service<(G, K)> for Grouped<G, K, V, E>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Response = Option<V>;
    type Error = Error<E>;
    type Future = BoxFuture<Result<Option<V>, Error<E>>>;

    /// Always ready: each group has its own capacity, and the group is known only at `call`.
    /// A new group past `max_groups`, or a group at capacity, answers as
    /// [`Grouped::load`] does.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error<E>>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (group, key): (G, K)) -> Self::Future {
        let grouped = self.clone();
        Box::pin(async move { grouped.load(group, key).await })
    }
}
