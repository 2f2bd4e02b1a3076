//! Quick look at throughput: 1,000 tasks doing sequential loads of unique keys on 2 workers.
//! `cargo run --release -p busline --example throughput -- [window_us] [loads] [max_in_flight] [tasks]`
//! (the benches crate compares against peers; this is the smoke version).

use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let window_us: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let loads: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let max_in_flight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(busline::DEFAULT_MAX_IN_FLIGHT);
    let tasks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let b = busline::Batcher::builder(|keys: Vec<u64>| async move {
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .window(Duration::from_micros(window_us))
        .max_in_flight(max_in_flight)
        .build()
        .unwrap();
        let start = Instant::now();
        let per_task = loads / tasks;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let k = t * per_task + i;
                        assert_eq!(b.load(k).await.unwrap(), Some(k));
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let s = b.stats();
        println!(
            "window {window_us} us: {:.2} M loads/s, {} batches, {:.1} keys/batch, queue wait mean {:.0} us p50 {} us p99 {} us",
            (per_task * tasks) as f64 / secs / 1e6,
            s.batches,
            s.batch_size.mean,
            s.queue_wait_us.mean,
            s.queue_wait_us.p50,
            s.queue_wait_us.p99
        );
    });
}
