//! `throughput`: 1,000 tokio tasks doing sequential loads of unique keys (100k loads, 1,000 in
//! flight) on a 2-worker runtime, per implementation and window. Keys per batch are not shown
//! by criterion: the `compare` runner reports them (reports/bench/README.md).

use std::sync::Arc;
use std::time::Duration;

use busline_benches::adapters::{Contender, Counters, Loader, Setup};
use busline_benches::{THROUGHPUT_WINDOWS_US, scenarios, with_loader};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use criterion::measurement::WallTime;

const TASKS: usize = 1_000;
const LOADS_PER_TASK: usize = 100;

fn bench_one<L: Loader>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &tokio::runtime::Runtime, id: BenchmarkId, loader: L) {
    let mut next_key = 0u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            scenarios::repeat_timed(rt, iters, (TASKS * LOADS_PER_TASK) as u64, &mut next_key, |first| {
                scenarios::throughput(&loader, TASKS, LOADS_PER_TASK, first)
            })
        });
    });
}

fn throughput(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let mut group = c.benchmark_group("throughput");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements((TASKS * LOADS_PER_TASK) as u64));
    for window_us in THROUGHPUT_WINDOWS_US {
        let window = Duration::from_micros(window_us);
        for contender in Contender::ALL.iter().copied().filter(|c| c.supports(window)) {
            let id = BenchmarkId::new(contender.name(), format!("window_{window_us}us"));
            // The crates spawn their workers when built: build inside the runtime's context.
            let _context = rt.enter();
            with_loader!(contender, Setup::with_window(window), Arc::new(Counters::default()), |loader| {
                bench_one(&mut group, &rt, id, loader)
            });
        }
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
