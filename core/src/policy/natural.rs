//! Natural batching that answers congestion with bigger buses, and only congestion.
//!
//! # Control law
//!
//! Plain natural batching (LMAX's smart batching) sends whatever waits the moment an in-flight
//! place is free. On an empty road that is a car: no wait at all. Under load it is
//! work-conserving at the places: every place that frees takes the few passengers that came
//! since, so the backend runs all `max_in_flight` places with small batches, sits at full
//! utilisation, and the next bus queues for a place. That queue is the wrong place to wait:
//! a bus that waits for a place runs just as small as one that left at once, while a bus that
//! waits *at the stop* fills, and one query of `n` costs the backend far less than `n` queries
//! (a per-query cost `b` is paid once; `k` per key is paid anyway).
//!
//! So this policy holds a bus at the stop for about as long as buses have recently had to wait
//! for a place, and only while the places are busy enough for that to pay:
//!
//! - `D` is the wait a bus had between its release and its dispatch because every place was
//!   taken (the backend's wait; a driver's own delay does not count).
//! - `h`, the hold, is a decaying peak of `D`: a bus that waited `D` for a place raises `h` to
//!   `D` at once, and `h` decays by `1 − 1/MEMORY` per departure. A peak, not a mean: once
//!   buses are held, few of them queue, and a mean of mostly zeros would release the hold just
//!   as it starts to work.
//! - `U` is the places' utilisation, measured by the scheduler itself from its inputs: the
//!   time-average of the batches in flight over `max_in_flight`, over the last `MEMORY`
//!   departures (the integral of a count the scheduler keeps, between instants it is given:
//!   no clock).
//! - A bus leaves at once when nothing is in flight (an empty road: there is no queue to
//!   avoid) or when `U ≤ U*(c)` (below, a hold costs more than the queue it removes; see
//!   below); else `h` after its first passenger (at once while `h` is 0), or when it is full.
//!
//! **Why it shortens the queue.** With `c` places, per-query cost `S(n) = b + k n` and arrival
//! rate `λ`, batches of `n` load each place at `ρ(n) = λ (b / n + k) / c`. The wait for a
//! place grows like `ρ / (1 − ρ)` (M/M/c, Erlang C: `Wq = C(c, a) / (cμ − λ)`; Kingman's
//! `Wq ≈ S ρ / (1 − ρ) · (Ca² + Cs²) / 2` in heavy traffic): near `ρ = 1` every request a bus
//! gains lowers the queue by far more than the time it took to collect it. Holding `h` adds
//! `λ h` passengers per bus and at most `h` to a passenger's wait; it lowers `ρ`, and with it
//! `D`, so `h` falls again. The loop settles where the hold is about the queue it removes:
//! a passenger waits at the stop, in a filling bus, instead of in the queue for a place. When
//! nothing queues for a place, `D = 0`, `h` decays to 0 within `MEMORY` departures and
//! the policy is plain natural batching again: congestion is the only reason it ever waits.
//!
//! **When a hold pays: `U*(c)`.** A hold `h` collecting batches of `n ≈ λ h` (per-key part
//! aside) costs a passenger up to `h` and sets `ρ = b / (c h)`. Minimising `h + Wq(ρ)` with
//! Sakasegawa's M/M/c approximation `Wq ≈ (S / c) ρ^e / (1 − ρ)`, `e = √(2 (c + 1)) − 1`
//! (exact for one place), gives the utilisation below which lengthening the hold costs more
//! than it saves: the root of `ρ^(e+1) (e (1 − ρ) + ρ) = (1 − ρ)²`, which is 1/2 for one
//! place (M/M/1: `ρ / (1 − ρ) = 1`), 0.52 for 2, 0.54 for 4, 0.57 for 8. So the hold is
//! applied only while the measured `U` is above `U*(c)`: a bus that queued for a place now
//! and then at a light load (the places are busy a fifth of the time, and once in a while all
//! at once) no longer makes the next 64 buses wait for company that does not come.
//!
//! The hold never grows because the backend is slow or because requests are many: only
//! because buses queued, at a utilisation where a queue costs more than a hold.
//!
//! **What it does not see.** A backend that slows down with concurrency (lock contention)
//! while places stay free never makes a bus queue, so the hold stays 0 although fewer, bigger
//! queries would run faster; and at a moderate load a small fixed window (a tenth of the
//! service time) merges the near-simultaneous arrivals that would otherwise find every place
//! busy, a gain in p99 that needs no queue to have formed. In both a fixed window can beat
//! natural batching on queries and p99 (in 8 of the 50 generated scenarios of `busline-sim`
//! in one run each; see `reports/sim`). Seeing the first would take the backend's time per
//! batch against its concurrency, which the scheduler is not told. A backend that saturates
//! anyway (a hold cannot lower `ρ` below `λ k / c`) still gets the largest buses natural
//! batching can form: a bus waiting for a place keeps filling until one frees.

use std::time::Duration;

use super::Instant;
use super::scheduler::Due;

/// Departures over which a wait for a place and the places' utilisation are forgotten (decay
/// to 1/e). 64 departures are a few milliseconds into a burst, so the hold follows a change of
/// load within a burst (bursts last 0.1 to 10 s), and long enough for a held bus's effect on
/// the queue to show (and for `U` to average over several batches on every place).
const MEMORY: f64 = 64.0;

#[derive(Debug, Clone)]
pub(super) struct Natural {
    /// The hold `h`, in nanoseconds.
    hold_ns: f64,
    /// `max_in_flight`: the places `c`.
    places: f64,
    /// `U*(c)`: the utilisation above which a hold pays.
    target: f64,
    /// Decaying integral of the batches in flight over time, in place-nanoseconds.
    busy_ns: f64,
    /// Decaying time span of that integral, in nanoseconds.
    span_ns: f64,
}

/// `U*(c)`: the root in (0, 1) of `ρ^(e+1) (e (1 − ρ) + ρ) = (1 − ρ)²`, `e = √(2 (c + 1)) − 1`
/// (see the module docs). The left side grows and the right falls in `ρ`, so bisection finds it.
fn hold_pays_above(places: usize) -> f64 {
    let e = (2.0 * (places as f64 + 1.0)).sqrt() - 1.0;
    let excess = |r: f64| r.powf(e + 1.0) * (e * (1.0 - r) + r) - (1.0 - r) * (1.0 - r);
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if excess(mid) < 0.0 { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

impl Natural {
    /// Natural batching over `places` in-flight places.
    pub(super) fn new(places: usize) -> Natural {
        Natural {
            hold_ns: 0.0,
            places: places.max(1) as f64,
            target: hold_pays_above(places.max(1)),
            busy_ns: 0.0,
            span_ns: 0.0,
        }
    }

    /// The hold currently applied while batches are in flight (zero while it does not pay).
    pub(super) fn hold(&self) -> Duration {
        if self.pays() { Duration::from_nanos(self.hold_ns as u64) } else { Duration::ZERO }
    }

    /// `dt` passed with `in_flight` batches running.
    pub(super) fn observe(&mut self, dt: Duration, in_flight: usize) {
        let dt = dt.as_nanos() as f64;
        self.span_ns += dt;
        self.busy_ns += dt * in_flight as f64;
    }

    /// The places' utilisation `U` over the last `MEMORY` departures.
    fn utilisation(&self) -> f64 {
        if self.span_ns <= 0.0 { 0.0 } else { self.busy_ns / (self.places * self.span_ns) }
    }

    /// Whether the places are busy enough for a hold to shorten the queue by more than it costs.
    fn pays(&self) -> bool {
        self.utilisation() > self.target
    }

    /// A bus left after waiting `queued_for_place` for a free in-flight place.
    pub(super) fn on_dispatch(&mut self, queued_for_place: Duration) {
        let d = queued_for_place.as_nanos() as f64;
        let keep = 1.0 - 1.0 / MEMORY;
        self.hold_ns = (self.hold_ns * keep).max(d);
        self.busy_ns *= keep;
        self.span_ns *= keep;
    }

    pub(super) fn due(&self, opened: Instant, in_flight: usize) -> Due {
        let hold = self.hold();
        if in_flight == 0 || hold.is_zero() { Due::Now } else { Due::At(opened + hold) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Limits, Policy, Scheduler};
    use super::*;

    #[test]
    fn a_hold_pays_above_about_half_utilisation() {
        // M/M/1: ρ / (1 − ρ) = 1.
        assert!((hold_pays_above(1) - 0.5).abs() < 1e-9);
        let u: Vec<f64> = [2, 4, 8, 64].iter().map(|&c| hold_pays_above(c)).collect();
        assert!(u.windows(2).all(|w| w[0] < w[1]), "{u:?}");
        assert!((0.51..0.53).contains(&u[0]) && (0.53..0.56).contains(&u[1]) && (0.56..0.59).contains(&u[2]), "{u:?}");
    }

    /// Two places; each batch runs `service_us`. Arrivals every `gap_us` for `n` arrivals.
    /// Returns the scheduler and the mean batch size of the second half.
    fn run(gap_us: u64, service_us: u64, n: u64) -> (Scheduler, f64) {
        let limits = Limits { max_batch_size: 1000, max_in_flight: 2 };
        let mut s = Scheduler::new(Policy::Natural, limits).unwrap();
        let mut running: Vec<u64> = Vec::new();
        let (mut batches, mut boarded) = (0u64, 0u64);
        let mut t_next_timer: Option<u64>;
        for i in 0..n {
            let now = i * gap_us * 1_000;
            loop {
                t_next_timer = s.poll_timeout().map(Instant::as_nanos);
                let done = running.iter().copied().min();
                let step = [done, t_next_timer].into_iter().flatten().filter(|&x| x <= now).min();
                let Some(at) = step else { break };
                if done == Some(at) {
                    running.retain(|&d| d != at);
                    s.on_complete(Instant::from_nanos(at));
                } else {
                    s.on_timeout(Instant::from_nanos(at));
                }
                while let Some(Action::Dispatch { requests, .. }) = s.poll_action() {
                    running.push(at + service_us * 1_000);
                    if i >= n / 2 {
                        batches += 1;
                        boarded += requests as u64;
                    }
                }
            }
            s.on_arrival(Instant::from_nanos(now), 1);
            while let Some(Action::Dispatch { requests, .. }) = s.poll_action() {
                running.push(now + service_us * 1_000);
                if i >= n / 2 {
                    batches += 1;
                    boarded += requests as u64;
                }
            }
        }
        (s, boarded as f64 / batches.max(1) as f64)
    }

    #[test]
    fn light_load_never_holds() {
        // 1 arrival per ms, 300 µs batches on two places: U ≈ 0.15, well below U*(2) = 0.52.
        let (s, batch) = run(1_000, 300, 5_000);
        assert_eq!(s.current_window(), Duration::ZERO);
        assert!(batch < 1.01, "{batch}");
    }

    #[test]
    fn an_occasional_queue_at_light_load_holds_nobody() {
        // Every 5 ms three requests 10 µs apart, against two places of 300 µs: the third
        // always queues ~280 µs for a place (D), but the places are busy 9 % of the time, far
        // below U*(2): the next group's second request still leaves at once, not held for a
        // company that does not come (the old law held it D, and the third rode along).
        let limits = Limits { max_batch_size: 1000, max_in_flight: 2 };
        let mut s = Scheduler::new(Policy::Natural, limits).unwrap();
        let us = |x: u64| Instant::from_nanos(x * 1_000);
        let mut sizes = Vec::new();
        for group in 0..200u64 {
            let t = group * 5_000;
            for k in 0..3 {
                s.on_arrival(us(t + 10 * k), 1);
                while let Some(Action::Dispatch { requests, .. }) = s.poll_action() {
                    sizes.push(requests);
                }
                assert_eq!(s.poll_timeout(), None, "group {group}: a held bus");
            }
            // The first two complete at +300 and +310 µs; the third leaves at the first.
            s.on_complete(us(t + 300));
            while let Some(Action::Dispatch { requests, .. }) = s.poll_action() {
                sizes.push(requests);
            }
            s.on_complete(us(t + 310));
            s.on_complete(us(t + 600));
        }
        assert!(sizes.iter().all(|&n| n == 1), "{sizes:?}");
        assert_eq!(sizes.len(), 600);
    }

    #[test]
    fn congestion_makes_bigger_buses() {
        // 20 arrivals per ms against 2 places of 1 ms: cars would need 20 places.
        let (_, batch) = run(50, 1_000, 20_000);
        assert!(batch > 8.0, "mean batch {batch}");
    }
}
