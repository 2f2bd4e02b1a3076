//! The simulator against queueing theory (formulas and bands: shared/REFERENCE.md).
//!
//! Each statistical check runs 1e6 Poisson arrivals and accepts the estimate within 3σ, σ the
//! standard error estimated from the run itself by batch means (20 batches of 50,000
//! consecutive requests, far longer than the queue's correlation time at ρ = 0.5). The
//! reference puts σ at ~0.5 % for M/M/1 at ρ = 0.5; each test also asserts σ is that small, so
//! a band can never grow wide enough to accept anything.

use std::path::Path;

use busline_sim::db::ServiceSampler;
use busline_sim::engine::{RunOptions, RunOutput, run};
use busline_sim::scenario::Scenario;
use busline_sim::traffic::Traffic;

const N: u64 = 1_000_000;

fn scenario(rate_per_s: f64, servers: u32, service: &str, mean_ms: f64, policy: &str, extra: &[&str]) -> Scenario {
    let text = format!(
        "name = \"theory\"\nseed = 2024\nrequests = {N}\n[traffic]\nkind = \"poisson\"\nrate_per_s = {rate_per_s}\n\
         [db]\nservers = {servers}\nservice = \"{service}\"\nbase_ms = {mean_ms}\n[policy]\n{policy}\n"
    );
    let sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Scenario::parse_with(&text, Path::new("."), &sets).unwrap()
}

fn run_waits(s: &Scenario) -> RunOutput {
    run(s, &RunOptions { record_waits: true, ..RunOptions::default() }).unwrap()
}

/// Mean queue wait (start of service − arrival) in ms and its batch-means standard error.
fn mean_and_se_ms(out: &RunOutput) -> (f64, f64) {
    let w = &out.queue_waits;
    assert_eq!(w.len() as u64, N);
    let batches = 20;
    let len = w.len() / batches;
    let means: Vec<f64> = w
        .chunks(len)
        .take(batches)
        .map(|c| c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64 / 1e6)
        .collect();
    let mean = out.totals.queue_wait_ns as f64 / N as f64 / 1e6;
    let bm = means.iter().sum::<f64>() / batches as f64;
    let var = means.iter().map(|m| (m - bm).powi(2)).sum::<f64>() / (batches - 1) as f64;
    (mean, (var / batches as f64).sqrt())
}

fn assert_within_3_sigma(what: &str, out: &RunOutput, theory_ms: f64) {
    let (mean, se) = mean_and_se_ms(out);
    let rel_se = se / theory_ms;
    assert!(rel_se < 0.03, "{what}: batch-means σ {rel_se:.4} relative is too wide to test anything");
    assert!(
        (mean - theory_ms).abs() <= 3.0 * se,
        "{what}: Wq {mean:.5} ms vs theory {theory_ms:.5} ms (3σ = {:.5} ms)",
        3.0 * se
    );
}

/// Erlang C: probability that an arrival waits in M/M/c with offered load `a` = λ/μ.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut term = 1.0; // a^k / k!
    let mut sum = 0.0;
    for k in 0..c {
        if k > 0 {
            term *= a / f64::from(k);
        }
        sum += term;
    }
    let top = term * a / f64::from(c) * (f64::from(c) / (f64::from(c) - a));
    top / (sum + top)
}

#[test]
fn mm1_queue_wait() {
    // λ = 500/s, μ = 1000/s: ρ = 0.5, Wq = ρ/(μ − λ) = 1 ms.
    let out = run_waits(&scenario(500.0, 1, "exp", 1.0, "kind = \"car\"", &[]));
    assert_within_3_sigma("M/M/1", &out, 0.5 / (1000.0 - 500.0) * 1e3);
}

#[test]
fn mm1_matches_the_lindley_recursion_exactly() {
    // Same streams, recomputed by hand: W(n+1) = max(0, W(n) + S(n) − A(n+1)).
    let s = scenario(800.0, 1, "exp", 1.0, "kind = \"car\"", &[]);
    let out = run(&s, &RunOptions::default()).unwrap();
    let mut traffic = Traffic::new(&s).unwrap();
    let mut service = ServiceSampler::new(&s);
    let (mut w, mut total, mut prev_arrival, mut prev_service) = (0u64, 0u128, 0u64, 0u64);
    for i in 0..N {
        let (a, _) = traffic.next_arrival().unwrap();
        if i > 0 {
            w = (w + prev_service).saturating_sub(a - prev_arrival);
        }
        total += u128::from(w);
        prev_arrival = a;
        prev_service = service.sample(1e6, i);
    }
    assert_eq!(out.totals.queue_wait_ns, total);
}

#[test]
fn waiting_at_the_stop_or_at_the_database_is_the_same_queue() {
    // Car with one in-flight batch queues at the stop; with unlimited in-flight batches it
    // queues for the connection. Same streams, same FIFO: the same waits to the nanosecond.
    let at_stop = run(&scenario(700.0, 1, "exp", 1.0, "kind = \"car\"", &[]), &RunOptions::default()).unwrap();
    let at_db = run(
        &scenario(700.0, 1, "exp", 1.0, "kind = \"car\"", &["policy.max_in_flight=1000000"]),
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(at_stop.totals.queue_wait_ns, at_db.totals.queue_wait_ns);
    // Where it queues is told apart (an in-flight place, or a connection) ...
    assert_eq!(at_stop.totals.connection_wait_ns, 0);
    assert_eq!(at_stop.totals.in_flight_wait_ns, at_stop.totals.queue_wait_ns);
    assert_eq!(at_db.totals.in_flight_wait_ns, 0);
    assert_eq!(at_db.totals.connection_wait_ns, at_db.totals.queue_wait_ns);
    // ... but it is the backend's wait either way: db_wait is the same, and a car adds none.
    assert!(at_stop.summary.db_wait_ms.mean > 0.0);
    assert_eq!(at_stop.summary.db_wait_ms, at_db.summary.db_wait_ms);
    for out in [&at_stop, &at_db] {
        assert_eq!(out.totals.added_wait_ns, 0);
        assert_eq!(out.summary.added_wait_ms.max, 0.0);
    }
}

#[test]
fn mmc_queue_wait_erlang_c() {
    // c = 2, λ = 1000/s, μ = 1000/s: a = 1, ρ = 0.5, C(2, 1) = 1/3, Wq = C/(cμ − λ) = 1/3 ms.
    let out = run_waits(&scenario(1000.0, 2, "exp", 1.0, "kind = \"car\"", &[]));
    let c = erlang_c(2, 1.0);
    assert!((c - 1.0 / 3.0).abs() < 1e-12);
    assert_within_3_sigma("M/M/2", &out, c / (2000.0 - 1000.0) * 1e3);
    // And c = 4 at ρ = 0.6 (a = 2.4).
    let out = run_waits(&scenario(2400.0, 4, "exp", 1.0, "kind = \"car\"", &[]));
    assert_within_3_sigma("M/M/4", &out, erlang_c(4, 2.4) / (4000.0 - 2400.0) * 1e3);
}

#[test]
fn md1_queue_wait() {
    // λ = 500/s, D = 1 ms: ρ = 0.5, Wq = ρ/(2μ(1 − ρ)) = 0.5 ms.
    let out = run_waits(&scenario(500.0, 1, "const", 1.0, "kind = \"car\"", &[]));
    assert_within_3_sigma("M/D/1", &out, 0.5 / (2.0 * 1000.0 * 0.5) * 1e3);
}

#[test]
fn fixed_window_with_a_free_database() {
    // Window T opened by the first arrival, Poisson λ, instant backend:
    // mean batch 1 + λT, batches/s λ/(1 + λT), mean added wait T(1 + λT/2)/(1 + λT).
    for (lambda, t_ms) in [(1000.0, 1.0), (1000.0, 5.0), (20_000.0, 0.1)] {
        let policy = format!("kind = \"window\"\nwindow_ms = {t_ms}\nmax_batch = 100000");
        let out = run(&scenario(lambda, 1, "const", 0.0, &policy, &[]), &RunOptions::default()).unwrap();
        let m = &out.summary;
        let lt = lambda * t_ms / 1e3;
        let close = |what: &str, got: f64, want: f64| {
            assert!((got - want).abs() / want < 0.005, "λ {lambda} T {t_ms}: {what} {got} vs {want}");
        };
        close("mean batch", m.mean_batch, 1.0 + lt);
        close("batches/s", m.queries as f64 / m.sim_time_s, lambda / (1.0 + lt));
        close("mean added wait ms", m.added_wait_ms.mean, t_ms * (1.0 + lt / 2.0) / (1.0 + lt));
        // A free database adds nothing: latency is the added wait.
        assert_eq!(m.latency_ms.mean, m.added_wait_ms.mean);
    }
}
