//! Keeping the scheduler's next deadline: how the driver gets woken in time.
//!
//! Two ways:
//! - tokio's timer (`tokio::time::sleep_until`), when spinning is off (`Builder::spin(false)`)
//!   or tokio's clock is paused (a test; the paused clock honours only tokio's timers, and
//!   auto-advance jumps to them). No thread of our own and no wake-up beyond the deadline's
//!   own, so a window costs about what a departure without one does; but tokio's timer has a
//!   1 ms resolution and rounds up: a window closes up to ~1 ms late.
//! - the precise timer thread (`timer.rs`), when spinning is on (the default): it wakes the
//!   driver early by the wake-up latency that stands between it and the driver's poll (a
//!   thread's when the bus is busy and its workers awake; a parked worker's when it is light,
//!   and then the timer thread spins its own last stretch so that its wake-up adds nothing),
//!   and the driver stays runnable from there to the deadline instead of parking, so no
//!   wake-up stands between the deadline and the departure. Precise to microseconds, for the
//!   CPU of those spins and wake-ups. The driver also reads the boarded keys in that stretch
//!   (`batch.rs`, `Ahead`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::Clock;
use crate::policy::Instant;
use crate::timer;

/// How long waking a parked tokio worker takes on a 2-vCPU VM (20–130 µs measured by
/// `examples/window_precision.rs`; this covers most of it): a driver with few passengers is
/// woken this much early by the timer thread (which spins to that instant), and stays runnable
/// from there rather than parks.
const WORKER_WAKE_LATENCY: Duration = Duration::from_micros(100);

/// How long a sleeping thread's futex wake-up takes on a 2-vCPU VM (10–60 µs, same source):
/// a driver with many passengers (its workers awake with callers, so no parked worker to
/// wake) is woken this much early by the timer thread, and stays runnable this long.
const THREAD_WAKE_LATENCY: Duration = Duration::from_micros(60);

/// From this many passengers on, a bus counts as busy: its callers keep the runtime's workers
/// awake (a worker polls tens of callers per microsecond-scale tick), so the timer thread need
/// not spin for it.
pub(super) const BUSY_PASSENGERS: usize = 16;

/// The driver's alarm for its next deadline.
pub(super) struct Alarm {
    /// The precise timer thread, when spinning is on (started by `build`, which fails if it
    /// cannot be; so the driver never spawns it, and never fails on it).
    precise: Option<timer::Handle>,
    /// The wake-up the timer thread holds, if any.
    armed: Option<Instant>,
    /// tokio's timer, once the clock is found paused.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Asked by the timer thread when its spin would begin: is the bus busy by then?
    skip_spin: timer::SkipSpin,
}

impl std::fmt::Debug for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm").field("precise", &self.precise.is_some()).field("armed", &self.armed).finish_non_exhaustive()
    }
}

impl Alarm {
    pub(super) fn new(precise: Option<timer::Handle>, skip_spin: timer::SkipSpin) -> Alarm {
        Alarm { precise, armed: None, sleep: None, skip_spin }
    }

    /// Makes sure the driver's task (`cx`) is woken at `deadline`, now being `now`. `paused`:
    /// tokio's clock is paused. `passengers`: seats taken on the boarding bus. Returns whether
    /// the driver stays runnable through the last stretch to the deadline (it is polled again
    /// soon, with time on its hands).
    pub(super) fn set(
        &mut self,
        clock: &Clock,
        deadline: Instant,
        now: Instant,
        paused: bool,
        passengers: usize,
        cx: &mut Context<'_>,
    ) -> bool {
        let Some(precise) = self.precise.filter(|_| !paused) else {
            self.sleep_until(clock, deadline, cx);
            return false;
        };
        let busy = passengers >= BUSY_PASSENGERS;
        let stay_runnable = if busy { THREAD_WAKE_LATENCY } else { WORKER_WAKE_LATENCY };
        if deadline - now <= stay_runnable {
            // Close to the deadline: stay runnable instead of parking, so no thread wake-up
            // stands between the deadline and the departure. A self-wake, not `yield_now`:
            // tokio re-polls a self-woken task soon (LIFO slot), where `yield_now` waits for
            // the worker's next maintenance pass (an epoll call).
            cx.waker().wake_by_ref();
            true
        } else {
            // Woken early by the latency of whatever stands between the timer thread and our
            // next poll: a futex wake-up of a worker that is awake with callers (busy), or the
            // unpark of a parked worker (light; the timer thread spins to this instant then, so
            // its own wake-up adds nothing). We stay runnable from there to the deadline.
            let early = stay_runnable.as_nanos() as u64;
            let wake = Instant::from_nanos(deadline.as_nanos().saturating_sub(early));
            // Unless a wake-up at or before it is still pending with the timer thread.
            if self.armed.is_none_or(|armed| wake < armed || armed <= now) {
                self.armed = Some(wake);
                precise.wake_at(clock.to_std(wake), &self.skip_spin, cx.waker());
            }
            false
        }
    }

    fn sleep_until(&mut self, clock: &Clock, deadline: Instant, cx: &mut Context<'_>) {
        let at = clock.to_tokio(deadline);
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        if let Poll::Ready(()) = sleep.as_mut().poll(cx) {
            // Already due on tokio's clock: step again.
            cx.waker().wake_by_ref();
        }
    }
}
