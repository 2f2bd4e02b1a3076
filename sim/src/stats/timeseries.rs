//! Per-time-bucket counts through a run, for the time-series plot.

use super::Histogram;

/// One time bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Requests that arrived in the bucket (with `[client]`: fresh requests only).
    pub arrivals: u64,
    /// Queries dispatched in the bucket.
    pub queries: u64,
    /// `[client]`: retries that arrived in the bucket (not in `arrivals`).
    pub retries: u64,
    /// `[client]`: requests answered within their timeout in the bucket.
    pub goodput: u64,
    /// Latencies of the requests that arrived in the bucket (coarse: 1/16 precision).
    pub latency: Histogram,
}

/// Buckets of fixed width from time 0.
#[derive(Debug, Clone)]
pub struct TimeSeries {
    /// Bucket width, ns.
    pub bucket_ns: u64,
    /// The buckets, in time order.
    pub buckets: Vec<Bucket>,
}

impl TimeSeries {
    /// An empty series of `bucket_ns` buckets.
    ///
    /// # Panics
    ///
    /// If `bucket_ns` is 0.
    pub fn new(bucket_ns: u64) -> TimeSeries {
        assert!(bucket_ns > 0, "zero-width time bucket");
        TimeSeries { bucket_ns, buckets: Vec::new() }
    }

    /// The bucket holding instant `t_ns`, created (with those before it) if needed.
    #[inline]
    pub fn at(&mut self, t_ns: u64) -> &mut Bucket {
        let i = (t_ns / self.bucket_ns) as usize;
        while self.buckets.len() <= i {
            self.buckets.push(Bucket { arrivals: 0, queries: 0, retries: 0, goodput: 0, latency: Histogram::with_precision(4) });
        }
        &mut self.buckets[i]
    }

    /// Bucket width in seconds.
    pub fn bucket_s(&self) -> f64 {
        self.bucket_ns as f64 / 1e9
    }
}
