//! What a run measured: histograms, the per-run summary, and time series.
//!
//! # Whose wait is it?
//!
//! A request's latency (arrival to answer) is split, for every request and exactly (the four
//! parts add up to the latency to the nanosecond, checked at the end of every run), into:
//!
//! 1. **added wait** (`added_wait_ms`): arrival to the moment the *policy* released its bus
//!    (`Action::Dispatch::ready_at`: the window closed, natural batching found it due, the bus
//!    filled). Zero for a car and for natural batching; at most the window for a fixed window.
//!    This is the wait batching adds, the one a latency budget B bounds.
//! 2. **in-flight wait** (`in_flight_wait_ms`): release to dispatch. Every `max_in_flight`
//!    place was taken; the bus kept filling until one freed. The backend's wait.
//! 3. **connection wait** (`connection_wait_ms`): dispatch to a free connection, when
//!    `max_in_flight` exceeds the connections. The backend's wait.
//! 4. **service** (`service_ms`): the query's run time, contention included.
//!
//! `db_wait_ms` is 2 + 3: the whole wait the backend imposed, wherever it queued. With the
//! default `max_in_flight` (= connections) requests queue for an in-flight place instead of a
//! connection, so part 3 is 0 and part 2 carries the queue; `db_wait_ms` reads the same
//! either way.

mod histogram;
pub mod interval;
mod timeseries;

pub use histogram::Histogram;
pub use interval::Estimate;
pub use timeseries::{Bucket, TimeSeries};

use serde::Serialize;

/// Milliseconds from nanoseconds.
pub fn ms(ns: f64) -> f64 {
    ns / 1e6
}

/// Latency percentiles, in ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl LatencySummary {
    /// The summary of a histogram of nanoseconds.
    pub fn of(h: &Histogram) -> LatencySummary {
        LatencySummary {
            mean: ms(h.mean()),
            p50: ms(h.quantile(0.5) as f64),
            p99: ms(h.quantile(0.99) as f64),
            p999: ms(h.quantile(0.999) as f64),
            max: ms(h.max() as f64),
        }
    }
}

/// A wait's distribution over requests, in ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WaitSummary {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl WaitSummary {
    /// The summary of a histogram of nanoseconds.
    pub fn of(h: &Histogram) -> WaitSummary {
        WaitSummary {
            mean: ms(h.mean()),
            p50: ms(h.quantile(0.5) as f64),
            p99: ms(h.quantile(0.99) as f64),
            max: ms(h.max() as f64),
        }
    }
}

/// The result of one run: what `run --json` prints and what a sweep's CSV row holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    /// Scenario name.
    pub scenario: String,
    /// Policy name (`Policy::name()`).
    pub policy: String,
    /// The window, for `window` and `gated`, in ms.
    pub window_ms: Option<f64>,
    /// The adaptive policy's latency budget, in ms.
    pub latency_budget_ms: Option<f64>,
    /// The seed.
    pub seed: u64,
    /// Requests answered (= arrived).
    pub requests: u64,
    /// Queries sent to the database (= batches dispatched = completed).
    pub queries: u64,
    /// Requests per query.
    pub mean_batch: f64,
    /// Distinct keys per query.
    pub mean_distinct_keys: f64,
    /// Simulated time from 0 to the last answer, in s.
    pub sim_time_s: f64,
    /// End of arrivals: `duration_s`, else the last arrival's instant, in s.
    pub horizon_s: f64,
    /// The drain: from the horizon to the last answer, in s.
    pub drain_s: f64,
    /// Queries sent during the drain.
    pub drain_queries: u64,
    /// Arrivals per second of the horizon (after the warm-up); with `[client]`, fresh requests
    /// only (not retries).
    pub offered_per_s: f64,
    /// Queries sent (from the warm-up on, the drain's included) per second of the horizon
    /// after the warm-up: the query rate the traffic causes.
    pub queries_per_s: f64,
    /// Arrival to answer.
    pub latency_ms: LatencySummary,
    /// Arrival to the release of the request's bus by the policy: the wait the policy added
    /// (see the module docs), per request.
    pub added_wait_ms: WaitSummary,
    /// Fraction of requests whose added wait exceeded `policy.latency_budget_ms` (exact, not
    /// from the histogram): "p99 added wait <= B" holds exactly when this is <= 0.01.
    pub added_wait_over_budget: f64,
    /// Release to dispatch: waiting for a free in-flight place (the backend's), per request.
    pub in_flight_wait_ms: WaitSummary,
    /// Dispatch to a free connection (the backend's), per request.
    pub connection_wait_ms: WaitSummary,
    /// Release to the start of service: the whole wait the backend imposed (in-flight place +
    /// connection), per request.
    pub db_wait_ms: WaitSummary,
    /// Start of service to the answer, per request.
    pub service_ms: WaitSummary,
    /// Work done (service at rate 1) inside the horizon after the warm-up, over the
    /// database's capacity (`servers / (1 + contention (servers − 1))` work per unit time)
    /// times that time: the ρ of queueing theory.
    pub db_utilization: f64,
    /// Connection time busy inside the horizon after the warm-up over `servers ×` that time
    /// (under contention a busy connection does less than one unit of work per unit time).
    pub db_occupancy: f64,
    /// The window the policy applied at the end of the run (adaptive: its tuned value), in ms.
    pub final_window_ms: f64,
    /// The callers' figures (goodput, timeouts, retries), with a `[client]` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::client::ClientSummary>,
}
