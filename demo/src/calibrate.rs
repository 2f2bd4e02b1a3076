//! Measuring the database's cost model, and writing it as a simulator scenario.
//!
//! The simulator models a query's service time as `base + per_key × keys` (mean), `servers`
//! connections, and a `contention` factor: with `n` queries running, each progresses at rate
//! `1 / (1 + contention (n − 1))` (`sim/README.md`, `[db]`). Each is measured here, closed loop:
//! `n` tasks (`n` ≤ the pool, so none waits for a connection) each send query after query of
//! `k` random distinct ids for a fixed time, and the mean time of a `fetch_users` call is taken
//! for every (`n`, `k`). Per `n`, a least-squares line through the means over `k` gives that
//! pool size's `base` and `per_key`. With every client always busy, `n` queries always run, so
//! `S(n, k) = S(1, k) (1 + c (n − 1))`: `c` is the mean of `(S(n, k) / S(1, k) − 1) / (n − 1)`
//! over `k` at the demo's pool size. The spread of single-key times sets the lognormal's shape:
//! `sigma = (ln q84 − ln q16) / 2` (a lognormal's, read from its middle 68 %, so the few queries
//! a busy machine preempts do not inflate it; the simulator's lognormal keeps the mean).
//!
//! What is timed is the whole call as the caller sees it (acquire, the statement, the rows back
//! through sqlx): that is what a batch, or a direct call, costs once sent.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::Serialize;

use crate::db::Database;

/// The mean cost of a query of `keys` ids with `concurrency` queries running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostPoint {
    /// Queries running at once (closed-loop clients).
    pub concurrency: u32,
    /// Ids per query.
    pub keys: u32,
    /// Queries timed.
    pub samples: u64,
    /// Mean time per query, ms.
    pub mean_ms: f64,
    /// Coefficient of variation of the time per query.
    pub cv: f64,
    /// Spread of the log of the time per query, from its 16th and 84th percentiles
    /// (`(ln q84 − ln q16) / 2`: a lognormal's `sigma`, robust to the few queries a busy
    /// machine preempts).
    pub log_spread: f64,
}

/// `base + per_key × keys` fitted at one concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Line {
    /// Queries running at once.
    pub concurrency: u32,
    /// Fixed part, ms.
    pub base_ms: f64,
    /// Per id, ms.
    pub per_key_ms: f64,
}

/// The measured cost model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostModel {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The pool size the demo runs with (the scenario's `servers`).
    pub pool_size: u32,
    /// Every measured point.
    pub points: Vec<CostPoint>,
    /// The fitted line per concurrency.
    pub lines: Vec<Line>,
    /// The scenario's `base_ms` and `per_key_ms`: the line at concurrency 1.
    pub base_ms: f64,
    /// See `base_ms`.
    pub per_key_ms: f64,
    /// Slow-down per extra running query at the pool size (>= 0).
    pub contention: f64,
    /// Lognormal shape from the single-key spread (`log_spread` at concurrency 1, one id).
    pub lognormal_sigma: f64,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrencies (each at most the pool size).
    pub concurrency: Vec<u32>,
    /// Ids per query.
    pub keys: Vec<u32>,
    /// How long each point runs.
    pub per_point: Duration,
    /// Ids are drawn from `1..=users`.
    pub users: u32,
}

impl Plan {
    /// 1, 2 and `pool` queries at once; 1 to 1,000 ids (the demo's batches span that range);
    /// 150 ms a point: 15 points in about 2.5 s.
    pub fn demo(pool: u32, users: u32) -> Plan {
        let mut concurrency = vec![1, 2, pool];
        concurrency.dedup();
        concurrency.retain(|&c| c <= pool);
        Plan { concurrency, keys: vec![1, 10, 50, 200, 1000], per_point: Duration::from_millis(150), users }
    }

    /// Points measured.
    pub fn points(&self) -> usize {
        self.concurrency.len() * self.keys.len()
    }
}

/// Measures `plan` on `db`; `progress` advances by one per point.
///
/// # Errors
///
/// If a query fails, or a point gets no sample.
pub async fn calibrate(db: &Database, plan: &Plan, progress: Option<&ProgressBar>) -> Result<CostModel> {
    let mut points = Vec::new();
    for &n in &plan.concurrency {
        for &k in &plan.keys {
            points.push(measure(db, n, k.min(plan.users), plan).await?);
            if let Some(p) = progress {
                p.inc(1);
            }
        }
    }
    fit(db.backend(), db.pool_size(), points)
}

async fn measure(db: &Database, n: u32, k: u32, plan: &Plan) -> Result<CostPoint> {
    let deadline = Instant::now() + plan.per_point;
    let users = plan.users;
    let clients: Vec<_> = (0..n)
        .map(|c| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64((u64::from(c) << 32) | u64::from(k));
                let mut times = Vec::new();
                // Two unmeasured queries first: the connection and the statement are warm.
                for i in 0.. {
                    let ids: Vec<i64> = sample(&mut rng, users as usize, k as usize).iter().map(|i| i as i64 + 1).collect();
                    let t = Instant::now();
                    db.fetch_users(&ids).await?;
                    if i >= 2 {
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    if Instant::now() >= deadline && times.len() >= 3 {
                        return Ok::<_, sqlx::Error>(times);
                    }
                }
                unreachable!("the loop returns")
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.context("calibration client panicked")??);
    }
    let m = mean(&all);
    let sd = (all.iter().map(|x| (x - m).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    all.sort_unstable_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    let log_spread = (q(0.8413).ln() - q(0.1587).ln()) / 2.0;
    Ok(CostPoint { concurrency: n, keys: k, samples: all.len() as u64, mean_ms: m, cv: sd / m, log_spread })
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Least-squares line through (x, y): (intercept, slope).
pub fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

/// Fits the model to measured points (see the module docs).
///
/// # Errors
///
/// If concurrency 1 was not measured.
pub fn fit(backend: &str, pool_size: u32, points: Vec<CostPoint>) -> Result<CostModel> {
    let mut concurrencies: Vec<u32> = points.iter().map(|p| p.concurrency).collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    let lines: Vec<Line> = concurrencies
        .iter()
        .map(|&n| {
            let xy: Vec<(f64, f64)> =
                points.iter().filter(|p| p.concurrency == n).map(|p| (f64::from(p.keys), p.mean_ms)).collect();
            let (base, slope) = least_squares(&xy);
            // A noisy fit may dip below zero: no query is free or gets cheaper with more ids.
            Line { concurrency: n, base_ms: base.max(0.0), per_key_ms: slope.max(0.0) }
        })
        .collect();
    let one = lines.iter().find(|l| l.concurrency == 1).ok_or_else(|| anyhow!("calibration needs concurrency 1"))?;
    let top = *concurrencies.last().expect("at least concurrency 1");
    let ratios: Vec<f64> = points
        .iter()
        .filter(|p| p.concurrency == top && top > 1)
        .filter_map(|p| {
            let solo = points.iter().find(|q| q.concurrency == 1 && q.keys == p.keys)?;
            Some((p.mean_ms / solo.mean_ms - 1.0) / f64::from(top - 1))
        })
        .collect();
    let contention = if ratios.is_empty() { 0.0 } else { mean(&ratios).max(0.0) };
    let sigma = points.iter().find(|p| p.concurrency == 1 && p.keys == 1).map_or(0.5, |p| p.log_spread);
    Ok(CostModel {
        backend: backend.to_string(),
        pool_size,
        base_ms: one.base_ms,
        per_key_ms: one.per_key_ms,
        contention,
        lognormal_sigma: sigma,
        points,
        lines,
    })
}

impl CostModel {
    /// The simulator scenario of this database: the cost model as `[db]`, the demo's batcher
    /// limits as `[policy]`, and a trace (relative to the scenario file) as `[traffic]`.
    /// Policy and trace are overridden per contender (`--set`).
    pub fn scenario_toml(&self, name: &str, trace: &str, provenance: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# The {} database's cost model, measured by `busline-demo calibrate`.", self.backend);
        for line in provenance.lines() {
            let _ = writeln!(s, "# {line}");
        }
        let _ = writeln!(s, "# Per concurrency (queries running at once): base + per_key x ids, ms:");
        for l in &self.lines {
            let _ = writeln!(s, "#   {}: {:.5} + {:.6} x ids", l.concurrency, l.base_ms, l.per_key_ms);
        }
        let _ = writeln!(s, "name = \"{name}\"");
        let _ = writeln!(s, "seed = 1\n");
        let _ = writeln!(s, "[traffic]\nkind = \"trace\"\npath = \"{trace}\"\ntime_unit = \"ns\"\n");
        let _ = writeln!(s, "[db]");
        let _ = writeln!(s, "servers = {}", self.pool_size);
        let _ = writeln!(s, "service = \"lognormal\"");
        let _ = writeln!(s, "base_ms = {:.6}", self.base_ms);
        let _ = writeln!(s, "per_key_ms = {:.8}", self.per_key_ms);
        let _ = writeln!(s, "contention = {:.4}", self.contention);
        let _ = writeln!(s, "lognormal_sigma = {:.4}\n", self.lognormal_sigma);
        let _ = writeln!(s, "[policy]\nkind = \"natural\"\nmax_batch = 1024\nmax_in_flight = {}", self.pool_size);
        let _ = writeln!(s, "window_ms = 1.0\nthreshold = 2\nlatency_budget_ms = 1.0");
        s
    }

    /// Writes [`scenario_toml`](CostModel::scenario_toml) to `path`.
    ///
    /// # Errors
    ///
    /// If the file cannot be written.
    pub fn write_scenario(&self, path: &Path, name: &str, trace: &str, provenance: &str) -> Result<()> {
        std::fs::write(path, self.scenario_toml(name, trace, provenance)).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(concurrency: u32, keys: u32, mean_ms: f64) -> CostPoint {
        CostPoint { concurrency, keys, samples: 100, mean_ms, cv: 0.2, log_spread: 0.3 }
    }

    #[test]
    fn a_line_is_recovered_exactly() {
        let (a, b) = least_squares(&[(1.0, 0.06), (10.0, 0.15), (100.0, 1.05)]);
        assert!((a - 0.05).abs() < 1e-12 && (b - 0.01).abs() < 1e-12, "{a} {b}");
    }

    #[test]
    fn contention_is_the_slowdown_per_extra_query() {
        // At 4 running, every query takes 1.6x as long: 0.2 per extra query.
        let pts = [1u32, 100]
            .iter()
            .flat_map(|&k| {
                let s = 0.05 + 0.001 * f64::from(k);
                [point(1, k, s), point(4, k, s * 1.6)]
            })
            .collect();
        let m = fit("sqlite", 4, pts).unwrap();
        assert!((m.base_ms - 0.05).abs() < 1e-9 && (m.per_key_ms - 0.001).abs() < 1e-9);
        assert!((m.contention - 0.2).abs() < 1e-9, "{}", m.contention);
        assert_eq!(m.lognormal_sigma, 0.3);
    }

    #[test]
    fn the_scenario_parses_in_the_simulator() {
        let m = fit("sqlite", 4, vec![point(1, 1, 0.05), point(1, 10, 0.06)]).unwrap();
        let text = m.scenario_toml("db-sqlite", "trace.csv", "test");
        let s = busline_sim::Scenario::parse_with(&text, Path::new("."), &["policy.kind=car".into()]).unwrap();
        assert_eq!(s.db.servers, 4);
        assert_eq!(s.limits().max_in_flight, 4);
    }
}
