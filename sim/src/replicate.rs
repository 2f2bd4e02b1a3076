//! Replications: one policy of a scenario under seeds `seed`, `seed + 1`, ..., and the mean and
//! 95 % interval of each figure over them.
//!
//! Replication `r` of every policy uses the same seed (common random numbers: the same arrivals,
//! keys and, per first request, service draws), so comparisons between policies pair their
//! replications ([`crate::stats::interval::paired`]); different replications are independent.

use crate::client::ClientSummary;
use crate::stats::{Estimate, LatencySummary, RunSummary, WaitSummary};

/// A figure read from a run.
pub type Metric = fn(&RunSummary) -> f64;

/// One policy's runs, one per replication, in replication order.
#[derive(Debug, Clone)]
pub struct Replicated {
    /// The runs.
    pub runs: Vec<RunSummary>,
    /// Their field-by-field mean (what tables and plots show as the point estimate).
    pub mean: RunSummary,
}

impl Replicated {
    /// The replications of one policy.
    ///
    /// # Panics
    ///
    /// If `runs` is empty.
    pub fn new(runs: Vec<RunSummary>) -> Replicated {
        let mean = mean_summary(&runs);
        Replicated { runs, mean }
    }

    /// The mean and 95 % interval of `f` over the replications.
    pub fn estimate(&self, f: impl Fn(&RunSummary) -> f64) -> Estimate {
        let v: Vec<f64> = self.runs.iter().map(f).collect();
        Estimate::of(&v)
    }
}

fn mean_of(runs: &[RunSummary], f: impl Fn(&RunSummary) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len() as f64
}

fn mean_count(runs: &[RunSummary], f: impl Fn(&RunSummary) -> u64) -> u64 {
    mean_of(runs, |r| f(r) as f64).round() as u64
}

fn mean_latency(runs: &[RunSummary], f: impl Fn(&RunSummary) -> &LatencySummary) -> LatencySummary {
    LatencySummary {
        mean: mean_of(runs, |r| f(r).mean),
        p50: mean_of(runs, |r| f(r).p50),
        p99: mean_of(runs, |r| f(r).p99),
        p999: mean_of(runs, |r| f(r).p999),
        max: mean_of(runs, |r| f(r).max),
    }
}

fn mean_wait(runs: &[RunSummary], f: impl Fn(&RunSummary) -> &WaitSummary) -> WaitSummary {
    WaitSummary {
        mean: mean_of(runs, |r| f(r).mean),
        p50: mean_of(runs, |r| f(r).p50),
        p99: mean_of(runs, |r| f(r).p99),
        max: mean_of(runs, |r| f(r).max),
    }
}

fn mean_client(runs: &[RunSummary]) -> Option<ClientSummary> {
    let cs: Vec<&ClientSummary> = runs.iter().filter_map(|r| r.client.as_ref()).collect();
    if cs.len() != runs.len() {
        return None;
    }
    let m = |f: fn(&ClientSummary) -> f64| cs.iter().map(|c| f(c)).sum::<f64>() / cs.len() as f64;
    let n = |f: fn(&ClientSummary) -> u64| (cs.iter().map(|c| f(c) as f64).sum::<f64>() / cs.len() as f64).round() as u64;
    Some(ClientSummary {
        requests: n(|c| c.requests),
        successes: n(|c| c.successes),
        goodput_per_s: m(|c| c.goodput_per_s),
        success_fraction: m(|c| c.success_fraction),
        attempts: n(|c| c.attempts),
        retries: n(|c| c.retries),
        timeouts: n(|c| c.timeouts),
        timeout_fraction: m(|c| c.timeout_fraction),
        dropped_unsent: n(|c| c.dropped_unsent),
        answered_late: n(|c| c.answered_late),
        failed: n(|c| c.failed),
        queries_per_success: m(|c| c.queries_per_success),
        attempts_per_request: m(|c| c.attempts_per_request),
        success_latency_ms: LatencySummary {
            mean: m(|c| c.success_latency_ms.mean),
            p50: m(|c| c.success_latency_ms.p50),
            p99: m(|c| c.success_latency_ms.p99),
            p999: m(|c| c.success_latency_ms.p999),
            max: m(|c| c.success_latency_ms.max),
        },
    })
}

/// The field-by-field mean of runs of one policy (counts rounded to integers); the labels
/// (scenario, policy, window, budget) are the same in every run, and the seed is the first
/// run's.
///
/// # Panics
///
/// If `runs` is empty.
pub fn mean_summary(runs: &[RunSummary]) -> RunSummary {
    let first = runs.first().expect("a mean of no runs");
    RunSummary {
        scenario: first.scenario.clone(),
        policy: first.policy.clone(),
        window_ms: first.window_ms,
        latency_budget_ms: first.latency_budget_ms,
        seed: first.seed,
        requests: mean_count(runs, |r| r.requests),
        queries: mean_count(runs, |r| r.queries),
        mean_batch: mean_of(runs, |r| r.mean_batch),
        mean_distinct_keys: mean_of(runs, |r| r.mean_distinct_keys),
        sim_time_s: mean_of(runs, |r| r.sim_time_s),
        horizon_s: mean_of(runs, |r| r.horizon_s),
        drain_s: mean_of(runs, |r| r.drain_s),
        drain_queries: mean_count(runs, |r| r.drain_queries),
        offered_per_s: mean_of(runs, |r| r.offered_per_s),
        queries_per_s: mean_of(runs, |r| r.queries_per_s),
        latency_ms: mean_latency(runs, |r| &r.latency_ms),
        added_wait_ms: mean_wait(runs, |r| &r.added_wait_ms),
        in_flight_wait_ms: mean_wait(runs, |r| &r.in_flight_wait_ms),
        connection_wait_ms: mean_wait(runs, |r| &r.connection_wait_ms),
        db_wait_ms: mean_wait(runs, |r| &r.db_wait_ms),
        service_ms: mean_wait(runs, |r| &r.service_ms),
        added_wait_over_budget: mean_of(runs, |r| r.added_wait_over_budget),
        db_utilization: mean_of(runs, |r| r.db_utilization),
        db_occupancy: mean_of(runs, |r| r.db_occupancy),
        final_window_ms: mean_of(runs, |r| r.final_window_ms),
        client: mean_client(runs),
        // No `..first.clone()`: a field added to RunSummary must be averaged here explicitly
        // (this literal does not compile until it is), never read from one replication.
    }
}
