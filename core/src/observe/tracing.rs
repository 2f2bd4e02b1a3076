//! The `tracing` feature: one span per batch, linked to the span of every caller on it.
//!
//! A batch is fan-in: many callers' requests, one backend call. Its span (`busline.batch`,
//! target `busline`) is a root of its own, created when the bus departs, with the batcher's
//! name, the requests aboard, the distinct keys, the policy, its window and the queue wait; it
//! records its outcome and duration when the call ends. Each caller's load runs in a
//! `busline.load` span (a child of whatever span the caller is in), and when the caller reads its
//! answer the batch span `follows_from` that span and the load span records `batch.id`, so a trace
//! viewer can go from any request to the query that served it and back (OpenTelemetry maps
//! `follows_from` to span links). The batch span stays open until the last of its callers has
//! read its answer, so every link lands on a live span. A solo run (`Overflow::RunAlone`) is a
//! batch call too: it has a `busline.batch` span of one request, with `batch.alone = true`.

use std::time::Duration;

use tracing::{Span, field};

use super::{Departure, Ending};

/// The span of a departing batch, or of a solo run (`alone`: one request run alone at
/// capacity, under `Overflow::RunAlone`).
pub(crate) fn batch_span(name: &str, policy: &'static str, d: &Departure, alone: bool) -> Span {
    tracing::info_span!(
        target: "busline",
        parent: None,
        "busline.batch",
        batcher = name,
        batch.requests = d.requests as u64,
        batch.keys = d.keys as u64,
        batch.policy = policy,
        batch.window_us = d.window.as_micros() as u64,
        batch.queue_wait_us = d.queue_wait.as_micros() as u64,
        batch.alone = alone,
        batch.outcome = field::Empty,
        batch.duration_us = field::Empty,
    )
}

/// Records how the batch call ended.
pub(crate) fn finished(span: &Span, ending: Ending, took: Duration) {
    span.record("batch.outcome", ending.as_str());
    span.record("batch.duration_us", took.as_micros() as u64);
}

/// The span a caller's load runs in.
pub(crate) fn load_span() -> Span {
    tracing::debug_span!(target: "busline", "busline.load", batch.id = field::Empty)
}

/// A caller read its answer from the batch traced by `batch`: link the two.
pub(crate) fn served(load: &Span, batch: &Span) {
    batch.follows_from(load);
    if let Some(id) = batch.id() {
        load.record("batch.id", id.into_u64());
    }
}
