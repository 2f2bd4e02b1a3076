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

pub use busline::model::{Claim, Ring, Sealed, Slot};

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

    /// `slot.poll_done(index, ..)` with a fresh, counted waker that forwards to `cx`'s.
    fn poll_done(
        self: &Arc<Self>,
        slot: &Slot<Key, Outcome>,
        index: usize,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        self.live.fetch_add(1, SeqCst);
        let waker = Waker::from(Arc::new(Tracked {
            inner: cx.waker().clone(),
            wakers: Arc::clone(self),
        }));
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

/// Claims a seat and, if seated, writes the key (`Ticket::board`).
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

/// Drops one reference to `slot`, counting in `ledger` a release that frees it.
pub fn release(ring: &TestRing, slot: usize, ledger: &Ledger) -> bool {
    let freed = ring.release(slot, 1);
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

/// Seals the boarding slot, yielding until a slot is free to open next.
pub fn seal_when_free(ring: &TestRing) -> Sealed {
    loop {
        if let Some(sealed) = ring.seal() {
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
