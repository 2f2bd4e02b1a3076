//! Counters and summaries a batcher keeps about itself, cheap enough to leave on.
//!
//! Nearly every figure is written by the driver alone (one thread at a time), once per batch,
//! with Relaxed atomics; the per-request path touches no statistic except on its rare paths
//! (cancel, reject, run alone). `requests` is the sum of the seats of every sealed batch.

use crossbeam_utils::CachePadded;

use crate::observe::Ending;
use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a batcher's counters, from [`Batcher::stats`](crate::Batcher::stats).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests that boarded a batch (each `load` counts once, duplicates included).
    pub requests: u64,
    /// Batch function calls made for batches (a solo run under
    /// [`Overflow::RunAlone`](crate::Overflow::RunAlone) is counted in `ran_alone` instead).
    pub batches: u64,
    /// Keys sent to the batch function (distinct within each batch).
    pub keys_sent: u64,
    /// Requests whose caller dropped its future before the answer: seated on a bus, or running
    /// alone under [`Overflow::RunAlone`](crate::Overflow::RunAlone) (not one still waiting
    /// for room, which was never admitted).
    pub cancelled: u64,
    /// Requests refused with [`Error::Overloaded`](crate::Error::Overloaded).
    pub rejected: u64,
    /// Requests run alone by the [`Overflow::RunAlone`](crate::Overflow::RunAlone) policy.
    pub ran_alone: u64,
    /// Batch function calls, solo runs included, that returned an error. (A batch cut short
    /// by its runtime's shutdown, its callers answered `Closed`, is counted in none of the
    /// three.)
    pub failed_batches: u64,
    /// Batch function calls, solo runs included, that panicked (their call or their future),
    /// and batches never sent because every key aboard panicked in its `Hash`, `Eq` or
    /// `Clone` (a key that panics among others fails its own callers, not its batch).
    pub panicked_batches: u64,
    /// Batch function calls, solo runs included, dropped for running longer than
    /// `batch_timeout`.
    pub timed_out_batches: u64,
    /// Distinct keys per batch call.
    pub batch_size: Summary,
    /// How long each batch's first request waited before departure, in microseconds.
    pub queue_wait_us: Summary,
}

/// Count, mean, maximum and approximate quantiles of a series of values.
///
/// Quantiles come from a log-linear histogram (4 sub-buckets per power of two): each is the
/// upper bound of its bucket, at most 19 % above the true value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The largest.
    pub max: u64,
    /// Median (bucket upper bound).
    pub p50: u64,
    /// 99th percentile (bucket upper bound).
    pub p99: u64,
}

const SUB_BITS: u32 = 2;
const BUCKETS: usize = 64 << SUB_BITS;

/// A log-linear histogram with one writer at a time.
#[derive(Debug)]
pub(crate) struct Histogram {
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

fn bucket_of(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (((exp - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
}

fn upper_bound_of(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < (1 << SUB_BITS) {
        return b;
    }
    let exp = (b >> SUB_BITS) + u64::from(SUB_BITS) - 1;
    let sub = b & ((1 << SUB_BITS) - 1);
    let base = 1u64 << exp;
    let width = base >> SUB_BITS;
    (base - 1).saturating_add((sub + 1) * width)
}

impl Histogram {
    pub(crate) fn new() -> Histogram {
        Histogram {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records `v`. One writer at a time (the driver).
    pub(crate) fn record(&self, v: u64) {
        let add = |a: &AtomicU64, x: u64| a.store(a.load(Ordering::Relaxed).wrapping_add(x), Ordering::Relaxed);
        add(&self.count, 1);
        add(&self.sum, v);
        if v > self.max.load(Ordering::Relaxed) {
            self.max.store(v, Ordering::Relaxed);
        }
        add(&self.buckets[bucket_of(v)], 1);
    }

    pub(crate) fn summary(&self) -> Summary {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return Summary::default();
        }
        let quantile = |q: f64| {
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, b) in self.buckets.iter().enumerate() {
                seen += b.load(Ordering::Relaxed);
                if seen >= rank {
                    return upper_bound_of(i);
                }
            }
            self.max.load(Ordering::Relaxed)
        };
        let max = self.max.load(Ordering::Relaxed);
        Summary {
            count,
            mean: self.sum.load(Ordering::Relaxed) as f64 / count as f64,
            max,
            p50: quantile(0.5).min(max),
            p99: quantile(0.99).min(max),
        }
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug)]
pub(crate) struct StatsCells {
    // Written by the driver only.
    pub(crate) requests: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) keys_sent: AtomicU64,
    pub(crate) batch_size: Histogram,
    pub(crate) queue_wait_us: Histogram,
    // Written by callers and batch tasks, on rare paths.
    pub(crate) cancelled: CachePadded<AtomicU64>,
    pub(crate) rejected: AtomicU64,
    pub(crate) ran_alone: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) panicked_batches: AtomicU64,
    pub(crate) timed_out_batches: AtomicU64,
}

impl StatsCells {
    pub(crate) fn new() -> StatsCells {
        StatsCells {
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            keys_sent: AtomicU64::new(0),
            batch_size: Histogram::new(),
            queue_wait_us: Histogram::new(),
            cancelled: CachePadded::new(AtomicU64::new(0)),
            rejected: AtomicU64::new(0),
            ran_alone: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            panicked_batches: AtomicU64::new(0),
            timed_out_batches: AtomicU64::new(0),
        }
    }

    /// Adds `n` to a counter with one writer (the driver): a load and a store, no RMW.
    pub(crate) fn bump_single_writer(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Adds 1 to a counter with many writers.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts how a batch call (a batch's or a solo run's) ended, in the counter of its kind
    /// of failure, if any. Many writers: batch tasks and solo callers.
    pub(crate) fn count_ending(&self, ending: Ending) {
        match ending {
            Ending::Ok | Ending::Closed => {}
            Ending::Failed => StatsCells::bump(&self.failed_batches),
            Ending::Panicked => StatsCells::bump(&self.panicked_batches),
            Ending::TimedOut => StatsCells::bump(&self.timed_out_batches),
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            batches: get(&self.batches),
            keys_sent: get(&self.keys_sent),
            cancelled: get(&self.cancelled),
            rejected: get(&self.rejected),
            ran_alone: get(&self.ran_alone),
            failed_batches: get(&self.failed_batches),
            panicked_batches: get(&self.panicked_batches),
            timed_out_batches: get(&self.timed_out_batches),
            batch_size: self.batch_size.summary(),
            queue_wait_us: self.queue_wait_us.summary(),
        }
    }
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounded() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last, "bucket order at {v}");
            last = b;
            let ub = upper_bound_of(b);
            assert!(ub >= v, "{v} above its bucket's bound {ub}");
            assert!(v < 4 || (ub - v) as f64 <= 0.25 * v as f64, "{v} -> {ub}");
        }
    }

    #[test]
    fn summary_of_a_uniform_series() {
        let h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!((s.count, s.max), (1000, 1000));
        assert!((s.mean - 500.5).abs() < 1e-9);
        assert!((500..=600).contains(&s.p50), "{}", s.p50);
        assert!((990..=1000).contains(&s.p99), "{}", s.p99);
    }
}
