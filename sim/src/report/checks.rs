//! The policies' acceptance checks (issues 5 and 10), computed from a sweep's replications.
//!
//! Nothing here is a verdict written in advance: each check compares measured figures and
//! says by how much it passed or failed. A comparison decides only when the difference is
//! larger than its 95 % interval over the paired replications (issue 15), and, for latency
//! quantiles, larger than one histogram bucket too (relative width 2⁻¹⁰, see
//! `stats/histogram.rs`); otherwise it says "tie". With one replication there is no interval,
//! and only the bucket separates a difference from a tie.

use super::frontier;
use crate::replicate::Replicated;
use crate::scenario::Scenario;
use crate::stats::RunSummary;
use crate::stats::interval::{Estimate, paired_ratio};

/// How much slower than car adaptive's p99 latency may be at steady low load.
pub const LOW_LOAD_P99_TOLERANCE: f64 = 0.05;
/// How many more queries than the best fixed window within the budget adaptive may send.
pub const QUERY_TOLERANCE: f64 = 0.05;
pub use super::frontier::BUCKET;

/// What a check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Holds beyond the interval.
    Pass,
    /// Fails beyond the interval.
    Fail,
    /// The interval straddles the threshold: the replications cannot tell.
    Tie,
    /// Cannot be evaluated (the detail says why).
    NotApplicable,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether the check is required for this scenario (else it is informative).
    pub required: bool,
    /// The conclusion.
    pub outcome: Outcome,
    /// The figures behind the outcome.
    pub detail: String,
}

impl Check {
    /// `PASS`, `FAIL`, `TIE`, `n/a`, with `(info)` when not required.
    pub fn verdict(&self) -> String {
        let v = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Tie => "TIE",
            Outcome::NotApplicable => "n/a",
        };
        if self.required { v.to_string() } else { format!("{v} (info)") }
    }
}

fn find<'a>(reps: &'a [Replicated], policy: &str) -> Option<&'a Replicated> {
    reps.iter().find(|r| r.mean.policy == policy)
}

/// The fixed windows (> 0) of a sweep.
pub fn windows(rows: &[RunSummary]) -> impl Iterator<Item = &RunSummary> {
    rows.iter().filter(|r| r.policy == "window" && r.window_ms.unwrap_or(0.0) > 0.0)
}

/// Whether a run's p99 added wait is within the scenario's budget, exactly: at most 1 % of
/// its requests waited longer than `policy.latency_budget_ms` (the histogram's p99 is only
/// within 0.1 %, too coarse for waits that sit exactly at the budget). On a mean over
/// replications: the mean fraction.
pub fn p99_added_wait_within_budget(r: &RunSummary) -> bool {
    r.added_wait_over_budget <= 0.01
}

/// The best fixed window within the budget: the fewest queries (mean over replications)
/// among windows (> 0) whose p99 added wait is at most the budget.
pub fn best_window_within(rows: &[RunSummary]) -> Option<&RunSummary> {
    windows(rows).filter(|r| p99_added_wait_within_budget(r)).min_by_key(|r| r.queries)
}

/// An estimate against an "at most" tolerance: pass when the whole interval is at or below
/// it, fail when the whole interval is above it, tie when it straddles it.
fn against_tolerance(e: Estimate, tolerance: f64) -> Outcome {
    if e.hi() <= tolerance {
        Outcome::Pass
    } else if e.lo() > tolerance {
        Outcome::Fail
    } else {
        Outcome::Tie
    }
}

fn pct(e: Estimate) -> String {
    let scaled = Estimate { mean: e.mean * 100.0, half_width: e.half_width * 100.0, n: e.n };
    format!("{} %", scaled.show(1))
}

/// Evaluates the checks for one scenario's sweep (each policy with its replications).
pub fn evaluate(scenario: &Scenario, reps: &[Replicated]) -> Vec<Check> {
    let budget = scenario.policy.latency_budget_ms;
    let (Some(adaptive), Some(car)) = (find(reps, "adaptive"), find(reps, "car")) else {
        return vec![Check {
            name: "sweep has car and adaptive runs",
            required: true,
            outcome: Outcome::Fail,
            detail: "missing runs".into(),
        }];
    };
    let n = adaptive.runs.len();
    let mut out = Vec::new();

    // 1. No fixed window beats natural, gated or adaptive on both axes beyond the noise bars
    // and the interval of the paired replications (`frontier`).
    for pos in frontier::positions(reps) {
        out.push(Check {
            name: match pos.run.policy.as_str() {
                "natural" => "no fixed window beats natural on queries (1 %) and p99 (2 %)",
                "gated" => "no fixed window beats gated on queries (1 %) and p99 (2 %)",
                _ => "no fixed window beats adaptive on queries (1 %) and p99 (2 %)",
            },
            required: true,
            outcome: if !pos.beaten_by.is_empty() {
                Outcome::Fail
            } else if !pos.ties.is_empty() {
                Outcome::Tie
            } else {
                Outcome::Pass
            },
            detail: format!("{}; {n} replication(s)", pos.describe()),
        });
    }

    // 2. At steady low load, adaptive's p99 within 5 % of car's.
    let excess = paired_ratio(&adaptive.runs, &car.runs, |r| r.latency_ms.p99).widened(BUCKET);
    out.push(Check {
        name: "adaptive p99 latency within 5 % of car's (steady low load)",
        required: scenario.sweep.low_load,
        outcome: against_tolerance(excess, LOW_LOAD_P99_TOLERANCE),
        detail: format!(
            "adaptive p99 {} ms vs car {} ms: {} (paired, ± one bucket)",
            adaptive.estimate(|r| r.latency_ms.p99).show(3),
            car.estimate(|r| r.latency_ms.p99).show(3),
            pct(excess)
        ),
    });

    // 3a. Adaptive's p99 added wait within its budget: at most 1 % of requests waited longer.
    let over = adaptive.estimate(|r| r.added_wait_over_budget);
    out.push(Check {
        name: "adaptive p99 added wait <= latency budget B",
        required: true,
        outcome: against_tolerance(over, 0.01),
        detail: format!(
            "p99 added wait {} ms (histogram, ±0.1 %), B = {budget} ms; {} of requests waited longer than B (limit 1 %)",
            adaptive.estimate(|r| r.added_wait_ms.p99).show(3),
            pct(over)
        ),
    });

    // 3b. Adaptive's queries within 5 % of the best window within the budget.
    let best = best_window_within(&reps.iter().map(|r| r.mean.clone()).collect::<Vec<_>>())
        .and_then(|b| reps.iter().find(|r| r.mean.policy == "window" && r.mean.window_ms == b.window_ms));
    const QUERIES: &str = "adaptive queries within 5 % of the best fixed window with p99 added wait <= B";
    out.push(match best {
        Some(b) => {
            let ratio = paired_ratio(&adaptive.runs, &b.runs, |r| r.queries as f64);
            Check {
                name: QUERIES,
                required: true,
                outcome: against_tolerance(ratio, QUERY_TOLERANCE),
                detail: format!(
                    "adaptive {} queries vs window {} ms: {} queries ({}, paired)",
                    adaptive.estimate(|r| r.queries as f64).show(0),
                    b.mean.window_ms.unwrap_or(0.0),
                    b.estimate(|r| r.queries as f64).show(0),
                    pct(ratio)
                ),
            }
        }
        None => Check {
            name: QUERIES,
            required: true,
            outcome: Outcome::NotApplicable,
            detail: format!("no fixed window kept its p99 added wait within B = {budget} ms"),
        },
    });
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::{RunOptions, run};

    const TEXT: &str = "name = \"c\"\nrequests = 100\n[traffic]\nkind = \"poisson\"\nrate_per_s = 100.0\n\
                        [policy]\nkind = \"adaptive\"\n";

    fn scenario() -> Scenario {
        Scenario::parse_with(TEXT, Path::new("."), &[]).unwrap()
    }

    /// Replications of `policy` with these (queries, p99 ms) figures.
    fn reps(policy: &str, window_ms: Option<f64>, figures: &[(u64, f64)]) -> Replicated {
        let template = run(&scenario(), &RunOptions::default()).unwrap().summary;
        Replicated::new(
            figures
                .iter()
                .map(|&(q, p99)| {
                    let mut r = template.clone();
                    r.policy = policy.into();
                    r.window_ms = window_ms;
                    r.queries = q;
                    r.latency_ms.p99 = p99;
                    r
                })
                .collect(),
        )
    }

    #[test]
    fn a_window_beaten_policy_fails_and_a_tie_is_a_tie() {
        let adaptive = [(1000, 3.0), (1040, 3.2), (980, 2.9), (1010, 3.1), (995, 3.0)];
        let a = reps("adaptive", None, &adaptive);
        let car = reps("car", None, &adaptive.map(|(q, p)| (q * 5, p * 10.0)));
        // 2 % fewer queries every time, and a p99 lower than the 2 % bar by only a third of a
        // bucket: the queries are beyond doubt, the latency is a tie.
        let near = adaptive.map(|(q, p)| (q * 98 / 100, p * (0.98 + frontier::BUCKET / 3.0)));
        // 10 % fewer queries and 10 % lower p99 every time: beaten.
        let better = adaptive.map(|(q, p)| (q * 90 / 100, p * 0.9));
        let (w1, w2) = (reps("window", Some(1.0), &near), reps("window", Some(2.0), &better));

        let all = [car.clone(), a.clone(), w1.clone(), w2];
        let checks = evaluate(&scenario(), &all);
        assert_eq!(checks[0].outcome, Outcome::Fail, "{}", checks[0].detail);
        assert!(checks[0].detail.contains("beaten by 2 ms") && checks[0].detail.contains("tie"), "{}", checks[0].detail);
        let checks = evaluate(&scenario(), &[car.clone(), a.clone(), w1]);
        assert_eq!(checks[0].outcome, Outcome::Tie, "{}", checks[0].detail);
        let checks = evaluate(&scenario(), &[car, a]);
        assert_eq!(checks[0].outcome, Outcome::Pass, "{}", checks[0].detail);
    }

    #[test]
    fn a_tolerance_straddled_by_the_interval_is_a_tie() {
        let e = |mean, half_width| Estimate { mean, half_width, n: 5 };
        assert_eq!(against_tolerance(e(0.05, 0.01), 0.10), Outcome::Pass);
        assert_eq!(against_tolerance(e(0.09, 0.02), 0.10), Outcome::Tie);
        assert_eq!(against_tolerance(e(0.15, 0.02), 0.10), Outcome::Fail);
        assert_eq!(against_tolerance(e(0.01, 0.0), 0.01), Outcome::Pass, "at most the limit");
    }
}
