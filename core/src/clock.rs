//! The driver's clock: tokio's time, in the scheduler's units, and whether tokio's clock is
//! paused.
//!
//! The driver reads `tokio::time::Instant`, which is the OS clock unless a test paused tokio's
//! clock (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`). A paused clock stands
//! still until the runtime, idle with a tokio timer pending, jumps it to that timer; a deadline
//! held by a thread of our own would never be seen by it. tokio cannot say whether it is
//! paused, but a paused clock betrays itself: it reads the same instant twice while the OS
//! clock has moved on. [`PauseDetector`] watches for that; from then on the driver keeps its
//! deadlines with tokio's own `sleep_until`, which the paused clock honours.

use std::time::{Duration, Instant as StdInstant};

use crate::policy::Instant;

/// The origin of a batcher's clock, on tokio's clock and on the OS clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
    origin_std: StdInstant,
}

impl Clock {
    /// A clock whose origin is now.
    pub(crate) fn start() -> Clock {
        Clock { origin: tokio::time::Instant::now(), origin_std: StdInstant::now() }
    }

    /// Now, on tokio's clock.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
        Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// `at` on tokio's clock, for `sleep_until`.
    pub(crate) fn to_tokio(self, at: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }

    /// `at` on the OS clock, for the precise timer thread (valid while tokio's clock is not
    /// paused: then both clocks move together from their origins).
    pub(crate) fn to_std(self, at: Instant) -> StdInstant {
        self.origin_std + Duration::from_nanos(at.as_nanos())
    }
}

/// Tells, from successive readings, whether tokio's clock is paused. Sticky: once paused, a
/// clock that resumes may have jumped, and tokio's `sleep_until` stays correct for it.
#[derive(Debug)]
pub(crate) struct PauseDetector {
    last: Instant,
    last_std: StdInstant,
    paused: bool,
}

impl PauseDetector {
    /// The OS clock must move at least this much between two readings for an unchanged tokio
    /// reading to count as frozen (a running clock reads in nanoseconds, so any movement of the
    /// OS clock shows in it).
    const OS_MOVED: Duration = Duration::from_micros(1);

    pub(crate) fn new(clock: &Clock) -> PauseDetector {
        PauseDetector { last: clock.now(), last_std: StdInstant::now(), paused: false }
    }

    /// Records the reading `now` (just taken from `clock`); returns whether the clock is paused.
    #[inline]
    pub(crate) fn observe(&mut self, now: Instant) -> bool {
        if !self.paused {
            let now_std = StdInstant::now();
            if now == self.last && now_std.duration_since(self.last_std) >= Self::OS_MOVED {
                self.paused = true;
            }
            self.last = now;
            self.last_std = now_std;
        }
        self.paused
    }
}
