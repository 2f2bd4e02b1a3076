//! The `metrics` feature: a batcher's counters, gauges and histograms through the `metrics`
//! facade, for whatever recorder the service installs (Prometheus, StatsD, OpenTelemetry).
//!
//! Every series carries the label `batcher`, the name given with
//! [`Builder::name`](crate::Builder::name) (default `"busline"`). Units are in the names
//! (Prometheus' convention; some exporters ignore described units). Handles are registered when
//! the batcher is built: install the recorder before building batchers.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `busline_requests_total` | counter | `batcher` | requests that boarded a batch (duplicates included), counted per batch; as `Stats::requests`, also a bus whose callers all gave up before it left |
//! | `busline_batches_total` | counter | `batcher`, `outcome` | batch calls ended (solo runs under `Overflow::RunAlone` included), by outcome: `ok`, `error`, `panicked` (the batch function, its future, or a key's `Hash`/`Eq`/`Clone` panicked), `timeout`, `closed` |
//! | `busline_batch_keys` | histogram | `batcher` | distinct keys per batch call |
//! | `busline_batch_requests` | histogram | `batcher` | requests per batch call (coalescing: requests ÷ calls) |
//! | `busline_queue_wait_seconds` | histogram | `batcher` | how long each batch's first request waited before departure |
//! | `busline_batch_duration_seconds` | histogram | `batcher` | how long each batch call ran (solo runs included) |
//! | `busline_in_flight_batches` | gauge | `batcher` | batch calls running now (the sum over every batcher of that name: a `Grouped`'s groups, say) |
//! | `busline_window_seconds` | gauge | `batcher` | the window the policy applied to the latest batch (`natural`, `gated` and `adaptive` move it with the load) |
//! | `busline_rejected_total` | counter | `batcher` | requests refused with `Error::Overloaded` |
//! | `busline_ran_alone_total` | counter | `batcher` | requests run alone at capacity (`Overflow::RunAlone`) |
//! | `busline_cancelled_total` | counter | `batcher` | requests whose caller gave up before the answer (seated, or running alone) |
//! | `busline_timeouts_total` | counter | `batcher` | batch calls dropped at `batch_timeout` (solo runs included) |

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use super::{Departure, Ending};

/// Every metric name this crate emits, for dashboards and tests.
pub const NAMES: [&str; 12] = [
    "busline_requests_total",
    "busline_batches_total",
    "busline_batch_keys",
    "busline_batch_requests",
    "busline_queue_wait_seconds",
    "busline_batch_duration_seconds",
    "busline_in_flight_batches",
    "busline_window_seconds",
    "busline_rejected_total",
    "busline_ran_alone_total",
    "busline_cancelled_total",
    "busline_timeouts_total",
];

/// A batcher's registered handles: one registry lookup at build, none per event.
#[derive(Debug)]
pub(crate) struct Handles {
    pub(crate) requests: Counter,
    /// Indexed by `Ending as usize`.
    batches: [Counter; 5],
    batch_keys: Histogram,
    batch_requests: Histogram,
    queue_wait: Histogram,
    batch_duration: Histogram,
    in_flight: Gauge,
    window: Gauge,
    pub(crate) rejected: Counter,
    pub(crate) ran_alone: Counter,
    pub(crate) cancelled: Counter,
    timeouts: Counter,
}

const ENDINGS: [Ending; 5] = [Ending::Ok, Ending::Failed, Ending::Panicked, Ending::TimedOut, Ending::Closed];

impl Handles {
    pub(crate) fn new(name: &str) -> Handles {
        describe();
        let batcher = name.to_owned();
        Handles {
            requests: counter!("busline_requests_total", "batcher" => batcher.clone()),
            batches: ENDINGS.map(|e| counter!("busline_batches_total", "batcher" => batcher.clone(), "outcome" => e.as_str())),
            batch_keys: histogram!("busline_batch_keys", "batcher" => batcher.clone()),
            batch_requests: histogram!("busline_batch_requests", "batcher" => batcher.clone()),
            queue_wait: histogram!("busline_queue_wait_seconds", "batcher" => batcher.clone()),
            batch_duration: histogram!("busline_batch_duration_seconds", "batcher" => batcher.clone()),
            in_flight: gauge!("busline_in_flight_batches", "batcher" => batcher.clone()),
            window: gauge!("busline_window_seconds", "batcher" => batcher.clone()),
            rejected: counter!("busline_rejected_total", "batcher" => batcher.clone()),
            ran_alone: counter!("busline_ran_alone_total", "batcher" => batcher.clone()),
            cancelled: counter!("busline_cancelled_total", "batcher" => batcher.clone()),
            timeouts: counter!("busline_timeouts_total", "batcher" => batcher),
        }
    }

    /// Handles that record nothing: for a batcher whose registration panicked.
    pub(crate) fn noop() -> Handles {
        Handles {
            requests: Counter::noop(),
            batches: ENDINGS.map(|_| Counter::noop()),
            batch_keys: Histogram::noop(),
            batch_requests: Histogram::noop(),
            queue_wait: Histogram::noop(),
            batch_duration: Histogram::noop(),
            in_flight: Gauge::noop(),
            window: Gauge::noop(),
            rejected: Counter::noop(),
            ran_alone: Counter::noop(),
            cancelled: Counter::noop(),
            timeouts: Counter::noop(),
        }
    }

    pub(crate) fn departed(&self, d: &Departure) {
        // Added to, not set: every batcher of one name (a `Grouped`'s groups, a per-group
        // strategy's) shares the series, each with its own batches running. First here and in
        // `finished`, so that a recorder panicking in another series skips neither half.
        self.in_flight.increment(1.0);
        self.batch_keys.record(d.keys as f64);
        self.batch_requests.record(d.requests as f64);
        self.queue_wait.record(d.queue_wait.as_secs_f64());
        self.window.set(d.window.as_secs_f64());
    }

    pub(crate) fn finished(&self, ending: Ending, took: Duration) {
        self.in_flight.decrement(1.0);
        self.ended(ending, took);
    }

    /// A batch never sent (every key aboard panicked) ended: counted by outcome only.
    pub(crate) fn ended_unsent(&self, ending: Ending) {
        let index = ENDINGS.iter().position(|&e| e == ending).unwrap_or(0);
        self.batches[index].increment(1);
    }

    /// A solo run ended: a batch call, though never in flight as a batch.
    pub(crate) fn finished_alone(&self, ending: Ending, took: Duration) {
        self.ended(ending, took);
    }

    fn ended(&self, ending: Ending, took: Duration) {
        let index = ENDINGS.iter().position(|&e| e == ending).unwrap_or(0);
        self.batches[index].increment(1);
        if ending == Ending::TimedOut {
            self.timeouts.increment(1);
        }
        self.batch_duration.record(took.as_secs_f64());
    }
}

/// Describes every series once per process (units and help text for exporters that use them).
/// The recorder is user code: a panic in it is caught inside the `Once`, which a panic would
/// poison, making every later batcher's build panic.
fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        super::quietly(describe_each);
    });
}

fn describe_each() {
    describe_counter!("busline_requests_total", Unit::Count, "Requests that boarded a batch, duplicates included.");
    describe_counter!("busline_batches_total", Unit::Count, "Batch calls ended, by outcome.");
    describe_histogram!("busline_batch_keys", Unit::Count, "Distinct keys per batch call.");
    describe_histogram!("busline_batch_requests", Unit::Count, "Requests per batch call.");
    describe_histogram!("busline_queue_wait_seconds", Unit::Seconds, "Wait of each batch's first request before departure.");
    describe_histogram!("busline_batch_duration_seconds", Unit::Seconds, "Duration of each batch call.");
    describe_gauge!("busline_in_flight_batches", Unit::Count, "Batch calls running.");
    describe_gauge!("busline_window_seconds", Unit::Seconds, "Window the policy applied to the latest batch.");
    describe_counter!("busline_rejected_total", Unit::Count, "Requests refused at capacity.");
    describe_counter!("busline_ran_alone_total", Unit::Count, "Requests run alone at capacity.");
    describe_counter!("busline_cancelled_total", Unit::Count, "Requests given up by their caller.");
    describe_counter!("busline_timeouts_total", Unit::Count, "Batch calls dropped at batch_timeout.");
}
