//! `window_precision`: the added wait of a lone caller, from `load()` to the batch function
//! being called, per configured window (50 µs to 10 ms). Each iteration is one lone load; the
//! time criterion records is that added wait (via `iter_custom`), not the round trip. Windows
//! that tokio's 1 ms timer rounds up show it. `tokio-sleep` is `tokio::time::sleep(window)`.
//! Medians and p99s against the target (10 % + 20 µs) are in the `compare` report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busline_benches::adapters::{Contender, Counters, Loader, Setup};
use busline_benches::{PRECISION_WINDOWS_US, scenarios, with_loader};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

fn bench_one<L: Loader>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    id: BenchmarkId,
    loader: L,
    counters: Arc<Counters>,
) {
    let mut key = 0u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += scenarios::lone_load(&loader, &counters, key).await.to_batch;
                    key += 1;
                    // Let the batch finish before the next lone caller.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                total
            })
        });
    });
}

fn window_precision(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let mut group = c.benchmark_group("window_precision");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for window_us in PRECISION_WINDOWS_US {
        let window = Duration::from_micros(window_us);
        let parameter = format!("{window_us}us");
        for contender in Contender::ALL.iter().copied().filter(|c| c.supports(window)) {
            let id = BenchmarkId::new(contender.name(), &parameter);
            let counters = Arc::new(Counters::default());
            let _context = rt.enter();
            with_loader!(contender, Setup::with_window(window), Arc::clone(&counters), |loader| {
                bench_one(&mut group, &rt, id, loader, counters)
            });
        }
        group.bench_function(BenchmarkId::new("tokio-sleep", &parameter), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        tokio::time::sleep(window).await;
                        total += start.elapsed();
                    }
                    total
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, window_precision);
criterion_main!(benches);
