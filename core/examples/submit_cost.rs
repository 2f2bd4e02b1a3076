//! The submit path alone (claim a seat, write the key, register the waker: the first poll of
//! `load(k)`), measured as the compare runner's submit section does (`benches/src/scenarios.rs`,
//! `board_chunk`), without building the benches' peer crates: a current-thread runtime, a
//! batcher whose one-hour window never closes in time (a bus leaves when its 1,024 seats are
//! full), polls timed in chunks of 512, the futures dropped untimed, the driver let run between
//! chunks. The futures are held two ways, chunk by chunk in turn: built into a vector and each
//! polled where it lies (as a task polls the future it owns), and polled, then moved into the
//! vector (the move pays a store-forwarding stall). The median and p10-p90 of the chunks' ns
//! per poll, as the runner reports.
//! `cargo run --release -p busline --example submit_cost -- [max_batch_size] [polls]`

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

const CHUNK: u64 = 512;

fn main() {
    let mut args = std::env::args().skip(1);
    let max_batch_size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(busline::DEFAULT_MAX_BATCH_SIZE);
    let polls: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let b = {
        let _context = rt.enter();
        busline::Batcher::builder(|keys: Vec<u64>| async move {
            Ok::<_, ()>(keys.into_iter().map(|k| (k, k)).collect::<HashMap<_, _>>())
        })
        .policy(busline::Policy::window(Duration::from_secs(3600)))
        .max_batch_size(max_batch_size)
        .build()
        .unwrap()
    };
    let seats = max_batch_size.min(1 << 20) as u64;
    let mut cx = Context::from_waker(Waker::noop());
    // Chunk by chunk: [in place, poll then move].
    let mut chunks = [vec![], vec![]];
    let mut next_key = 0u64;
    rt.block_on(async {
        let mut left = polls;
        let mut turn = 0;
        while left > 0 {
            // Never claim past the end of the bus before the driver has sealed it.
            let room = seats - next_key % seats;
            let n = left.min(CHUNK).min(room);
            let keys = next_key..next_key + n;
            let mut loads = Vec::with_capacity(n as usize);
            let start = Instant::now();
            if turn == 0 {
                loads.extend(keys.map(|key| b.load(key)));
                for load in &mut loads {
                    let polled = Pin::new(load).poll(&mut cx);
                    debug_assert!(polled.is_pending());
                }
            } else {
                for key in keys {
                    let mut load = b.load(key);
                    let polled = Pin::new(&mut load).poll(&mut cx);
                    debug_assert!(polled.is_pending());
                    loads.push(load);
                }
            }
            chunks[turn].push(start.elapsed().as_secs_f64() * 1e9 / n as f64);
            black_box(&loads);
            drop(loads);
            next_key += n;
            left -= n;
            turn = 1 - turn;
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        }
    });
    for (chunks, held) in chunks.iter_mut().zip(["in place", "polled then moved"]) {
        chunks.sort_by(f64::total_cmp);
        let at = |q: f64| chunks[((chunks.len() - 1) as f64 * q) as usize];
        println!(
            "submit (claim + write + register), max_batch_size {max_batch_size}, {held}: median {:.1} ns per load (p10-p90 {:.1}-{:.1}) over {} chunks",
            at(0.5),
            at(0.1),
            at(0.9),
            chunks.len()
        );
    }
}
