//! A set-once outcome that any number of tasks wait for: the fan-out every strategy shares.
//!
//! One value is published once; every waiter, however many and whenever it comes, reads that
//! value. Waiting is tokio's `Notify`: a waiter registers (`enable`) before it checks, and the
//! publisher stores before it notifies, so no wake-up is lost. `notify_waiters` wakes its list
//! in a loop, in batches with its own lock released in between: a million waiters are woken in
//! flat stack, and the publisher never runs a waiter's code (wakers only reschedule tasks).

use std::sync::OnceLock;

use tokio::sync::Notify;

/// One outcome, published once, read by every waiter.
#[derive(Debug)]
pub(crate) struct Rendezvous<T> {
    value: OnceLock<T>,
    published: Notify,
}

impl<T> Rendezvous<T> {
    pub(crate) fn new() -> Rendezvous<T> {
        Rendezvous { value: OnceLock::new(), published: Notify::new() }
    }

    /// Publishes `value` and wakes every waiter. Returns `false` (dropping `value`, in the
    /// caller's frame) if an outcome was already published: the first one stands.
    pub(crate) fn publish(&self, value: T) -> bool {
        let first = self.value.set(value).is_ok();
        if first {
            self.published.notify_waiters();
        }
        first
    }

    /// The outcome, if published.
    pub(crate) fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// Waits for the outcome.
    ///
    /// Cancel safe: dropping the future only deregisters this waiter.
    pub(crate) async fn wait(&self) -> &T {
        loop {
            let notified = self.published.notified();
            tokio::pin!(notified);
            // Register before looking: a publication after the look wakes us.
            notified.as_mut().enable();
            if let Some(value) = self.value.get() {
                return value;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_reads_the_first_outcome() {
        let r = Arc::new(Rendezvous::new());
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let r = Arc::clone(&r);
                tokio::spawn(async move { *r.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(r.publish(7));
        assert!(!r.publish(8), "the first outcome stands");
        for w in waiters {
            assert_eq!(w.await.unwrap(), 7);
        }
        assert_eq!(*r.wait().await, 7, "a late waiter reads it too");
    }
}
