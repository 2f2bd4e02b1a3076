//! The gated window: wait only when enough passengers are around, like PostgreSQL's
//! `commit_delay`, which sleeps only when at least `commit_siblings` other transactions are
//! active.
//!
//! # Control law
//!
//! The gate opens (buses wait the window) when `threshold` requests already wait, or when the
//! estimated rate times the window reaches `threshold`; it closes (buses leave at once) only
//! when the estimate falls below half the threshold. The hysteresis matters: near the
//! threshold a memoryless gate flips with the estimate's noise (±18 % over 32 arrivals), and a
//! policy that sends half its buses as cars and makes the other half wait a full window gets
//! the queries of the first and the p99 of the second, a point any fixed window in between
//! beats on both. With the band, a steady load picks one behaviour and keeps it (leaving the
//! band needs a 2× error, 8 standard deviations), while a lull closes it. A burst opens it
//! within 32 arrivals, and a steep one (`FAST_OPEN` = 20 times the threshold's rate) within 4,
//! read by a fast estimate over the last 4 arrivals. Why 20: the 4 gaps of Poisson arrivals
//! sum to a Gamma(4) multiple of the mean gap, which falls below 1/20 of its mean (what
//! reading 20 times the true rate takes) with probability 5.6e-5 per arrival, so a load below
//! the threshold is not read as a burst (at 2 times, as before, it was 1.9 % per arrival at
//! half the threshold: the gate opened on noise, then held in the band, and the policy mixed
//! cars and full windows, the point the band exists to avoid); the adaptive policy's fast
//! path rests on the same bound.
//! Waiting for a free in-flight place does not count: a bus released while every place is
//! taken keeps filling until one frees.

use std::time::Duration;

use super::Instant;
use super::rate::RateEstimator;
use super::scheduler::Due;

/// Arrivals the rate estimate averages over (see `rate.rs`): ±18 % on Poisson traffic.
const RATE_SAMPLES: u32 = 32;
/// Arrivals of the fast estimate that opens the gate at the start of a burst.
const FAST_SAMPLES: u32 = 4;
/// The fast estimate opens the gate when it reads this many times the threshold: noise from
/// 4 arrivals does so with probability 5.6e-5 (see the module docs).
const FAST_OPEN: f64 = 20.0;

#[derive(Debug, Clone)]
pub(super) struct Gated {
    window: Duration,
    threshold: usize,
    rate: RateEstimator,
    fast: RateEstimator,
    /// Whether buses wait the window (see the hysteresis above).
    open: bool,
}

impl Gated {
    pub(super) fn new(window: Duration, threshold: usize) -> Gated {
        Gated {
            window,
            threshold,
            rate: RateEstimator::new(RATE_SAMPLES),
            fast: RateEstimator::new(FAST_SAMPLES),
            open: false,
        }
    }

    pub(super) fn window(&self) -> Duration {
        self.window
    }

    /// `n` arrivals at `now`, of which `queued` now wait: the gate is reconsidered.
    pub(super) fn on_arrival(&mut self, now: Instant, n: usize, queued: usize) {
        self.rate.record(now, n);
        self.fast.record(now, n);
        let w = self.window.as_secs_f64();
        let threshold = self.threshold as f64;
        let expected = self.rate.rate_per_s(now) * w;
        if queued >= self.threshold || expected >= threshold || self.fast.rate_per_s(now) * w >= FAST_OPEN * threshold {
            self.open = true;
        } else if expected < threshold / 2.0 {
            self.open = false;
        }
    }

    /// Wait the window if `threshold` requests already wait, or while the gate is open (the
    /// estimate is read at `now`, so an idle spell closes it); otherwise go now.
    pub(super) fn due(&self, now: Instant, opened: Instant, queued: usize) -> Due {
        let closing = self.rate.rate_per_s(now) * self.window.as_secs_f64() < self.threshold as f64 / 2.0;
        if queued >= self.threshold || (self.open && !closing) { Due::At(opened + self.window) } else { Due::Now }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Limits, Policy, Scheduler};
    use super::*;

    fn us(x: u64) -> Instant {
        Instant::from_nanos(x * 1_000)
    }

    fn scheduler(window_us: u64, threshold: usize) -> Scheduler {
        let limits = Limits { max_batch_size: 1000, max_in_flight: 4 };
        Scheduler::new(Policy::gated(Duration::from_micros(window_us), threshold), limits).unwrap()
    }

    #[test]
    fn never_waits_when_nothing_else_is_coming() {
        let mut s = scheduler(1_000, 3);
        // One request every 10 ms: 0.1 expected per window.
        for i in 0..100 {
            s.on_arrival(us(i * 10_000), 1);
            assert!(matches!(s.poll_action(), Some(Action::Dispatch { requests: 1, .. })));
            assert_eq!(s.poll_timeout(), None);
            s.on_complete(us(i * 10_000 + 100));
        }
    }

    #[test]
    fn waits_once_load_builds_and_stops_when_it_falls() {
        let mut s = scheduler(1_000, 3);
        let mut t = 0;
        // Steady 10 per ms (10 per window) for 50 ms: once the estimate reaches 3, it waits.
        let mut alone = 0;
        for i in 0..500 {
            t += 100;
            s.on_arrival(us(t), 1);
            match s.poll_action() {
                // A request that leaves alone did not wait for company.
                Some(Action::Dispatch { requests: 1, .. }) if i >= 250 => alone += 1,
                Some(_) => {}
                None => {
                    let deadline = s.poll_timeout().expect("a waiting stop has a deadline");
                    assert!(deadline <= us(t) + Duration::from_millis(1));
                }
            }
            // Complete what left, and flush whatever is due before the next arrival.
            while s.in_flight() > 0 {
                s.on_complete(us(t));
            }
            s.on_timeout(us(t + 99));
            while s.poll_action().is_some() {
                s.on_complete(us(t + 99));
            }
        }
        // Past the first half (the estimate has long converged), nobody goes alone.
        assert_eq!(alone, 0);
        // Let the last window close and send it.
        t += 2_000;
        s.on_timeout(us(t));
        while s.poll_action().is_some() {
            s.on_complete(us(t));
        }
        assert_eq!(s.queued(), 0);
        // Step down: one every 20 ms. After the estimate decays (20 windows), no more waiting.
        t += 100_000;
        for _ in 0..20 {
            t += 20_000;
            s.on_arrival(us(t), 1);
            assert!(matches!(s.poll_action(), Some(Action::Dispatch { requests: 1, .. })));
            s.on_complete(us(t + 1));
        }
    }
}
