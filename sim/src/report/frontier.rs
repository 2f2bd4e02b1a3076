//! Where each policy sits against the fixed-window frontier (issue 10).
//!
//! A sweep runs the scenario under fixed windows of several lengths; each is one point
//! (queries, p99 latency). A policy is **beaten** by a window that sends fewer queries *and*
//! has a lower p99 by more than the noise of one run: at least [`QUERY_NOISE`] fewer queries
//! and [`P99_NOISE`] lower p99. A policy is on the frontier when no window beats it.
//!
//! The **distance** of a policy to the frontier is measured in queries at equal p99: the policy's
//! queries over the fewest queries of any fixed window whose p99 is no higher than the policy's,
//! minus one. Positive: some window does as well on latency with that many fewer queries (a
//! step function, no interpolation between windows: the distance never credits a window the
//! sweep did not run). `None`: every window has a higher p99, the policy is left of the whole
//! frontier.

use crate::stats::RunSummary;

/// Fewer queries by less than this fraction is within the noise of one run.
pub const QUERY_NOISE: f64 = 0.01;
/// A lower p99 by less than this fraction is within the noise of one run (the p99 of ~1e5
/// requests moves by about 1 % from seed to seed; twice that is a real difference).
pub const P99_NOISE: f64 = 0.02;

/// Whether run `a` beats run `b` on both queries and p99 by more than the noise.
pub fn beats(a: &RunSummary, b: &RunSummary) -> bool {
    (a.queries as f64) < (1.0 - QUERY_NOISE) * b.queries as f64
        && a.latency_ms.p99 < (1.0 - P99_NOISE) * b.latency_ms.p99
}

/// The fixed windows (> 0) of a sweep.
pub fn windows(rows: &[RunSummary]) -> impl Iterator<Item = &RunSummary> {
    rows.iter().filter(|r| r.policy == "window" && r.window_ms.unwrap_or(0.0) > 0.0)
}

/// One policy's place against the fixed-window frontier.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The policy's run.
    pub run: RunSummary,
    /// The windows that beat it (see [`beats`]).
    pub beaten_by: Vec<RunSummary>,
    /// The fewest queries of a window with a p99 no higher than the policy's, if any.
    pub frontier_queries: Option<u64>,
}

impl Position {
    /// Queries over the frontier's at equal p99, minus one (see the module docs).
    pub fn distance(&self) -> Option<f64> {
        self.frontier_queries.map(|f| self.run.queries as f64 / f.max(1) as f64 - 1.0)
    }

    /// One line: queries, p99, distance, and the windows that beat it.
    pub fn describe(&self) -> String {
        let r = &self.run;
        let distance = match self.distance() {
            Some(d) => format!("{:+.1} % queries vs the frontier at equal p99", d * 100.0),
            None => "lower p99 than every window".into(),
        };
        let beaten = if self.beaten_by.is_empty() {
            "no window beats it".to_string()
        } else {
            let ws: Vec<String> = self
                .beaten_by
                .iter()
                .map(|w| format!("{} ms ({} queries, p99 {:.3} ms)", w.window_ms.unwrap_or(0.0), w.queries, w.latency_ms.p99))
                .collect();
            format!("beaten by {}", ws.join(", "))
        };
        format!("{} queries, p99 {:.3} ms; {distance}; {beaten}", r.queries, r.latency_ms.p99)
    }
}

/// The position of `run` against the fixed windows of `rows`.
pub fn position(rows: &[RunSummary], run: &RunSummary) -> Position {
    Position {
        run: run.clone(),
        beaten_by: windows(rows).filter(|w| beats(w, run)).cloned().collect(),
        frontier_queries: windows(rows).filter(|w| w.latency_ms.p99 <= run.latency_ms.p99).map(|w| w.queries).min(),
    }
}

/// The positions of the policies that must be on the frontier: natural, gated, adaptive.
pub fn positions(rows: &[RunSummary]) -> Vec<Position> {
    ["natural", "gated", "adaptive"]
        .iter()
        .filter_map(|p| rows.iter().find(|r| r.policy == *p))
        .map(|r| position(rows, r))
        .collect()
}

/// Whether any other run of the sweep beats `run` (see [`beats`]): the frontier plot marks it.
pub fn dominated(rows: &[RunSummary], run: &RunSummary) -> bool {
    rows.iter().any(|other| beats(other, run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LatencySummary, WaitSummary};

    fn run(policy: &str, window_ms: Option<f64>, queries: u64, p99: f64) -> RunSummary {
        let l = LatencySummary { mean: p99, p50: p99, p99, p999: p99, max: p99 };
        let w = WaitSummary { mean: 0.0, p50: 0.0, p99: 0.0, max: 0.0 };
        RunSummary {
            scenario: "s".into(),
            policy: policy.into(),
            window_ms,
            latency_budget_ms: None,
            seed: 0,
            requests: 1000,
            queries,
            mean_batch: 1.0,
            mean_distinct_keys: 1.0,
            sim_time_s: 1.0,
            offered_per_s: 1.0,
            queries_per_s: 1.0,
            latency_ms: l,
            added_wait_ms: w,
            added_wait_over_budget: 0.0,
            in_flight_wait_ms: w,
            connection_wait_ms: w,
            db_wait_ms: w,
            service_ms: w,
            db_utilization: 0.5,
            final_window_ms: 0.0,
        }
    }

    #[test]
    fn beaten_only_beyond_the_noise_on_both_axes() {
        let p = run("natural", None, 1000, 10.0);
        assert!(beats(&run("window", Some(1.0), 980, 9.7), &p));
        assert!(!beats(&run("window", Some(1.0), 995, 9.0), &p), "queries within noise");
        assert!(!beats(&run("window", Some(1.0), 500, 9.9), &p), "p99 within noise");
    }

    #[test]
    fn distance_at_equal_p99() {
        let rows = vec![
            run("natural", None, 1000, 10.0),
            run("window", Some(0.1), 900, 11.0),
            run("window", Some(0.5), 800, 9.5),
            run("window", Some(1.0), 600, 10.0),
            run("window", Some(5.0), 100, 30.0),
        ];
        let pos = position(&rows, &rows[0]);
        // Windows with p99 <= 10: 0.5 (800) and 1.0 (600): the frontier's 600 at equal p99.
        assert_eq!(pos.frontier_queries, Some(600));
        assert!((pos.distance().unwrap() - (1000.0 / 600.0 - 1.0)).abs() < 1e-12);
        // 0.5 ms beats it (-20 % queries, -5 % p99); 1.0 ms has the same p99: not beyond noise.
        assert_eq!(pos.beaten_by.len(), 1);
        assert_eq!(pos.beaten_by[0].window_ms, Some(0.5));
        let fast = run("car", None, 2000, 1.0);
        assert_eq!(position(&rows, &fast).distance(), None);
        assert!(dominated(&rows, &rows[1]));
        assert!(!dominated(&rows, &rows[3]));
    }
}
