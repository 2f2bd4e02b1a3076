//! Fleet studies: one scenario run by 1, 2, 4, ... service instances under every routing and
//! the reference policies, in parallel.
//!
//! Each instance coalesces only what reaches it: at N instances behind an even balancer a
//! window of T collects `1 + λT/N` requests, not `1 + λT`, so the database sees more queries
//! as the fleet grows. A study measures how many more, what it costs in latency, and what key
//! affinity (consistent hashing on the key) keeps of the deduplication of one instance.
//! Every run of a study uses the scenario's seed: every fleet size and routing sees the same
//! arrivals and keys.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::engine::{RunOptions, run};
use crate::keys::Keys;
use crate::routing::{Ring, key_hash};
use crate::scenario::{PolicyKind, Routing, Scenario};
use crate::stats::RunSummary;
use crate::sweep;

/// The fleet sizes a study tries when the command line does not say.
pub const DEFAULT_INSTANCES: [u32; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// One run of a study.
#[derive(Debug, Clone)]
pub struct FleetRow {
    /// How requests reached the instances.
    pub routing: Routing,
    /// Service instances.
    pub instances: u32,
    /// The run's figures (the policy is in it).
    pub summary: RunSummary,
}

/// The policies a study compares: car, natural, the fixed window at the budget B, adaptive
/// with budget B (B = `policy.latency_budget_ms`).
pub fn policies(scenario: &Scenario) -> Vec<Scenario> {
    let budget = scenario.policy.latency_budget_ms;
    vec![
        scenario.with_policy(PolicyKind::Car, None),
        scenario.with_policy(PolicyKind::Natural, None),
        scenario.with_policy(PolicyKind::Window, Some(budget)),
        scenario.with_policy(PolicyKind::Adaptive, None),
    ]
}

/// Every run of a study: each policy under each routing at each fleet size.
pub fn variants(scenario: &Scenario, instances: &[u32]) -> Vec<(Routing, u32, Scenario)> {
    let mut v = Vec::new();
    for routing in Routing::ALL {
        for p in policies(scenario) {
            for &n in instances {
                let mut s = p.clone();
                s.fleet.routing = routing;
                s.fleet.instances = n;
                v.push((routing, n, s));
            }
        }
    }
    v
}

/// Runs a study in parallel on all cores; rows in the order of [`variants`]. Big fleets go
/// first, so the longest runs do not start last.
///
/// # Errors
///
/// If `instances` is empty or holds 0, or a run failed.
pub fn run_study(scenario: &Scenario, instances: &[u32], bar: &ProgressBar) -> Result<Vec<FleetRow>> {
    if instances.is_empty() || instances.contains(&0) {
        bail!("--instances: give one or more fleet sizes, each at least 1");
    }
    let runs = variants(scenario, instances);
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(runs[i].1));
    let mut done: Vec<(usize, FleetRow)> = order
        .par_iter()
        .map(|&i| {
            let (routing, n, s) = &runs[i];
            let out = run(s, &RunOptions::default())
                .with_context(|| format!("{} under {} with {n} instances, {routing} routing", s.name, s.policy.kind))?;
            bar.inc(1);
            Ok((i, FleetRow { routing: *routing, instances: *n, summary: out.summary }))
        })
        .collect::<Result<_>>()?;
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
}

/// The CSV header matching [`write_csv`]'s rows: the fleet's columns, then a sweep row's.
pub fn csv_header() -> String {
    format!("routing,instances,{}", sweep::CSV_HEADER)
}

/// Writes a study as CSV.
///
/// # Errors
///
/// If the file cannot be written.
pub fn write_csv(path: &Path, rows: &[FleetRow]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(f, "{}", csv_header())?;
    for r in rows {
        writeln!(f, "{},{},{}", r.routing, r.instances, sweep::csv_row(&r.summary))?;
    }
    f.flush()?;
    Ok(())
}

/// What key affinity costs when the fleet changes by one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyMoves {
    /// Instances before one leaves (or after one joins).
    pub instances: u32,
    /// The share of the hash space that moves: exactly the arcs the leaving (joining) instance
    /// owns on the ring.
    pub hash_share: f64,
    /// The share of requests whose key moves, over `sample` requests of the scenario's keys.
    pub request_share: f64,
    /// Requests sampled.
    pub sample: u32,
}

/// The share of keys that move when the last of `instances` leaves the ring (the same keys
/// move back when it joins): on the hash space, and weighted by the scenario's key model over
/// `sample` draws. Shares are even (the ring of `fleet.vnodes` points each).
pub fn key_moves(scenario: &Scenario, instances: u32, sample: u32) -> KeyMoves {
    let vnodes = scenario.fleet.vnodes;
    let with = Ring::even(instances, vnodes);
    let without = Ring::even(instances.saturating_sub(1).max(1), vnodes);
    let mut keys = Keys::new(scenario);
    let moved = (0..sample)
        .filter(|_| {
            let h = key_hash(keys.next_key());
            instances > 1 && with.owner(h) != without.owner(h)
        })
        .count();
    KeyMoves {
        instances,
        hash_share: if instances > 1 { with.owned_share(instances - 1) } else { 0.0 },
        request_share: moved as f64 / f64::from(sample.max(1)),
        sample,
    }
}
