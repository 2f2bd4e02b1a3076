//! What a batcher tells the outside world: `metrics` counters and histograms, `tracing` spans.
//!
//! One seam for both optional integrations. The engine calls the functions of `Observer` at
//! the few moments of a batch's life (departure, completion) and on the rare paths of a request
//! (refused, run alone, given up); with the `metrics` and `tracing` features off every one of
//! them is an empty inline function of a zero-sized type, so the hot path costs what it cost
//! before. Nothing here runs per boarded request on the common path: requests are counted per
//! batch, by the driver.
//!
//! | feature | what it adds |
//! |---|---|
//! | `metrics` | the counters, gauges and histograms of [`metrics`], through the `metrics` facade (any recorder: Prometheus, StatsD, ...) |
//! | `tracing` | one span per batch that `follows_from` each caller's span; each caller's `busline.load` span records the batch that served it |

#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "tracing")]
pub(crate) mod tracing;

use std::time::Duration;

/// How a batch call ended, as the observers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The batch function returned its map.
    Ok,
    /// The batch function returned an error.
    Failed,
    /// The batch function panicked (its call or its future).
    Panicked,
    /// The call ran past `batch_timeout` and was dropped.
    TimedOut,
    /// The runtime went away before the call finished.
    Closed,
}

impl Ending {
    /// How the batch whose outcome is `outcome` ended.
    pub(crate) fn of<T, E>(outcome: &Result<T, crate::Error<E>>) -> Ending {
        match outcome {
            Ok(_) => Ending::Ok,
            Err(crate::Error::Panicked) => Ending::Panicked,
            Err(crate::Error::Timeout) => Ending::TimedOut,
            Err(crate::Error::Closed) => Ending::Closed,
            Err(_) => Ending::Failed,
        }
    }

    #[cfg_attr(
        not(any(feature = "metrics", feature = "tracing")),
        allow(dead_code, reason = "named by the metrics and tracing observers only")
    )]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ending::Ok => "ok",
            Ending::Failed => "error",
            Ending::Panicked => "panicked",
            Ending::TimedOut => "timeout",
            Ending::Closed => "closed",
        }
    }
}

/// What the driver knows about a batch when it departs.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(any(feature = "metrics", feature = "tracing")),
    allow(dead_code, reason = "read by the metrics and tracing observers only")
)]
pub(crate) struct Departure {
    /// Requests aboard (duplicates included).
    pub(crate) requests: usize,
    /// Distinct keys sent to the batch function.
    pub(crate) keys: usize,
    /// How long the first request waited before departure.
    pub(crate) queue_wait: Duration,
    /// The window the policy applied to this batch.
    pub(crate) window: Duration,
}

/// A batcher's observers: metric handles (registered once, at build) and the batch span factory.
#[derive(Debug)]
pub(crate) struct Observer {
    #[cfg(feature = "metrics")]
    metrics: metrics::Handles,
    #[cfg(feature = "tracing")]
    name: std::sync::Arc<str>,
    #[cfg(feature = "tracing")]
    policy: &'static str,
}

/// A departed batch as its observers follow it; carried with the batch to its completion and
/// published with its outcome (each caller links its own span to the batch's).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "tracing"), derive(Default))]
pub(crate) struct BatchTrace {
    #[cfg(feature = "tracing")]
    pub(crate) span: ::tracing::Span,
}

#[cfg(feature = "tracing")]
impl Default for BatchTrace {
    fn default() -> BatchTrace {
        BatchTrace { span: ::tracing::Span::none() }
    }
}

impl Observer {
    /// Registers the metric handles of a batcher labelled `name` that applies `policy` (its
    /// [`Policy::name`](crate::Policy::name)).
    pub(crate) fn new(name: &std::sync::Arc<str>, policy: &'static str) -> Observer {
        let _ = (name, policy);
        Observer {
            // Registering runs the installed recorder (user code): if it panics, this batcher
            // reports nothing, and builds and serves all the same.
            #[cfg(feature = "metrics")]
            metrics: quietly(|| metrics::Handles::new(name)).unwrap_or_else(metrics::Handles::noop),
            #[cfg(feature = "tracing")]
            name: std::sync::Arc::clone(name),
            #[cfg(feature = "tracing")]
            policy,
        }
    }

    /// A bus was sealed with `requests` aboard (counted whether or not its batch is then sent).
    #[inline]
    pub(crate) fn boarded(&self, requests: usize) {
        let _ = requests;
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.requests.increment(requests as u64));
    }

    /// A batch that was never sent ended so (every key aboard panicked before the call).
    #[inline]
    pub(crate) fn ended_unsent(&self, ending: Ending) {
        let _ = ending;
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.ended_unsent(ending));
    }

    /// A batch departs.
    #[inline]
    pub(crate) fn departed(&self, departure: &Departure) -> BatchTrace {
        let _ = departure;
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.departed(departure));
        BatchTrace {
            #[cfg(feature = "tracing")]
            span: quietly(|| tracing::batch_span(&self.name, self.policy, departure, false)).unwrap_or_else(::tracing::Span::none),
        }
    }

    /// A solo run (a request run alone at capacity) starts: its trace, a batch of one.
    #[inline]
    pub(crate) fn started_alone(&self) -> BatchTrace {
        BatchTrace {
            #[cfg(feature = "tracing")]
            span: quietly(|| {
                let alone = Departure { requests: 1, keys: 1, queue_wait: Duration::ZERO, window: Duration::ZERO };
                tracing::batch_span(&self.name, self.policy, &alone, true)
            })
            .unwrap_or_else(::tracing::Span::none),
        }
    }

    /// A batch call ended after `took`.
    #[inline]
    pub(crate) fn finished(&self, trace: &BatchTrace, ending: Ending, took: Duration) {
        let _ = (trace, ending, took);
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.finished(ending, took));
        #[cfg(feature = "tracing")]
        quietly(|| tracing::finished(&trace.span, ending, took));
    }

    /// A solo run (a request run alone at capacity) traced by `trace` ended after `took`.
    #[inline]
    pub(crate) fn finished_alone(&self, trace: &BatchTrace, ending: Ending, took: Duration) {
        let _ = (trace, ending, took);
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.finished_alone(ending, took));
        #[cfg(feature = "tracing")]
        quietly(|| tracing::finished(&trace.span, ending, took));
    }

    /// The caller traced by `load` was served by the solo run traced by `trace`: link them.
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn served_alone(&self, load: &::tracing::Span, trace: &BatchTrace) {
        quietly(|| tracing::served(load, &trace.span));
    }

    /// A request was refused at capacity.
    #[inline]
    pub(crate) fn rejected(&self) {
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.rejected.increment(1));
    }

    /// A request ran alone at capacity.
    #[inline]
    pub(crate) fn ran_alone(&self) {
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.ran_alone.increment(1));
    }

    /// A request's caller gave up before its answer.
    #[inline]
    pub(crate) fn cancelled(&self) {
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.cancelled.increment(1));
    }
}

/// Runs an observer call (user code: the installed metrics recorder, the tracing subscriber),
/// catching a panic: the engine calls observers between steps that must both happen (a batch's
/// publication, a seat's release), and a panicking recorder must cost its measurement, not
/// the callers' answers or the slot. `None` if it panicked.
#[cfg(any(feature = "metrics", feature = "tracing"))]
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}
