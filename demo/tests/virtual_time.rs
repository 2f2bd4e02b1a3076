//! The simulator checked against the real core, in virtual time.
//!
//! The demo's arrival trace goes through the real `busline::Batcher` (every contender's policy;
//! car is `Policy::Car`) in front of a mock database on tokio's paused clock, and through
//! `busline-sim` with the same database model: per policy, the query counts must agree within
//! 1 % and the mean and p99 latency within 5 %. Virtual time makes this a check of behaviour,
//! not of timing: nothing here depends on how fast or busy the machine is.
//!
//! The mock database: `POOL` connections (a semaphore), each query holding one for
//! `BASE_US + PER_KEY_US × distinct ids`; the simulator's `[db]` with `servers = POOL`,
//! `service = "const"` with `per_key_cv = 0` (the mock's cost is exact), no contention.
//!
//! Slow motion: tokio's timer resolves whole milliseconds, paused or not (a deadline rounds up
//! to the next one). So the trace, the windows, the budget and the service times are all scaled
//! by 1,000 (a microsecond of the demo is a millisecond here): every instant the demo's trace
//! resolves is then a whole virtual millisecond and no deadline is rounded. The policies are
//! scale-free (their parameters are durations, scaled too, and counts), and the simulator runs
//! the same scaled scenario. Figures are reported back in the demo's units.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busline::{Batcher, Policy};
use busline_demo::replay::{Contender, contenders};
use busline_demo::simcheck::policy_overrides;
use busline_demo::trace::TraceSpec;
use busline_sim::engine::{RunOptions, run};
use busline_sim::scenario::Scenario;
use busline_sim::stats::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A microsecond of the demo is this many of virtual time (one millisecond).
const SCALE: u32 = 1_000;
const POOL: usize = 4;
/// The mock query's cost, in the demo's microseconds: of the order SQLite showed in calibration.
const BASE_US: u64 = 40;
const PER_KEY_US: u64 = 2;

#[derive(Debug, Clone, Copy)]
struct Outcome {
    queries: u64,
    mean_us: f64,
    p99_us: f64,
}

fn scaled(policy: Policy) -> Policy {
    match policy {
        Policy::Window { window } => Policy::window(window * SCALE),
        Policy::Gated { window, threshold } => Policy::gated(window * SCALE, threshold),
        Policy::Adaptive(mut cfg) => {
            cfg.latency_budget *= SCALE;
            Policy::Adaptive(cfg)
        }
        other => other,
    }
}

/// The trace, with each instant rounded to the demo's microsecond: (virtual ms, id). The
/// demo's shape at twice its length (`TraceSpec::long`): virtual time is cheap, and with
/// ~3,700 requests a p99 falls between whole virtual milliseconds less coarsely than with the
/// ~1,900 that `make demo` replays three times.
fn arrivals() -> Vec<(u64, i64)> {
    TraceSpec::long(100_000).generate().iter().map(|a| (a.at_ns.div_ceil(1_000), a.id)).collect()
}

async fn through_core(arrivals: &[(u64, i64)], policy: Policy) -> Outcome {
    let pool = Arc::new(Semaphore::new(POOL));
    let queries = Arc::new(AtomicU64::new(0));
    let batcher = {
        let (pool, queries) = (Arc::clone(&pool), Arc::clone(&queries));
        Batcher::builder(move |ids: Vec<i64>| {
            let (pool, queries) = (Arc::clone(&pool), Arc::clone(&queries));
            async move {
                let _connection = pool.acquire_owned().await.expect("the pool is never closed");
                queries.fetch_add(1, Ordering::Relaxed);
                let cost_us = BASE_US + PER_KEY_US * ids.len() as u64;
                tokio::time::sleep(Duration::from_millis(cost_us)).await;
                Ok::<_, Infallible>(ids.into_iter().map(|id| (id, id)).collect::<HashMap<_, _>>())
            }
        })
        .policy(scaled(policy))
        .max_batch_size(1024)
        .max_in_flight(POOL)
        .build()
        .expect("valid settings")
    };
    // Two lone loads first: the driver sees tokio's clock stand still while the OS clock moves,
    // and keeps its deadlines with tokio's timer from then on.
    for id in [1, 2] {
        assert_eq!(batcher.load(id).await.unwrap(), Some(id));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    queries.store(0, Ordering::Relaxed);

    let start = Instant::now();
    let mut calls = Vec::with_capacity(arrivals.len());
    for &(at_ms, id) in arrivals {
        let due = start + Duration::from_millis(at_ms);
        // Only a deadline in the future: tokio's `sleep_until(now)` still waits a tick.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let b = batcher.clone();
        calls.push(tokio::spawn(async move {
            let t0 = Instant::now();
            assert_eq!(b.load(id).await.unwrap(), Some(id));
            t0.elapsed()
        }));
    }
    let mut latency = Histogram::new();
    for c in calls {
        latency.record(u64::try_from(c.await.unwrap().as_nanos()).unwrap());
    }
    batcher.shutdown().await;
    // Virtual ns of the scaled run are ps of the demo: / 1e6 gives the demo's µs.
    Outcome {
        queries: queries.load(Ordering::Relaxed),
        mean_us: latency.mean() / 1e6,
        p99_us: latency.quantile(0.99) as f64 / 1e6,
    }
}

fn through_simulator(dir: &Path, arrivals: &[(u64, i64)], contender: &Contender) -> Outcome {
    let mut csv = String::from("timestamp_ms,key\n");
    for (at, id) in arrivals {
        csv.push_str(&format!("{at},{id}\n"));
    }
    std::fs::write(dir.join("trace.csv"), csv).unwrap();
    let text = format!(
        "name = \"virtual\"\n[traffic]\nkind = \"trace\"\npath = \"trace.csv\"\ntime_unit = \"ms\"\n\
         [db]\nservers = {POOL}\nservice = \"const\"\nbase_ms = {BASE_US}\nper_key_ms = {PER_KEY_US}\ncontention = 0.0\nper_key_cv = 0.0\n\
         [policy]\nmax_batch = 1024\nmax_in_flight = {POOL}\n"
    );
    let mut sets = policy_overrides(contender);
    // The demo's windows and budget, scaled like everything else.
    for s in &mut sets {
        for key in ["policy.window_ms=", "policy.latency_budget_ms="] {
            if let Some(v) = s.strip_prefix(key) {
                *s = format!("{key}{}", v.parse::<f64>().unwrap() * f64::from(SCALE));
            }
        }
    }
    let scenario = Scenario::parse_with(&text, dir, &sets).unwrap();
    let out = run(&scenario, &RunOptions::default()).unwrap();
    let s = &out.summary;
    // Simulated ms of the scaled run are µs of the demo.
    Outcome { queries: s.queries, mean_us: s.latency_ms.mean, p99_us: s.latency_ms.p99 }
}

#[tokio::test(start_paused = true)]
async fn the_simulator_predicts_the_real_core_in_virtual_time() {
    let dir = std::env::temp_dir().join(format!("busline-demo-virtual-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let arrivals = arrivals();
    println!("{} requests; mock database: {POOL} connections, {BASE_US} µs + {PER_KEY_US} µs per id", arrivals.len());
    println!("{:<16} {:>16} {:>22} {:>22}", "contender", "queries core/sim", "mean µs core/sim", "p99 µs core/sim");
    let mut failures = Vec::new();
    for c in contenders() {
        let policy = match c.contender {
            Contender::Direct => Policy::Car,
            Contender::Batched(p) => p,
        };
        let core = through_core(&arrivals, policy).await;
        let sim = through_simulator(&dir, &arrivals, &c.contender);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        let (eq, em, ep) = (rel(sim.queries as f64, core.queries as f64), rel(sim.mean_us, core.mean_us), rel(sim.p99_us, core.p99_us));
        println!(
            "{:<16} {:>7} / {:<7} {:>9.1} / {:<9.1} {:>9.1} / {:<9.1} (errors {:.2} %, {:.2} %, {:.2} %)",
            c.label,
            core.queries,
            sim.queries,
            core.mean_us,
            sim.mean_us,
            core.p99_us,
            sim.p99_us,
            eq * 100.0,
            em * 100.0,
            ep * 100.0
        );
        if eq > 0.01 || em > 0.05 || ep > 0.05 {
            failures.push(format!("{}: core {core:?}, simulator {sim:?}", c.label));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "simulator and core disagree:\n{}", failures.join("\n"));
}
