//! Conservation, Little's law on the sample path, and reproducibility.

mod common;

use busline_sim::engine::{RunOptions, run};
use busline_sim::scenario::Scenario;
use common::busy;

#[test]
fn conservation_and_littles_law_under_every_policy() {
    for kind in ["car", "window", "natural", "gated", "adaptive"] {
        let s = busy(&[&format!("policy.kind={kind}")]);
        let out = run(&s, &RunOptions::default()).unwrap();
        let t = &out.totals;
        assert!(t.arrivals > 50_000, "{kind}: {} arrivals", t.arrivals);
        assert_eq!(t.answered, t.arrivals, "{kind}");
        assert_eq!(t.dispatched_requests, t.arrivals, "{kind}");
        assert_eq!(t.queries_sent, t.queries_completed, "{kind}");
        assert_eq!(t.queries_sent, t.scheduler_dispatches, "{kind}");
        assert_eq!(out.summary.queries, t.queries_sent, "{kind}");
        // Little: L = ∫N dt / T equals λW = (n / T)(Σ sojourn / n): the area under the
        // number in system equals the total sojourn, to the nanosecond.
        assert_eq!(t.area_ns, t.sojourn_ns, "{kind}");
        let horizon = out.summary.sim_time_s * 1e9;
        let l = t.area_ns as f64 / horizon;
        let lambda_w = (t.arrivals as f64 / horizon) * (t.sojourn_ns as f64 / t.arrivals as f64);
        assert!((l - lambda_w).abs() <= 1e-9 * l, "{kind}: L {l} vs λW {lambda_w}");
        assert_eq!(out.latency.count(), t.arrivals);
        assert!(out.summary.db_utilization > 0.0 && out.summary.db_utilization <= 1.0);
        if kind == "car" {
            assert_eq!(out.summary.mean_batch, 1.0);
        }
    }
}

#[test]
fn same_seed_same_output() {
    let a = run(&busy(&[]), &RunOptions::default()).unwrap();
    let b = run(&busy(&[]), &RunOptions::default()).unwrap();
    assert_eq!(serde_json::to_string(&a.summary).unwrap(), serde_json::to_string(&b.summary).unwrap());
    assert_eq!(a.totals, b.totals);
    let c = run(&busy(&["seed=10"]), &RunOptions::default()).unwrap();
    assert_ne!(a.totals, c.totals);
}

#[test]
fn every_policy_sees_the_same_arrivals() {
    let car = run(&busy(&["policy.kind=car"]), &RunOptions::default()).unwrap();
    let window = run(&busy(&["policy.kind=window", "policy.window_ms=5"]), &RunOptions::default()).unwrap();
    assert_eq!(car.totals.arrivals, window.totals.arrivals);
    assert_eq!(car.summary.offered_per_s, window.summary.offered_per_s);
    assert!(window.summary.queries < car.summary.queries / 2);
}

#[test]
fn a_trace_replays_its_timestamps_and_keys() {
    let dir = std::env::temp_dir().join(format!("busline-sim-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("timestamp_ms,key\n");
    for i in 0..1000u32 {
        // Ten requests per ms, two keys each ms.
        csv.push_str(&format!("{}.{},user{}\n", i / 10, i % 10, i / 10 * 2 + i % 2));
    }
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    let text = "name = \"replay\"\n[traffic]\nkind = \"trace\"\npath = \"t.csv\"\ntime_unit = \"ms\"\n\
                [db]\nservice = \"const\"\nbase_ms = 0.0\n[policy]\nkind = \"window\"\nwindow_ms = 0.95\n";
    let s = Scenario::parse_with(text, &dir, &[]).unwrap();
    let out = run(&s, &RunOptions::default()).unwrap();
    assert_eq!(out.summary.requests, 1000);
    // Each window opens at a whole ms and closes at .95: exactly the ten of that ms.
    assert_eq!(out.summary.queries, 100);
    assert_eq!(out.summary.mean_distinct_keys, 2.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
