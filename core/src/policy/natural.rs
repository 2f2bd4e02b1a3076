//! Natural batching that answers congestion with bigger buses.
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
//! for a place, and no longer:
//!
//! - `D` is the wait a bus had between its release and its dispatch because every place was
//!   taken (the backend's wait; a driver's own delay does not count).
//! - `h`, the hold, is a decaying peak of `D`: a bus that waited `D` for a place raises `h` to
//!   `D` at once, and `h` decays by `1 − 1/HOLD_MEMORY` per departure. A peak, not a mean:
//!   once buses are held, few of them queue, and a mean of mostly zeros would release the
//!   hold just as it starts to work (measured on the generated scenarios: 12 of 50 beaten by a
//!   fixed window with a mean, 10 with the peak, 12 with no hold at all).
//! - A bus leaves at once when nothing is in flight (an empty road: there is no queue to
//!   avoid), else `h` after its first passenger (at once while `h` is 0), or when it is full.
//!
//! **Why it shortens the queue.** With `c` places, per-query cost `S(n) = b + k n` and arrival
//! rate `λ`, batches of `n` load each place at `ρ(n) = λ (b / n + k) / c`. The wait for a
//! place grows like `ρ / (1 − ρ)` (M/M/c, Erlang C: `Wq = C(c, a) / (cμ − λ)`; Kingman's
//! `Wq ≈ S ρ / (1 − ρ) · (Ca² + Cs²) / 2` in heavy traffic): near `ρ = 1` every request a bus
//! gains lowers the queue by far more than the time it took to collect it. Holding `h` adds
//! `λ h` passengers per bus and at most `h` to a passenger's wait; it lowers `ρ`, and with it
//! `D`, so `h` falls again. The loop settles where the hold is about the queue it removes:
//! a passenger waits at the stop, in a filling bus, instead of in the queue for a place. When
//! nothing queues for a place, `D = 0`, `h` decays to 0 within `HOLD_MEMORY` departures and
//! the policy is plain natural batching again: congestion is the only reason it ever waits.
//!
//! The hold never grows because the backend is slow or because requests are many: only
//! because buses queued.
//!
//! **What it does not see.** A backend that slows down with concurrency (lock contention)
//! while places stay free never makes a bus queue, so the hold stays 0 although fewer, bigger
//! queries would run faster; there a fixed window can beat natural batching on both queries
//! and p99 (by 2 to 10 % in p99 in 10 of the 50 generated scenarios of `busline-sim`; see
//! `reports/sim`). Seeing it would take the backend's time per batch against its concurrency,
//! which the scheduler is not told. A backend that saturates anyway (a hold cannot lower `ρ` below
//! `λ k / c`) still gets the largest buses natural batching can form: a bus waiting for a
//! place keeps filling until one frees.

use std::time::Duration;

use super::Instant;
use super::scheduler::Due;

/// Departures over which a wait for a place is forgotten (decays to 1/e). 64 departures are a
/// few milliseconds into a burst, so the hold follows a change of load within a burst (bursts
/// last 0.1 to 10 s), and long enough for a held bus's effect on the queue to show.
const HOLD_MEMORY: f64 = 64.0;

#[derive(Debug, Clone, Default)]
pub(super) struct Natural {
    /// The hold `h`, in nanoseconds.
    hold_ns: f64,
}

impl Natural {
    /// The hold currently applied while batches are in flight.
    pub(super) fn hold(&self) -> Duration {
        Duration::from_nanos(self.hold_ns as u64)
    }

    /// A bus left after waiting `queued_for_place` for a free in-flight place.
    pub(super) fn on_dispatch(&mut self, queued_for_place: Duration) {
        let d = queued_for_place.as_nanos() as f64;
        self.hold_ns = (self.hold_ns * (1.0 - 1.0 / HOLD_MEMORY)).max(d);
    }

    pub(super) fn due(&self, opened: Instant, in_flight: usize) -> Due {
        let hold = self.hold();
        if in_flight == 0 || hold.is_zero() { Due::Now } else { Due::At(opened + hold) }
    }
}
