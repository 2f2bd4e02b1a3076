//! The first load on a fresh batcher, for several `max_batch_size`s: seats are allocated as
//! requests arrive, so a large limit must not make the first load slower.
//! `cargo run --release -p busline --example cold_start -- [window_us] [rounds]`

use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let window_us: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        println!("first load on a fresh batcher, window {window_us} us, {rounds} rounds (build + first load timed apart)");
        println!("{:>22} {:>12} {:>12} {:>12} {:>12}", "max_batch_size", "build p50", "load p50", "load p90", "load max");
        for max_batch_size in [1024, 1 << 20, 1 << 24, usize::MAX] {
            let mut builds = vec![];
            let mut loads = vec![];
            for round in 0..rounds as u64 {
                let start = Instant::now();
                let b = busline::Batcher::builder(|keys: Vec<u64>| async move {
                    Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
                })
                .window(Duration::from_micros(window_us))
                .max_batch_size(max_batch_size)
                .build()
                .unwrap();
                builds.push(start.elapsed());
                let start = Instant::now();
                assert_eq!(b.load(round).await.unwrap(), Some(round));
                loads.push(start.elapsed());
                b.shutdown().await;
            }
            builds.sort();
            loads.sort();
            let us = |d: Duration| format!("{:.1} us", d.as_secs_f64() * 1e6);
            let name = if max_batch_size == usize::MAX { "usize::MAX".to_string() } else { max_batch_size.to_string() };
            println!(
                "{name:>22} {:>12} {:>12} {:>12} {:>12}",
                us(builds[rounds / 2]),
                us(loads[rounds / 2]),
                us(loads[rounds * 9 / 10]),
                us(loads[rounds - 1])
            );
        }
    });
}
