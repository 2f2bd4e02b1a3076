//! Where in the trace a miss comes from: the requests split by the part of the trace they
//! arrived in (the Poisson background, the article's spikes, the surge), and per part the
//! measured latency and its stages against the simulator's latency for the same requests.
//!
//! A mean over the whole trace mixes requests that find the machine idle with requests that
//! arrive 200 within 3 ms; a model can be right about the one and wrong about the other, and
//! the p99 is made almost entirely of the second. The simulator records latency per arrival
//! instant (its time series, by the bucket a request arrived in), so the same split applies to
//! its predictions; its buckets are [`BUCKET_NS`] wide and its histograms coarse (1/16
//! precision), so a part's predicted p99 is good to a few percent.

use std::path::Path;

use anyhow::{Context, Result};
use busline_sim::engine::{RunOptions, run};
use busline_sim::scenario::Scenario;
use busline_sim::stats::Histogram;

use crate::replay::{ContenderSpec, Measured, Stages};
use crate::simcheck::{SEEDS, policy_overrides};
use crate::trace::{Arrival, TraceSpec};

/// The simulator's time-series bucket for the split, ns: fine against a 3 ms spike.
pub const BUCKET_NS: u64 = 100_000;

/// How long after a spike's last arrival its part still runs, ns: a spike's requests arrive
/// within its width, and one [`BUCKET_NS`] more keeps the last of them in.
const SPIKE_TAIL_NS: u64 = BUCKET_NS;

/// The parts of a trace, in the order the report shows them.
pub const PARTS: [&str; 3] = ["background", "spikes", "surge"];

/// The part (an index into [`PARTS`]) of a request that arrived at `at_ns` (the trace's time).
pub fn part(spec: &TraceSpec, at_ns: u64) -> usize {
    let s = |x: f64| (x * 1e9) as u64;
    let in_spike = spec.spikes.iter().any(|k| {
        let from = s(k.start_s);
        (from..from + (k.width_ms * 1e6) as u64 + SPIKE_TAIL_NS).contains(&at_ns)
    });
    let in_surge = spec.bursts.iter().any(|b| (s(b.start_s)..s(b.start_s + b.duration_s)).contains(&at_ns));
    if in_spike {
        1
    } else if in_surge {
        2
    } else {
        0
    }
}

/// One part of one replay: measured and predicted.
#[derive(Debug, Clone)]
pub struct Part {
    /// Measured latency, ns.
    pub measured: Histogram,
    /// Measured stages.
    pub stages: Stages,
    /// Predicted latency (every seed's requests), ns.
    pub predicted: Histogram,
    /// Queries sent for this part's requests: measured, each request counting one over its
    /// bus's size (a bus is the requests sealed at one instant; a request not found in a bus
    /// counts as its own), and predicted, the simulator's queries dispatched in this part's
    /// buckets, mean over the seeds.
    pub queries: (f64, f64),
}

/// The slowest 1 % of a replay's requests (at least one): where the p99 comes from.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Their latency, ns.
    pub latency: Histogram,
    /// Their stages (those whose bus was found).
    pub stages: Stages,
    /// How many arrived in each part (indices of [`PARTS`]).
    pub from: [u64; PARTS.len()],
}

/// The slowest 1 % of `measured`'s requests (a replay of `trace`, generated from `spec`).
pub fn tail(spec: &TraceSpec, trace: &[Arrival], measured: &Measured) -> Tail {
    let mut order: Vec<usize> = (0..measured.rows.len().min(trace.len())).collect();
    order.sort_unstable_by_key(|&i| std::cmp::Reverse(measured.rows[i].latency_ns));
    let n = order.len().div_ceil(100).min(order.len());
    let mut t = Tail { latency: Histogram::new(), stages: Stages::default(), from: [0; PARTS.len()] };
    for &i in &order[..n] {
        let r = &measured.rows[i];
        t.latency.record(r.latency_ns);
        if let Some(stages) = r.stages {
            t.stages.record(stages);
        }
        t.from[part(spec, trace[i].at_ns)] += 1;
    }
    t
}

/// Splits `measured` (a replay of `trace`, generated from `spec`) and the simulator's prediction on its arrivals (the scenario at
/// `scenario_path` with its trace replaced by `trace_path`, as [`crate::simcheck::predict`])
/// by the part of `spec` each request arrived in.
///
/// # Errors
///
/// If the scenario or the trace cannot be loaded or the simulator fails.
pub fn split(
    spec: &TraceSpec,
    trace: &[Arrival],
    measured: &Measured, scenario_path: &Path, trace_path: &str, contender: &ContenderSpec) -> Result<Vec<Part>> {
    // The simulator's series keeps coarse histograms (1/16): the predicted side merges them.
    let empty =
        Part { measured: Histogram::new(), stages: Stages::default(), predicted: Histogram::with_precision(4), queries: (0.0, 0.0) };
    let mut parts = vec![empty; PARTS.len()];
    // A request's part is that of its instant in the trace (the injector may call it late,
    // under load by milliseconds); the rows are in the trace's order.
    let of_row: Vec<usize> = measured.rows.iter().zip(trace).map(|(_, a)| part(spec, a.at_ns)).collect();
    for (r, &i) in measured.rows.iter().zip(&of_row) {
        let p = &mut parts[i];
        p.measured.record(r.latency_ns);
        if let Some(stages) = r.stages {
            p.stages.record(stages);
        }
    }
    // The simulator replays the actual calls, its instant t being the replay's t + the first
    // call; a bucket of its series goes to the part most of the calls in it belong to.
    let mut bus_size: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let sealed = |r: &crate::replay::RequestRow| r.stages.map(|s| r.at_ns + s[0]);
    for r in &measured.rows {
        if let Some(at) = sealed(r) {
            *bus_size.entry(at).or_default() += 1;
        }
    }
    for (r, &i) in measured.rows.iter().zip(&of_row) {
        // Direct calls: every request its own query (their seal is their call).
        let size = match (&contender.contender, sealed(r)) {
            (crate::replay::Contender::Batched(_), Some(at)) => bus_size[&at],
            _ => 1,
        };
        parts[i].queries.0 += 1.0 / f64::from(size);
    }
    let offset = measured.rows.iter().map(|r| r.at_ns).min().unwrap_or(0);
    let mut votes: Vec<[u32; PARTS.len()]> = Vec::new();
    for (r, &i) in measured.rows.iter().zip(&of_row) {
        let b = ((r.at_ns - offset) / BUCKET_NS) as usize;
        if votes.len() <= b {
            votes.resize(b + 1, [0; PARTS.len()]);
        }
        votes[b][i] += 1;
    }
    let bucket_part = |b: usize| votes.get(b).map_or(0, |v| (0..PARTS.len()).max_by_key(|&i| (v[i], usize::MAX - i)).unwrap_or(0));
    for seed in 1..=SEEDS {
        let mut sets = policy_overrides(&contender.contender);
        sets.push(format!("traffic.path={trace_path}"));
        sets.push(format!("seed={seed}"));
        let scenario = Scenario::load_with(scenario_path, &sets)?;
        let opts = RunOptions { timeseries_bucket_ns: Some(BUCKET_NS), ..RunOptions::default() };
        let out = run(&scenario, &opts).with_context(|| format!("simulating {}", contender.label))?;
        let Some(ts) = out.timeseries else { continue };
        for (b, bucket) in ts.buckets.iter().enumerate() {
            parts[bucket_part(b)].predicted.merge(&bucket.latency);
            parts[bucket_part(b)].queries.1 += bucket.queries as f64 / SEEDS as f64;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_in_the_part_they_arrived_in() {
        let spec = TraceSpec::demo(1000);
        assert_eq!(PARTS[part(&spec, 0)], "background");
        assert_eq!(PARTS[part(&spec, 200_000_000)], "spikes");
        assert_eq!(PARTS[part(&spec, 203_050_000)], "spikes");
        assert_eq!(PARTS[part(&spec, 203_200_000)], "background");
        assert_eq!(PARTS[part(&spec, 420_000_000)], "surge");
        assert_eq!(PARTS[part(&spec, 450_000_000)], "background");
        assert_eq!(PARTS[part(&spec, 601_000_000)], "spikes");
    }
}
