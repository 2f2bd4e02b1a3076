//! Clients that give up (`[client]`), against cases with a known answer.
//!
//! Each statistical check runs `REPS` independent replications (seeds 1..=REPS) and accepts the
//! theory within 3 standard errors of the mean over them (replications are independent, so the
//! standard error is the sample standard deviation over √REPS); each also asserts that the
//! standard error is small, so the band cannot grow wide enough to accept anything.

use std::path::Path;

use busline_sim::engine::{RunOptions, RunOutput, run};
use busline_sim::scenario::Scenario;
use busline_sim::stats::Estimate;

const REPS: u32 = 8;

fn scenario(body: &str, sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Scenario::parse_with(body, Path::new("."), &sets).unwrap()
}

fn replications(s: &Scenario) -> Vec<RunOutput> {
    (0..REPS).map(|r| run(&s.replication(r), &RunOptions::default()).unwrap()).collect()
}

fn assert_within_3_se(what: &str, e: Estimate, theory: f64) {
    let se = e.half_width / busline_sim::stats::interval::t_975(e.n as u32 - 1);
    assert!(se / theory < 0.03, "{what}: standard error {se:.5} is too wide to test anything");
    assert!(
        (e.mean - theory).abs() <= 3.0 * se,
        "{what}: {:.5} vs theory {theory:.5} (3 se = {:.5})",
        e.mean,
        3.0 * se
    );
}

/// M/M/1 at λ, μ = 1000/s (1 ms exponential queries), car, with a `[client]` of timeout τ.
fn mm1(lambda: f64, timeout_ms: f64, policy: &str, retries: &str) -> String {
    format!(
        "name = \"mm1-timeout\"\nseed = 1\nrequests = 200000\nwarmup_s = 1.0\n\
         [traffic]\nkind = \"poisson\"\nrate_per_s = {lambda}\n\
         [db]\nservers = 1\nservice = \"exp\"\nbase_ms = 1.0\n\
         [policy]\nkind = \"car\"\n{policy}\n\
         [client]\ntimeout_ms = {timeout_ms}\n{retries}\n"
    )
}

#[test]
fn timeouts_of_queries_that_still_run_are_the_sojourn_tail() {
    // Every query is sent at once (the FIFO is the database's), and a query whose caller left
    // still runs: the system is M/M/1 whatever the callers do, and a caller times out exactly
    // when its sojourn exceeds τ: P(S > τ) = e^{−(μ−λ)τ}.
    for (lambda, tau_ms) in [(500.0, 2.0), (800.0, 5.0)] {
        let s = scenario(&mm1(lambda, tau_ms, "max_in_flight = 1000000", ""), &[]);
        let outs = replications(&s);
        let fractions: Vec<f64> = outs.iter().map(|o| o.summary.client.unwrap().timeout_fraction).collect();
        let theory = (-(1000.0 - lambda) * tau_ms / 1e3).exp();
        assert_within_3_se(&format!("λ {lambda}, τ {tau_ms} ms: P(S > τ)"), Estimate::of(&fractions), theory);
        for o in &outs {
            let c = o.summary.client.unwrap();
            // Nothing is dropped: every timed-out attempt was sent and is answered late.
            assert_eq!(c.dropped_unsent, 0);
            assert_eq!(o.totals.dropped, 0);
            assert_eq!(c.answered_late, c.timeouts);
            assert_eq!(c.failed, c.timeouts, "no retries: a timeout fails its request");
            assert_eq!(c.successes + c.failed, c.requests);
        }
    }
}

#[test]
fn dropping_unsent_requests_is_mm1_with_deterministic_patience() {
    // One batch in flight and one connection: requests wait at the stop, and one whose caller
    // gives up there is never sent. A caller leaves only if its wait exceeds d, so this is
    // M/M/1+D: P_ab = ρ(1−ρ)x / (1 − ρ²x), x = e^{−(μ−λ)d} (Baccelli, Boyer, Hébuterne 1984;
    // shared/DESIGN_NOTES.md §5), for any ρ ≠ 1, overload included. And the server's
    // utilization is what the served carry: λ(1 − P_ab)/μ = 1 − P_idle.
    for (lambda, d_ms) in [(900.0, 2.0), (1200.0, 2.0), (500.0, 0.5)] {
        let s = scenario(&mm1(lambda, d_ms, "", ""), &[]);
        let outs = replications(&s);
        let rho: f64 = lambda / 1000.0;
        let x = (-(1000.0 - lambda) * d_ms / 1e3).exp();
        let p_ab = rho * (1.0 - rho) * x / (1.0 - rho * rho * x);
        let abandoned: Vec<f64> = outs
            .iter()
            .map(|o| {
                let c = o.summary.client.unwrap();
                c.dropped_unsent as f64 / c.requests as f64
            })
            .collect();
        assert_within_3_se(&format!("λ {lambda}, d {d_ms} ms: P_ab"), Estimate::of(&abandoned), p_ab);
        let util: Vec<f64> = outs.iter().map(|o| o.summary.db_utilization).collect();
        assert_within_3_se(&format!("λ {lambda}, d {d_ms} ms: utilization"), Estimate::of(&util), rho * (1.0 - p_ab));
        for o in &outs {
            assert!(o.totals.dropped > 0);
            assert_eq!(o.totals.answered + o.totals.dropped, o.totals.arrivals);
            assert!(o.totals.empty_dispatches > 0, "dropped requests reach the head of the stop");
        }
    }
}

#[test]
fn retries_are_counted_and_conserved() {
    // Overloaded car with retries: every timeout of an attempt with retries left starts a
    // retry; a request ends answered in time or out of retries.
    let body = mm1(1100.0, 3.0, "", "max_retries = 2\nbackoff_ms = 1.0");
    let out = run(&scenario(&body, &["warmup_s=0"]), &RunOptions::default()).unwrap();
    let c = out.summary.client.unwrap();
    assert!(c.retries > 0 && c.failed > 0, "{c:?}");
    assert_eq!(c.attempts, c.requests + c.retries);
    assert_eq!(c.timeouts, c.retries + c.failed, "each timeout retries or fails its request");
    assert_eq!(c.successes + c.failed, c.requests);
    assert_eq!(c.dropped_unsent + c.answered_late, c.timeouts);
    assert_eq!(out.totals.arrivals, c.attempts);
    assert!(c.attempts_per_request > 1.0);
    // Little's law on the path still holds with requests leaving the stop early.
    assert_eq!(out.totals.area_ns, out.totals.sojourn_ns);
}

#[test]
fn closed_loop_obeys_the_response_time_law() {
    // N callers, think time Z, no timeout: the interactive response time law X = N / (R + Z)
    // holds for any service (an operational law: exact up to the run's ends).
    let body = "name = \"closed\"\nseed = 3\nduration_s = 200.0\n\
                [traffic]\nkind = \"poisson\"\nrate_per_s = 1.0\n\
                [db]\nservers = 2\nservice = \"exp\"\nbase_ms = 1.0\n\
                [policy]\nkind = \"natural\"\n\
                [client]\npopulation = 20\nthink_ms = 10.0\n";
    let out = run(&scenario(body, &[]), &RunOptions::default()).unwrap();
    let c = out.summary.client.unwrap();
    let x = c.goodput_per_s;
    let r_s = c.success_latency_ms.mean / 1e3;
    let law = 20.0 / (r_s + 0.010);
    assert!((x - law).abs() / law < 0.01, "X {x:.1}/s vs N/(R+Z) {law:.1}/s");
    assert_eq!(c.successes, c.requests, "no timeout: every request is answered");
    // The callers, not `[traffic]` (1/s), set the load.
    assert!(x > 1000.0, "{x}");
}
