//! Counting the calls in progress, so that a test (or a health check) can see a strategy has
//! nothing left behind.

use crate::sync::{AtomicU64, Ordering};

/// Calls begun and not yet answered or dropped.
#[derive(Debug)]
pub(crate) struct Pending(AtomicU64);

impl Pending {
    pub(crate) fn new() -> Pending {
        Pending(AtomicU64::new(0))
    }

    /// Counts one call until the returned guard is dropped.
    pub(crate) fn enter(&self) -> Entered<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Entered(self)
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed) as usize
    }
}

/// One call in progress.
#[derive(Debug)]
pub(crate) struct Entered<'a>(&'a Pending);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}
