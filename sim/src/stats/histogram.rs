//! A log-linear histogram of nanosecond values, in the manner of HdrHistogram.
//!
//! Values below `2^sub_bits` get one bucket each; above, every power-of-two range is split into
//! `2^sub_bits` equal buckets. With `sub_bits = 10` (the default) a bucket is at most 1/1024 of
//! its value wide, so a quantile is reported within 0.1 %; the mean and the maximum are exact (kept
//! beside the buckets). Recording is a shift, a leading-zero count and an increment: no
//! allocation once the bucket array has grown to the largest value seen.
//!
//! A run of equal values is counted before it reaches the buckets: the histogram holds the
//! last value recorded and how many times in a row, and adds them to its bucket only when
//! another value comes (or a reader asks). Many of a run's waits are runs of zeros (a car's
//! added wait, every connection wait while a connection is free): each costs a comparison.

/// Counts of `u64` values (nanoseconds) in log-linear buckets, with the exact sum and maximum.
///
/// # Examples
///
/// ```
/// use busline_sim::stats::Histogram;
///
/// let mut h = Histogram::new();
/// for v in 1..=1000 {
///     h.record(v * 1_000);
/// }
/// assert_eq!(h.count(), 1000);
/// assert_eq!(h.max(), 1_000_000);
/// assert!((h.mean() - 500_500.0).abs() < 1e-6);
/// let p50 = h.quantile(0.5) as f64;
/// assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01);
/// ```
#[derive(Debug, Clone)]
pub struct Histogram {
    sub_bits: u32,
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
    /// The last value recorded, and how many times in a row: not yet in `counts`, `count`
    /// and `sum` (already in `max`).
    run_value: u64,
    run_n: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// A histogram with 1024 buckets per power of two (quantiles within 0.1 %), fine enough to
    /// rank policies whose p99s differ by a fraction of a percent.
    pub fn new() -> Histogram {
        Histogram::with_precision(10)
    }

    /// A histogram with `2^sub_bits` buckets per power of two (relative error `2^-sub_bits`).
    ///
    /// # Panics
    ///
    /// If `sub_bits` is not in `1..=16`.
    pub fn with_precision(sub_bits: u32) -> Histogram {
        assert!((1..=16).contains(&sub_bits), "sub_bits {sub_bits} not in 1..=16");
        Histogram {
            sub_bits,
            counts: Vec::new(),
            count: 0,
            sum: 0,
            max: 0,
            run_value: 0,
            run_n: 0,
        }
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` occurrences of `value`.
    #[inline]
    pub fn record_n(&mut self, value: u64, n: u64) {
        if value == self.run_value {
            self.run_n += n;
            return;
        }
        self.end_run();
        self.max = self.max.max(value);
        (self.run_value, self.run_n) = (value, n);
    }

    /// Adds the run of equal values to the buckets.
    #[inline]
    fn end_run(&mut self) {
        let (value, n) = (self.run_value, std::mem::take(&mut self.run_n));
        if n == 0 {
            return;
        }
        let i = self.index_of(value);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
        self.count += n;
        self.sum += u128::from(value) * u128::from(n);
    }

    /// Adds every count of `other` (which must have the same precision).
    ///
    /// # Panics
    ///
    /// If the precisions differ.
    pub fn merge(&mut self, other: &Histogram) {
        assert_eq!(self.sub_bits, other.sub_bits, "merging histograms of different precision");
        self.end_run();
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
        self.record_n(other.run_value, other.run_n);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count + self.run_n
    }

    /// Exact sum of the values recorded.
    pub fn sum(&self) -> u128 {
        self.sum + u128::from(self.run_value) * u128::from(self.run_n)
    }

    /// Exact mean (0 when empty).
    pub fn mean(&self) -> f64 {
        let count = self.count();
        if count == 0 { 0.0 } else { self.sum() as f64 / count as f64 }
    }

    /// Exact maximum (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding the
    /// `ceil(q * count)`-th smallest value, capped at the maximum (and exactly the maximum for the
    /// last rank). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.run_n > 0 {
            let mut whole = self.clone();
            whole.end_run();
            return whole.quantile(q);
        }
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return self.max;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = self.bucket_bounds(i);
                return (lo + width / 2).min(self.max);
            }
        }
        self.max
    }

    #[inline]
    fn index_of(&self, value: u64) -> usize {
        let sub = self.sub_bits;
        if value < (1 << sub) {
            return value as usize;
        }
        let exp = 63 - value.leading_zeros(); // >= sub
        let shift = exp - sub;
        // Octave `shift + 1` starts at index (shift + 1) << sub; within it, the top `sub` bits
        // after the leading one pick the bucket.
        (((shift + 1) as usize) << sub) + ((value >> shift) as usize - (1 << sub))
    }

    /// The lowest value and the width of bucket `i`.
    fn bucket_bounds(&self, i: usize) -> (u64, u64) {
        let sub = self.sub_bits as usize;
        if i < (1 << sub) {
            return (i as u64, 1);
        }
        let octave = i >> sub; // = shift + 1
        let shift = (octave - 1) as u32;
        let offset = (i & ((1 << sub) - 1)) as u64;
        (((1u64 << sub) + offset) << shift, 1u64 << shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let h = Histogram::with_precision(4);
        let mut prev_end = 0;
        for i in 0..400 {
            let (lo, w) = h.bucket_bounds(i);
            assert_eq!(lo, prev_end, "bucket {i} starts where {} ended", i - 1);
            assert_eq!(h.index_of(lo), i);
            assert_eq!(h.index_of(lo + w - 1), i);
            if lo >= 16 {
                assert!(w as f64 / lo as f64 <= 1.0 / 16.0);
            }
            prev_end = lo + w;
        }
    }

    #[test]
    fn quantiles_within_precision() {
        let mut h = Histogram::new();
        for v in 0..100_000u64 {
            h.record(v * 37 + 5);
        }
        for q in [0.1f64, 0.5, 0.9, 0.99, 0.999] {
            let exact = ((q * 100_000.0).ceil() as u64 - 1) * 37 + 5;
            let got = h.quantile(q);
            let err = (got as f64 - exact as f64).abs() / exact as f64;
            assert!(err < 1.0 / 1024.0, "q {q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), 99_999 * 37 + 5);
    }

    #[test]
    fn runs_of_equal_values_count_as_the_values() {
        // The same values, in runs and one by one: the same figures.
        let values = [0, 0, 0, 5, 5, 0, 7, 7, 7, 7, 1 << 40, 0, 3];
        let mut runs = Histogram::new();
        let mut single = Histogram::new();
        for &v in &values {
            runs.record(v);
            single.end_run(); // every value reaches the buckets at once
            single.record(v);
        }
        runs.record_n(9, 0); // a value recorded no times still counts towards the maximum
        single.record_n(9, 0);
        single.end_run();
        assert_eq!(runs.count(), values.len() as u64);
        assert_eq!((runs.count(), runs.sum(), runs.max()), (single.count(), single.sum(), single.max()));
        for q in [0.0, 0.3, 0.5, 0.9, 1.0] {
            assert_eq!(runs.quantile(q), single.quantile(q), "q {q}");
        }
        let mut merged = Histogram::new();
        merged.record_n(5, 2);
        merged.merge(&runs);
        assert_eq!((merged.count(), merged.sum()), (runs.count() + 2, runs.sum() + 10));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record_n(1_000_000, 3);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.sum(), 3_000_010);
    }
}
