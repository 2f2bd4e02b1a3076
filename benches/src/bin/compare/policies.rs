//! Each policy in real time: open-loop Poisson arrivals, quiet → burst → quiet, replayed against
//! busline in front of a mock backend.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use busline::policy::Policy;
use busline_benches::placement;
use busline_benches::report::{self, Run, ms, quantile};
use busline_benches::scenarios::{self, Burst, MockBackend};

use crate::{Args, in_round_order};

pub(crate) fn section(args: &Args, run: &Run) -> std::io::Result<String> {
    let burst = if args.quick {
        Burst {
            quiet_rate: 1_000.0,
            burst_rate: 10_000.0,
            quiet: Duration::from_millis(50),
            burst: Duration::from_millis(50),
        }
    } else {
        Burst {
            quiet_rate: 1_000.0,
            burst_rate: 20_000.0,
            quiet: Duration::from_millis(500),
            burst: Duration::from_millis(500),
        }
    };
    let rounds = if args.quick { 1 } else { 3 };
    let (pool, base, per_key) = (4, Duration::from_micros(500), Duration::from_micros(5));
    let max_in_flight = pool;
    let policies: [(&str, Policy); 6] = [
        ("car", Policy::Car),
        ("window 0.5 ms", Policy::window(Duration::from_micros(500))),
        ("window 2 ms", Policy::window(Duration::from_millis(2))),
        ("natural", Policy::natural()),
        ("gated 1 ms, threshold 4", Policy::gated(Duration::from_millis(1), 4)),
        ("adaptive, budget 2 ms", Policy::adaptive(Duration::from_millis(2))),
    ];
    let rt = placement::runtime(2, args.placements[0]);
    let mut runs: Vec<(usize, &str, scenarios::PolicyRun)> = Vec::new();
    for round in 0..rounds {
        let arrivals = burst.schedule(0xB05 + round as u64);
        for (name, policy) in in_round_order(&policies, round) {
            let backend = Arc::new(MockBackend::new(pool, base, per_key));
            let run = rt.block_on(scenarios::replay(policy, max_in_flight, &arrivals, backend));
            eprintln!(
                "policies round {round} {name:>24}: {} requests, {} backend calls, p50 {:.2} ms, p99 {:.2} ms",
                run.requests,
                run.backend_calls,
                ms(quantile(&run.latencies, 0.5)),
                ms(quantile(&run.latencies, 0.99))
            );
            runs.push((round, name, run));
        }
    }
    drop(rt);

    let mut csv = String::from("round,policy,requests,backend_calls,keys_per_call,p50_ms,p99_ms,max_ms,wall_s\n");
    for (round, name, r) in &runs {
        let _ = writeln!(
            csv,
            "{round},{name},{},{},{:.2},{:.3},{:.3},{:.3},{:.3}",
            r.requests,
            r.backend_calls,
            r.requests as f64 / r.backend_calls.max(1) as f64,
            ms(quantile(&r.latencies, 0.5)),
            ms(quantile(&r.latencies, 0.99)),
            ms(*r.latencies.last().expect("requests")),
            r.wall.as_secs_f64()
        );
    }
    report::write_csv(&args.out, "policies.csv", run, &csv)?;

    let mut s = String::new();
    let _ = writeln!(s, "\n## policies in real time\n");
    let _ = writeln!(
        s,
        "Open-loop Poisson arrivals, quiet {:.0}/s for {} ms → burst {:.0}/s for {} ms → quiet {} ms (same seeded \
         schedule for every policy within a round; {rounds} round(s), policies interleaved); each arrival spawns a task \
         loading a fresh key. Mock backend: a pool of {pool} connections (tokio Semaphore); a call of n keys holds one \
         for {} µs + n × {} µs, slept on the benches' condvar clock (sub-millisecond; late by its wake-up latency, see \
         window precision), not tokio's 1 ms timer. busline with max_in_flight = {max_in_flight} (the pool size) and \
         max_batch_size 1,024. Latency from the scheduled arrival to the answer, quantiles over all rounds' requests; \
         backend calls: mean per round. Raw: policies.csv.\n",
        burst.quiet_rate,
        burst.quiet.as_millis(),
        burst.burst_rate,
        burst.burst.as_millis(),
        burst.quiet.as_millis(),
        base.as_micros(),
        per_key.as_micros()
    );
    let _ = writeln!(s, "| policy | requests/round | backend calls/round | keys per call | p50 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, _) in &policies {
        let mine: Vec<&scenarios::PolicyRun> = runs.iter().filter(|(_, n, _)| n == name).map(|(.., r)| r).collect();
        let requests = mine.iter().map(|r| r.requests).sum::<usize>() as f64 / mine.len() as f64;
        let calls = mine.iter().map(|r| r.backend_calls).sum::<u64>() as f64 / mine.len() as f64;
        let mut all: Vec<Duration> = mine.iter().flat_map(|r| r.latencies.iter().copied()).collect();
        all.sort_unstable();
        let _ = writeln!(
            s,
            "| {name} | {requests:.0} | {calls:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
            requests / calls.max(1.0),
            ms(quantile(&all, 0.5)),
            ms(quantile(&all, 0.99)),
            ms(*all.last().expect("requests"))
        );
    }
    s += &run.caption();
    Ok(s)
}
