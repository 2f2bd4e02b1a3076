//! Where natural, gated and adaptive lose to a fixed window, and why: a study aid for the
//! departure policies (issue 10).
//!
//! ```sh
//! cargo run --release -p busline-sim --example frontier_cases -- gen 50 20000 [FIRST] [--reps R] [-v]   # generated seeds FIRST..FIRST+50
//! cargo run --release -p busline-sim --example frontier_cases -- file sim/scenarios/flash-crowd.toml [key=value ...]
//! ```
//!
//! For each scenario: its traffic, keys, database and budget on one line, then every run of the
//! sweep (queries, p99, the p99 of the policy's added wait and of the backend's wait, the
//! database's utilisation, the mean batch), each policy's place against the fixed-window
//! frontier, and a count of the policies a window beats. Verbose output (`-v`) prints every
//! scenario, not only those where a policy is beaten.

use anyhow::{Context, Result};
use busline_sim::engine::{RunOptions, run};
use busline_sim::report::{frontier, generated};
use busline_sim::scenario::Scenario;
use busline_sim::stats::RunSummary;
use busline_sim::replicate::Replicated;
use busline_sim::sweep;
use rayon::prelude::*;

fn describe(s: &Scenario) -> String {
    format!(
        "{}: traffic {{{}}} keys {{{}}} db {{{}}} B {} ms",
        s.name,
        line(&s.traffic),
        line(&s.keys),
        line(&s.db),
        s.policy.latency_budget_ms
    )
}

/// One TOML table on one line, long floats shortened.
fn line<T: serde::Serialize>(v: &T) -> String {
    toml::to_string(v)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(" = ") {
            Some((k, v)) => match v.parse::<f64>() {
                Ok(x) if v.contains('.') => format!("{k}={x:.4}"),
                _ => format!("{k}={v}"),
            },
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn row(r: &RunSummary) -> String {
    let name = match r.window_ms {
        Some(w) if r.policy == "window" => format!("window {w:.3}"),
        _ => r.policy.clone(),
    };
    format!(
        "  {name:<14} q {:>8} p99 {:>7.3} p50 {:>7.3} | added p99 {:>6.3} | db wait p99 {:>7.3} | svc p99 {:>6.3} | util {:>5.3} | batch {:>7.2} | w_end {:.3}",
        r.queries,
        r.latency_ms.p99,
        r.latency_ms.p50,
        r.added_wait_ms.p99,
        r.db_wait_ms.p99,
        r.service_ms.p99,
        r.db_utilization,
        r.mean_batch,
        r.final_window_ms
    )
}

/// The sweep of `s`, each variant replicated over `reps` paired seeds (`seed`, `seed +
/// 1_000_003`, ...): the replications say whether a loss is the policy's or one run's noise.
fn sweep_rows(s: &Scenario, reps: u64) -> Result<Vec<Replicated>> {
    let mut windows = generated::WINDOWS_MS.to_vec();
    windows.push(s.policy.latency_budget_ms);
    let variants = sweep::variants(s, &windows);
    let runs: Vec<Vec<RunSummary>> = (0..reps.max(1))
        .into_par_iter()
        .map(|r| {
            variants
                .iter()
                .map(|v| {
                    let mut v = v.clone();
                    v.seed = v.seed.wrapping_add(r * 1_000_003);
                    run(&v, &RunOptions::default()).map(|o| o.summary)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    // One `Replicated` per variant, over the paired seeds: the frontier decides "beaten" only
    // where a difference exceeds its interval.
    Ok((0..variants.len())
        .map(|i| Replicated::new(runs.iter().map(|rs| rs[i].clone()).collect()))
        .collect())
}

fn report(s: &Scenario, rows: &[Replicated], verbose: bool) -> [usize; 3] {
    let mut beaten = [0; 3];
    let positions = frontier::positions(rows);
    for (i, p) in ["natural", "gated", "adaptive"].iter().enumerate() {
        beaten[i] = positions.iter().filter(|pos| pos.run.policy == *p && !pos.beaten_by.is_empty()).count();
    }
    if verbose || beaten.iter().any(|&b| b > 0) {
        println!("=== {}", describe(s));
        for r in rows {
            println!("{}", row(&r.mean));
        }
        for pos in &positions {
            println!("  -> {}: {}", pos.run.policy, pos.describe());
        }
    }
    beaten
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let reps: u64 = match args.iter().position(|a| a == "--reps") {
        Some(i) => {
            let r = args.get(i + 1).context("--reps N")?.parse()?;
            args.drain(i..i + 2);
            r
        }
        None => 1,
    };
    args.retain(|a| a != "-v");
    let mode = args.first().map(String::as_str).unwrap_or("gen");
    let mut totals = [0usize; 3];
    let mut lost: [Vec<String>; 3] = Default::default();
    let mut tally = |s: &Scenario, rows: &[Replicated]| {
        let b = report(s, rows, verbose);
        for i in 0..3 {
            totals[i] += b[i];
            if b[i] > 0 {
                lost[i].push(s.name.clone());
            }
        }
    };
    match mode {
        "gen" => {
            let n: u64 = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(50);
            let requests: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(20_000);
            let first: u64 = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(0);
            let outcomes: Vec<(Scenario, Vec<Replicated>)> = (first..first + n)
                .into_par_iter()
                .map(|seed| {
                    let s = generated::scenario(seed, requests);
                    let rows = sweep_rows(&s, reps)?;
                    Ok((s, rows))
                })
                .collect::<Result<_>>()?;
            for (s, rows) in &outcomes {
                tally(s, rows);
            }
        }
        "file" => {
            let path = args.get(1).context("file PATH [key=value ...]")?;
            let s = Scenario::load_with(std::path::Path::new(path), &args[2..])?;
            let rows = sweep_rows(&s, reps)?;
            tally(&s, &rows);
        }
        "toml" => {
            // The generated scenario of a seed, as a file to re-run.
            let seed: u64 = args.get(1).context("toml SEED [REQUESTS]")?.parse()?;
            let requests: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(20_000);
            print!("{}", toml::to_string(&generated::scenario(seed, requests))?);
            return Ok(());
        }
        other => anyhow::bail!("unknown mode {other}: gen N REQUESTS [FIRST] | file PATH [key=value ...]"),
    }
    for (i, p) in ["natural", "gated", "adaptive"].iter().enumerate() {
        println!("beaten {p}: {} [{}]", totals[i], lost[i].join(", "));
    }
    Ok(())
}
