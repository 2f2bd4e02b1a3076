//! Sweeps: one scenario under every window and the reference policies, in parallel.
//!
//! Each policy and window runs `replications` times, replication `r` under seed `seed + r`;
//! replication `r` of every policy uses the same seed, so all of them see exactly the same
//! arrivals and keys (see [`crate::rng`]) and their comparisons pair up. Runs are spread over
//! all cores with rayon.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::engine::{RunOptions, run};
use crate::replicate::Replicated;
use crate::scenario::{DEFAULT_WINDOWS_MS, PolicyKind, Scenario};
use crate::stats::RunSummary;

/// The runs of a sweep: car, natural, gated and adaptive (the references), then the fixed
/// window at each of `windows_ms`. Gated uses the window `policy.latency_budget_ms` and the
/// scenario's threshold; adaptive uses the budget `policy.latency_budget_ms`.
pub fn variants(scenario: &Scenario, windows_ms: &[f64]) -> Vec<Scenario> {
    let budget = scenario.policy.latency_budget_ms;
    let mut v = vec![
        scenario.with_policy(PolicyKind::Car, None),
        scenario.with_policy(PolicyKind::Natural, None),
        scenario.with_policy(PolicyKind::Gated, Some(budget)),
        scenario.with_policy(PolicyKind::Adaptive, None),
    ];
    v.extend(windows_ms.iter().map(|&w| scenario.with_policy(PolicyKind::Window, Some(w))));
    v
}

/// The windows a sweep of `scenario` tries: `cli`, else the scenario's `sweep.windows_ms`,
/// else the default list; plus the latency budget when `with_budget` (so the best window
/// within the budget is always among them). Sorted, without duplicates.
pub fn windows(scenario: &Scenario, cli: Option<&[f64]>, with_budget: bool) -> Vec<f64> {
    let mut w: Vec<f64> = cli
        .map(<[f64]>::to_vec)
        .or_else(|| scenario.sweep.windows_ms.clone())
        .unwrap_or_else(|| DEFAULT_WINDOWS_MS.to_vec());
    if with_budget {
        w.push(scenario.policy.latency_budget_ms);
    }
    w.sort_by(f64::total_cmp);
    w.dedup();
    w
}

/// A progress bar of `len` steps on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// Runs `replications` replications of every scenario of `runs`, all in parallel, and returns
/// them grouped by scenario, in the same order.
///
/// # Errors
///
/// The first run that failed.
pub fn run_all(runs: &[Scenario], replications: u32, bar: &ProgressBar) -> Result<Vec<Replicated>> {
    let reps = replications.max(1) as usize;
    let jobs: Vec<(usize, u32)> = (0..runs.len()).flat_map(|i| (0..reps as u32).map(move |r| (i, r))).collect();
    let summaries = jobs
        .par_iter()
        .map(|&(i, r)| {
            let s = runs[i].replication(r);
            let out = run(&s, &RunOptions::default()).with_context(|| {
                format!("{} under {} {} (seed {})", s.name, s.policy.kind, s.policy.window_ms, s.seed)
            })?;
            bar.inc(1);
            Ok(out.summary)
        })
        .collect::<Result<Vec<RunSummary>>>()?;
    Ok(summaries.chunks(reps).map(|c| Replicated::new(c.to_vec())).collect())
}

/// The CSV header matching [`csv_row`].
pub const CSV_HEADER: &str = "scenario,policy,window_ms,latency_budget_ms,seed,requests,queries,mean_batch,\
mean_distinct_keys,sim_time_s,offered_per_s,queries_per_s,latency_ms_mean,latency_ms_p50,latency_ms_p99,\
latency_ms_p999,latency_ms_max,added_wait_ms_mean,added_wait_ms_p50,added_wait_ms_p99,added_wait_ms_max,\
added_wait_over_budget,db_wait_ms_mean,db_wait_ms_p99,db_utilization,final_window_ms,in_flight_wait_ms_mean,\
in_flight_wait_ms_p99,connection_wait_ms_mean,connection_wait_ms_p99,service_ms_mean,service_ms_p99,horizon_s,\
drain_s,drain_queries,db_occupancy,client_requests,goodput_per_s,success_fraction,timeouts,retries,dropped_unsent,\
answered_late,failed,queries_per_success";

/// One run as a CSV row.
pub fn csv_row(r: &RunSummary) -> String {
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    let client = r.client.map_or_else(
        || ",,,,,,,,".to_string(),
        |c| {
            format!(
                "{},{:.3},{:.6},{},{},{},{},{},{:.6}",
                c.requests,
                c.goodput_per_s,
                c.success_fraction,
                c.timeouts,
                c.retries,
                c.dropped_unsent,
                c.answered_late,
                c.failed,
                c.queries_per_success
            )
        },
    );
    format!(
        "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.3},{:.3},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.6},{client}",
        r.scenario,
        r.policy,
        opt(r.window_ms),
        opt(r.latency_budget_ms),
        r.seed,
        r.requests,
        r.queries,
        r.mean_batch,
        r.mean_distinct_keys,
        r.sim_time_s,
        r.offered_per_s,
        r.queries_per_s,
        r.latency_ms.mean,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.latency_ms.p999,
        r.latency_ms.max,
        r.added_wait_ms.mean,
        r.added_wait_ms.p50,
        r.added_wait_ms.p99,
        r.added_wait_ms.max,
        r.added_wait_over_budget,
        r.db_wait_ms.mean,
        r.db_wait_ms.p99,
        r.db_utilization,
        r.final_window_ms,
        r.in_flight_wait_ms.mean,
        r.in_flight_wait_ms.p99,
        r.connection_wait_ms.mean,
        r.connection_wait_ms.p99,
        r.service_ms.mean,
        r.service_ms.p99,
        r.horizon_s,
        r.drain_s,
        r.drain_queries,
        r.db_occupancy,
    )
}

/// Writes `rows` as CSV to `path`.
///
/// # Errors
///
/// If the file cannot be written.
pub fn write_csv(path: &Path, rows: &[RunSummary]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(f, "{CSV_HEADER}")?;
    for r in rows {
        writeln!(f, "{}", csv_row(r))?;
    }
    f.flush()?;
    Ok(())
}
