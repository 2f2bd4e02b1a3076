//! Scenarios nobody tuned the policies to: generated from a seed, swept, and checked (issue 10).
//!
//! Each seed draws a traffic model (Poisson, two-state MMPP, Pareto ON/OFF, diurnal, flash
//! crowd), its rates and time scales, a database (connections, service distribution, per-query
//! and per-key cost, contention), a key distribution (unique, uniform, Zipf) and a budget B.
//! One seed in five is a steady low load instead (Poisson with `rate × B` of 0.002 to 0.02 on a
//! lightly loaded database), where the low-load check applies. Time scales are drawn relative
//! to the run's expected length, so a short run still holds several bursts.
//!
//! Every generated scenario is swept like a bundled one (car, natural, gated, adaptive and the
//! fixed windows of [`WINDOWS_MS`] plus B) and judged by the same [`checks`](super::checks).

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::checks::{self, Check};
use super::frontier::{self, P99_NOISE, QUERY_NOISE};
use crate::replicate::Replicated;
use crate::scenario::Scenario;
use crate::stats::RunSummary;
use crate::sweep;

/// The fixed windows every generated scenario is swept over (B is added).
pub const WINDOWS_MS: [f64; 7] = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

/// One generated scenario's sweep and verdicts.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario as generated.
    pub scenario: Scenario,
    /// Its runs (as [`sweep::variants`] orders them), each policy's mean over its replications.
    pub rows: Vec<RunSummary>,
    /// The replications behind each row, in the same order (the scenario's `replications`,
    /// 1 as generated: no interval, only the histogram bucket separates a tie).
    pub reps: Vec<Replicated>,
    /// The checks (issue 5 and 10).
    pub checks: Vec<Check>,
    /// How close a fixed window came to beating natural, gated or adaptive: the smallest, over
    /// those policies and the windows, of the larger of the window's relative queries and p99
    /// above the noise bars (negative: beaten).
    pub frontier_margin: f64,
}

impl Outcome {
    /// The required checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.required && c.outcome == checks::Outcome::Fail).collect()
    }
}

fn log_uniform(rng: &mut SmallRng, lo: f64, hi: f64) -> f64 {
    (rng.random_range(lo.ln()..hi.ln())).exp()
}

/// The scenario of `seed`, ending after `requests` arrivals.
///
/// # Panics
///
/// If the generated text does not parse: a bug in the generator, which the tests catch.
pub fn scenario(seed: u64, requests: u64) -> Scenario {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6E6E_7261_7465_6421);
    let budget = log_uniform(&mut rng, 0.2, 2.0);
    let low_load = seed % 5 == 4;
    let mut t = String::new();
    let name = format!("generated-{seed}");
    t.push_str(&format!("name = \"{name}\"\nseed = {seed}\nrequests = {requests}\n[traffic]\n"));
    let (servers, base_ms, per_key_ms);
    if low_load {
        let rate = log_uniform(&mut rng, 0.002, 0.02) / (budget / 1e3);
        servers = [2u32, 4, 8][rng.random_range(0..3)];
        base_ms = log_uniform(&mut rng, 0.1, 2.0);
        per_key_ms = 0.0;
        t.push_str(&format!("kind = \"poisson\"\nrate_per_s = {rate}\n"));
    } else {
        let rate = log_uniform(&mut rng, 300.0, 30_000.0);
        servers = [1u32, 2, 4, 8][rng.random_range(0..4)];
        base_ms = log_uniform(&mut rng, 0.1, 2.0);
        per_key_ms = if rng.random_bool(0.3) { 0.0 } else { log_uniform(&mut rng, 0.0005, 0.02) };
        // The run's expected length at the peak rate: time scales are fractions of it.
        let span = requests as f64 / rate;
        match rng.random_range(0..5) {
            0 => {
                t.push_str(&format!("kind = \"poisson\"\nrate_per_s = {rate}\n"));
            }
            1 => {
                let low = rate / log_uniform(&mut rng, 3.0, 20.0);
                let (dl, dh) = (span * log_uniform(&mut rng, 0.02, 0.2), span * log_uniform(&mut rng, 0.01, 0.1));
                t.push_str(&format!(
                    "kind = \"mmpp\"\nrate_low_per_s = {low}\nrate_high_per_s = {rate}\ndwell_low_s = {dl}\ndwell_high_s = {dh}\n"
                ));
            }
            2 => {
                let on = span * log_uniform(&mut rng, 0.01, 0.1);
                let off = on * log_uniform(&mut rng, 0.5, 5.0);
                let alpha = rng.random_range(1.3..1.8);
                t.push_str(&format!(
                    "kind = \"onoff\"\nrate_per_s = {rate}\non_mean_s = {on}\noff_mean_s = {off}\nalpha = {alpha}\n"
                ));
            }
            3 => {
                let amplitude = rng.random_range(0.3..0.9);
                let mean = rate / (1.0 + amplitude);
                let period = requests as f64 / mean / 2.0;
                t.push_str(&format!(
                    "kind = \"diurnal\"\nrate_per_s = {mean}\namplitude = {amplitude}\nperiod_s = {period}\n"
                ));
            }
            _ => {
                let multiplier = log_uniform(&mut rng, 3.0, 10.0);
                let base = rate / multiplier;
                let long = requests as f64 / base;
                t.push_str(&format!(
                    "kind = \"spike\"\nrate_per_s = {base}\nmultiplier = {multiplier}\nstart_s = {}\nramp_s = {}\nhold_s = {}\ndecay_s = {}\n",
                    long * 0.2,
                    long * 0.02,
                    long * 0.05,
                    long * 0.05
                ));
            }
        }
    }
    match rng.random_range(0..3) {
        0 => t.push_str("[keys]\nkind = \"unique\"\n"),
        1 => t.push_str(&format!("[keys]\nkind = \"uniform\"\ncount = {}\n", log_uniform(&mut rng, 1e3, 1e6) as u32)),
        _ => t.push_str(&format!(
            "[keys]\nkind = \"zipf\"\ncount = {}\ntheta = {}\n",
            log_uniform(&mut rng, 1e3, 1e6) as u32,
            rng.random_range(0.6..1.2)
        )),
    }
    let service = ["const", "exp", "lognormal"][rng.random_range(0..3)];
    let contention = if rng.random_bool(0.5) { 0.0 } else { rng.random_range(0.0..0.1) };
    let sigma = rng.random_range(0.3..1.0);
    t.push_str(&format!(
        "[db]\nservers = {servers}\nservice = \"{service}\"\nlognormal_sigma = {sigma}\nbase_ms = {base_ms}\nper_key_ms = {per_key_ms}\ncontention = {contention}\n"
    ));
    t.push_str(&format!("[policy]\nkind = \"adaptive\"\nlatency_budget_ms = {budget}\nmax_batch = 1000\n"));
    t.push_str(&format!("[sweep]\nlow_load = {low_load}\n"));
    Scenario::parse_with(&t, std::path::Path::new("."), &[]).unwrap_or_else(|e| panic!("generated scenario {seed}: {e:#}\n{t}"))
}

/// The frontier margin of a sweep (see [`Outcome::frontier_margin`]).
pub fn frontier_margin(rows: &[RunSummary]) -> f64 {
    let mut margin = f64::INFINITY;
    for p in rows.iter().filter(|r| ["natural", "gated", "adaptive"].contains(&r.policy.as_str())) {
        for w in frontier::windows(rows) {
            let q = w.queries as f64 / p.queries.max(1) as f64 - (1.0 - QUERY_NOISE);
            let l = w.latency_ms.p99 / p.latency_ms.p99 - (1.0 - P99_NOISE);
            margin = margin.min(q.max(l));
        }
    }
    margin
}

/// Sweeps and checks the scenario of `seed`.
///
/// # Errors
///
/// If a run fails (an invariant check: a bug).
pub fn study_one(seed: u64, requests: u64) -> Result<Outcome> {
    let s = scenario(seed, requests);
    let mut windows = WINDOWS_MS.to_vec();
    windows.push(s.policy.latency_budget_ms);
    let reps = sweep::run_all(&sweep::variants(&s, &windows), s.replications, &indicatif::ProgressBar::hidden())?;
    let rows: Vec<RunSummary> = reps.iter().map(|r| r.mean.clone()).collect();
    let checks = checks::evaluate(&s, &reps);
    let frontier_margin = frontier_margin(&rows);
    Ok(Outcome { scenario: s, rows, reps, checks, frontier_margin })
}

/// Sweeps and checks the scenarios of `seeds`, in parallel.
///
/// # Errors
///
/// The first run that failed.
pub fn study(seeds: std::ops::Range<u64>, requests: u64) -> Result<Vec<Outcome>> {
    seeds.into_par_iter().map(|seed| study_one(seed, requests)).collect()
}
