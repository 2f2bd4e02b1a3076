//! `submit_cost`: what one load costs busline's caller, uncontended, on a current-thread runtime.
//!
//! - `busline/board`: the first poll of `load(k)` (claim a seat, write the key, register the
//!   waker) on a batcher whose one-hour window never closes in time; a chunk's futures are built
//!   into a vector and each polled where it lies (`Holding::InPlace`; the compare runner also
//!   times them polled, then moved), then dropped untimed, and the driver seals each full bus
//!   between chunks.
//! - `busline/board_and_cancel`: that poll, then dropping the future (the cancel path).
//! - `floor/board`: the machine's floor for a submit (`busline_benches::floor`: one claim and
//!   the seat's stores, nothing else), held and timed the same way.
//! - `joined_1024/<implementation>`: 1,024 loads awaited together with `join_all` on one thread
//!   at window 0: the whole coalesced path, per load.
//!
//! Bytes per pending request (busline's seat) are in the `compare` report.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use busline_benches::adapters::{Contender, Counters, Loader, Setup};
use busline_benches::floor::{self, FloorRing};
use busline_benches::scenarios::Holding;
use busline_benches::{scenarios, with_loader};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Seats in one bus (busline's default `max_batch_size`).
const SEATS: u64 = busline::DEFAULT_MAX_BATCH_SIZE as u64;
/// Polls timed between two runs of the driver.
const CHUNK: u64 = 512;
const JOINED: usize = 1024;

fn boarding(group: &mut BenchmarkGroup<'_, WallTime>, rt: &tokio::runtime::Runtime, cancel: bool) {
    let batcher = {
        let _context = rt.enter();
        scenarios::parked_batcher(Arc::new(Counters::default()))
    };
    // Keys (and seats) used so far; buses hold exactly SEATS since the window never closes.
    let mut next_key = 0u64;
    let name = if cancel { "board_and_cancel" } else { "board" };
    group.bench_function(BenchmarkId::new("busline", name), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Never claim past the end of the bus before the driver has sealed it.
                    let room = SEATS - next_key % SEATS;
                    let n = left.min(CHUNK).min(room);
                    total += if cancel {
                        scenarios::board_and_cancel(&batcher, next_key, n as usize)
                    } else {
                        scenarios::board_only(&batcher, next_key, n as usize, Holding::InPlace)
                    };
                    next_key += n;
                    left -= n;
                    scenarios::let_driver_run().await;
                }
                black_box(total)
            })
        });
    });
}

fn joined<L: Loader>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &tokio::runtime::Runtime, id: BenchmarkId, loader: L) {
    let mut next_key = 0u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            scenarios::repeat_timed(rt, iters, JOINED as u64, &mut next_key, |first| {
                scenarios::joined_loads(&loader, first, JOINED)
            })
        });
    });
}

fn submit_cost(c: &mut Criterion) {
    let rt = scenarios::current_thread_runtime();
    let mut group = c.benchmark_group("submit_cost");
    group.measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(1));
    boarding(&mut group, &rt, false);
    boarding(&mut group, &rt, true);
    // The machine's floor for a submit (`floor.rs`), timed the same way.
    let ring = FloorRing::new(SEATS as usize);
    let mut next_key = 0u64;
    group.bench_function(BenchmarkId::new("floor", "board"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                total += floor::board_floor(&ring, next_key, n as usize, Holding::InPlace);
                next_key += n;
                left -= n;
            }
            total
        });
    });
    group.throughput(Throughput::Elements(JOINED as u64));
    for &contender in Contender::ALL {
        let id = BenchmarkId::new(contender.name(), "joined_1024");
        let _context = rt.enter();
        with_loader!(contender, Setup::with_window(Duration::ZERO), Arc::new(Counters::default()), |loader| {
            joined(&mut group, &rt, id, loader)
        });
    }
    group.finish();
}

criterion_group!(benches, submit_cost);
criterion_main!(benches);
