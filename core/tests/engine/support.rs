//! Set-ups the engine's test files share.

use std::time::Duration;

use busline::{Batcher, Error};

/// Fills the batcher (buses of 2, one in flight): key 0 departs alone and blocks, keys 1 and 2
/// fill the next bus, which cannot leave.
pub(crate) async fn fill(b: &Batcher<u32, u32, ()>) -> Vec<tokio::task::JoinHandle<Result<Option<u32>, Error<()>>>> {
    let mut held = Vec::new();
    for k in 0..3 {
        let b = b.clone();
        held.push(tokio::spawn(async move { b.load(k).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held
}

/// Starts `b.shutdown()` on a task of its own and returns once the batcher is closed (new loads
/// refused), while the shutdown may still be waiting for batches in flight.
pub(crate) async fn shutdown_started(b: &Batcher<u32, u32, ()>) -> tokio::task::JoinHandle<()> {
    let closing = {
        let b = b.clone();
        tokio::spawn(async move { b.shutdown().await })
    };
    while !b.is_closed() {
        tokio::task::yield_now().await;
    }
    closing
}
