//! Set-ups the engine's test files share.

use std::hash::Hash;
use std::time::{Duration, Instant};

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

/// Every batch slot comes back (`live_slots() == 0`) within a second: the last batch task
/// releases its slot shortly after its callers have their answers.
pub(crate) async fn assert_slots_released<K, V, E>(b: &Batcher<K, V, E>)
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let start = Instant::now();
    while b.live_slots() != 0 && start.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(b.live_slots(), 0, "a batch slot leaked");
}
