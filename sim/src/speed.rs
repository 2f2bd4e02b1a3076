//! How fast the simulator runs: simulated requests per CPU-second, per scenario and policy
//! (`busline-sim speed`, issue 14's speed goal).
//!
//! Each run is timed on the thread that runs it, by the CPU time the kernel charged to that
//! thread (`/proc/thread-self/schedstat` on Linux), not by the wall clock: on a shared machine
//! a run waits for a core as long as others hold it, and that wait is not the simulator's
//! cost. The runs go one after the other on one thread, so each figure is one core's speed.
//! Other work on the machine still slows a run down (shared caches, frequency), so each run
//! is repeated and the fastest kept: the noise only ever adds time.
//!
//! That CPU clock may advance only at the scheduler's ticks (it does on the 250 Hz kernel this
//! was written on: a 10 ms run reads as 8 or 12 ms), so one measurement repeats a short
//! scenario until it has run [`MIN_MEASURE_S`] and divides the requests of all its runs by
//! their time: a tick is then under 1 % of it.

use std::time::Instant as WallInstant;

use anyhow::{Context, Result};

use crate::engine::{RunOptions, run};
use crate::scenario::Scenario;
use crate::sweep;

/// The least time one measurement covers, in seconds: 125 ticks of a 250 Hz scheduler clock.
pub const MIN_MEASURE_S: f64 = 0.5;

/// One measurement: `runs` back-to-back runs of a scenario.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The scenario's name.
    pub scenario: String,
    /// The policy (with its window or budget), or the fleet variant.
    pub variant: String,
    /// Requests simulated in one run (arrivals, retries included).
    pub requests: u64,
    /// Events processed in one run.
    pub events: u64,
    /// Runs measured together (enough for [`MIN_MEASURE_S`]).
    pub runs: u32,
    /// CPU seconds of the thread over all the runs (None where the platform cannot tell).
    pub cpu_s: Option<f64>,
    /// Wall-clock seconds over all the runs.
    pub wall_s: f64,
}

impl Timing {
    /// Simulated requests per CPU-second (per wall-second where the CPU time is unknown).
    pub fn per_s(&self) -> f64 {
        (self.requests * u64::from(self.runs)) as f64 / self.cpu_s.unwrap_or(self.wall_s).max(1e-9)
    }
}

/// Nanoseconds this thread has spent on a CPU (Linux: `/proc/thread-self/schedstat`; None
/// elsewhere).
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Runs `scenario` (replication 0) `repeat` times on this thread and keeps the fastest.
///
/// # Errors
///
/// If a run fails.
pub fn time(scenario: &Scenario, variant: String, repeat: u32) -> Result<Timing> {
    let mut best = time_once(scenario, variant)?;
    for _ in 1..repeat {
        let t = time_once(scenario, best.variant.clone())?;
        if t.per_s() > best.per_s() {
            best = t;
        }
    }
    Ok(best)
}

/// Runs `scenario` until [`MIN_MEASURE_S`] of CPU time (of wall time where that is unknown)
/// has passed.
fn time_once(scenario: &Scenario, variant: String) -> Result<Timing> {
    let cpu = thread_cpu_ns();
    let wall = WallInstant::now();
    let mut runs = 0;
    loop {
        let out = run(scenario, &RunOptions::default()).with_context(|| format!("running {}", scenario.name))?;
        runs += 1;
        let wall_s = wall.elapsed().as_secs_f64();
        let cpu_s = cpu.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
        if cpu_s.unwrap_or(wall_s) >= MIN_MEASURE_S {
            return Ok(Timing {
                scenario: scenario.name.clone(),
                variant,
                requests: out.totals.arrivals,
                events: out.events,
                runs,
                cpu_s,
                wall_s,
            });
        }
    }
}

/// Times `scenario` under car, natural, gated, adaptive and the window of its budget, the
/// fastest of `repeat` runs each.
///
/// # Errors
///
/// If a run fails.
pub fn policies(scenario: &Scenario, repeat: u32) -> Result<Vec<Timing>> {
    sweep::variants(scenario, &[scenario.policy.latency_budget_ms])
        .iter()
        .map(|v| time(v, policy_name(v), repeat))
        .collect()
}

/// Times `scenario` at each of `instances` under every routing and the fleet study's policies
/// (car, natural, the window B, adaptive), the fastest of `repeat` runs each.
///
/// # Errors
///
/// If a run fails.
pub fn fleet(scenario: &Scenario, instances: &[u32], repeat: u32) -> Result<Vec<Timing>> {
    crate::fleet::variants(scenario, instances)
        .iter()
        .map(|(routing, n, s)| time(s, format!("{} × {n} {routing}", policy_name(s)), repeat))
        .collect()
}

fn policy_name(s: &Scenario) -> String {
    let p = &s.policy;
    match p.kind.name() {
        "window" | "gated" => format!("{} {} ms", p.kind.name(), p.window_ms),
        "adaptive" => format!("adaptive B={} ms", p.latency_budget_ms),
        other => other.to_string(),
    }
}

/// The timings as a Markdown table.
pub fn table(rows: &[Timing]) -> String {
    let mut s = String::from(
        "| scenario | variant | requests | events/request | runs | M requests per CPU-s | wall s |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for t in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.3} |\n",
            t.scenario,
            t.variant,
            t.requests,
            t.events as f64 / t.requests.max(1) as f64,
            t.runs,
            t.per_s() / 1e6,
            t.wall_s
        ));
    }
    s
}
