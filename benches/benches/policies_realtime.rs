//! `policies_realtime` (issues 5 and 10): short quiet → burst → quiet replays of open-loop
//! arrivals against busline with each policy, in front of a mock backend slept on a
//! sub-millisecond clock. Two cases:
//!
//! - `burst_20k_per_s`: 1,000/s → 20,000/s, a pool of 4 (500 µs + 5 µs per key): the backend
//!   keeps up once requests are batched.
//! - `congested_6k_per_s`: issue 10's congested case, 500/s → 6,000/s against a pool of **2**
//!   (1 ms + 5 µs per key, `max_in_flight` 2): car's capacity (~2,000/s) is a third of the
//!   burst, so the connections are the bottleneck and the question is whether a policy answers
//!   that with bigger buses (fewer calls, a shorter queue) or smaller ones.
//!
//! Each iteration is one replay; the time criterion records is the replay's **mean caller
//! latency** (via `iter_custom`), not its wall time, which the arrival schedule fixes. No
//! `Throughput`: elements per second of a latency would mean nothing. Before each policy's
//! measurement one replay prints its backend calls and p50/p99 to stderr (`policy ...`
//! lines), so the ordering on queries and p99 can be read from one run of the bench; the
//! `compare` report has the uncongested case's figures. Only the congested case:
//! `cargo bench -p busline-benches --no-default-features --bench policies_realtime -- --noplot congested`.

use std::sync::Arc;
use std::time::Duration;

use busline::policy::Policy;
use busline_benches::scenarios::{self, Burst, MockBackend, PolicyRun};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

/// One case: the arrivals, the backend, the in-flight limit, the budget B of adaptive and gated.
struct Case {
    name: &'static str,
    burst: Burst,
    pool: usize,
    base: Duration,
    per_key: Duration,
    budget: Duration,
}

fn quantile(run: &PolicyRun, q: f64) -> Duration {
    let i = ((run.latencies.len() as f64 * q) as usize).min(run.latencies.len() - 1);
    run.latencies[i]
}

fn policies_realtime(c: &mut Criterion) {
    let rt = scenarios::runtime(2);
    let cases = [
        Case {
            name: "burst_20k_per_s",
            burst: Burst {
                quiet_rate: 1_000.0,
                burst_rate: 20_000.0,
                quiet: Duration::from_millis(100),
                burst: Duration::from_millis(100),
            },
            pool: 4,
            base: Duration::from_micros(500),
            per_key: Duration::from_micros(5),
            budget: Duration::from_millis(2),
        },
        Case {
            name: "congested_6k_per_s",
            burst: Burst {
                quiet_rate: 500.0,
                burst_rate: 6_000.0,
                quiet: Duration::from_millis(100),
                burst: Duration::from_millis(200),
            },
            pool: 2,
            base: Duration::from_millis(1),
            per_key: Duration::from_micros(5),
            budget: Duration::from_millis(1),
        },
    ];
    let mut group = c.benchmark_group("policies_realtime");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for case in &cases {
        let arrivals = case.burst.schedule(0xB05);
        let b = case.budget;
        let policies = [
            ("car", Policy::Car),
            ("window_0.5ms", Policy::window(Duration::from_micros(500))),
            ("window_1ms", Policy::window(Duration::from_millis(1))),
            ("window_2ms", Policy::window(Duration::from_millis(2))),
            ("natural", Policy::natural()),
            ("gated", Policy::gated(b, 2)),
            ("adaptive", Policy::adaptive(b)),
        ];
        let replay = |policy: Policy| {
            let backend = Arc::new(MockBackend::new(case.pool, case.base, case.per_key));
            rt.block_on(scenarios::replay(policy, case.pool, &arrivals, backend))
        };
        for (name, policy) in policies {
            // The replay that prints the figures runs inside the benchmark's routine (once), so
            // a filter (`cargo bench ... -- congested`) that skips the case skips it too.
            let mut printed = false;
            group.bench_function(BenchmarkId::new(name, case.name), |bench| {
                if !std::mem::replace(&mut printed, true) {
                    let run = replay(policy);
                    eprintln!(
                        "policy {} {name}: {} requests, {} backend calls, p50 {:?}, p99 {:?}",
                        case.name,
                        run.requests,
                        run.backend_calls,
                        quantile(&run, 0.5),
                        quantile(&run, 0.99)
                    );
                }
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let run = replay(policy);
                        total += run.latencies.iter().sum::<Duration>() / run.latencies.len() as u32;
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, policies_realtime);
criterion_main!(benches);
