//! Honest denominators: rates over the arrival horizon, the drain on its own, the database's
//! utilization as work over capacity (occupancy beside it), and the warm-up left out.

use std::path::Path;

use busline_sim::engine::{RunOptions, run};
use busline_sim::scenario::Scenario;

fn scenario(text: &str) -> Scenario {
    Scenario::parse_with(text, Path::new("."), &[]).unwrap()
}

#[test]
fn utilization_is_work_over_capacity() {
    // Contention 1 with 4 connections: k running queries each progress at 1/k, so the database
    // does one unit of work per unit time whenever it is busy: exactly M/M/1 (processor
    // sharing), here at ρ = 500/s × 1 ms = 0.5. Utilization is ρ; occupancy (mean busy
    // connections / 4) is E[min(N, 4)]/4 = (ρ + ρ² + ρ³ + ρ⁴)/4 = 0.234 for N geometric.
    let s = scenario(
        "name = \"ps\"\nseed = 11\nrequests = 1000000\n[traffic]\nkind = \"poisson\"\nrate_per_s = 500.0\n\
         [db]\nservers = 4\nservice = \"exp\"\nbase_ms = 1.0\ncontention = 1.0\n[policy]\nkind = \"car\"\n",
    );
    let m = run(&s, &RunOptions::default()).unwrap().summary;
    // 1e6 requests: the relative standard error of a busy fraction at ρ = 0.5 is under 0.5 %.
    assert!((m.db_utilization - 0.5).abs() < 0.5 * 0.015, "utilization {}", m.db_utilization);
    let occupancy = (0.5 + 0.25 + 0.125 + 0.0625) / 4.0;
    assert!((m.db_occupancy - occupancy).abs() < occupancy * 0.03, "occupancy {}", m.db_occupancy);
}

#[test]
fn rates_are_over_the_arrival_horizon_and_the_drain_is_apart() {
    // Car at 1,500/s on one 1 ms connection for 10 s: a backlog of ~5,000 requests drains for
    // ~5 s after the last arrival. Every query is caused by an arrival of the 10 s, so the
    // query rate of car is its offered rate, not diluted by the drain.
    let s = scenario(
        "name = \"drain\"\nseed = 2\nduration_s = 10.0\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1500.0\n\
         [db]\nservers = 1\nservice = \"exp\"\nbase_ms = 1.0\n[policy]\nkind = \"car\"\n",
    );
    let out = run(&s, &RunOptions::default()).unwrap();
    let m = &out.summary;
    assert_eq!(m.horizon_s, 10.0);
    assert!(m.drain_s > 3.0, "drain {}", m.drain_s);
    assert!((m.sim_time_s - m.horizon_s - m.drain_s).abs() < 1e-9);
    assert_eq!(m.queries_per_s, m.offered_per_s, "car: one query per request");
    assert_eq!(m.offered_per_s, out.totals.arrivals as f64 / 10.0);
    assert!(m.drain_queries > 2000, "{}", m.drain_queries);
    // Saturated throughout the horizon (the queue never empties after the first instants).
    assert!(m.db_utilization > 0.98 && m.db_utilization <= 1.0, "{}", m.db_utilization);
}

#[test]
fn the_warm_up_is_left_out_of_the_statistics() {
    let text = "name = \"warm\"\nseed = 4\nduration_s = 10.0\nwarmup_s = 4.0\n[traffic]\nkind = \"poisson\"\n\
                rate_per_s = 1000.0\n[db]\nservers = 2\nservice = \"exp\"\nbase_ms = 1.0\n[policy]\nkind = \"car\"\n";
    let out = run(&scenario(text), &RunOptions { record_waits: true, ..RunOptions::default() }).unwrap();
    let all = out.totals.arrivals;
    let measured = out.latency.count();
    // About 6/10 of the arrivals are measured; the rest are simulated but left out.
    assert!(measured < all && (measured as f64 / all as f64 - 0.6).abs() < 0.02, "{measured} of {all}");
    assert_eq!(out.added_wait.count(), measured);
    assert!((out.summary.offered_per_s - measured as f64 / 6.0).abs() < 1e-6);
    // The path checks still cover every request.
    assert_eq!(out.totals.area_ns, out.totals.sojourn_ns);
    assert!(Scenario::parse_with(&text.replace("warmup_s = 4.0", "warmup_s = 10.0"), Path::new("."), &[]).is_err());
}
