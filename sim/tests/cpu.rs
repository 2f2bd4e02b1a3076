//! `[cpu]`: the application's work per request on the database's servers. Closed forms with
//! one server and constant costs: a burst's queries wait for the work queued before them,
//! exactly as arithmetic says; absent or zero, the simulator is unchanged event for event.

use std::path::Path;

use busline_sim::engine::{RunOptions, RunOutput, run};
use busline_sim::scenario::Scenario;

/// `n` requests at the same instant (0), one server, a constant 1 ms query, with `sets`.
fn burst(name: &str, n: u32, sets: &[&str]) -> RunOutput {
    let dir = std::env::temp_dir().join(format!("busline-sim-cpu-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv: String = (0..n).map(|i| format!("0,{i}\n")).collect();
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    let text = "name = \"t\"\n[traffic]\nkind = \"trace\"\npath = \"t.csv\"\ntime_unit = \"us\"\n\
                [db]\nservers = 1\nservice = \"const\"\nbase_ms = 1.0\nper_key_cv = 0.0\n";
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let scenario = Scenario::parse_with(text, Path::new(&dir), &sets).unwrap();
    let out = run(&scenario, &RunOptions::default()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "{what}: {got} vs {want}");
}

#[test]
fn direct_calls_in_a_burst_wait_for_the_work_queued_before_them() {
    // Four requests at 0, each its own query (car, all four sent at once), one server. Each
    // arrival queues its 0.25 ms of work, then its query: w1 q1 w2 q2 w3 q3 w4 q4, so query k
    // ends at k × (0.25 + 1) ms: latencies 1.25, 2.5, 3.75, 5 ms. Without [cpu]: 1, 2, 3, 4.
    let car = ["policy.kind=car", "policy.max_in_flight=4"];
    let before = burst("car0", 4, &car);
    close("mean without [cpu]", before.summary.latency_ms.mean, 2.5);
    let with = burst("car1", 4, &[car[0], car[1], "cpu.request_us=250"]);
    close("mean", with.summary.latency_ms.mean, (1.25 + 2.5 + 3.75 + 5.0) / 4.0);
    close("max", with.summary.latency_ms.max, 5.0);
    // Direct calls take `direct_request_us` where given.
    let direct = burst("car2", 4, &[car[0], car[1], "cpu.request_us=999", "cpu.direct_request_us=250"]);
    close("direct mean", direct.summary.latency_ms.mean, with.summary.latency_ms.mean);
    // The work answers nobody and counts as no query.
    assert_eq!((with.summary.queries, with.totals.answered), (4, 4));
}

#[test]
fn a_window_bus_leaves_when_its_window_closes_and_starts_when_a_core_is_free() {
    // Four requests at 0 in one 0.5 ms window: their 4 × 0.25 ms of work occupies the server
    // until 1 ms, so the bus sent at 0.5 ms starts at 1 ms and ends at 2 ms (without [cpu]:
    // at 1.5 ms). With a 1.5 ms window the work is done before the bus leaves: 2.5 ms both.
    let w = |ms: &str, cpu: &str| {
        let window = format!("policy.window_ms={ms}");
        let mut sets = vec!["policy.kind=window", window.as_str()];
        if !cpu.is_empty() {
            sets.push(cpu);
        }
        burst(&format!("w{ms}{}", cpu.len()), 4, &sets).summary.latency_ms
    };
    close("0.5 ms window, no [cpu]", w("0.5", "").max, 1.5);
    close("0.5 ms window", w("0.5", "cpu.request_us=250").max, 2.0);
    close("1.5 ms window", w("1.5", "cpu.request_us=250").max, 2.5);
}

#[test]
fn no_work_is_the_simulator_without_cpu() {
    // A contended Poisson run: [cpu] with no work per request changes nothing, event for event.
    let text = "name = \"p\"\nseed = 3\nrequests = 3000\n[traffic]\nkind = \"poisson\"\nrate_per_s = 20000.0\n\
                [db]\nservers = 2\nbase_ms = 0.05\nper_key_ms = 0.01\ncontention = 0.3\nper_key_contention = 0.7\n\
                [policy]\nkind = \"natural\"\nmax_in_flight = 4\n";
    let go = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        run(&Scenario::parse_with(text, Path::new("."), &sets).unwrap(), &RunOptions::default()).unwrap()
    };
    let (a, b) = (go(&[]), go(&["cpu.request_us=0"]));
    assert_eq!(a.events, b.events);
    assert_eq!(a.summary.queries, b.summary.queries);
    assert_eq!(a.summary.latency_ms.mean.to_bits(), b.summary.latency_ms.mean.to_bits());
    assert_eq!(a.summary.latency_ms.p99.to_bits(), b.summary.latency_ms.p99.to_bits());
    // And some work per request slows the same run: the model does something.
    let c = go(&["cpu.request_us=20"]);
    assert!(c.summary.latency_ms.mean > a.summary.latency_ms.mean, "{} vs {}", c.summary.latency_ms.mean, a.summary.latency_ms.mean);
}
