//! The tokio driver: feeds the [`Scheduler`] what happens, seals the buses it sends, runs their
//! batch functions, and publishes their outcomes.
//!
//! One driver task per batcher. It is woken by the first and the last seat of each bus, by
//! completed batches, by freed slots, by shutdown and by the precise timer (see `timer.rs`).
//! Each step: count completions and arrivals into the scheduler, let it decide, act, and arm
//! the timer for its next deadline (or spin through its last microseconds).

use std::fmt;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;

use crate::Error;
use crate::policy::{Action, Instant, Scheduler};
use crate::ring::Sealed;
use crate::shared::{Outcome, Shared};
use crate::stats::StatsCells;
use crate::sync::Ordering;
use crate::timer;

/// The most scheduler rounds a departure waits for more passengers (see `Driver::step`); it
/// stops earlier as soon as a round brings too few (`ROUND_GROWTH`), so a lone caller pays one
/// round. In the benches' 1,000-caller run (window 0) 2, 4, 8 and 16 filled buses alike within
/// the noise; 16 bounds the wait of a bus that keeps filling slowly to a few tens of
/// microseconds.
const MAX_YIELDS: u32 = 16;

/// Another round is waited for only if the last one added more than 1/`ROUND_GROWTH` of the
/// passengers aboard when it started (and at least one). Waiting until a round adds nobody
/// gathered all 1,000 callers of the benches' run into one bus and ran stop-and-go: every
/// worker idles while that bus is collected, run and fanned out (busline's workers used ~1 of
/// the 2 cores), and a worker that parks must be woken again, which invites the OS to stack it
/// on its waker's CPU (benches/src/placement.rs).
/// Leaving once growth slows lets the stragglers form the next bus while this one runs: two
/// buses of ~460 alternate. Compare runner, window 0, median of 10 rounds, workers pinned:
/// 7.1 M loads/s at 1/2, 6.8-7.2 M at 1/4 (two sets), 6.9 M at 1/8, 5.6 M at 1/16, and 5.8 M
/// (~900 keys per batch) when waiting for no growth; OS-placed, 12 rounds: 6.0 M at 1/4
/// against 3.8 M.
const ROUND_GROWTH: usize = 4;

/// Buses with fewer passengers than this count as lightly loaded: the workers may be parked, so
/// the timer thread spins its last stretch to wake the driver on time (see `timer.rs`) and the
/// driver stays runnable through `SPIN_FEW`. From this many on, the workers are awake with
/// callers: the timer thread just sleeps to `TIMER_EARLY` before the deadline (burning no core:
/// under load its spin took most of a vCPU at 100 µs windows) and the driver covers the rest
/// through `SPIN_BUSY`. The timer thread counts the passengers when its spin would begin; the
/// driver, at each of its steps. Measured with `examples/throughput.rs 100` (1,000 callers, 6 runs):
/// 6.4 M loads/s against 6.0 M with the spin, 925 keys per batch against 855, and a mean
/// queue wait of 110 µs against 114 µs.
const BUSY_PASSENGERS: usize = 16;

/// Within this of a deadline a driver whose bus is lightly loaded stays runnable (self-wakes)
/// rather than parks: waking a parked worker costs 20-130 µs on a 2-vCPU VM, more than a 50 µs
/// window can absorb, and few callers need the worker meanwhile.
const SPIN_FEW: Duration = Duration::from_micros(100);
/// The same, when many passengers wait: the workers are busy with callers, so no parked worker
/// has to wake, and a self-woken driver is re-polled ahead of those callers (tokio's LIFO slot,
/// a few polls per tick) for the whole spin. It covers the timer thread's wake-up latency.
const SPIN_BUSY: Duration = Duration::from_micros(60);
/// How early the timer thread wakes the driver before a far deadline, so the worker's own
/// wake-up latency is spent before the deadline, not after (at most the spin then due).
const TIMER_EARLY: Duration = Duration::from_micros(60);

pub(crate) struct Driver<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
    scheduler: Scheduler,
    runtime: tokio::runtime::Handle,
    /// Seats of the boarding slot already reported to the scheduler.
    seen: usize,
    /// The latest instant given to the scheduler (its inputs must not go backwards).
    last_now: Instant,
    /// The deadline the timer is armed for, if any.
    armed: Option<Instant>,
    /// Yields made before the departure now due, and the seats taken at the last one (see
    /// `step`).
    yields: u32,
    seats_at_yield: usize,
    /// Tells the timer thread, when its spin before our deadline would begin, whether the bus
    /// is busy by then (see `BUSY_PASSENGERS`).
    skip_spin: timer::SkipSpin,
    /// Scratch set for de-duplicating a batch's keys. hashbrown with foldhash: one hash per
    /// seat (`get_or_insert_with`), several times cheaper than std's SipHash for small keys.
    /// foldhash is seeded per process; a crafted collision set could at worst make one
    /// batch's de-duplication quadratic in `max_batch_size`.
    dedup: hashbrown::HashSet<K>,
}

impl<K, V, E> fmt::Debug for Driver<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("scheduler", &self.scheduler).finish_non_exhaustive()
    }
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
    ) -> Driver<K, V, E> {
        let weak = StdArc::downgrade(&shared);
        let skip_spin: timer::SkipSpin = StdArc::new(move || {
            weak.upgrade().is_none_or(|shared| shared.ring.boarding().count >= BUSY_PASSENGERS)
        });
        Driver {
            skip_spin,
            shared,
            scheduler,
            runtime,
            seen: 0,
            last_now: Instant::ZERO,
            armed: None,
            yields: 0,
            seats_at_yield: 0,
            dedup: hashbrown::HashSet::new(),
        }
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

    /// Seals the boarding slot and launches its batch.
    fn depart(&mut self, now: Instant, sealed: Sealed) {
        // Passengers who boarded between our last look and the seal left with this bus.
        if sealed.count > self.seen {
            self.scheduler.on_late_boarding(now, sealed.count - self.seen);
        }
        self.seen = 0;
        let shared = StdArc::clone(&self.shared);
        let slot = shared.ring.slot(sealed.slot);
        let stats = &shared.stats;
        StatsCells::bump_single_writer(&stats.requests, sealed.count as u64);
        if let Some(opened) = slot.opened_at_ns() {
            let waited = now.saturating_duration_since(Instant::from_nanos(opened));
            stats.queue_wait_us.record(waited.as_micros() as u64);
        }
        let dedup = &mut self.dedup;
        // SAFETY: once per seal, by the driver, before the batch's reference is released.
        unsafe {
            slot.collect(sealed.count, |key| {
                dedup.get_or_insert_with(key, K::clone);
            })
        };
        if dedup.is_empty() {
            // Every caller has gone: no batch to run.
            shared.release(sealed.slot, 1);
            self.scheduler.on_complete(now);
            return;
        }
        let keys: Vec<K> = dedup.drain().collect();
        StatsCells::bump_single_writer(&stats.batches, 1);
        StatsCells::bump_single_writer(&stats.keys_sent, keys.len() as u64);
        stats.batch_size.record(keys.len() as u64);
        let batch = std::panic::catch_unwind(AssertUnwindSafe(|| (shared.batch_fn)(keys)));
        let mut publisher = Publisher { shared, slot: sealed.slot, published: false };
        match batch {
            Ok(batch) => {
                self.runtime.spawn(async move {
                    let result = AssertUnwindSafe(batch).catch_unwind().await;
                    publisher.publish(match result {
                        Ok(Ok(map)) => Ok(StdArc::new(map)),
                        Ok(Err(e)) => Err(Error::Batch(StdArc::new(e))),
                        Err(_) => Err(Error::Panicked),
                    });
                });
            }
            Err(_) => publisher.publish(Err(Error::Panicked)),
        }
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
        let this = self;
        // Register before looking, so anything that happens after the look wakes us.
        this.shared.driver.register(cx.waker());
        let shared = StdArc::clone(&this.shared);
        let now = shared.now().max(this.last_now);
        this.last_now = now;

        // Acquire: pairs with the publishers' Release increments.
        let completed = shared.completed.swap(0, Ordering::Acquire);
        for _ in 0..completed {
            this.scheduler.on_complete(now);
        }

        if !shared.ring.is_closed() {
            this.observe_arrivals(now);
            this.scheduler.on_timeout(now);
            if shared.shutdown.load(Ordering::Acquire) {
                // Close: every later claim is refused; what boarded leaves now, whatever the
                // policy and the in-flight limit say.
                let sealed = shared.ring.close();
                if sealed.count == 0 {
                    shared.release(sealed.slot, 1);
                } else {
                    this.scheduler.on_arrival(now, sealed.count - this.seen);
                    this.seen = sealed.count;
                    this.scheduler.flush();
                    this.depart(now, sealed);
                }
                shared.room.notify_waiters();
            } else {
                loop {
                    if !shared.ring.has_free_slot() {
                        break;
                    }
                    if !this.scheduler.has_action() {
                        break;
                    }
                    // Natural batching in a cooperative runtime: before sending a bus that is
                    // not full, yield, so callers that are already runnable get to board, and
                    // yield again while each round brings enough new passengers (at most
                    // `MAX_YIELDS`; see `ROUND_GROWTH`). The bus then takes the requests already
                    // queued (LMAX's smart batching) instead of the one that woke the driver.
                    // Not for a timed departure: its window was the wait, and each yield under
                    // load (a whole run-queue pass) would stretch it (a 100 us window left after
                    // ~150 us in the 1,000-caller run; ~127 us without these yields).
                    let boarding = shared.ring.boarding();
                    let growing = this.yields == 0
                        || boarding.count > this.seats_at_yield + this.seats_at_yield / ROUND_GROWTH;
                    if this.yields < MAX_YIELDS
                        && growing
                        && boarding.count < shared.ring.seats()
                        && !this.scheduler.is_timed()
                    {
                        this.yields += 1;
                        this.seats_at_yield = boarding.count;
                        return Poll::Ready(Step::Yield);
                    }
                    this.observe_arrivals(now);
                    let Some(Action::Dispatch { .. }) = this.scheduler.poll_action() else {
                        break;
                    };
                    let sealed = shared.ring.seal().expect("a free slot was checked");
                    this.depart(now, sealed);
                    // After the seal: a producer waiting for room announced itself, or will
                    // see the new epoch (see `Ring::want_room`).
                    if shared.ring.take_room_wanted() {
                        shared.room.notify_waiters();
                    }
                }
                this.yields = 0;
                let full = shared.ring.boarding().count >= shared.ring.seats();
                let stuck = !shared.ring.has_free_slot()
                    || this.scheduler.in_flight() >= this.scheduler.limits().max_in_flight;
                shared.stalled.store(full && stuck, Ordering::Relaxed);
            }
        }

        if shared.ring.is_closed() {
            if this.scheduler.in_flight() == 0 {
                // Release: pairs with the Acquire load in `Batcher::shutdown`.
                shared.finished.store(true, Ordering::Release);
                shared.finished_notify.notify_waiters();
                return Poll::Ready(Step::Done);
            }
            return Poll::Pending;
        }

        if let Some(deadline) = this.scheduler.poll_timeout() {
            let busy = this.seen >= BUSY_PASSENGERS;
            let spin = if busy { SPIN_BUSY } else { SPIN_FEW };
            if deadline - now <= spin {
                // Close to the deadline: stay runnable instead of parking, so no thread
                // wake-up stands between the deadline and the departure. A self-wake, not
                // `yield_now`: tokio re-polls a self-woken task soon (LIFO slot), where
                // `yield_now` waits for the worker's next maintenance pass (an epoll call),
                // which made 50 and 100 us windows 20-60 us late.
                cx.waker().wake_by_ref();
            } else {
                // Far: the precise timer wakes us a little before, then we yield-spin.
                let early = TIMER_EARLY.min(spin).as_nanos() as u64;
                let wake = Instant::from_nanos(deadline.as_nanos() - early);
                if this.armed.is_none_or(|armed| wake < armed || armed <= now) {
                    this.armed = Some(wake);
                    let at = shared.origin + Duration::from_nanos(wake.as_nanos());
                    timer::wake_at(at, &this.skip_spin, cx.waker());
                }
            }
        }
        Poll::Pending
    }
}

impl<K, V, E> Drop for Driver<K, V, E> {
    fn drop(&mut self) {
        // Dropped before finishing: its runtime is shutting down. Close, and answer whoever
        // boarded with `Closed`, so no caller waits for a driver that is gone.
        let shared = &self.shared;
        if !shared.ring.is_closed() {
            let sealed = shared.ring.close();
            // SAFETY: once per seal, by the driver, before the batch's reference is released.
            unsafe { shared.ring.slot(sealed.slot).collect(sealed.count, |_| {}) };
            Publisher { shared: StdArc::clone(shared), slot: sealed.slot, published: false }
                .publish(Err(Error::Closed));
            shared.room.notify_waiters();
        }
        // Release: pairs with the Acquire load in `Batcher::shutdown`.
        shared.finished.store(true, Ordering::Release);
        shared.finished_notify.notify_waiters();
    }
}

/// Publishes a batch's outcome exactly once: when the batch ends, or, if the batch task is
/// dropped first (its runtime shut down), as [`Error::Closed`].
struct Publisher<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
    slot: usize,
    published: bool,
}

impl<K, V, E> Publisher<K, V, E> {
    fn publish(&mut self, outcome: Outcome<K, V, E>) {
        if self.published {
            return;
        }
        self.published = true;
        let stats = &self.shared.stats;
        match &outcome {
            Err(Error::Panicked) => StatsCells::bump(&stats.panicked_batches),
            Err(_) => StatsCells::bump(&stats.failed_batches),
            Ok(_) => {}
        }
        // SAFETY: we hold the batch's reference to the slot and publish once.
        unsafe { self.shared.ring.slot(self.slot).publish(outcome) };
        // Release: pairs with the driver's Acquire swap of `completed`.
        self.shared.completed.fetch_add(1, Ordering::Release);
        self.shared.release(self.slot, 1);
        self.shared.wake_driver();
    }
}

impl<K, V, E> Drop for Publisher<K, V, E> {
    fn drop(&mut self) {
        self.publish(Err(Error::Closed));
    }
}
