//! How long the first load on a fresh batcher takes, whatever `max_batch_size` says: what a
//! service pays that builds a batcher per burst (or starts cold).
//!
//! `cargo run --release -p busline --example first_load -- [rounds]`
//!
//! For each window and `max_batch_size`, `rounds` times (default 200): build a batcher, then
//! time one `load` from the call to its answer (the batch function answers at once). Prints
//! the median and the 99th percentile, and how far the median is above the window (the target
//! is at most 50 µs). Also the cost of `build()` itself, and of a handle's clone and drop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use busline::Batcher;

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("first load on a fresh batcher, {rounds} rounds (2 workers):");
    println!("  {:>8} {:>14} {:>10} {:>10} {:>12} {:>10}", "window", "max_batch_size", "p50", "p99", "p50-window", "build p50");
    for window_us in [0u64, 100, 1000] {
        for max_batch_size in [1024usize, 1 << 20, 1 << 30] {
            let window = Duration::from_micros(window_us);
            let (mut firsts, mut builds) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
            rt.block_on(async {
                for round in 0..rounds as u64 {
                    let built = Instant::now();
                    let b: Batcher<u64, u64, ()> = Batcher::builder(|keys: Vec<u64>| async move {
                        Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
                    })
                    .window(window)
                    .max_batch_size(max_batch_size)
                    .build()
                    .unwrap();
                    builds.push(built.elapsed());
                    let start = Instant::now();
                    assert_eq!(b.load(round).await.unwrap(), Some(round));
                    firsts.push(start.elapsed());
                }
            });
            firsts.sort();
            builds.sort();
            let p50 = percentile(&firsts, 0.5);
            println!(
                "  {:>6}us {:>14} {:>8.1}us {:>8.1}us {:>10.1}us {:>8.1}us",
                window_us,
                max_batch_size,
                p50.as_secs_f64() * 1e6,
                percentile(&firsts, 0.99).as_secs_f64() * 1e6,
                (p50.as_secs_f64() - window.as_secs_f64()) * 1e6,
                percentile(&builds, 0.5).as_secs_f64() * 1e6,
            );
        }
    }
    // A handle cloned and dropped per request, as a service does.
    rt.block_on(async {
        let b: Batcher<u64, u64, ()> =
            Batcher::builder(|keys: Vec<u64>| async move { Ok(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) })
                .build()
                .unwrap();
        let n = 10_000_000u32;
        let start = Instant::now();
        for _ in 0..n {
            drop(std::hint::black_box(b.clone()));
        }
        println!("handle clone + drop (one thread, uncontended): {:.1} ns", start.elapsed().as_secs_f64() * 1e9 / f64::from(n));
    });
}
