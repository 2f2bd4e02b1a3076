//! `[cpu]`: the application's work per request on the database's servers. Closed forms with
//! one server and constant costs: a burst's queries wait for the work queued before them, or
//! share the server with it (`sharing = "processor"`), exactly as arithmetic says; absent or
//! zero, the simulator is unchanged event for event.

use std::path::Path;

use busline_sim::engine::{RunOptions, RunOutput, run};
use busline_sim::scenario::Scenario;

/// `n` requests at the same instant (0), one server, a constant 1 ms query, with `sets`.
fn burst(name: &str, n: u32, sets: &[&str]) -> RunOutput {
    arrivals(name, &vec![0; n as usize], sets)
}

/// Requests at `at_us` (µs), one server, a constant 1 ms query, with `sets`.
fn arrivals(name: &str, at_us: &[u64], sets: &[&str]) -> RunOutput {
    let dir = std::env::temp_dir().join(format!("busline-sim-cpu-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv: String = at_us.iter().enumerate().map(|(i, t)| format!("{t},{i}\n")).collect();
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
fn shared_work_holds_no_server_and_slows_the_queries_by_the_contention() {
    // The burst of the first test under `sharing = "processor"`: each arrival's 0.25 ms of
    // work starts at once beside the running query instead of queueing ahead of it.
    let car = ["policy.kind=car", "policy.max_in_flight=4", "cpu.request_us=250", "cpu.sharing=processor"];
    // With no contention the work slows nothing: the queries end at 1, 2, 3, 4 ms, as
    // without [cpu] (queued, they ended at 1.25, 2.5, 3.75, 5).
    let free = burst("ps0", 4, &car);
    close("uncontended mean", free.summary.latency_ms.mean, 2.5);
    close("uncontended max", free.summary.latency_ms.max, 4.0);
    // With contention 1 (k jobs each at 1/k: one core shared equally): the 4 works and query
    // 1 run at 1/5 from 0; the works end at 1.25 ms, query 1 has done 0.25 of its 1 ms and
    // ends at 2 ms; then 3, 4, 5 ms. Mean 3.5 (queued: 3.125, the same work, done in another
    // order: the first query no longer waits for every work before it but shares with it).
    let shared = burst("ps1", 4, &[car[0], car[1], car[2], car[3], "db.contention=1"]);
    close("shared mean", shared.summary.latency_ms.mean, 3.5);
    close("shared max", shared.summary.latency_ms.max, 5.0);
    let queued = burst("ps2", 4, &[car[0], car[1], car[2], "db.contention=1"]);
    close("queued mean", queued.summary.latency_ms.mean, 3.125);
    // The work answers nobody and counts as no query, shared or not.
    assert_eq!((shared.summary.queries, shared.totals.answered), (4, 4));
}

#[test]
fn the_driver_s_timer_takes_the_last_stretch_before_each_deadline() {
    // 0.5 ms windows, requests at 0 and 0.6 ms: bus A leaves at 0.5 ms, its query runs
    // 0.5-1.5 ms; bus B's window runs to 1.1 ms. With `timer_us` = 200 the driver spins
    // 0.3-0.5 ms (alone: no query runs) and 0.9-1.1 ms, beside query A (two places in flight,
    // so B's window is timed while A runs).
    let base = ["policy.kind=window", "policy.window_ms=0.5", "policy.max_in_flight=4", "db.contention=1"];
    let run = |name: &str, extra: &[&str]| {
        let sets: Vec<&str> = base.iter().chain(extra).copied().collect();
        arrivals(name, &[0, 600], &sets).summary.latency_ms
    };
    // No timer: A 1.5 ms, B starts at 1.5 (one server), ends 2.5: 1.9 ms.
    close("no timer", run("t0", &[]).mean, (1.5 + 1.9) / 2.0);
    // Shared: at 0.9 ms query A (0.6 ms left) and the spin (0.2 ms) run at 1/2 each: the spin
    // ends at 1.3 ms, query A at 1.7 ms; B (sent at 1.1 ms) waits for it, ends 2.7 ms: 2.1 ms.
    let shared = run("t1", &["cpu.timer_us=200", "cpu.sharing=processor"]);
    close("shared mean", shared.mean, (1.7 + 2.1) / 2.0);
    close("shared max", shared.max, 2.1);
    // Queued: the spin waits for query A (1.5 ms) and holds the server to 1.7 ms; B behind it.
    close("queued", run("t2", &["cpu.timer_us=200"]).mean, (1.5 + 2.1) / 2.0);
    // Without contention the spin slows nothing: as without the timer.
    close("uncontended", run("t3", &["cpu.timer_us=200", "cpu.sharing=processor", "db.contention=0"]).mean, 1.7);
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
    let a = go(&[]);
    for b in [go(&["cpu.request_us=0"]), go(&["cpu.request_us=0", "cpu.sharing=processor"])] {
        assert_eq!(a.events, b.events);
        assert_eq!(a.summary.queries, b.summary.queries);
        assert_eq!(a.summary.latency_ms.mean.to_bits(), b.summary.latency_ms.mean.to_bits());
        assert_eq!(a.summary.latency_ms.p99.to_bits(), b.summary.latency_ms.p99.to_bits());
    }
    // And some work per request slows the same run: the model does something.
    let c = go(&["cpu.request_us=20"]);
    assert!(c.summary.latency_ms.mean > a.summary.latency_ms.mean, "{} vs {}", c.summary.latency_ms.mean, a.summary.latency_ms.mean);
    let d = go(&["cpu.request_us=20", "cpu.sharing=processor"]);
    assert!(d.summary.latency_ms.mean > a.summary.latency_ms.mean, "{} vs {}", d.summary.latency_ms.mean, a.summary.latency_ms.mean);
}
