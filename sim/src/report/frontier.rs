//! Where each policy sits against the fixed-window frontier (issue 10), decided over paired
//! replications (issue 15).
//!
//! A sweep runs the scenario under fixed windows of several lengths; each is one point
//! (queries, p99 latency). A window **beats** a policy when it sends fewer queries *and* has a
//! lower p99 by more than the noise bars, [`QUERY_NOISE`] and [`P99_NOISE`], and by more than
//! the 95 % interval of the paired replications (for the p99, widened by one histogram bucket,
//! [`BUCKET`]): the whole interval of the paired ratio `window / policy − 1` lies below
//! `−QUERY_NOISE` on queries and below `−P99_NOISE` on p99. When neither interval lies wholly
//! above its bar but they do not both lie below it, the replications cannot tell: a **tie**.
//! A policy is on the frontier when no window beats it. With one replication there is no
//! interval, and only the bucket separates a difference from a tie.
//!
//! The **distance** of a policy to the frontier is measured in queries at equal p99 (on the
//! means over replications): the policy's queries over the fewest queries of any fixed window
//! whose p99 is no higher than the policy's, minus one. Positive: some window does as well on
//! latency with that many fewer queries (a step function, no interpolation between windows:
//! the distance never credits a window the sweep did not run). `None`: every window has a
//! higher p99, the policy is left of the whole frontier.

use crate::replicate::Replicated;
use crate::stats::RunSummary;
use crate::stats::interval::{Estimate, Side, paired_ratio};

/// Fewer queries by less than this fraction is within the noise of one run.
pub const QUERY_NOISE: f64 = 0.01;
/// A lower p99 by less than this fraction is within the noise of one run (the p99 of ~1e5
/// requests moves by about 1 % from seed to seed; twice that is a real difference).
pub const P99_NOISE: f64 = 0.02;
/// Relative width of one latency histogram bucket (1024 buckets per power of two, see
/// `stats/histogram.rs`).
pub const BUCKET: f64 = 1.0 / 1024.0;

/// Whether the point estimates of run `a` beat run `b` on both queries and p99 by more than
/// the noise bars (no interval: the frontier plot's marking and the generated margin).
pub fn beats(a: &RunSummary, b: &RunSummary) -> bool {
    (a.queries as f64) < (1.0 - QUERY_NOISE) * b.queries as f64
        && a.latency_ms.p99 < (1.0 - P99_NOISE) * b.latency_ms.p99
}

/// A window against a policy over their paired replications.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Against {
    /// Window / policy − 1, queries.
    pub queries: Estimate,
    /// Window / policy − 1, p99 latency, widened by one bucket.
    pub p99: Estimate,
}

impl Against {
    /// Compares `window` with `policy` replication by replication.
    pub fn of(window: &Replicated, policy: &Replicated) -> Against {
        Against {
            queries: paired_ratio(&window.runs, &policy.runs, |r| r.queries as f64),
            p99: paired_ratio(&window.runs, &policy.runs, |r| r.latency_ms.p99).widened(BUCKET),
        }
    }

    /// Both intervals below their noise bars: the window beats the policy.
    pub fn beats(&self) -> bool {
        self.queries.against(-QUERY_NOISE) == Side::Below && self.p99.against(-P99_NOISE) == Side::Below
    }

    /// Not beaten, but neither interval lies wholly above its bar: the replications cannot
    /// tell.
    pub fn ties(&self) -> bool {
        !self.beats() && self.queries.against(-QUERY_NOISE) != Side::Above && self.p99.against(-P99_NOISE) != Side::Above
    }
}

/// The fixed windows (> 0) of a sweep.
pub fn windows(rows: &[RunSummary]) -> impl Iterator<Item = &RunSummary> {
    rows.iter().filter(|r| r.policy == "window" && r.window_ms.unwrap_or(0.0) > 0.0)
}

fn replicated_windows(reps: &[Replicated]) -> impl Iterator<Item = &Replicated> {
    reps.iter().filter(|r| r.mean.policy == "window" && r.mean.window_ms.unwrap_or(0.0) > 0.0)
}

/// One policy's place against the fixed-window frontier.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The policy's mean over its replications.
    pub run: RunSummary,
    /// The windows that beat it (means), with the comparison.
    pub beaten_by: Vec<(RunSummary, Against)>,
    /// The windows it ties with (means), with the comparison.
    pub ties: Vec<(RunSummary, Against)>,
    /// The fewest queries (mean) of a window with a mean p99 no higher than the policy's.
    pub frontier_queries: Option<u64>,
}

fn list(ws: &[(RunSummary, Against)]) -> String {
    let ws: Vec<String> = ws
        .iter()
        .map(|(w, c)| {
            format!(
                "{} ms (queries {:+.2} ± {:.2} %, p99 {:+.2} ± {:.2} %)",
                w.window_ms.unwrap_or(0.0),
                c.queries.mean * 100.0,
                c.queries.half_width * 100.0,
                c.p99.mean * 100.0,
                c.p99.half_width * 100.0
            )
        })
        .collect();
    ws.join(", ")
}

impl Position {
    /// Queries over the frontier's at equal p99, minus one (see the module docs).
    pub fn distance(&self) -> Option<f64> {
        self.frontier_queries.map(|f| self.run.queries as f64 / f.max(1) as f64 - 1.0)
    }

    /// One line: queries, p99, distance, the windows that beat it and those it ties with.
    pub fn describe(&self) -> String {
        let r = &self.run;
        let distance = match self.distance() {
            Some(d) => format!("{:+.1} % queries vs the frontier at equal p99", d * 100.0),
            None => "lower p99 than every window".into(),
        };
        let beaten = if self.beaten_by.is_empty() {
            "no window beats it beyond the noise and the interval".to_string()
        } else {
            format!("beaten by {}", list(&self.beaten_by))
        };
        let ties =
            if self.ties.is_empty() { String::new() } else { format!("; tie (within the interval): {}", list(&self.ties)) };
        format!("{} queries, p99 {:.3} ms; {distance}; {beaten}{ties}", r.queries, r.latency_ms.p99)
    }
}

/// The position of `policy` against the fixed windows of `reps`.
pub fn position(reps: &[Replicated], policy: &Replicated) -> Position {
    let mut beaten_by = Vec::new();
    let mut ties = Vec::new();
    for w in replicated_windows(reps) {
        let c = Against::of(w, policy);
        if c.beats() {
            beaten_by.push((w.mean.clone(), c));
        } else if c.ties() {
            ties.push((w.mean.clone(), c));
        }
    }
    let run = &policy.mean;
    Position {
        run: run.clone(),
        beaten_by,
        ties,
        frontier_queries: replicated_windows(reps)
            .filter(|w| w.mean.latency_ms.p99 <= run.latency_ms.p99)
            .map(|w| w.mean.queries)
            .min(),
    }
}

/// The positions of the policies that must be on the frontier: natural, gated, adaptive.
pub fn positions(reps: &[Replicated]) -> Vec<Position> {
    ["natural", "gated", "adaptive"]
        .iter()
        .filter_map(|p| reps.iter().find(|r| r.mean.policy == *p))
        .map(|r| position(reps, r))
        .collect()
}

/// Whether any other run's point estimate beats `run`'s (see [`beats`]): the frontier plot
/// marks it. The checks decide with the intervals ([`position`]); the plot shows the means.
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
            horizon_s: 1.0,
            drain_s: 0.0,
            drain_queries: 0,
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
            db_occupancy: 0.5,
            final_window_ms: 0.0,
            client: None,
        }
    }

    /// Replications of `policy` with these (queries, p99 ms) figures.
    fn reps(policy: &str, window_ms: Option<f64>, figures: &[(u64, f64)]) -> Replicated {
        Replicated::new(figures.iter().map(|&(q, p)| run(policy, window_ms, q, p)).collect())
    }

    fn one(policy: &str, window_ms: Option<f64>, queries: u64, p99: f64) -> Replicated {
        reps(policy, window_ms, &[(queries, p99)])
    }

    #[test]
    fn beaten_only_beyond_the_noise_on_both_axes() {
        let p = one("natural", None, 1000, 10.0);
        assert!(Against::of(&one("window", Some(1.0), 980, 9.7), &p).beats());
        assert!(!Against::of(&one("window", Some(1.0), 995, 9.0), &p).beats(), "queries within noise");
        assert!(!Against::of(&one("window", Some(1.0), 500, 9.9), &p).beats(), "p99 within noise");
        // One replication: p99 2 % lower up to a third of a bucket is within the bucket: a tie.
        let c = Against::of(&one("window", Some(1.0), 900, 10.0 * (0.98 - BUCKET / 3.0)), &p);
        assert!(!c.beats() && c.ties(), "{c:?}");
    }

    #[test]
    fn beaten_only_beyond_the_interval_of_the_replications() {
        let policy = [(1000, 3.0), (1040, 3.2), (980, 2.9), (1010, 3.1), (995, 3.0)];
        let p = reps("adaptive", None, &policy);
        // 5 % fewer queries and 5 % lower p99 every time: beaten beyond doubt.
        let better = policy.map(|(q, l)| (q * 95 / 100, l * 0.95));
        assert!(Against::of(&reps("window", Some(2.0), &better), &p).beats());
        // Better by 5 % on average, but one replication the other way round: a tie.
        let mixed = [(950, 2.85), (990, 3.04), (1030, 3.05), (940, 2.75), (945, 2.85)];
        let c = Against::of(&reps("window", Some(5.0), &mixed), &p);
        assert!(!c.beats() && c.ties(), "{c:?}");
        // Worse on queries beyond the interval: neither beaten nor a tie.
        let worse = policy.map(|(q, l)| (q * 2, l * 0.5));
        let c = Against::of(&reps("window", Some(0.1), &worse), &p);
        assert!(!c.beats() && !c.ties(), "{c:?}");
    }

    #[test]
    fn distance_at_equal_p99() {
        let rows = vec![
            one("natural", None, 1000, 10.0),
            one("window", Some(0.1), 900, 11.0),
            one("window", Some(0.5), 800, 9.5),
            one("window", Some(1.0), 600, 10.0),
            one("window", Some(5.0), 100, 30.0),
        ];
        let pos = position(&rows, &rows[0]);
        // Windows with p99 <= 10: 0.5 (800) and 1.0 (600): the frontier's 600 at equal p99.
        assert_eq!(pos.frontier_queries, Some(600));
        assert!((pos.distance().unwrap() - (1000.0 / 600.0 - 1.0)).abs() < 1e-12);
        // 0.5 ms beats it (-20 % queries, -5 % p99); 1.0 ms has the same p99: not beyond noise.
        assert_eq!(pos.beaten_by.len(), 1);
        assert_eq!(pos.beaten_by[0].0.window_ms, Some(0.5));
        assert_eq!(position(&rows, &one("car", None, 2000, 1.0)).distance(), None);
        let means: Vec<RunSummary> = rows.iter().map(|r| r.mean.clone()).collect();
        assert!(dominated(&means, &means[1]));
        assert!(!dominated(&means, &means[3]));
    }
}
