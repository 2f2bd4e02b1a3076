//! The driver's clock: tokio's time, in the scheduler's units, and whether tokio's clock is
//! paused.
//!
//! The driver reads `tokio::time::Instant`, which is the OS clock unless a test paused tokio's
//! clock (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`). A paused clock stands
//! still until the runtime, idle with a tokio timer pending, jumps it to that timer; a deadline
//! held by a thread of our own would never be seen by it. tokio cannot say whether it is
//! paused, but a clock that has been paused betrays itself at once: a running tokio clock is
//! the OS clock (a tokio `Instant` wraps a `std` one), so a reading taken between two OS-clock
//! readings lies between them, and a paused one lies in the past (or, jumped ahead by
//! auto-advance, in the future). [`PauseDetector`] reads that way at every step of the driver;
//! from the first step that sees it, the driver keeps its deadlines with tokio's own
//! `sleep_until`, which the paused clock honours.

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
        self.since_origin(tokio::time::Instant::now())
    }

    /// A reading of tokio's clock, in the scheduler's units.
    #[inline]
    fn since_origin(&self, reading: tokio::time::Instant) -> Instant {
        let elapsed = reading.saturating_duration_since(self.origin);
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

/// Tells whether tokio's clock is (or has been) paused, from readings sandwiched between two
/// OS-clock readings. Sticky: a clock that resumes after a pause runs offset from the OS clock,
/// and tokio's `sleep_until` stays correct for it where the timer thread would not.
#[derive(Debug, Default)]
pub(crate) struct PauseDetector {
    paused: bool,
}

impl PauseDetector {
    pub(crate) fn new() -> PauseDetector {
        PauseDetector::default()
    }

    /// Reads `clock` (now, on tokio's clock); also returns whether tokio's clock is paused.
    #[inline]
    pub(crate) fn read(&mut self, clock: &Clock) -> (Instant, bool) {
        if self.paused {
            return (clock.now(), true);
        }
        let before = StdInstant::now();
        let tokio_now = tokio::time::Instant::now();
        let after = StdInstant::now();
        let tokio_std = tokio_now.into_std();
        // A running clock read between `before` and `after` lies between them.
        self.paused = tokio_std < before || tokio_std > after;
        (clock.since_origin(tokio_now), self.paused)
    }
}
