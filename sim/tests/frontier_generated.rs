//! Issue 10's goals on scenarios nobody tuned the policies to: 50 generated from seeds (random
//! traffic model, rates, database size and cost, key distribution, budget; see
//! `report/generated.rs`), each swept over the fixed windows and checked:
//!
//! - adaptive's p99 added wait (the policy's, not the backend's) is within its budget B, and
//!   it sends within 5 % of the fewest queries of a window with p99 added wait <= B: required
//!   in every scenario;
//! - at steady low load (one seed in five), adaptive's p99 is within 5 % of car's: required;
//! - no fixed window beats natural, gated or adaptive by more than the noise (1 % fewer queries
//!   and 2 % lower p99 at once): **not reached everywhere**. The test holds the count of
//!   (scenario, policy) pairs a window beats to what was measured when it was written (a
//!   ratchet: lower it when a change wins scenarios back; a change that loses one fails here).
//!   The cases are printed, with each failing scenario as a file to re-run.
//!
//! The runs are short (20,000 requests) so the 50 sweeps stay in seconds; `make sim` runs the
//! same study at 50,000 requests and reports the worst cases in `reports/sim/README.md`.

use busline_sim::report::generated;

const SCENARIOS: u64 = 50;
const REQUESTS: u64 = 20_000;

/// (policy, scenarios of the 50 where a fixed window beats it), as measured when the ceiling was
/// last lowered. Single runs of 20,000 requests: part of each count is run-to-run noise (with
/// five paired replications, `frontier_cases -- gen 50 20000 0 --reps 5`, the counts are about
/// a third as large). What is left: natural, on a constant service time with two places, holds
/// for the queue the M/M/c model predicts, about twice the real one (Kingman's
/// `(Ca² + Cs²) / 2`, and the scheduler cannot measure Cs²: a completion does not name its
/// batch); gated mixes cars and full windows near its threshold, a mix that a window in
/// between beats; adaptive keeps its budget B where only a window longer than B would win
/// (`adaptive.rs`). Which window beats which policy: this test's output (`-- --nocapture`).
/// The ceiling records where the unmet goal stands; it is not the goal.
const BEATEN_AT_MOST: [(&str, usize); 3] = [("natural", 4), ("gated", 9), ("adaptive", 3)];

#[test]
fn the_policies_hold_their_goals_on_generated_scenarios() {
    let outcomes = generated::study(0..SCENARIOS, REQUESTS).unwrap();
    assert_eq!(outcomes.len() as u64, SCENARIOS);
    let mut required = Vec::new();
    let mut beaten = Vec::new();
    for o in &outcomes {
        for c in o.failures() {
            let line = format!("{}: {} ({})", o.scenario.name, c.name, c.detail);
            if c.name.starts_with("no fixed window beats") { beaten.push((c.name, line)) } else { required.push(line) }
        }
        if !o.failures().is_empty() {
            // The failing scenario, ready to save as a file and re-run with `busline-sim sweep`.
            eprintln!("--- {}\n{}", o.scenario.name, toml::to_string(&o.scenario).unwrap_or_default());
        }
    }
    for (_, line) in &beaten {
        eprintln!("beaten: {line}");
    }
    let worst = outcomes.iter().min_by(|a, b| a.frontier_margin.total_cmp(&b.frontier_margin)).unwrap();
    eprintln!("closest a window came to beating a policy: {:+.4} in {}", worst.frontier_margin, worst.scenario.name);
    assert!(required.is_empty(), "{} failed checks:\n{}", required.len(), required.join("\n"));
    for (policy, limit) in BEATEN_AT_MOST {
        let n = beaten.iter().filter(|(name, _)| name.contains(&format!("beats {policy} "))).count();
        assert!(n <= limit, "a fixed window beats {policy} in {n} generated scenarios (was {limit})");
    }
    // The generator spans what it claims: every traffic model, and some low-load scenarios.
    for kind in ["Poisson", "Mmpp", "Onoff", "Diurnal", "Spike"] {
        assert!(
            outcomes.iter().any(|o| format!("{:?}", o.scenario.traffic.kind) == kind),
            "no generated scenario of kind {kind}"
        );
    }
    assert!(outcomes.iter().filter(|o| o.scenario.sweep.low_load).count() >= 5);
}

#[test]
fn a_seed_always_generates_the_same_scenario() {
    assert_eq!(generated::scenario(7, 1000), generated::scenario(7, 1000));
    assert_ne!(generated::scenario(7, 1000), generated::scenario(8, 1000));
}

#[test]
fn the_issue_counter_examples_are_fixed() {
    use busline_sim::engine::{RunOptions, run};
    use busline_sim::replicate::Replicated;
    use busline_sim::report::{checks, frontier};
    use busline_sim::scenario::Scenario;
    use busline_sim::sweep;
    // Issue 10's congested MMPP: adaptive used to shrink its window to 0 (the wait for a
    // connection read as lateness) and both adaptive and natural were beaten by a 1 ms window.
    // Shortened to 15 s; the full file is in sim/scenarios/examples/.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/examples/issue10-mmpp-congested.toml");
    let s = Scenario::load_with(&path, &["duration_s=15".to_string()]).unwrap();
    let windows = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
    let reps: Vec<Replicated> = sweep::variants(&s, &windows)
        .iter()
        .map(|v| Replicated::new(vec![run(v, &RunOptions::default()).unwrap().summary]))
        .collect();
    let rows: Vec<_> = reps.iter().map(|r| r.mean.clone()).collect();
    for pos in frontier::positions(&reps) {
        assert!(pos.beaten_by.is_empty(), "{}: {}", pos.run.policy, pos.describe());
    }
    let adaptive = rows.iter().find(|r| r.policy == "adaptive").unwrap();
    assert_eq!(adaptive.final_window_ms, 1.0, "adaptive keeps its window at B under congestion");
    assert!(checks::p99_added_wait_within_budget(adaptive));
    let best = checks::best_window_within(&rows).unwrap();
    assert!(adaptive.queries as f64 <= 1.05 * best.queries as f64);
}
