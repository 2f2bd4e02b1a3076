//! Reports: a sweep's CSV and plots, the policy checks (issues 5 and 10), the generated
//! scenarios, and `reports/sim/README.md`.

pub mod checks;
pub mod fleet;
pub mod clients_plot;
pub mod frontier;
pub mod generated;
pub mod plots;
pub mod png;
mod readme;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use crate::engine::{RunOptions, run};
use crate::replicate::Replicated;
use crate::scenario::{PolicyKind, Scenario};
use crate::stats::{RunSummary, TimeSeries};
use crate::sweep;

pub use checks::Check;

/// Generated scenarios in the report (the tests run the same 50 at 20,000 requests).
pub const GENERATED_SCENARIOS: u64 = 50;
/// Requests per run of a generated scenario in the report.
pub const GENERATED_REQUESTS: u64 = 50_000;

/// One scenario's sweep with its time series and checks.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The scenario as run.
    pub scenario: Scenario,
    /// Every policy's mean over its replications: the references (car, natural, gated,
    /// adaptive), then each window.
    pub rows: Vec<RunSummary>,
    /// The replications behind each row, in the same order.
    pub reps: Vec<Replicated>,
    /// (legend label, policy, series) for car, the best window, natural, gated, adaptive.
    pub series: Vec<(String, String, TimeSeries)>,
    /// The issue-5 checks.
    pub checks: Vec<Check>,
}

/// Sweeps `scenario` over `windows_ms` and the references (each `replications` times),
/// re-runs the policies of the time-series plot with buckets on (replication 0), and evaluates
/// the checks.
///
/// # Errors
///
/// The first run that failed.
pub fn analyse(scenario: &Scenario, windows_ms: &[f64]) -> Result<Analysis> {
    let runs = sweep::variants(scenario, windows_ms);
    let reps_per = u64::from(scenario.replications.max(1));
    let bar = sweep::progress(runs.len() as u64 * reps_per + 5, &scenario.name);
    let reps = sweep::run_all(&runs, scenario.replications, &bar)?;
    let rows: Vec<RunSummary> = reps.iter().map(|r| r.mean.clone()).collect();
    let checks = checks::evaluate(scenario, &reps);

    let budget = scenario.policy.latency_budget_ms;
    let best = checks::best_window_within(&rows).or_else(|| {
        checks::windows(&rows).min_by(|a, b| a.latency_ms.p99.total_cmp(&b.latency_ms.p99))
    });
    let sim_s = rows.iter().map(|r| r.sim_time_s).fold(0.0, f64::max);
    let bucket_ms = scenario.sweep.bucket_ms.unwrap_or(sim_s * 1e3 / 150.0).max(1e-3);
    let mut picks: Vec<(String, Scenario)> = vec![("car".into(), scenario.with_policy(PolicyKind::Car, None))];
    if let Some(b) = best {
        let w = b.window_ms.unwrap_or(0.0);
        picks.push((format!("best window ({w} ms)"), scenario.with_policy(PolicyKind::Window, Some(w))));
    }
    picks.push(("natural".into(), scenario.with_policy(PolicyKind::Natural, None)));
    picks.push((format!("gated ({budget} ms)"), scenario.with_policy(PolicyKind::Gated, Some(budget))));
    picks.push((format!("adaptive (B = {budget} ms)"), scenario.with_policy(PolicyKind::Adaptive, None)));
    let opts = RunOptions { timeseries_bucket_ns: Some((bucket_ms * 1e6) as u64), ..RunOptions::default() };
    let series = picks
        .par_iter()
        .map(|(label, s)| {
            let out = run(s, &opts)?;
            bar.inc(1);
            let policy = if label.starts_with("best") { "window" } else { s.policy.kind.name() };
            Ok((label.clone(), policy.to_string(), out.timeseries.unwrap_or_else(|| TimeSeries::new(1))))
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    Ok(Analysis { scenario: scenario.clone(), rows, reps, series, checks })
}

impl Analysis {
    /// Every replication of every policy, in the sweep's order.
    pub fn all_runs(&self) -> Vec<RunSummary> {
        self.reps.iter().flat_map(|r| r.runs.iter().cloned()).collect()
    }
}

/// Writes one analysis's CSV (`<name>.csv`) and plots into `dir`.
///
/// # Errors
///
/// If a file cannot be written.
pub fn write_analysis(dir: &Path, a: &Analysis) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    sweep::write_csv(&dir.join(format!("{}.csv", a.scenario.name)), &a.all_runs())?;
    plots::write(dir, &a.scenario.name, &a.rows, &a.series)?;
    if a.scenario.client.is_some() {
        clients_plot::write(dir, &a.scenario.name, &a.series)?;
    }
    Ok(())
}

/// `busline-sim sweep`: one scenario's CSV and plots.
///
/// # Errors
///
/// If a run fails or a file cannot be written.
pub fn sweep_command(scenario: &Scenario, windows_ms: Option<&[f64]>, out: &Path) -> Result<Analysis> {
    let windows = sweep::windows(scenario, windows_ms, false);
    let a = analyse(scenario, &windows)?;
    write_analysis(out, &a)?;
    Ok(a)
}

/// The scenario files (`*.toml`) of a directory, sorted by name.
///
/// # Errors
///
/// If the directory cannot be read or holds no scenario.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no scenario (*.toml) in {}", dir.display());
    }
    Ok(files)
}

/// `busline-sim report`: sweeps every scenario of `scenarios` (with its latency budget among
/// the windows), runs the fleet study of each of `fleets` (at the default fleet sizes), and
/// writes CSVs, plots and `README.md` into `out`.
///
/// # Errors
///
/// If a scenario is invalid, a run fails or a file cannot be written.
pub fn report_command(scenarios: &Path, fleets: &[PathBuf], out: &Path, command: &str) -> Result<Vec<Analysis>> {
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    for path in scenario_files(scenarios)? {
        let s = Scenario::load(&path)?;
        let windows = sweep::windows(&s, None, true);
        let a = analyse(&s, &windows)?;
        write_analysis(out, &a)?;
        all.push(a);
    }
    let mut sections = Vec::new();
    for path in fleets {
        let s = Scenario::load(path)?;
        let study = fleet::study(&s, &crate::fleet::DEFAULT_INSTANCES)?;
        fleet::write(out, &study)?;
        sections.push(fleet::markdown(&study, ""));
    }
    let rows: Vec<RunSummary> = all.iter().flat_map(Analysis::all_runs).collect();
    sweep::write_csv(&out.join("all-runs.csv"), &rows)?;
    // Scenarios nobody tuned the policies to (issue 10): the same checks, worst case reported.
    let bar = sweep::progress(GENERATED_SCENARIOS, "generated scenarios");
    let generated = generated::study(0..GENERATED_SCENARIOS, GENERATED_REQUESTS)?;
    bar.finish_and_clear();
    let rows: Vec<RunSummary> = generated.iter().flat_map(|o| o.rows.iter().cloned()).collect();
    sweep::write_csv(&out.join("generated-runs.csv"), &rows)?;
    readme::write(&out.join("README.md"), &all, &generated, &sections, command, started.elapsed().as_secs_f64())?;
    Ok(all)
}
