//! The simulator checked against the database: the calibrated scenario, the exact arrivals a
//! contender's replay had, the same policy; predicted queries, mean and p99 latency against
//! what was measured.
//!
//! The simulator's service times are random (lognormal around the calibrated mean), so a
//! prediction is the mean over a few seeds: the figures then reflect the model, not one draw.

use std::path::Path;

use anyhow::{Context, Result};
use busline::Policy;
use busline_sim::engine::{RunOptions, run};
use busline_sim::scenario::Scenario;
use serde::Serialize;

use crate::replay::{Contender, ContenderSpec, Measured};

/// Seeds a prediction averages over.
pub const SEEDS: u64 = 5;

/// The goals of issue 13: queries within 5 %, mean latency within 15 %, p99 within 25 %.
pub const GOAL_QUERIES: f64 = 0.05;
/// See [`GOAL_QUERIES`].
pub const GOAL_MEAN: f64 = 0.15;
/// See [`GOAL_QUERIES`].
pub const GOAL_P99: f64 = 0.25;

/// The relative change of a gated window the report simulates either way (10 %): the
/// sensitivity of the gated count to the gate's timing.
pub const SENSITIVITY: f64 = 0.1;

/// The relative change of the queries' cost (`base_ms`, `per_key_ms`) the report simulates
/// direct calls with either way (5 %): the sensitivity of their queue under the spike.
pub const COST_SENSITIVITY: f64 = 0.05;

/// The simulator's prediction for one contender.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// Queries (batches), mean over the seeds.
    pub queries: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// Mean wait for a connection (dispatch to service), ms.
    pub db_wait_ms: f64,
    /// Per request, mean of each stage of its latency, ms: call to seal (the policy's wait
    /// and the driver's reaction), seal to the query's start (the launch, the pool, a busy
    /// database), the query, and the way back; they add up to `mean_ms`.
    pub stages_ms: [f64; 4],
}

/// Predicted against measured, as relative errors `(predicted − measured) / measured`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Errors {
    /// Of the query count.
    pub queries: f64,
    /// Of the mean latency.
    pub mean: f64,
    /// Of the p99 latency.
    pub p99: f64,
}

impl Errors {
    /// `prediction` against `measured`.
    pub fn of(prediction: &Prediction, measured: &Measured) -> Errors {
        let rel = |p: f64, m: f64| if m > 0.0 { (p - m) / m } else { f64::NAN };
        Errors {
            queries: rel(prediction.queries, measured.db.queries as f64),
            mean: rel(prediction.mean_ms, measured.latency.mean() / 1e6),
            p99: rel(prediction.p99_ms, measured.latency.quantile(0.99) as f64 / 1e6),
        }
    }

    /// Whether each figure meets its goal: (queries, mean, p99).
    pub fn met(&self) -> (bool, bool, bool) {
        (self.queries.abs() <= GOAL_QUERIES, self.mean.abs() <= GOAL_MEAN, self.p99.abs() <= GOAL_P99)
    }
}

/// The `--set` overrides that take the batcher's own delays out of a scenario: its driver's
/// reaction and launch and the way back through it. A direct call has none of them; it keeps
/// the wake-up of a query sent to idle threads.
pub const NO_BATCHER: [&str; 5] = [
    "driver.reaction_us=[]",
    "driver.timer_reaction_us=[]",
    "driver.launch_us=[]",
    "driver.answer_us=[]",
    "driver.answer_per_caller_us=0",
];

/// The `--set` overrides that leave `[driver]` as it was before the way back and the wake-up
/// were modelled: the driver's reaction and launch only.
pub const REACTION_ONLY: [&str; 3] = ["driver.answer_us=[]", "driver.answer_per_caller_us=0", "driver.wake_us=[]"];

/// The `--set` overrides that take every `[driver]` delay out of a scenario (what the
/// simulator predicted before it modelled any): [`NO_BATCHER`] and the wake-up.
pub const NO_DRIVER: [&str; 6] = [
    "driver.reaction_us=[]",
    "driver.timer_reaction_us=[]",
    "driver.launch_us=[]",
    "driver.answer_us=[]",
    "driver.answer_per_caller_us=0",
    "driver.wake_us=[]",
];

/// The `--set` overrides that take the application's work per request (`[cpu]`) out of a
/// scenario: the simulator before it modelled the application's CPU.
pub const NO_CPU: [&str; 3] = ["cpu.request_us=0", "cpu.direct_request_us=0", "cpu.timer_us=0"];

/// The `--set` overrides that give `[cpu]` its model before processor sharing: the work per
/// request queued with the queries, first come first served, each job holding a server, and no
/// driver's CPU before a deadline.
pub const QUEUED_CPU: [&str; 2] = ["cpu.sharing=queue", "cpu.timer_us=0"];

/// The `--set` overrides that put `contender` into a scenario (the batcher's policy; direct calls
/// are the simulator's car: one query per request, at most `servers` at once, the rest waiting
/// in arrival order, as they wait for sqlx's pool, and no batcher driver in between: of
/// `[driver]` only the wake-up is left).
pub fn policy_overrides(contender: &Contender) -> Vec<String> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    match contender {
        Contender::Direct => ["policy.kind=car"].iter().chain(&NO_BATCHER).map(|s| (*s).to_string()).collect(),
        Contender::Batched(Policy::Window { window }) => {
            vec!["policy.kind=window".into(), format!("policy.window_ms={}", ms(*window))]
        }
        Contender::Batched(Policy::Gated { window, threshold }) => vec![
            "policy.kind=gated".into(),
            format!("policy.window_ms={}", ms(*window)),
            format!("policy.threshold={threshold}"),
        ],
        Contender::Batched(Policy::Adaptive(cfg)) => {
            vec!["policy.kind=adaptive".into(), format!("policy.latency_budget_ms={}", ms(cfg.latency_budget))]
        }
        Contender::Batched(_) => vec!["policy.kind=natural".into()],
    }
}

/// Simulates `spec` in the scenario at `scenario_path` with its trace replaced by `trace_path`
/// (relative to the scenario's directory), over [`SEEDS`] seeds.
///
/// # Errors
///
/// If the scenario or trace cannot be loaded or the simulator fails a check.
pub fn predict(scenario_path: &Path, trace_path: &str, spec: &ContenderSpec) -> Result<Prediction> {
    predict_with(scenario_path, trace_path, spec, &[])
}

/// [`predict`] with further `--set` overrides (`extra`, e.g. [`NO_DRIVER`]).
///
/// # Errors
///
/// As [`predict`], and if an override is rejected.
pub fn predict_with(scenario_path: &Path, trace_path: &str, spec: &ContenderSpec, extra: &[&str]) -> Result<Prediction> {
    let mut sum = Prediction { queries: 0.0, mean_ms: 0.0, p99_ms: 0.0, db_wait_ms: 0.0, stages_ms: [0.0; 4] };
    for seed in 1..=SEEDS {
        let mut sets = policy_overrides(&spec.contender);
        sets.extend(extra.iter().map(|s| (*s).to_string()));
        sets.push(format!("traffic.path={trace_path}"));
        sets.push(format!("seed={seed}"));
        let scenario = Scenario::load_with(scenario_path, &sets)?;
        let out = run(&scenario, &RunOptions::default()).with_context(|| format!("simulating {}", spec.label))?;
        let s = &out.summary;
        sum.queries += s.queries as f64;
        sum.mean_ms += s.latency_ms.mean;
        sum.p99_ms += s.latency_ms.p99;
        sum.db_wait_ms += s.db_wait_ms.mean;
        let stages = [(out.added_wait.mean() + out.in_flight_wait.mean()), out.connection_wait.mean(), out.service.mean()];
        for (total, stage) in sum.stages_ms.iter_mut().zip(stages) {
            *total += stage / 1e6;
        }
        sum.stages_ms[3] += s.latency_ms.mean - (stages.iter().sum::<f64>() / 1e6);
    }
    let n = SEEDS as f64;
    Ok(Prediction {
        queries: sum.queries / n,
        mean_ms: sum.mean_ms / n,
        p99_ms: sum.p99_ms / n,
        db_wait_ms: sum.db_wait_ms / n,
        stages_ms: sum.stages_ms.map(|x| x / n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::contenders;

    #[test]
    fn every_contender_maps_to_a_valid_simulator_policy() {
        let base = "name = \"t\"\n[traffic]\nkind = \"trace\"\npath = \"x.csv\"\n\
                    [driver]\nreaction_us = [3]\nanswer_us = [5]\nanswer_per_caller_us = 1.5\nwake_us = [20]\n";
        for c in contenders() {
            let s = Scenario::parse_with(base, Path::new("."), &policy_overrides(&c.contender)).unwrap();
            let expected = match c.contender {
                Contender::Direct => "car",
                Contender::Batched(p) => p.name(),
            };
            assert_eq!(s.policy().unwrap().name(), expected, "{}", c.label);
            // Direct calls have no batcher: no driver's delay, no way back; the wake-up stays.
            let d = &s.driver;
            let batcher_delays = !d.reaction_us.is_empty() && !d.answer_us.is_empty() && d.answer_per_caller_us > 0.0;
            assert_eq!(batcher_delays, c.contender != Contender::Direct, "{}", c.label);
            assert_eq!(d.wake_us, vec![20.0], "{}", c.label);
            if let Contender::Batched(p) = c.contender {
                assert_eq!(s.policy().unwrap(), p, "{}", c.label);
            }
        }
    }
}
