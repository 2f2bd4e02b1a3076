//! How close to the configured window does a lone caller's bus leave?
//! `cargo run --release -p busline --example window_precision`
//! Prints, per window, the median and p99 of (batch function called - load started) for a
//! caller in a spawned task (as in a service), and the same for `tokio::time::sleep` for
//! reference. `-- --block-on` loads from `block_on` instead (outside the runtime's workers). (The benches crate's compare runner reports
//! the same measurement in reports/bench/.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn quantiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() {
    let block_on = std::env::args().any(|a| a == "--block-on");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        println!("window_us  busline_p50_us  busline_p99_us  tokio_sleep_p50_us  tokio_sleep_p99_us");
        for window_us in [50u64, 100, 500, 1_000, 5_000, 10_000] {
            let window = Duration::from_micros(window_us);
            let called: Arc<Mutex<Option<Instant>>> = Arc::default();
            let c = called.clone();
            let b = busline::Batcher::builder(move |keys: Vec<u64>| {
                *c.lock().unwrap() = Some(Instant::now());
                async move { Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>()) }
            })
            .window(window)
            .build()
            .unwrap();
            let reps = (200_000 / window_us).clamp(20, 400);
            let mut waits = Vec::new();
            let mut sleeps = Vec::new();
            for i in 0..reps {
                let start = if block_on {
                    let start = Instant::now();
                    b.load(i).await.unwrap();
                    start
                } else {
                    let b = b.clone();
                    tokio::spawn(async move {
                        let start = Instant::now();
                        b.load(i).await.unwrap();
                        start
                    })
                    .await
                    .unwrap()
                };
                waits.push(called.lock().unwrap().take().unwrap() - start);
                let start = Instant::now();
                tokio::time::sleep(window).await;
                sleeps.push(start.elapsed());
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let (p50, p99) = quantiles(waits);
            let (s50, s99) = quantiles(sleeps);
            println!(
                "{window_us:>9}  {:>14}  {:>14}  {:>18}  {:>18}",
                p50.as_micros(),
                p99.as_micros(),
                s50.as_micros(),
                s99.as_micros()
            );
        }
    });
}
