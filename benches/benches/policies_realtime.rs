//! `policies_realtime` (issue 5): a short quiet → burst → quiet replay of open-loop arrivals
//! against busline with each policy, in front of a mock backend (pool of 4, 500 µs + 5 µs per
//! key, slept on a sub-millisecond clock). Each iteration is one replay; the time criterion
//! records is the replay's **mean caller latency** (via `iter_custom`), not its wall time,
//! which the arrival schedule fixes. No `Throughput`: elements per second of a latency would
//! mean nothing. Backend calls and p50/p99 per policy are in the `compare` report.

use std::sync::Arc;
use std::time::Duration;

use busline::policy::Policy;
use busline_benches::scenarios::{self, Burst, MockBackend};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

fn policies_realtime(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let burst = Burst {
        quiet_rate: 1_000.0,
        burst_rate: 20_000.0,
        quiet: Duration::from_millis(100),
        burst: Duration::from_millis(100),
    };
    let arrivals = burst.schedule(0xB05);
    let policies = [
        ("car", Policy::Car),
        ("window_0.5ms", Policy::window(Duration::from_micros(500))),
        ("window_2ms", Policy::window(Duration::from_millis(2))),
        ("natural", Policy::natural()),
        ("gated_1ms_4", Policy::gated(Duration::from_millis(1), 4)),
        ("adaptive_2ms", Policy::adaptive(Duration::from_millis(2))),
    ];
    let mut group = c.benchmark_group("policies_realtime");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, policy) in policies {
        group.bench_function(BenchmarkId::new(name, "burst_20k_per_s"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let backend = Arc::new(MockBackend::new(4, Duration::from_micros(500), Duration::from_micros(5)));
                    let run = rt.block_on(scenarios::replay(policy, 4, &arrivals, backend));
                    total += run.latencies.iter().sum::<Duration>() / run.latencies.len() as u32;
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, policies_realtime);
criterion_main!(benches);
