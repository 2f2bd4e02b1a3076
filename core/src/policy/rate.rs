//! An estimate of the arrival rate that averages over a number of arrivals, not a fixed time.

use std::time::Duration;

use super::Instant;

/// The shortest span the estimate divides by: a burst of simultaneous arrivals reads as a
/// high rate, not an infinite one.
const MIN_SPAN: Duration = Duration::from_micros(1);

/// Arrivals per second over the last `samples` arrivals: `samples / (now - oldest)`.
///
/// A fixed-time average is either too noisy at low rates (a 20 ms average holds 2 arrivals at
/// 100/s, so three close arrivals read as 3x the rate) or too slow at high ones. Counting a
/// fixed number of arrivals instead gives the same relative error at any rate: for Poisson
/// traffic the span of `k` gaps is Gamma-distributed, a relative standard deviation of
/// `1 / sqrt(k)` (18 % at 32), and reading twice the true rate needs the 32 gaps to take half
/// their expected time, which happens with probability ~5e-4. The estimate follows a step up
/// within `samples` arrivals (a few milliseconds into a burst), and because `now` is the end of
/// the span, an idle road reads as a falling rate at once, with no stale state.
#[derive(Debug, Clone)]
pub(super) struct RateEstimator {
    /// Arrival instants, a ring of the last `samples` (oldest at `next` once full).
    times: Vec<Instant>,
    next: usize,
    samples: usize,
}

impl RateEstimator {
    pub(super) fn new(samples: u32) -> RateEstimator {
        let samples = samples.max(2) as usize;
        RateEstimator { times: Vec::with_capacity(samples), next: 0, samples }
    }

    /// `n` arrivals at `now`.
    pub(super) fn record(&mut self, now: Instant, n: usize) {
        for _ in 0..n.min(self.samples) {
            if self.times.len() < self.samples {
                self.times.push(now);
            } else {
                self.times[self.next] = now;
                self.next += 1;
                if self.next == self.samples {
                    self.next = 0;
                }
            }
        }
    }

    /// The estimated rate at `now`, in arrivals per second.
    pub(super) fn rate_per_s(&self, now: Instant) -> f64 {
        if self.times.len() < 2 {
            return 0.0;
        }
        let oldest = if self.times.len() < self.samples { self.times[0] } else { self.times[self.next] };
        let span = (now - oldest).max(MIN_SPAN);
        self.times.len() as f64 / span.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(rate_per_s: u64, n: u64, samples: u32) -> (RateEstimator, Instant) {
        let mut r = RateEstimator::new(samples);
        let gap = 1_000_000_000 / rate_per_s;
        for i in 1..=n {
            r.record(Instant::from_nanos(i * gap), 1);
        }
        (r, Instant::from_nanos(n * gap))
    }

    #[test]
    fn converges_to_a_steady_rate_at_any_scale() {
        for rate in [10, 100, 10_000, 1_000_000] {
            let (r, end) = steady(rate, 2_000, 32);
            let est = r.rate_per_s(end);
            let err = (est - rate as f64).abs() / rate as f64;
            assert!(err < 0.05, "rate {rate}: estimated {est}");
        }
    }

    #[test]
    fn follows_a_step_up_within_a_few_dozen_arrivals() {
        let (mut r, end) = steady(100, 500, 32);
        // 100/s -> 100,000/s: 32 arrivals into the burst, the estimate is the burst's rate.
        for i in 1..=32u64 {
            r.record(end + Duration::from_micros(10 * i), 1);
        }
        let est = r.rate_per_s(end + Duration::from_micros(320));
        assert!(est > 80_000.0, "{est}");
    }

    #[test]
    fn decays_when_idle() {
        let (mut r, end) = steady(10_000, 1_000, 32);
        let busy = r.rate_per_s(end);
        let idle = r.rate_per_s(end + Duration::from_secs(3));
        assert!(idle < busy * 2e-3, "{busy} -> {idle}");
        // The first arrivals after a long idle spell do not read as the old burst.
        r.record(end + Duration::from_secs(3), 1);
        assert!(r.rate_per_s(end + Duration::from_secs(3)) < 20.0);
    }

    #[test]
    fn simultaneous_arrivals_do_not_read_as_infinite() {
        let mut r = RateEstimator::new(32);
        r.record(Instant::from_nanos(1_000), 500);
        assert!(r.rate_per_s(Instant::from_nanos(1_000)).is_finite());
    }
}
