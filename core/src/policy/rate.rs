//! An exponentially weighted estimate of the arrival rate.

use std::time::Duration;

use super::Instant;

/// Arrivals per second, as an exponentially decaying count over a time constant `tau`.
///
/// Each arrival adds 1 to a count that decays as `exp(-dt / tau)`; the rate is `count / tau`.
/// This is the estimator of the Linux load average and of most EWMA meters: one multiply per
/// update, no history kept, and after a step change in rate it converges with time constant
/// `tau`. A steady rate λ gives, in expectation, `λ·(1 - exp(-t/tau))` after `t`.
#[derive(Debug, Clone)]
pub(super) struct RateEstimator {
    tau_s: f64,
    count: f64,
    last: Option<Instant>,
}

impl RateEstimator {
    pub(super) fn new(tau: Duration) -> RateEstimator {
        RateEstimator {
            tau_s: tau.as_secs_f64().max(1e-9),
            count: 0.0,
            last: None,
        }
    }

    /// `n` arrivals at `now`.
    pub(super) fn record(&mut self, now: Instant, n: usize) {
        self.decay_to(now);
        self.count += n as f64;
    }

    /// The estimated rate at `now`, in arrivals per second.
    pub(super) fn rate_per_s(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let dt = (now - last).as_secs_f64();
        self.count * (-dt / self.tau_s).exp() / self.tau_s
    }

    fn decay_to(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = (now - last).as_secs_f64();
            self.count *= (-dt / self.tau_s).exp();
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_steady_rate() {
        let mut r = RateEstimator::new(Duration::from_millis(10));
        // 100k/s for 100 ms: 10 time constants.
        for i in 0..10_000u64 {
            r.record(Instant::from_nanos(i * 10_000), 1);
        }
        let est = r.rate_per_s(Instant::from_nanos(100_000_000));
        assert!((est - 100_000.0).abs() / 100_000.0 < 0.01, "{est}");
    }

    #[test]
    fn decays_when_idle() {
        let mut r = RateEstimator::new(Duration::from_millis(10));
        for i in 0..1_000u64 {
            r.record(Instant::from_nanos(i * 10_000), 1);
        }
        let busy = r.rate_per_s(Instant::from_nanos(10_000_000));
        let idle = r.rate_per_s(Instant::from_nanos(110_000_000));
        assert!(idle < busy * 1e-3, "{busy} -> {idle}");
    }
}
