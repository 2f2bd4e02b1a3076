//! Set-up shared by the integration tests: scenarios from text with `--set` overrides, one
//! run with default options, and the busy MMPP scenario several tests stress.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use busline_sim::engine::{RunOptions, RunOutput, run};
use busline_sim::scenario::Scenario;

/// A bursty, contended scenario under the gated policy: an MMPP of 2,000/s and 20,000/s,
/// Zipf keys, 4 lognormal connections with 10 % contention. 20 s of arrivals.
pub(crate) const BUSY: &str = r#"
name = "busy"
seed = 9
duration_s = 20.0
[traffic]
kind = "mmpp"
rate_low_per_s = 2000.0
rate_high_per_s = 20000.0
dwell_low_s = 1.0
dwell_high_s = 0.3
[keys]
kind = "zipf"
count = 10000
theta = 0.99
[db]
servers = 4
service = "lognormal"
base_ms = 0.5
per_key_ms = 0.01
contention = 0.1
[policy]
kind = "gated"
window_ms = 1.0
threshold = 2
max_batch = 200
"#;

/// The scenario of `text` with the `key=value` overrides of `sets`.
pub(crate) fn scenario(text: &str, sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Scenario::parse_with(text, Path::new("."), &sets).unwrap()
}

/// [`BUSY`] with the overrides of `sets`.
pub(crate) fn busy(sets: &[&str]) -> Scenario {
    scenario(BUSY, sets)
}

/// One run of `s` with default options (its checks must pass).
pub(crate) fn go(s: &Scenario) -> RunOutput {
    run(s, &RunOptions::default()).unwrap()
}
