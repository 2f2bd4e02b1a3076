//! Many tasks, random keys, random cancellation, injected errors and panics: every surviving
//! caller gets exactly its own correct answer, and nothing stays allocated.

use crate::support::assert_slots_released;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busline::{Batcher, Error, Policy};
use rand::{Rng, SeedableRng};

#[derive(Debug)]
struct Injected;

/// Value of a key: anything a wrong hand-off would not reproduce.
fn value_of(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD
}

/// Keys divisible by 97 are "absent"; a batch holding a key ending in ...13 fails, one holding
/// a key ending in ...29 panics (rare, since keys are drawn from a large range).
fn batch(keys: Vec<u64>) -> Result<HashMap<u64, u64>, Injected> {
    if keys.iter().any(|k| k % 5_000 == 13) {
        return Err(Injected);
    }
    if keys.iter().any(|k| k % 7_000 == 29) {
        panic!("injected panic");
    }
    Ok(keys.into_iter().filter(|k| k % 97 != 0).map(|k| (k, value_of(k))).collect())
}

async fn run(batcher: Batcher<u64, u64, Injected>, tasks: u64, loads_per_task: u64) {
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let b = batcher.clone();
        let (answered, failed, cancelled) = (answered.clone(), failed.clone(), cancelled.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t);
            for _ in 0..loads_per_task {
                let key = rng.random_range(0..2_000_000u64);
                if rng.random_ratio(1, 50) {
                    // Give up after a random, short time: before or after departure.
                    let wait = Duration::from_micros(rng.random_range(0..200));
                    if let Ok(answer) = tokio::time::timeout(wait, b.load(key)).await {
                        check(key, answer, &failed);
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let answer = b.load(key).await;
                    check(key, answer, &failed);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("a caller task panicked: wrong answer");
    }
    let answered = answered.load(Ordering::Relaxed);
    let cancelled = cancelled.load(Ordering::Relaxed);
    assert_eq!(answered + cancelled, tasks * loads_per_task);
    assert!(failed.load(Ordering::Relaxed) > 0, "the injected failures never fired");
    // Every slot comes back once the last batch task has released it.
    assert_slots_released(&batcher).await;
    let stats = batcher.stats();
    assert!(stats.requests >= answered, "{stats:?}");
    assert!(stats.panicked_batches > 0 && stats.failed_batches > 0, "{stats:?}");
    batcher.shutdown().await;
    assert!(matches!(batcher.load(1).await, Err(Error::Closed)));
}

fn check(key: u64, answer: Result<Option<u64>, Error<Injected>>, failed: &AtomicU64) {
    match answer {
        Ok(Some(v)) => assert_eq!(v, value_of(key), "key {key} got another key's value"),
        Ok(None) => assert_eq!(key % 97, 0, "key {key} lost its value"),
        Err(Error::Batch(_)) | Err(Error::Panicked) => {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => panic!("unexpected error for {key}: {e:?}"),
    }
}

fn builder() -> busline::Builder<u64, u64, Injected> {
    Batcher::builder(|keys: Vec<u64>| async move {
        if keys.len() % 3 == 0 {
            tokio::task::yield_now().await;
        }
        batch(keys)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_loads_natural() {
    run(builder().max_batch_size(256).build().unwrap(), 500, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_small_buses_few_slots() {
    let b = builder()
        .policy(Policy::window(Duration::from_micros(100)))
        .max_batch_size(16)
        .max_in_flight(2)
        .build()
        .unwrap();
    run(b, 200, 500).await;
}
