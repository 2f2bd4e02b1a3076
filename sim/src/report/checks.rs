//! The policies' acceptance checks (issues 5 and 10), computed from a sweep's runs.
//!
//! Nothing here is a verdict written in advance: each check compares measured figures and
//! says by how much it passed or failed.

use super::frontier;
use crate::scenario::Scenario;
use crate::stats::RunSummary;

/// How much slower than car adaptive's p99 latency may be at steady low load.
pub const LOW_LOAD_P99_TOLERANCE: f64 = 0.05;
/// How many more queries than the best fixed window within the budget adaptive may send.
pub const QUERY_TOLERANCE: f64 = 0.05;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether the check is required for this scenario (else it is informative).
    pub required: bool,
    /// `Some(pass)`, or `None` when it cannot be evaluated (the detail says why).
    pub pass: Option<bool>,
    /// The figures behind the outcome.
    pub detail: String,
}

impl Check {
    /// `PASS`, `FAIL`, `n/a`, with `(info)` when not required.
    pub fn verdict(&self) -> String {
        let v = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        if self.required { v.to_string() } else { format!("{v} (info)") }
    }
}

fn find<'a>(rows: &'a [RunSummary], policy: &str) -> Option<&'a RunSummary> {
    rows.iter().find(|r| r.policy == policy)
}

/// The fixed windows (> 0) of a sweep.
pub fn windows(rows: &[RunSummary]) -> impl Iterator<Item = &RunSummary> {
    rows.iter().filter(|r| r.policy == "window" && r.window_ms.unwrap_or(0.0) > 0.0)
}

/// Whether a run's p99 added wait is within the scenario's budget, exactly: at most 1 % of
/// its requests waited longer than `policy.latency_budget_ms` (the histogram's p99 is only
/// within 0.1 %, too coarse for waits that sit exactly at the budget).
pub fn p99_added_wait_within_budget(r: &RunSummary) -> bool {
    r.added_wait_over_budget <= 0.01
}

/// The best fixed window within the budget: the fewest queries among windows (> 0) whose p99
/// added wait is at most the budget.
pub fn best_window_within(rows: &[RunSummary]) -> Option<&RunSummary> {
    windows(rows).filter(|r| p99_added_wait_within_budget(r)).min_by_key(|r| r.queries)
}

/// Evaluates the three checks for one scenario's sweep.
pub fn evaluate(scenario: &Scenario, rows: &[RunSummary]) -> Vec<Check> {
    let budget = scenario.policy.latency_budget_ms;
    let (Some(adaptive), Some(car)) = (find(rows, "adaptive"), find(rows, "car")) else {
        return vec![Check {
            name: "sweep has car and adaptive runs",
            required: true,
            pass: Some(false),
            detail: "missing runs".into(),
        }];
    };
    let mut out = Vec::new();

    // 1. No fixed window beats natural, gated or adaptive on both axes beyond the noise.
    for pos in frontier::positions(rows) {
        out.push(Check {
            name: match pos.run.policy.as_str() {
                "natural" => "no fixed window beats natural on queries (1 %) and p99 (2 %)",
                "gated" => "no fixed window beats gated on queries (1 %) and p99 (2 %)",
                _ => "no fixed window beats adaptive on queries (1 %) and p99 (2 %)",
            },
            required: true,
            pass: Some(pos.beaten_by.is_empty()),
            detail: pos.describe(),
        });
    }

    // 2. At steady low load, adaptive's p99 within 5 % of car's.
    let excess = adaptive.latency_ms.p99 / car.latency_ms.p99 - 1.0;
    out.push(Check {
        name: "adaptive p99 latency within 5 % of car's (steady low load)",
        required: scenario.sweep.low_load,
        pass: Some(excess <= LOW_LOAD_P99_TOLERANCE),
        detail: format!(
            "adaptive p99 {:.3} ms vs car {:.3} ms: {:+.1} %",
            adaptive.latency_ms.p99,
            car.latency_ms.p99,
            excess * 100.0
        ),
    });

    // 3a. Adaptive's p99 added wait within its budget.
    out.push(Check {
        name: "adaptive p99 added wait <= latency budget B",
        required: true,
        pass: Some(p99_added_wait_within_budget(adaptive)),
        detail: format!(
            "p99 added wait {:.3} ms (histogram, ±0.1 %), B = {budget} ms; {:.3} % of requests waited longer than B",
            adaptive.added_wait_ms.p99,
            adaptive.added_wait_over_budget * 100.0
        ),
    });

    // 3b. Adaptive's queries within 10 % of the best window within the budget.
    let best = best_window_within(rows);
    out.push(match best {
        Some(b) => {
            let ratio = adaptive.queries as f64 / b.queries as f64 - 1.0;
            Check {
                name: "adaptive queries within 5 % of the best fixed window with p99 added wait <= B",
                required: true,
                pass: Some(ratio <= QUERY_TOLERANCE),
                detail: format!(
                    "adaptive {} queries vs window {} ms: {} queries ({:+.1} %)",
                    adaptive.queries,
                    b.window_ms.unwrap_or(0.0),
                    b.queries,
                    ratio * 100.0
                ),
            }
        }
        None => Check {
            name: "adaptive queries within 5 % of the best fixed window with p99 added wait <= B",
            required: true,
            pass: None,
            detail: format!("no fixed window kept its p99 added wait within B = {budget} ms"),
        },
    });
    out
}
