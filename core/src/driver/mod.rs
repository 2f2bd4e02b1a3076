//! The tokio driver: feeds the [`Scheduler`] what happens, seals the buses it sends, runs their
//! batch functions, and publishes their outcomes.
//!
//! One driver task per batcher. It is woken by the first and the last seat of each bus, by
//! completed batches, by freed slots, by shutdown and by its alarm (`alarm.rs`). Each step:
//! look (register the waker, then read every signal), count completions and arrivals into the
//! scheduler, then either close (shutdown) or send what the scheduler says is due, and set the
//! alarm for its next deadline. A bus's lifecycle after its seal (collect → run → publish) is
//! in `batch.rs`.

mod alarm;
mod batch;
mod distinct;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll};

use crate::Error;
use crate::clock::PauseDetector;
use crate::observe::Departure;
use crate::policy::{Action, Instant, Scheduler};
use crate::ring::Sealed;
use crate::shared::{Held, Shared};
use crate::signals;
use crate::stats::StatsCells;

use alarm::{Alarm, BUSY_PASSENGERS};
use batch::Publisher;
use distinct::Distinct;

/// The most rounds a departure that is due now (natural batching) waits for more passengers: a
/// round is one `yield_now`, one pass of the worker's run queue, and 16 passes bound the added
/// wait to tens of microseconds with 1,000 runnable callers.
const BOARDING_ROUNDS: u32 = 16;

/// Another round is waited for only while the last one grew the bus by more than a quarter:
/// past that, the stragglers are better off starting the next bus while this one runs, so that
/// under `max_in_flight` 2 two half-full buses alternate instead of one full bus stopping
/// every caller while it is collected and answered.
const ROUND_GROWTH: usize = 4;

pub(crate) struct Driver<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
    scheduler: Scheduler,
    /// Where batch tasks run.
    runtime: tokio::runtime::Handle,
    /// Seats of the boarding slot already reported to the scheduler.
    seen: usize,
    /// The latest instant given to the scheduler (its inputs must not go backwards).
    last_now: Instant,
    pause: PauseDetector,
    alarm: Alarm,
    /// Rounds waited before the departure now due, and the seats taken at the last one.
    rounds: u32,
    seats_at_round: usize,
    /// The distinct keys of the bus being collected (`distinct.rs`).
    dedup: Distinct<K>,
    /// How far the boarding bus's keys are already in `dedup`.
    ahead: batch::Ahead,
}

impl<K, V, E> fmt::Debug for Driver<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("scheduler", &self.scheduler).finish_non_exhaustive()
    }
}

/// What one step of the driver ends with.
enum Step {
    /// Let the tasks already runnable go first, then step again.
    Yield,
    /// Finished: every accepted request has its answer.
    Done,
}

impl<K, V, E> Driver<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn new(
        shared: StdArc<Shared<K, V, E>>,
        scheduler: Scheduler,
        runtime: tokio::runtime::Handle,
        spin: bool,
    ) -> Driver<K, V, E> {
        let weak = StdArc::downgrade(&shared);
        let skip_spin: crate::timer::SkipSpin = StdArc::new(move || {
            weak.upgrade().is_none_or(|shared| shared.ring.boarding().count >= BUSY_PASSENGERS)
        });
        Driver {
            pause: PauseDetector::new(),
            alarm: Alarm::new(spin, skip_spin),
            shared,
            scheduler,
            runtime,
            seen: 0,
            last_now: Instant::ZERO,
            rounds: 0,
            seats_at_round: 0,
            dedup: Distinct::new(),
            ahead: batch::Ahead::new(),
        }
    }

    /// The driver task: steps until finished. A step that wants to yield does so with
    /// `tokio::task::yield_now`, which re-schedules the driver behind every task already
    /// runnable. (Waking itself from inside `poll` would not: tokio may run a self-woken task
    /// again at once from its LIFO slot, starving the callers the yield is meant to let board.)
    pub(crate) async fn run(mut self) {
        loop {
            match std::future::poll_fn(|cx| self.step(cx)).await {
                Step::Yield => tokio::task::yield_now().await,
                Step::Done => return,
            }
        }
    }

    /// One look at everything, and the decisions it leads to. `Pending` parks the driver until
    /// one of its wakers fires.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        // Register before looking, so anything that happens after the look wakes us. Whoever
        // wakes this waker has just written a seat, published or freed a slot: a wake that
        // panicked would unwind through them after that write, leaving the seat uncollected and
        // its caller unanswered. It cannot happen: the waker is always a tokio task's (the
        // driver is spawned only by `Builder::build`, onto a runtime that is a tokio `Handle`,
        // never polled by a user's executor), and tokio's wakers run no user code and do not
        // panic, even on a runtime that has shut down. (One exception, outside our reach: built
        // with `--cfg tokio_unstable` and tokio's `tracing` feature, a wake first emits an event
        // to the process's `tracing` subscriber, before it schedules the task; a subscriber that
        // panics there breaks every tokio wake in the process, and catching it here would still
        // leave the driver unscheduled.)
        let look = self.shared.signals.look(&self.shared.ring, cx.waker());
        let (reading, paused) = self.pause.read(&self.shared.clock);
        let now = reading.max(self.last_now);
        self.last_now = now;
        for _ in 0..look.completed {
            self.scheduler.on_complete(now);
        }
        if !self.shared.ring.is_closed() {
            self.observe_arrivals(now);
            self.scheduler.on_timeout(now);
            if look.shutdown {
                self.close(now);
            } else if let Some(step) = self.dispatch_due(now) {
                return Poll::Ready(step);
            }
        }
        if self.shared.ring.is_closed() {
            return self.finish_when_drained();
        }
        if let Some(deadline) = self.scheduler.poll_timeout() {
            let near = self.alarm.set(&self.shared.clock, deadline, now, paused, self.seen, cx);
            if near {
                // Awake through the last stretch before the deadline anyway: read the keys of
                // whoever has boarded, so the departure finds them de-duplicated. (Not sooner:
                // a bus's keys are copied only shortly before it leaves, so a long window's
                // pending requests cost no more memory than their seats.)
                self.ahead.gather(&self.shared, self.shared.ring.boarding(), &mut self.dedup);
            }
        }
        Poll::Pending
    }

    /// Reports seats taken since the last look to the scheduler.
    fn observe_arrivals(&mut self, now: Instant) {
        let boarding = self.shared.ring.boarding();
        if boarding.count > self.seen {
            let at = if self.seen == 0 {
                // The window opens at the first passenger's arrival, which it stamped.
                let stamped = self.shared.ring.slot(boarding.slot).opened_at_ns();
                stamped.map_or(now, Instant::from_nanos).max(self.last_now).min(now)
            } else {
                now
            };
            self.scheduler.on_arrival(at, boarding.count - self.seen);
            self.seen = boarding.count;
        }
    }

    /// Sends every bus the scheduler says is due, while a slot is free. Returns `Yield` to
    /// wait a round for more passengers first.
    fn dispatch_due(&mut self, now: Instant) -> Option<Step> {
        let shared = StdArc::clone(&self.shared);
        while shared.ring.has_free_slot() && self.scheduler.has_action() {
            if self.wait_a_round() {
                return Some(Step::Yield);
            }
            self.observe_arrivals(now);
            let Some(Action::Dispatch { .. }) = self.scheduler.poll_action() else {
                break;
            };
            // SAFETY: the driver is the ring's one sealer.
            let sealed = unsafe { shared.ring.seal() }.expect("a free slot was checked");
            self.depart(now, sealed);
            // After the seal: a producer waiting for room announced itself, or will see the
            // new epoch (see `Ring::want_room`).
            if shared.ring.take_room_wanted() {
                shared.room.notify_waiters();
            }
        }
        self.rounds = 0;
        let full = shared.ring.boarding().count >= shared.ring.seats();
        let stuck = !shared.ring.has_free_slot()
            || self.scheduler.in_flight() >= self.scheduler.limits().max_in_flight;
        // Unstalled: wake whoever announced a wait for room since the last seal (a `tower`
        // caller waits for the stall to end, not only for a seal; see `Shared::room_after`).
        if signals::update_stall(&shared.ring, &shared.signals, full && stuck) {
            shared.room.notify_waiters();
        }
        None
    }

    /// Natural batching in a cooperative runtime: before sending a bus that is due now but
    /// not full, let the callers that are already runnable board (one round), and wait
    /// another round while each brings enough new passengers (see `ROUND_GROWTH`,
    /// `BOARDING_ROUNDS`): the bus then takes the requests already queued (LMAX's smart
    /// batching) instead of the one that woke the driver. Not for a timed departure: its
    /// window was the wait, and a round under load would stretch it.
    fn wait_a_round(&mut self) -> bool {
        let boarding = self.shared.ring.boarding().count;
        let growing =
            self.rounds == 0 || boarding > self.seats_at_round + self.seats_at_round / ROUND_GROWTH;
        if self.rounds < BOARDING_ROUNDS
            && growing
            && boarding < self.shared.ring.seats()
            && !self.scheduler.is_timed()
        {
            self.rounds += 1;
            self.seats_at_round = boarding;
            return true;
        }
        false
    }

    /// Shutdown: closes the ring (every later claim is refused) and sends what boarded now,
    /// whatever the policy and the in-flight limit say.
    fn close(&mut self, now: Instant) {
        let shared = StdArc::clone(&self.shared);
        // SAFETY: the driver is the ring's one sealer.
        let sealed = unsafe { shared.ring.close() };
        if sealed.count == 0 {
            // SAFETY: the reference the close took for the (empty) batch, never handed on.
            unsafe { shared.release(sealed.slot, 1) };
        } else {
            self.scheduler.on_arrival(now, sealed.count - self.seen);
            self.seen = sealed.count;
            self.scheduler.flush();
            self.depart(now, sealed);
        }
        let _ = shared.signals.set_stalled(false);
        shared.room.notify_waiters();
    }

    /// Closed: finishes once every batch and every solo run has ended.
    fn finish_when_drained(&mut self) -> Poll<Step> {
        if self.scheduler.in_flight() == 0 && self.shared.signals.solo_runs() == 0 {
            self.shared.finish();
            return Poll::Ready(Step::Done);
        }
        Poll::Pending
    }

    /// Launches the batch of a bus just sealed: collect its keys, run the batch function,
    /// publish the outcome (`batch.rs`).
    fn depart(&mut self, now: Instant, sealed: Sealed) {
        // Passengers who boarded between our last look and the seal left with this bus.
        if sealed.count > self.seen {
            self.scheduler.on_late_boarding(now, sealed.count - self.seen);
        }
        self.seen = 0;
        let shared = &*self.shared;
        let stats = &shared.stats;
        StatsCells::bump_single_writer(&stats.requests, sealed.count as u64);
        let opened = shared.ring.slot(sealed.slot).opened_at_ns();
        let queue_wait = opened.map(|opened| now.saturating_duration_since(Instant::from_nanos(opened)));
        if let Some(waited) = queue_wait {
            stats.queue_wait_us.record(waited.as_micros() as u64);
        }
        let mut publisher = Publisher::new(StdArc::clone(&self.shared), sealed.slot);
        let batch::Collected { keys, refused } = batch::collect(shared, sealed, &mut self.ahead, &mut self.dedup);
        if let Some(refused) = refused {
            if keys.is_empty() {
                // Every caller still there has a key that panicked.
                return publisher.publish(Err(Error::Panicked));
            }
            publisher.refuse(refused);
        }
        if keys.is_empty() {
            // Every caller has gone: no batch to run, nobody to publish to.
            publisher.discard();
            self.scheduler.on_complete(now);
            return;
        }
        StatsCells::bump_single_writer(&stats.batches, 1);
        StatsCells::bump_single_writer(&stats.keys_sent, keys.len() as u64);
        stats.batch_size.record(keys.len() as u64);
        publisher.departed(&Departure {
            requests: sealed.count,
            keys: keys.len(),
            queue_wait: queue_wait.unwrap_or_default(),
            window: self.scheduler.current_window(),
        });
        batch::run(&self.runtime, publisher, keys, shared.batch_timeout);
    }
}

impl<K, V, E> Drop for Driver<K, V, E> {
    fn drop(&mut self) {
        // Dropped before finishing: its runtime is shutting down. Close, and answer whoever
        // boarded with `Closed`, so no caller waits for a driver that is gone.
        let shared = &*self.shared;
        // SAFETY: the driver is the ring's one sealer, and it is going away.
        unsafe { signals::abandon(&shared.ring, &shared.signals, Held::new(Err(Error::Closed))) };
        // Keys gathered ahead for a bus that never left: their `Drop` is user code.
        self.dedup.clear();
        shared.room.notify_waiters();
        shared.finish();
    }
}
