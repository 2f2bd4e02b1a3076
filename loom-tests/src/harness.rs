//! What the models share: the runner, keys that count their drops, waiters that count the wakers
//! left behind, and both sides of the protocol written the way the core's `driver.rs` and
//! `load.rs` use it.
//!
//! Bookkeeping (executions, drops, frees, live wakers) lives in `std` atomics on purpose: they
//! are not loom objects, so they add no interleavings and are not themselves model-checked.
//! loom runs one model thread at a time, so the counts are exact.

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

pub use busline::model::{Bug, Claim, Gathered, MAX_SEATS, Ring, Sealed, Slot};

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set (tokio's CI uses 2 to 4).
pub const DEFAULT_PREEMPTIONS: usize = 3;

/// Branches one execution may take. The driver's wait for a seat to be written and for a free
/// slot are yield loops, which loom counts as branches; loom's default of 1,000 is too tight for
/// the slot-reuse model.
const MAX_BRANCHES: usize = 20_000;

/// What a batch publishes: the ids of the keys it ran with, in seat order.
pub type Outcome = Vec<usize>;

/// The ring every model uses.
pub type TestRing = Ring<Key, Outcome>;

/// Runs `body` under loom, in every interleaving up to the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, default [`DEFAULT_PREEMPTIONS`]), and prints how many executions
/// that took.
pub fn model(name: &'static str, body: impl Fn() + Sync + Send + 'static) {
    model_capped(name, usize::MAX, body);
}

/// As [`model`], with the preemption bound capped at `cap` for a model too heavy for the
/// requested bound.
pub fn model_capped(name: &'static str, cap: usize, body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let bound = builder
        .preemption_bound
        .unwrap_or(DEFAULT_PREEMPTIONS)
        .min(cap);
    builder.preemption_bound = Some(bound);
    builder.max_branches = MAX_BRANCHES;
    let executions = Arc::new(AtomicUsize::new(0));
    let report = Report {
        name,
        bound,
        executions: Arc::clone(&executions),
        start: Instant::now(),
    };
    builder.check(move || {
        executions.fetch_add(1, SeqCst);
        body();
    });
    drop(report);
}

/// As [`model`], with the core's `bug` switched on (see `busline::model::Bug`): the model of a
/// `*broken*` test, which must fail. The switch is a thread-local of the test's thread (loom
/// runs the model's threads there) and is switched off again however the model ends.
pub fn model_broken(name: &'static str, bug: Bug, body: impl Fn() + Sync + Send + 'static) {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            busline::model::break_on_purpose(None);
        }
    }
    busline::model::break_on_purpose(Some(bug));
    let _off = Off;
    model(name, body);
}

/// Prints a model's count and time when it ends, or where it failed.
struct Report {
    name: &'static str,
    bound: usize,
    executions: Arc<AtomicUsize>,
    start: Instant,
}

impl Drop for Report {
    fn drop(&mut self) {
        let executions = self.executions.load(SeqCst);
        let secs = self.start.elapsed().as_secs_f64();
        let (name, bound) = (self.name, self.bound);
        if std::thread::panicking() {
            eprintln!(
                "loom model {name}: bound {bound}: FAILED in execution {executions} after {secs:.2} s"
            );
        } else {
            eprintln!("loom model {name}: bound {bound}: {executions} executions in {secs:.2} s");
        }
    }
}

/// The end of an execution that every slot model checks: no seat's waker cell kept a waker past
/// its reset, and once the ring is gone (`ring`: the ring or the last handle to it) every key was
/// dropped exactly once.
pub fn assert_clean_end<R>(ring: R, wakers: &Wakers, ledger: &Ledger) {
    assert_eq!(
        wakers.live(),
        0,
        "a seat's waker cell kept a waker past the reset"
    );
    drop(ring);
    ledger.assert_all_dropped_once();
}

/// After a model ran: some execution reached the case `reached` counts (a model whose
/// interesting branch no execution takes proves nothing about it).
pub fn assert_reached(reached: &AtomicUsize, what: &str) {
    assert!(
        reached.load(SeqCst) > 0,
        "no execution reached this case: {what}"
    );
}

// ---- keys ---------------------------------------------------------------------------------

/// Counts, per key id, how many times a key was dropped, and how many times a release freed a
/// slot.
#[derive(Debug)]
pub struct Ledger {
    drops: Vec<AtomicUsize>,
    frees: AtomicUsize,
}

impl Ledger {
    /// A ledger for keys `0..keys`.
    pub fn new(keys: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            drops: (0..keys).map(|_| AtomicUsize::new(0)).collect(),
            frees: AtomicUsize::new(0),
        })
    }

    /// Key `id`.
    pub fn key(self: &Arc<Self>, id: usize) -> Key {
        Key {
            id,
            ledger: Arc::clone(self),
        }
    }

    /// How many times key `id` was dropped.
    pub fn drops(&self, id: usize) -> usize {
        self.drops[id].load(SeqCst)
    }

    /// Every key was dropped exactly once: none leaked, none dropped twice.
    pub fn assert_all_dropped_once(&self) {
        for id in 0..self.drops.len() {
            assert_eq!(
                self.drops(id),
                1,
                "key {id} dropped {} times",
                self.drops(id)
            );
        }
    }

    /// How many releases freed a slot.
    pub fn frees(&self) -> usize {
        self.frees.load(SeqCst)
    }
}

/// A request's key: its id, and a drop that the [`Ledger`] counts.
pub struct Key {
    id: usize,
    ledger: Arc<Ledger>,
}

impl Key {
    /// The key's id.
    pub fn id(&self) -> usize {
        self.id
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.ledger.drops[self.id].fetch_add(1, SeqCst);
    }
}

// ---- wakers -------------------------------------------------------------------------------

/// Counts the wakers a waiter handed to `poll_done` that are still alive somewhere (in a seat's
/// waker cell, once the waiter itself has dropped its own).
#[derive(Debug, Default)]
pub struct Wakers {
    live: AtomicUsize,
}

/// One registration: forwards its wake to loom's `block_on` waker.
struct Tracked {
    inner: Waker,
    wakers: Arc<Wakers>,
}

impl Wake for Tracked {
    fn wake(self: Arc<Self>) {
        self.inner.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.inner.wake_by_ref();
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.wakers.live.fetch_sub(1, SeqCst);
    }
}

impl Wakers {
    /// A counter at zero.
    pub fn new() -> Arc<Wakers> {
        Arc::new(Wakers::default())
    }

    /// Wakers still held somewhere. Zero once every waiter has finished and its slot is reset
    /// means no seat's waker cell kept a waker past the reset.
    pub fn live(&self) -> usize {
        self.live.load(SeqCst)
    }

    /// A fresh, counted waker that forwards to `cx`'s.
    pub fn tracked(self: &Arc<Self>, cx: &Context<'_>) -> Waker {
        self.live.fetch_add(1, SeqCst);
        Waker::from(Arc::new(Tracked {
            inner: cx.waker().clone(),
            wakers: Arc::clone(self),
        }))
    }

    /// `slot.poll_done(index, ..)` with a fresh, counted waker that forwards to `cx`'s.
    fn poll_done(
        self: &Arc<Self>,
        slot: &Slot<Key, Outcome>,
        index: usize,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let waker = self.tracked(cx);
        slot.poll_done(index, &mut Context::from_waker(&waker))
    }
}

// ---- the caller's side (load.rs) ------------------------------------------------------------

/// Where a request's claim took it.
#[derive(Debug)]
pub enum Boarded {
    /// Seated: the key is written in seat `index` of slot `slot`.
    Seated {
        /// The slot.
        slot: usize,
        /// The seat.
        index: usize,
    },
    /// The bus was full: nothing was written; the key is handed back.
    Full {
        /// The `{ epoch, slot }` that was full.
        boarding: u64,
        /// The key.
        key: Key,
    },
    /// The ring is closed: the key is handed back.
    Closed(Key),
}

/// Claims a seat and, if seated, writes the key (`Ticket::board`'s steps). It locates the seat
/// after the claim (`Slot::write`); the engine's path, which locates it before the claim
/// (`Ring::claim_placed`, `Slot::write_placed`), is `busline::model::board`, modelled in
/// `ring_place.rs` and the `driver_*.rs` models.
pub fn board(ring: &TestRing, key: Key) -> Boarded {
    match ring.claim() {
        Claim::Seat { slot, index } => {
            // SAFETY: the claim gave us seat `index` of `slot`'s current epoch; we write it once.
            unsafe { ring.slot(slot).write(index, key) };
            Boarded::Seated { slot, index }
        }
        Claim::Full { boarding } => Boarded::Full { boarding, key },
        Claim::Closed => Boarded::Closed(key),
    }
}

/// A request that boarded, after its overflow waits.
#[derive(Debug)]
pub struct Ride {
    /// `Some((slot, index))` if seated, `None` if refused with `Closed`.
    pub seat: Option<(usize, usize)>,
    /// How many times the bus was full.
    pub fulls: usize,
}

/// Boards, and while the bus is full waits for the next one and claims again (the
/// `WaitingForRoom` path of `load.rs`, with a yield loop on `has_moved_on` standing in for its
/// `Notify`). Every claim gets exactly one of Seat, Full or Closed.
pub fn board_waiting(ring: &TestRing, mut key: Key) -> Ride {
    let mut fulls = 0;
    loop {
        match board(ring, key) {
            Boarded::Seated { slot, index } => {
                return Ride {
                    seat: Some((slot, index)),
                    fulls,
                };
            }
            Boarded::Closed(_) => return Ride { seat: None, fulls },
            Boarded::Full {
                boarding,
                key: back,
            } => {
                fulls += 1;
                key = back;
                while !ring.has_moved_on(boarding) {
                    loom::thread::yield_now();
                }
            }
        }
    }
}

/// A stand-in for tokio's `Notify` as `load.rs` uses it (`notify_waiters` and `Notified`): a
/// notification reaches every `Notified` created before it, polled or not, and no other
/// (`notify_waiters` stores no permit). Modelled with a loom counter of calls and a loom
/// `AtomicWaker` (one waiter per model). tokio's `Notify` is itself loom-checked by tokio.
#[derive(Debug)]
pub struct Room {
    calls: loom::sync::atomic::AtomicUsize,
    waker: loom::future::AtomicWaker,
}

impl Room {
    /// A room nobody waits for.
    pub fn new() -> Room {
        Room {
            calls: loom::sync::atomic::AtomicUsize::new(0),
            waker: loom::future::AtomicWaker::new(),
        }
    }

    /// `notify.notified()`: remembers how many notifications came before it.
    pub fn notified(&self) -> usize {
        // Acquire: pairs with `notify_waiters` (tokio: a SeqCst load of its state).
        self.calls.load(loom::sync::atomic::Ordering::Acquire)
    }

    /// `notify.notify_waiters()`.
    pub fn notify_waiters(&self) {
        self.calls
            .fetch_add(1, loom::sync::atomic::Ordering::AcqRel);
        self.waker.wake();
    }

    /// Waits until a notification after `notified` (a `Notified` polled to completion).
    pub fn wait(&self, notified: usize) {
        loom::future::block_on(poll_fn(|cx| {
            self.waker.register_by_ref(cx.waker());
            if self.calls.load(loom::sync::atomic::Ordering::Acquire) != notified {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
    }
}

impl Default for Room {
    fn default() -> Room {
        Room::new()
    }
}

/// How a producer that waited for room got back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebooked {
    /// `want_room` saw the bus had moved on: no wait.
    SawMovedOn,
    /// It waited and was notified.
    Notified,
}

/// Boards; while the bus is full, waits for room the way `load.rs` does: creates its
/// notification, calls the real `Ring::want_room` (announce, then check), and if the bus has
/// not moved on waits for the driver's notification (sent after the real `seal` or `close` and
/// `take_room_wanted`, see [`seal_and_notify`]). Returns the ride and how each wait ended.
pub fn board_waiting_for_room(ring: &TestRing, room: &Room, mut key: Key) -> (Ride, Vec<Rebooked>) {
    let mut fulls = 0;
    let mut waits = vec![];
    loop {
        match board(ring, key) {
            Boarded::Seated { slot, index } => {
                return (
                    Ride {
                        seat: Some((slot, index)),
                        fulls,
                    },
                    waits,
                );
            }
            Boarded::Closed(_) => return (Ride { seat: None, fulls }, waits),
            Boarded::Full {
                boarding,
                key: back,
            } => {
                fulls += 1;
                key = back;
                let notified = room.notified();
                if ring.want_room(boarding) {
                    waits.push(Rebooked::SawMovedOn);
                } else {
                    room.wait(notified);
                    waits.push(Rebooked::Notified);
                }
            }
        }
    }
}

// ---- the ring's sealer ----------------------------------------------------------------------
//
// Every model has one thread that seals and closes the ring (its driver, as in the engine), and
// releases only references it holds (a seat it boarded, the batch's from its seal): the contract
// of the ring's `unsafe` functions, which these wrappers meet on the models' behalf.

/// The real `Ring::seal`, called by the model's one sealer.
pub fn seal(ring: &TestRing) -> Option<Sealed> {
    // SAFETY: each model seals from one thread only (above).
    unsafe { ring.seal() }
}

/// The real `Ring::close`, called by the model's one sealer.
pub fn close(ring: &TestRing) -> Sealed {
    // SAFETY: each model seals and closes from one thread only (above).
    unsafe { ring.close() }
}

/// The driver's seal as `driver.rs` does it: the real `seal`, then the real
/// `take_room_wanted`, notifying the waiters if one announced itself.
pub fn seal_and_notify(ring: &TestRing, room: &Room) -> Option<Sealed> {
    let sealed = seal(ring)?;
    if ring.take_room_wanted() {
        room.notify_waiters();
    }
    Some(sealed)
}

/// Waits for seat `index` of `slot` to be published (`loom::future::block_on` over a
/// `poll_fn` of `poll_done`), reads the outcome, checks that it is this request's (its own key
/// in its own batch), and releases the seat. Returns the outcome.
pub fn wait_and_read(
    ring: &TestRing,
    slot: usize,
    index: usize,
    id: usize,
    wakers: &Arc<Wakers>,
    ledger: &Ledger,
) -> Outcome {
    let seat = ring.slot(slot);
    loom::future::block_on(poll_fn(|cx| wakers.poll_done(seat, index, cx)));
    // SAFETY: we hold seat `index` (not yet released) and `poll_done` returned Ready.
    let outcome = unsafe {
        seat.read(index, |outcome, key| {
            assert_eq!(
                key.id(),
                id,
                "seat {index} of slot {slot} holds another request's key"
            );
            outcome.clone()
        })
    };
    assert!(
        outcome.contains(&id),
        "request {id} read the outcome {outcome:?} of a batch it was not in"
    );
    release(ring, slot, ledger);
    outcome
}

/// The caller gives up while seated (`Ticket::drop`): cancel, then release.
pub fn give_up(ring: &TestRing, slot: usize, index: usize, ledger: &Ledger) {
    ring.slot(slot).cancel(index);
    release(ring, slot, ledger);
}

/// [`give_up`] on a thread of the model.
pub fn spawn_give_up(ring: &Arc<TestRing>, slot: usize, index: usize, ledger: &Arc<Ledger>) -> loom::thread::JoinHandle<()> {
    let (ring, ledger) = (Arc::clone(ring), Arc::clone(ledger));
    loom::thread::spawn(move || give_up(&ring, slot, index, &ledger))
}

/// [`wait_and_read`] on a thread of the model.
pub fn spawn_wait_and_read(
    ring: &Arc<TestRing>,
    (slot, index, id): (usize, usize, usize),
    wakers: &Arc<Wakers>,
    ledger: &Arc<Ledger>,
) -> loom::thread::JoinHandle<Outcome> {
    let (ring, ledger, wakers) = (Arc::clone(ring), Arc::clone(ledger), Arc::clone(wakers));
    loom::thread::spawn(move || wait_and_read(&ring, slot, index, id, &wakers, &ledger))
}

/// What a caller that polls once and then gives up (a `Load` under `tokio::time::timeout`)
/// ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// The outcome was there at the poll: it read it and released.
    Read(Outcome),
    /// It registered its waker, then cancelled and released.
    GaveUp,
}

/// Polls seat `index` of `slot` once (registering a counted waker), then, if the outcome is
/// not there, gives up (`cancel`, `release`) as a `Load` dropped by a timeout does; if it is,
/// reads it and releases.
pub fn poll_then_give_up(
    ring: &TestRing,
    slot: usize,
    index: usize,
    wakers: &Arc<Wakers>,
    ledger: &Ledger,
) -> Polled {
    let seat = ring.slot(slot);
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    match wakers.poll_done(seat, index, &mut cx) {
        Poll::Ready(()) => {
            // SAFETY: we hold seat `index` (not yet released) and `poll_done` returned Ready.
            let outcome = unsafe { seat.read(index, |outcome, _| outcome.clone()) };
            release(ring, slot, ledger);
            Polled::Read(outcome)
        }
        Poll::Pending => {
            give_up(ring, slot, index, ledger);
            Polled::GaveUp
        }
    }
}

/// Drops one reference to `slot`, counting in `ledger` a release that frees it.
pub fn release(ring: &TestRing, slot: usize, ledger: &Ledger) -> bool {
    // SAFETY: a model releases only the references it holds (above).
    let freed = unsafe { ring.release(slot, 1) };
    if freed {
        ledger.frees.fetch_add(1, SeqCst);
    }
    freed
}

// ---- the driver's side (driver.rs) ----------------------------------------------------------

/// What the driver did with one sealed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The seal.
    pub sealed: Sealed,
    /// The ids the batch ran with; `None` if every caller had gone, so it did not run.
    pub ran: Option<Outcome>,
    /// Seats left out because their caller had gone.
    pub cancelled: usize,
}

impl Dispatch {
    /// The ids the batch ran with (empty if it did not run).
    pub fn ids(&self) -> &[usize] {
        self.ran.as_deref().unwrap_or(&[])
    }
}

/// `Driver::depart` then `Publisher::publish`: collects the sealed seats, and with nobody left
/// releases the batch's reference without running it; otherwise publishes the ids it collected
/// and releases.
pub fn dispatch(ring: &TestRing, sealed: Sealed, ledger: &Ledger) -> Dispatch {
    assert!(
        sealed.count <= ring.seats(),
        "a seal counted {} seats of {}",
        sealed.count,
        ring.seats()
    );
    let slot = ring.slot(sealed.slot);
    let mut ids = Vec::new();
    // SAFETY: once per seal, by the driver, before the batch's reference is released.
    let cancelled = unsafe { slot.collect(sealed.count, |key| ids.push(key.id())) };
    assert_eq!(
        ids.len() + cancelled,
        sealed.count,
        "collect saw every sealed seat once"
    );
    let ran = if ids.is_empty() {
        None
    } else {
        // SAFETY: we hold the batch's reference and publish once.
        unsafe { slot.publish(ids.clone()) };
        Some(ids)
    };
    release(ring, sealed.slot, ledger);
    Dispatch {
        sealed,
        ran,
        cancelled,
    }
}

/// A ring of 2 slots of 2 seats with keys 0 and 1 seated, in that order, in slot 0 (boarding);
/// the set-up of the slot models with two callers.
pub fn two_seated() -> (Arc<TestRing>, Arc<Ledger>) {
    let ring: Arc<TestRing> = Arc::new(Ring::new(2, 2));
    let ledger = Ledger::new(2);
    for id in 0..2 {
        assert!(
            matches!(board(&ring, ledger.key(id)), Boarded::Seated { slot: 0, index } if index == id)
        );
    }
    (ring, ledger)
}

/// Seals the boarding slot, yielding until a slot is free to open next.
pub fn seal_when_free(ring: &TestRing) -> Sealed {
    loop {
        if let Some(sealed) = seal(ring) {
            return sealed;
        }
        loom::thread::yield_now();
    }
}

/// Asserts that the ids of `dispatches` hold each of `seated` exactly once and nothing else.
pub fn assert_dispatched_once(dispatches: &[Dispatch], seated: &[usize]) {
    let mut ran: Vec<usize> = dispatches
        .iter()
        .flat_map(|d| d.ids().iter().copied())
        .collect();
    ran.sort_unstable();
    let mut seated = seated.to_vec();
    seated.sort_unstable();
    assert_eq!(
        ran, seated,
        "each seated request runs in exactly one batch: {dispatches:?}"
    );
}

// ---- failures that abort ---------------------------------------------------------------------

/// Runs the `#[ignore]`d test `test` of the current test binary in a child process and returns
/// whether it succeeded and what it printed to stderr.
///
/// For a model whose failure is a deadlock of `loom::future::block_on`: loom reports it with a
/// panic, but unwinding the blocked threads then drops `block_on`'s loom `Arc` outside the
/// execution, which panics again and aborts the process, so `#[should_panic]` cannot see it.
pub fn run_in_child_process(test: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(exe)
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the test binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the `#[ignore]`d model `test` in a child process and asserts that it failed with loom's
/// deadlock report (see [`run_in_child_process`]), printing loom's lines.
pub fn expect_deadlock_in_child(test: &str) {
    let (passed, stderr) = run_in_child_process(test);
    assert!(!passed, "the model {test} passed:\n{stderr}");
    assert!(
        stderr.contains("deadlock"),
        "the model {test} failed, but not with loom's deadlock:\n{stderr}"
    );
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.starts_with("deadlock") || l.starts_with("loom model"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
