//! One batch's lifecycle after its seal: collect its keys, run the batch function, publish the
//! outcome. Every piece of user code on the way (the keys' `Hash`, `Eq` and `Clone` in the
//! de-duplication, the batch function's call and its future's polls, the drops of what it
//! leaves behind) runs under `catch_unwind`, so a panic never unwinds through the driver: a
//! key's fails that key's callers (`Error::Panicked`, see [`collect`]), the batch function's
//! fails the batch.

use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc as StdArc;
use std::time::Duration;

use crate::Error;
use crate::observe::{BatchTrace, Departure, Ending};
use crate::ring::Sealed;
use crate::slot::Gathered;

use super::distinct::Distinct;
use crate::shared::{Held, Outcome, Shared, await_batch, drop_quietly};
use crate::signals::{self, Fanout};

/// The keys of the boarding bus gathered ahead of its departure, de-duplicated into the
/// driver's set (see `Slot::gather`): the driver gathers while it waits out a window, so that
/// at the deadline only the last passengers' keys are left to read.
#[derive(Debug)]
pub(super) struct Ahead {
    /// The boarding slot the gathered keys belong to, and how far its seats were read.
    slot: usize,
    gathered: Gathered,
    /// Seats taken at the previous gather's look.
    last_count: usize,
    /// A gather of this bus panicked (user code): leave its keys to the collect, which meets
    /// the panic once more at most, instead of every poll of the stretch meeting it again.
    stopped: bool,
}

impl Ahead {
    pub(super) fn new() -> Ahead {
        Ahead { slot: usize::MAX, gathered: Gathered::NONE, last_count: 0, stopped: false }
    }

    /// Reads the keys written since the last gather in the boarding bus (`boarding`) into
    /// `dedup`, if nobody boarded since the previous look: while callers are still boarding,
    /// reading the seats they write would pull those cache lines away from them mid-write
    /// (the seats are packed, several to a line), slowing the boarding more than the gather
    /// saves. The keys' `Hash`, `Eq` and `Clone` run here: if one panics, what was gathered is
    /// dropped, this bus is gathered no more, and the collect at departure reads every seat
    /// again (and meets the panic there, as the batch's outcome, if it repeats).
    pub(super) fn gather<K, V, E>(&mut self, shared: &Shared<K, V, E>, boarding: Sealed, dedup: &mut Distinct<K>)
    where
        K: Eq + Hash + Clone,
    {
        if self.slot != boarding.slot {
            self.forget(dedup);
            self.slot = boarding.slot;
            self.last_count = 0;
            self.stopped = false;
        }
        if self.stopped {
            return;
        }
        let quiet = std::mem::replace(&mut self.last_count, boarding.count) == boarding.count;
        if !quiet || boarding.count <= self.gathered.upto {
            return;
        }
        let slot = shared.ring.slot(boarding.slot);
        let from = self.gathered;
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: by the driver, on the boarding slot, continuing this epoch's gathers: every
            // seal is collected (`take`, which forgets what was gathered) before the driver
            // gathers again, so `from` is this epoch's; `count` is the seats claimed so far.
            unsafe { slot.gather(from, boarding.count, |key| insert(dedup, key)) }
        }));
        match read {
            Ok(gathered) => self.gathered = gathered,
            Err(_) => {
                self.forget(dedup);
                self.stopped = true;
            }
        }
    }

    /// Drops what was gathered (a seal, or a panic in user code).
    fn forget<K>(&mut self, dedup: &mut Distinct<K>) {
        // Also when nothing was counted as gathered: a gather that panicked may have added
        // keys before it could count them.
        dedup.clear();
        self.gathered = Gathered::NONE;
    }

    /// Takes what was gathered for the bus sealed as `sealed`, leaving nothing behind.
    fn take<K>(&mut self, sealed: Sealed, dedup: &mut Distinct<K>) -> Gathered {
        if self.slot != sealed.slot {
            self.forget(dedup);
        }
        self.slot = usize::MAX;
        self.stopped = false;
        std::mem::replace(&mut self.gathered, Gathered::NONE)
    }
}

/// Adds a seat's key to the batch's distinct keys.
fn insert<K: Eq + Hash + Clone>(dedup: &mut Distinct<K>, key: &K) {
    dedup.insert(key);
}

/// A sealed batch's keys, and the seats whose key panicked in its de-duplication.
pub(super) struct Collected<K> {
    /// The distinct keys of the callers still there, in boarding order.
    pub(super) keys: Vec<K>,
    /// Seats (in increasing order) whose key's `Hash`, `Eq` or `Clone` panicked: left out of
    /// the batch, their callers answered `Error::Panicked`.
    pub(super) refused: Option<Box<[usize]>>,
}

/// Waits for each sealed seat to be written and gathers the distinct keys of the callers still
/// there into `dedup` (continuing what `ahead` gathered), then takes them out. The keys'
/// `Hash`, `Eq` and `Clone` run here. If one panics, the seats are read again, each key under
/// its own guard: a key that panics again is left out and its seat refused, so that a bad key
/// fails its own callers and not the others of its bus.
pub(super) fn collect<K, V, E>(shared: &Shared<K, V, E>, sealed: Sealed, ahead: &mut Ahead, dedup: &mut Distinct<K>) -> Collected<K>
where
    K: Eq + Hash + Clone,
{
    let slot = shared.ring.slot(sealed.slot);
    let gathered = ahead.take(sealed, dedup);
    let collected = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: once per seal, by the driver, before the batch's reference is released;
        // `gathered` comes from this epoch's gathers.
        let rest = unsafe { slot.collect_rest(sealed.count, gathered, |_, key| insert(dedup, key)) };
        if rest.is_none() {
            // A caller gathered ahead has gone since: start again without its key.
            dedup.clear();
            // SAFETY: as above; nothing else was collected from this seal.
            unsafe { slot.collect(sealed.count, |key| insert(dedup, key)) };
        }
    }));
    if collected.is_ok() {
        // The keys move out: no user code.
        return Collected { keys: dedup.take(), refused: None };
    }
    // The set may hold clones; drop them (their `Drop` is user code too).
    dedup.clear();
    let mut refused = Vec::new();
    // SAFETY: as above; what was collected from this seal has been dropped.
    unsafe {
        slot.collect_indexed(sealed.count, |index, key| {
            // `Distinct::insert` leaves nothing half-added when user code panics.
            if std::panic::catch_unwind(AssertUnwindSafe(|| insert(dedup, key))).is_err() {
                refused.push(index);
            }
        })
    };
    Collected { keys: dedup.take(), refused: (!refused.is_empty()).then(|| refused.into_boxed_slice()) }
}

/// Calls the batch function with `keys` and runs its future on `runtime`, publishing the
/// outcome through `publisher` (also if the call panics, the future panics, or it runs longer
/// than `timeout`).
pub(super) fn run<K, V, E>(
    runtime: &tokio::runtime::Handle,
    publisher: Publisher<K, V, E>,
    keys: Vec<K>,
    timeout: Option<Duration>,
) where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| (publisher.shared.batch_fn)(keys)));
    match call {
        Ok(batch) => {
            let awaited = await_batch(batch, timeout);
            runtime.spawn(async move {
                let (outcome, batch) = awaited.await;
                // Wake the callers a step at a time, letting the first ones run (and board the
                // next bus) before the rest are woken: see `signals::Fanout`.
                let mut sweep = publisher.publish_in_steps(outcome);
                while sweep.wake_next() {
                    tokio::task::yield_now().await;
                }
                drop(sweep);
                // After the callers have their answer: a future dropped early (timed out) runs
                // the user's `Drop` of whatever it held.
                drop_quietly(batch);
            });
        }
        Err(_) => publisher.publish(Err(Error::Panicked)),
    }
}

/// Publishes a batch's outcome exactly once: when the batch ends, or, if the batch task is
/// dropped first (its runtime shut down), as [`Error::Closed`].
pub(super) struct Publisher<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
    slot: usize,
    published: bool,
    /// The batch as its observers follow it, and when its call started (set at departure).
    trace: Option<(BatchTrace, std::time::Instant)>,
    /// Seats whose key panicked in the collect (see [`Collected`]), answered `Panicked`.
    refused: Option<Box<[usize]>>,
}

impl<K, V, E> Publisher<K, V, E> {
    /// The publisher of the batch sealed in `slot`; holds the batch's reference to it.
    pub(super) fn new(shared: StdArc<Shared<K, V, E>>, slot: usize) -> Self {
        Publisher { shared, slot, published: false, trace: None, refused: None }
    }

    /// The callers of `seats` are answered `Panicked`, whatever the outcome (their key
    /// panicked in the collect).
    pub(super) fn refuse(&mut self, seats: Box<[usize]>) {
        self.refused = Some(seats);
    }

    /// The batch departs with `departure`: tells the observers (metrics, the batch's span).
    pub(super) fn departed(&mut self, departure: &Departure) {
        let trace = self.shared.observer.departed(departure);
        self.trace = Some((trace, std::time::Instant::now()));
    }

    /// Publishes `outcome` to the batch's callers and drops the batch's reference.
    pub(super) fn publish(mut self, outcome: Outcome<K, V, E>) {
        self.publish_once(outcome);
    }

    /// Every caller has gone before the batch ran: drops the batch's reference unpublished.
    pub(super) fn discard(mut self) {
        self.published = true;
        // SAFETY: the batch's reference, taken at the seal and held by this publisher until
        // now; `discard` consumes it.
        unsafe { self.shared.release(self.slot, 1) };
    }

    /// Publishes `outcome` and hands the batch's reference to a [`Sweep`] that wakes the
    /// callers in steps (see `signals::Fanout`).
    pub(super) fn publish_in_steps(mut self, outcome: Outcome<K, V, E>) -> Sweep<K, V, E> {
        let held = self.hold(outcome).expect("published once");
        let shared = StdArc::clone(&self.shared);
        // SAFETY: we hold the batch's reference to the slot and publish once; the sweep takes
        // the reference over.
        let fanout = unsafe { signals::publish_in_steps(&shared.ring, &shared.signals, self.slot, held) };
        Sweep { shared, fanout: Some(fanout) }
    }

    fn publish_once(&mut self, outcome: Outcome<K, V, E>) {
        if let Some(held) = self.hold(outcome) {
            let shared = &*self.shared;
            // SAFETY: we hold the batch's reference to the slot and publish once.
            unsafe { signals::publish(&shared.ring, &shared.signals, self.slot, held) };
        }
    }

    /// Counts and reports the batch's ending, and wraps its outcome for the slot; `None` if it
    /// was published already.
    fn hold(&mut self, outcome: Outcome<K, V, E>) -> Option<Held<K, V, E>> {
        if self.published {
            return None;
        }
        self.published = true;
        let shared = &*self.shared;
        let ending = Ending::of(&outcome);
        shared.stats.count_ending(ending);
        let held = match self.trace.take() {
            Some((trace, started)) => {
                shared.observer.finished(&trace, ending, started.elapsed());
                Held::traced(outcome, trace)
            }
            None => {
                // Never sent (every key still aboard panicked in the collect): counted as a
                // batch that ended so, as the stats count it.
                shared.observer.ended_unsent(ending);
                Held::new(outcome)
            }
        };
        Some(held.refusing(self.refused.take()))
    }
}

/// A published batch's callers being woken a step at a time. Holds the batch's reference to its
/// slot; dropping it (the sweep done, or its task dropped by a runtime shutting down) wakes
/// whoever is left and releases the reference.
pub(super) struct Sweep<K, V, E> {
    shared: StdArc<Shared<K, V, E>>,
    fanout: Option<Fanout>,
}

impl<K, V, E> Sweep<K, V, E> {
    /// Wakes the next step of callers. Returns whether any are left.
    fn wake_next(&mut self) -> bool {
        match &mut self.fanout {
            Some(fanout) => fanout.wake_next(&self.shared.ring),
            None => false,
        }
    }
}

impl<K, V, E> Drop for Sweep<K, V, E> {
    fn drop(&mut self) {
        if let Some(fanout) = self.fanout.take() {
            fanout.finish(&self.shared.ring, &self.shared.signals);
        }
    }
}

impl<K, V, E> Drop for Publisher<K, V, E> {
    fn drop(&mut self) {
        self.publish_once(Err(Error::Closed));
    }
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use std::sync::Arc as StdArc;
    use std::sync::atomic::AtomicBool;
    use std::task::Waker;

    use tokio::sync::Notify;

    use super::*;
    use crate::clock::Clock;
    use crate::observe::Observer;
    use crate::ring::Ring;
    use crate::settings::Overflow;
    use crate::signals::{Boarded, Signals, board};
    use crate::stats::StatsCells;

    // These tests run on one thread, the ring's one sealer, and release only references they
    // took (a seat they claimed, the batch's at its seal).
    fn seal<K>(shared: &Shared<K, u64, ()>) -> Option<crate::ring::Sealed> {
        // SAFETY: the one sealer (above).
        unsafe { shared.ring.seal() }
    }

    fn release<K>(shared: &Shared<K, u64, ()>, slot: usize, n: i64) {
        // SAFETY: references the test holds (above).
        unsafe { shared.release(slot, n) }
    }

    /// The state a batcher's driver works on (2 slots of 8 seats), with no driver running.
    fn shared<K: Send + Sync + 'static>() -> Shared<K, u64, ()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = rt.enter();
        Shared {
            ring: Ring::new(2, 8),
            signals: Signals::new(),
            room: Notify::new(),
            finished: AtomicBool::new(false),
            finished_notify: Notify::new(),
            overflow: Overflow::Wait,
            batch_fn: StdArc::new(|_| unreachable!("no batch runs here")),
            batch_timeout: None,
            stats: StatsCells::new(),
            observer: Observer::new(&StdArc::from("test"), "window"),
            clock: Clock::start(),
            runtime: rt.handle().clone(),
        }
    }

    fn board_keys<K: Clone + std::fmt::Debug>(shared: &Shared<K, u64, ()>, slot: usize, keys: &[K]) {
        for key in keys {
            let boarded = board(&shared.ring, &shared.signals, key.clone(), Waker::noop(), |_| {});
            assert!(matches!(boarded, Boarded::Seat { slot: s, .. } if s == slot), "{boarded:?}");
        }
    }

    #[test]
    fn the_collect_leaves_out_a_caller_gone_after_the_gather_and_keeps_the_rest() {
        let shared = shared();
        let (mut ahead, mut dedup) = (Ahead::new(), Distinct::new());
        board_keys(&shared, 0, &[1, 2, 3, 2]);
        // Two looks: the first sees boarding go on, the second finds it quiet and reads.
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        assert_eq!(ahead.gathered, Gathered { upto: 4, cancelled: 0 });
        // Key 1's caller gives up before the departure.
        shared.ring.slot(0).cancel(0);
        release(&shared, 0, 1);
        let sealed = seal(&shared).unwrap();
        let keys = collect(&shared, sealed, &mut ahead, &mut dedup).keys;
        assert_eq!(keys, [2, 3], "collected from scratch without key 1, each key once");
        assert_eq!(dedup.take(), Vec::<u64>::new(), "nothing left behind for the next bus");
    }

    #[test]
    fn a_gather_waits_for_quiet_and_the_collect_continues_where_it_stopped() {
        let shared = shared();
        let (mut ahead, mut dedup) = (Ahead::new(), Distinct::new());
        board_keys(&shared, 0, &[5, 6]);
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        assert_eq!(ahead.gathered, Gathered::NONE, "boarding was going on: nothing read yet");
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        assert_eq!(ahead.gathered.upto, 2);
        board_keys(&shared, 0, &[7, 5]);
        let sealed = seal(&shared).unwrap();
        let keys = collect(&shared, sealed, &mut ahead, &mut dedup).keys;
        assert_eq!(keys, [5, 6, 7], "the gathered keys, then the rest, in boarding order");
        assert_eq!(ahead.gathered, Gathered::NONE, "the seal's collect took what was gathered");
    }

    /// A key whose `Hash` panics for one value.
    #[derive(Clone, PartialEq, Eq, Debug)]
    struct Fragile(u64);

    /// How many times `Fragile`'s `Hash` has panicked (one test uses it).
    static HASH_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    impl std::hash::Hash for Fragile {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            if self.0 == 13 {
                HASH_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("Hash panics");
            }
            self.0.hash(state);
        }
    }

    #[test]
    fn a_key_that_panics_in_the_gather_stops_it_and_fails_only_its_seat() {
        let shared = shared::<Fragile>();
        let (mut ahead, mut dedup) = (Ahead::new(), Distinct::new());
        board_keys(&shared, 0, &[Fragile(1), Fragile(13), Fragile(2)]);
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        assert!(ahead.stopped, "the panic stopped the gathering of this bus");
        assert_eq!(ahead.gathered, Gathered::NONE, "nothing counted as gathered");
        assert_eq!(dedup.take(), Vec::<Fragile>::new(), "the key added before the panic was dropped");
        // A later look does not meet the panic again; the collect at departure does, and
        // refuses the bad key's seat alone.
        ahead.gather(&shared, shared.ring.boarding(), &mut dedup);
        let panics = || HASH_PANICS.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(panics(), 1, "the stopped gather did not hash the bad key again");
        let sealed = seal(&shared).unwrap();
        let collected = collect(&shared, sealed, &mut ahead, &mut dedup);
        assert_eq!(collected.keys, [Fragile(1), Fragile(2)], "the other keys go");
        assert_eq!(collected.refused.as_deref(), Some(&[1][..]), "seat 1's key is refused");
        assert_eq!(panics(), 3, "met in the collect, then again seat by seat");
        assert!(!ahead.stopped, "the next bus is gathered again");
        // Its three callers and the batch let go of slot 0, so the next seal finds it free.
        release(&shared, 0, 4);
        // The next bus, without the bad key, is collected as usual.
        board_keys(&shared, 1, &[Fragile(3)]);
        let boarding = shared.ring.boarding();
        ahead.gather(&shared, boarding, &mut dedup);
        ahead.gather(&shared, boarding, &mut dedup);
        let sealed = seal(&shared).unwrap();
        let collected = collect(&shared, sealed, &mut ahead, &mut dedup);
        assert_eq!((collected.keys, collected.refused), (vec![Fragile(3)], None));
    }
}
