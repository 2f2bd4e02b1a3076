//! Natural batching that answers congestion with bigger buses, and only congestion.
//!
//! # Control law
//!
//! Plain natural batching (LMAX's smart batching) sends whatever waits the moment an in-flight
//! place is free. On an empty road that is a car: no wait at all. Under load it is
//! work-conserving at the places: every place that frees takes the few passengers that came
//! since, so the backend runs its `max_in_flight` places with small batches, and a share of
//! the requests find every place busy and wait for one. That wait is the wrong one: a bus that
//! waits for a place runs just as small as one that left at once, while a bus that waits *at
//! the stop* fills, and one query of `n` costs the backend far less than `n` queries.
//!
//! So this policy holds each bus `h` after its first passenger (or until it is full), with `h`
//! chosen to minimise the predicted p99 of what a passenger waits: the hold plus the queue for
//! a place. Everything it uses it measures itself, from its own inputs (no clock), over the
//! last `MEMORY` departures (decaying averages):
//!
//! - `λ`, the arrival rate: arrivals over the span of time;
//! - `U`, the places' utilisation: the time-average of the batches in flight over `c`
//!   (`max_in_flight`);
//! - `T`, the mean time a batch spends in flight (Little's law: the integral of the batches in
//!   flight over the departures), the backend's service time, slowdown under contention
//!   included.
//!
//! **The model.** A hold `h` gives batches of about `1 + λ h` passengers, so (taking a query's
//! cost as per query) the places' load scales as `ρ(h) = U (1 + λ h₀) / (1 + λ h)`, `h₀` the
//! hold applied now. The wait for a place is taken as in an M/M/c queue: a fraction `C(c, ρ)`
//! of arrivals (Erlang C) find every place busy, and the wait exceeds `t` with probability
//! `C e^(−c (1 − ρ) t / T)`, so its p99 is `T ln(100 C) / (c (1 − ρ))` when `C > 1 %`, and 0
//! when fewer than 1 % of arrivals wait at all. The hold is the `h` in `0, T/32, …, T` that
//! minimises `h + p99 wait(ρ(h))`, chosen again at every departure.
//!
//! **Why the p99, and why every bus.** The old law minimised the *mean* wait and held only
//! above about half utilisation; a fixed window of a tenth of the service time then beat it on
//! queries and p99 wherever 1 to 15 % of arrivals met a busy backend (the mean hardly moves,
//! the p99 is that wait). And the hold applies to every bus, whether or not batches are in
//! flight: a hold applied to some buses only makes more than 1 % of passengers wait `h` (the
//! p99 sees it) while saving the queries of a few, a mix any fixed window in between beats.
//!
//! **Why the hold decays slowly.** The hold follows the load up at once, but down only as a
//! decaying peak (over `HOLD_MEMORY` departures, 16 times the averages' memory). The p99 of a
//! run is set by its busiest stretches, where a passenger waits the hold and the queue: once
//! a burst has made more than 1 % of passengers wait `h` plus a queue, a hold up to `h` kept
//! afterwards (with a shorter queue) takes nobody past that wait, and raises the p99 only as
//! far as it puts more passengers near it, while it keeps the buses full. A hold that tracked
//! the load down within 64 departures mixed long holds in the peaks with short ones between
//! them: the p99 of the first and the queries of the second, a point a fixed window in between
//! beats (over the 150 generated scenarios of `busline-sim`, a window beat natural in 13 in
//! one run each and 6 replicated five times; with the decaying peak, in 10 and 3). The cost:
//! right after a burst, a light load waits the decaying hold (at most one time in flight) for
//! some hundreds of departures, and where the load after a burst stays high (the bundled
//! `flash-crowd`), more requests wait the long hold: there natural's p99 rose about 5 %, and a
//! window of 0.5 ms comes within the noise of beating it. The memory is not fitted: 4
//! `MEMORY`s lost 13 generated scenarios in single runs, 64 lost 9 (and won `flash-crowd`
//! back), at the price of a light load held for thousands of departures after a burst.
//!
//! **Bounds.** A hold longer than `T` is never tried: a bus released while every place is busy
//! leaves at the first completion, within about `T`, so a longer hold replaces a wait it cannot
//! exceed. Below 1 % of arrivals finding every place busy, the p99 has no queue in it and
//! the search finds `h = 0`: on an empty road (one that was not just congested: see above) it
//! never waits. Nothing is held before `MEMORY / 2` departures
//! (too few for the averages to span several batches per place). Congestion is a reason for a
//! longer hold, never a shorter one (a higher `ρ` makes a bigger batch pay more), and a bus
//! that waits for a place keeps filling until one frees. Cost per departure: a few
//! multiplications, while the measured inputs stay within their noise of those of the last
//! search; a search (one Erlang recursion of `c` steps, and about `2 log2 HOLD_STEPS` more while
//! a queue reaches the p99) only when they move further.
//!
//! **What the model gets wrong.** It takes the service time as exponential (`Cs² = 1`): with a
//! constant one the real queue is about half the predicted one (Kingman's `(Ca² + Cs²) / 2`)
//! and the hold is longer than it needs to be; with heavy tails, shorter. It takes the cost as
//! all per query: with a large per-key part a bigger batch lowers `ρ` less than predicted.
//! And a backend that slows with concurrency (lock contention) shows only through `T`, not
//! through how `T` would fall with fewer queries. Where these matter a fixed window can still
//! beat natural batching on queries and p99 (in 4 of the 50 generated scenarios of
//! `busline-sim` in one run each, 1 over five paired replications; on the 100 seeds after
//! them, 6 and 2: the replicated ones all a constant service on two places; see
//! `sim/tests/frontier_generated.rs`). Two corrections of the model were tried (before the
//! decaying hold, on the 150 seeds): Allen–Cunneen's `(Ca² + 1) / 2` with the held buses'
//! `Ca² = 1 / (1 + λh)²` (gaps of `h` plus an exponential) changed nothing (13 scenarios
//! beaten in single runs, 6 replicated, as without it), and scaling Erlang C by the measured
//! share of departures that found every place busy over the predicted one lost 6 (19 beaten).

use std::time::Duration;

use super::Instant;
use super::scheduler::Due;

/// Departures over which the load, the batch and the places' utilisation are forgotten (decay
/// to 1/e). 64 departures are a few milliseconds into a burst, so the hold follows a change of
/// load within a burst (bursts last 0.1 to 10 s), and long enough for a held bus's effect on
/// the queue to show (and for `U` to average over several batches on every place).
const MEMORY: f64 = 64.0;

/// Holds tried: `0` and `i × T / HOLD_STEPS` for `i` in `1..=HOLD_STEPS`, up to the mean time
/// in flight `T` (see the module docs). 32 steps: a hold within 3 % of `T` of the best one.
const HOLD_STEPS: u32 = 32;

/// Departures over which a hold that is no longer needed decays (to 1/e): 16 `MEMORY`s, long
/// against the load's fluctuations within a burst, short against a run (see the module docs,
/// "Why the hold decays slowly").
const HOLD_MEMORY: f64 = 16.0 * MEMORY;

/// The branch and bound's stack of spans: each halving of `HOLD_STEPS` leaves one span waiting.
const SPAN_STACK: usize = HOLD_STEPS.ilog2() as usize + 2;

/// The relative change of the search's inputs below which the last choice stands: half the
/// relative standard deviation `1 / √MEMORY` of an average over `MEMORY` departures. A smaller
/// move is the averages' own noise, and choosing again on it would only follow that noise.
const INPUT_NOISE: f64 = 0.5 / 8.0;

#[derive(Debug, Clone)]
pub(super) struct Natural {
    /// The hold `h`, in nanoseconds.
    hold_ns: f64,
    /// `max_in_flight`: the places `c`.
    places: usize,
    /// Decaying integral of the batches in flight over time, in place-nanoseconds.
    busy_ns: f64,
    /// Decaying time span of that integral, in nanoseconds.
    span_ns: f64,
    /// Decaying count of arrivals and of departures over the same span.
    arrivals: f64,
    departures: f64,
    /// The inputs of the last search, `(λ T, ρ₀)` (see `best_hold`), and the step it chose.
    searched: Option<(f64, f64, u32)>,
    /// Searches run, for the tests.
    #[cfg(test)]
    searches: u64,
}

/// Erlang C: the probability that an arrival finds all `c` places busy in an M/M/c queue at
/// utilisation `rho` (through the Erlang B recursion, stable for any `c`).
fn erlang_c(c: usize, rho: f64) -> f64 {
    let a = c as f64 * rho;
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    b / (1.0 - rho * (1.0 - b))
}

/// The p99 of the wait for a place in an M/M/c queue, in mean service times: the wait exceeds
/// `t` with probability `C e^(−c (1 − ρ) t)`, so `ln(100 C) / (c (1 − ρ))` when `C > 1 %`.
fn queue_p99(c: usize, rho: f64) -> f64 {
    if rho >= 1.0 {
        return f64::INFINITY;
    }
    let waiting = 100.0 * erlang_c(c, rho);
    if waiting <= 1.0 {
        return 0.0; // fewer than 1 % wait (and no logarithm to take)
    }
    waiting.ln() / (c as f64 * (1.0 - rho))
}

/// The best hold found so far: its cost and step; of equal costs, the shorter hold wins.
struct Best {
    cost: f64,
    step: u32,
}

impl Best {
    fn offer(&mut self, cost: f64, step: u32) {
        if self.may_beat(cost, step) {
            (self.cost, self.step) = (cost, step);
        }
    }

    /// Whether a hold of step `step` or longer, costing at least `bound`, may still win.
    fn may_beat(&self, bound: f64, step: u32) -> bool {
        bound < self.cost || (bound == self.cost && step < self.step)
    }
}

/// The step `i` in `0..=HOLD_STEPS` of least `hold(i) + queue(i)`, the shortest of equal ones,
/// by branch and bound (see `least_cost_hold`): `hold` grows with `i`, `hold(0) = 0`, `queue`
/// never grows with `i`, and `q0 = queue(0)`.
fn least_cost_step(q0: f64, hold: impl Fn(u32) -> f64, queue: impl Fn(u32) -> f64) -> u32 {
    let mut best = Best { cost: q0, step: 0 };
    let q_last = queue(HOLD_STEPS);
    best.offer(hold(HOLD_STEPS) + q_last, HOLD_STEPS);
    // Spans (lo, hi) still to search, with the queue at `hi`: a stack, at most one span per
    // halving plus one (no allocation at a departure).
    let mut spans = [(0, 0, 0.0); SPAN_STACK];
    spans[0] = (0, HOLD_STEPS, q_last);
    let mut len = 1;
    while len > 0 {
        len -= 1;
        let (lo, hi, q_hi) = spans[len];
        if hi - lo < 2 || !best.may_beat(hold(lo + 1) + q_hi, lo + 1) {
            continue;
        }
        let mid = lo + (hi - lo) / 2;
        let q_mid = queue(mid);
        best.offer(hold(mid) + q_mid, mid);
        spans[len] = (mid, hi, q_hi);
        spans[len + 1] = (lo, mid, q_mid);
        len += 2;
    }
    best.step
}

/// Whether a measured input went from `was` to `now` by more than its noise.
fn moved(was: f64, now: f64) -> bool {
    (now - was).abs() > INPUT_NOISE * was.abs()
}

/// The step of least predicted p99 of hold plus queue, over `places` places, with `per_service`
/// arrivals per time in flight and the places loaded `load` at the present hold: everything in
/// units of the time in flight (see `Natural::best_hold`).
///
/// Found by branch and bound rather than by trying all `HOLD_STEPS + 1` holds (each an Erlang
/// recursion and a logarithm: a full scan at every departure made the simulator's natural runs
/// three times slower): the queue term never grows with the hold (a longer hold lowers `ρ`,
/// and the p99 grows with `ρ`), so every hold strictly between steps `lo` and `hi` costs at
/// least `h(lo + 1) + queue(h(hi))`, and a span whose bound cannot beat the best so far is
/// skipped. The same choice as the full scan, in about `2 log2` steps.
fn least_cost_hold(places: usize, per_service: f64, load: f64) -> u32 {
    let hold = |i: u32| f64::from(i) / f64::from(HOLD_STEPS);
    let queue = |i: u32| queue_p99(places, load / (1.0 + per_service * hold(i)));
    let q0 = queue(0);
    if q0 == 0.0 {
        // No queue in the p99 without a hold: no hold can do better.
        return 0;
    }
    least_cost_step(q0, hold, queue)
}

impl Natural {
    /// Natural batching over `places` in-flight places.
    pub(super) fn new(places: usize) -> Natural {
        Natural {
            hold_ns: 0.0,
            places: places.max(1),
            busy_ns: 0.0,
            span_ns: 0.0,
            arrivals: 0.0,
            departures: 0.0,
            searched: None,
            #[cfg(test)]
            searches: 0,
        }
    }

    /// The hold currently applied.
    pub(super) fn hold(&self) -> Duration {
        Duration::from_nanos(self.hold_ns as u64)
    }

    /// `dt` passed with `in_flight` batches running.
    pub(super) fn observe(&mut self, dt: Duration, in_flight: usize) {
        let dt = dt.as_nanos() as f64;
        self.span_ns += dt;
        self.busy_ns += dt * in_flight as f64;
    }

    /// `n` requests arrived.
    pub(super) fn on_arrival(&mut self, n: usize) {
        self.arrivals += n as f64;
    }

    /// A bus left: the hold is chosen again.
    pub(super) fn on_dispatch(&mut self) {
        let keep = 1.0 - 1.0 / MEMORY;
        self.busy_ns *= keep;
        self.span_ns *= keep;
        self.arrivals *= keep;
        self.departures = self.departures * keep + 1.0;
        // A longer hold applies at once; a shorter one only as the held one decays, down to
        // within a step of the search (`T / HOLD_STEPS`, its resolution), where it snaps.
        let best = self.best_hold();
        let decayed = self.hold_ns * (1.0 - 1.0 / HOLD_MEMORY);
        let step = self.busy_ns / self.departures / f64::from(HOLD_STEPS);
        self.hold_ns = if decayed > best + step { decayed } else { best };
    }

    /// The hold that minimises the predicted p99 of hold plus queue for a place (see the
    /// module docs), from what was measured over the last `MEMORY` departures: the least cost
    /// over the holds tried, the shortest of equal ones.
    ///
    /// In units of the time in flight `T`, the cost of step `i` is `i / HOLD_STEPS + p99(c,
    /// ρ₀ / (1 + λT i / HOLD_STEPS))`: the step depends on two measured numbers only, the
    /// arrivals per time in flight `λT` and the load at the present hold `ρ₀`. So the search
    /// runs again only when one of them (or the headroom `1 − ρ₀`, which the queue divides
    /// by) has moved by more than its own noise, `INPUT_NOISE`; otherwise the last step
    /// stands, scaled by the present `T`. On steady load that is one search per several
    /// dozen departures instead of one per departure.
    fn best_hold(&mut self) -> f64 {
        if self.span_ns <= 0.0 || self.departures < MEMORY / 2.0 {
            // Too few departures yet for the averages to average over several batches.
            return 0.0;
        }
        let rate = self.arrivals / self.span_ns;
        let utilisation = self.busy_ns / (self.places as f64 * self.span_ns);
        let service = self.busy_ns / self.departures;
        let per_service = rate * service;
        let load = utilisation * (1.0 + rate * self.hold_ns);
        let step = match self.searched {
            Some((x, rho, step))
                if !moved(x, per_service) && !moved(rho, load) && !moved(1.0 - rho, 1.0 - load) =>
            {
                step
            }
            _ => {
                let step = least_cost_hold(self.places, per_service, load);
                self.searched = Some((per_service, load, step));
                #[cfg(test)]
                {
                    self.searches += 1;
                }
                step
            }
        };
        service * f64::from(step) / f64::from(HOLD_STEPS)
    }

    pub(super) fn due(&self, opened: Instant) -> Due {
        let hold = self.hold();
        if hold.is_zero() { Due::Now } else { Due::At(opened + hold) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Limits, Policy, Scheduler};
    use super::*;

    #[test]
    fn the_queue_model_is_erlang_c() {
        // M/M/1: an arrival waits with probability ρ; M/M/2: 2ρ² / (1 + ρ).
        assert!((erlang_c(1, 0.3) - 0.3).abs() < 1e-12);
        assert!((erlang_c(2, 0.5) - 1.0 / 3.0).abs() < 1e-12);
        // Fewer than 1 % wait: no queue in the p99. M/M/1 at ρ = 0.5: ln(50) / 0.5 services.
        assert_eq!(queue_p99(1, 0.005), 0.0);
        assert!((queue_p99(1, 0.5) - 50f64.ln() / 0.5).abs() < 1e-9);
        assert_eq!(queue_p99(4, 1.0), f64::INFINITY);
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
    fn the_branch_and_bound_chooses_as_the_full_scan_does() {
        // Non-increasing queues (with plateaus, so ties happen) against holds at several
        // scales: the search must return the full scan's least cost, the shortest of equal ones.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..20_000 {
            let scale = [0.01, 0.1, 1.0, 10.0][case % 4];
            let mut queue = [0.0; HOLD_STEPS as usize + 1];
            let mut q = (next() % 1000) as f64 / 100.0;
            for slot in &mut queue {
                *slot = q;
                if next() % 3 != 0 {
                    q = (q - (next() % 100) as f64 / 100.0).max(0.0);
                }
            }
            let hold = |i: u32| scale * f64::from(i) / f64::from(HOLD_STEPS);
            let full = (0..=HOLD_STEPS)
                .min_by(|&a, &b| (hold(a) + queue[a as usize]).total_cmp(&(hold(b) + queue[b as usize])))
                .unwrap();
            let found = least_cost_step(queue[0], hold, |i| queue[i as usize]);
            assert_eq!(found, full, "case {case}: queue {queue:?}, scale {scale}");
        }
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
    fn a_queue_in_the_p99_is_answered_with_a_hold_of_at_most_a_time_in_flight() {
        // One arrival per 250 µs against two places of 300 µs: the places are busy 60 % of
        // the time, and at that load an M/M/2 queue makes 45 % of arrivals wait for a place.
        // Natural batching holds every bus, never longer than a batch's time in flight, and
        // its buses carry company. (These arrivals are regular, so no bus would ever find both
        // places busy: the old law, which held only after buses had queued, never held; the
        // model assumes Poisson arrivals, which is what makes it hold here.)
        let (s, batch) = run(250, 300, 4_000);
        let hold = s.current_window();
        assert!(hold > Duration::ZERO && hold <= Duration::from_micros(300), "{hold:?}");
        assert!(batch > 1.2, "mean batch {batch}");
    }

    /// `x` milliseconds.
    fn ms(x: f64) -> Duration {
        Duration::from_nanos((x * 1e6) as u64)
    }

    /// Drives the rule directly at a heavy load (the places 60 % busy, one arrival per
    /// 0.25 ms), a departure per arrival, `n` times.
    fn drive_heavily(natural: &mut Natural, n: usize) {
        for _ in 0..n {
            natural.observe(ms(0.05), 2);
            natural.observe(ms(0.1), 1);
            natural.observe(ms(0.1), 0);
            natural.on_arrival(1);
            natural.on_dispatch();
        }
    }

    #[test]
    fn a_steady_load_is_searched_rarely_and_a_changed_one_again() {
        // Drive the rule directly, a departure per arrival. First a light load (a batch of
        // 0.1 ms per ms on two places): no queue in the p99, no hold.
        let mut natural = Natural::new(2);
        for _ in 0..1_000 {
            natural.observe(ms(0.9), 0);
            natural.observe(ms(0.1), 1);
            natural.on_arrival(1);
            natural.on_dispatch();
        }
        assert_eq!(natural.hold(), Duration::ZERO);
        // The load steps up to one arrival per 0.25 ms, the places 60 % busy: the inputs
        // moved, the hold is searched again and is not zero.
        let light = natural.searches;
        drive_heavily(&mut natural, 4_000);
        assert!(natural.hold() > Duration::ZERO);
        // Held steady, it is searched again only when the averages move beyond their noise,
        // far less often than at every departure, and the step in force is what a search on
        // the present inputs finds.
        let searches = natural.searches - light;
        assert!(searches > 0 && searches < 4_000 / 8, "{searches} searches for 4000 departures");
        let (x, rho, step) = natural.searched.unwrap();
        assert_eq!(step, least_cost_hold(2, x, rho));
    }

    #[test]
    fn a_hold_no_longer_needed_decays_then_stops() {
        // Heavy load, then a light one (10 % busy, one per 2.5 ms), a departure per arrival.
        let mut natural = Natural::new(2);
        drive_heavily(&mut natural, 4_000);
        let peak = natural.hold();
        assert!(peak > Duration::ZERO);
        let mut holds = Vec::new();
        for _ in 0..20_000 {
            natural.observe(ms(0.25), 1);
            natural.observe(ms(2.25), 0);
            natural.on_arrival(1);
            natural.on_dispatch();
            holds.push(natural.hold());
        }
        // Not dropped with the load: 64 departures into the lull it is still most of the
        // peak, and it only ever shrinks...
        assert!(holds[63] > peak / 2, "{:?} -> {:?}", peak, holds[63]);
        assert!(holds.windows(2).all(|w| w[1] <= w[0]));
        // ...until it is within a step of the search's answer (none): then it stops.
        assert_eq!(*holds.last().unwrap(), Duration::ZERO);
        let stopped = holds.iter().position(|h| h.is_zero()).unwrap();
        assert!(stopped < 4 * HOLD_MEMORY as usize, "{stopped} departures");
    }

    #[test]
    fn congestion_makes_bigger_buses() {
        // 20 arrivals per ms against 2 places of 1 ms: cars would need 20 places.
        let (_, batch) = run(50, 1_000, 20_000);
        assert!(batch > 8.0, "mean batch {batch}");
    }
}
