//! The caller's side: the futures returned by `load` and `load_shared`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, ready};

use futures_util::FutureExt;
use tokio::sync::futures::Notified;

use crate::Error;
use crate::ring::{MAX_SEATS, MAX_SLOTS};
use crate::shared::{AwaitedBatch, Held, Outcome, Shared, Slot, await_batch, drop_quietly};
use crate::signals::{self, Admission, Signals};
use crate::stats::StatsCells;

/// Turns the batch's outcome into what this caller asked for: a type, not a stored function
/// pointer, so that the future carries no word for it.
trait Reader<K, V, E> {
    /// What the caller gets.
    type Output;
    /// This caller's answer from its batch's outcome.
    fn read(outcome: &Outcome<K, V, E>, key: &K) -> Result<Self::Output, Error<E>>;
}

/// `load`'s reader: this key's value.
struct ByKey;

/// `load_shared`'s reader: the whole map.
struct WholeMap;

impl<K, V, E> Reader<K, V, E> for ByKey
where
    K: Eq + Hash,
    V: Clone,
{
    type Output = Option<V>;
    fn read(outcome: &Outcome<K, V, E>, key: &K) -> Result<Option<V>, Error<E>> {
        match outcome {
            Ok(answers) => answers.get(key),
            Err(e) => Err(e.clone()),
        }
    }
}

impl<K: Eq + Hash, V, E> Reader<K, V, E> for WholeMap {
    type Output = StdArc<HashMap<K, V>>;
    fn read(outcome: &Outcome<K, V, E>, key: &K) -> Result<StdArc<HashMap<K, V>>, Error<E>> {
        match outcome {
            // The caller's own key failed (a per-key batch function): its error, not a map
            // without it.
            Ok(answers) => match answers.failure(key) {
                Some(e) => Err(e),
                None => Ok(StdArc::clone(&answers.values)),
            },
            Err(e) => Err(e.clone()),
        }
    }
}

/// The future of [`Batcher::load`](crate::Batcher::load): this key's value, `None` if the batch
/// function's map lacks it.
///
/// # Cancel safety
///
/// Dropping it before it completes gives up the request: if its batch has not left yet, the key
/// is left out (and a batch with no caller left is not run); otherwise the answer is discarded.
/// Nothing stays allocated.
///
/// # Await it or drop it
///
/// A `Load` takes its seat on its first poll, and keeps it until it is polled to completion or
/// dropped. Its batch's slot (one of the batches the batcher holds: `capacity` divided by
/// `max_batch_size`, rounded up, or `max_in_flight + 2` by default) is reused only when every
/// seat in it has been read or given up. A future set aside after a first poll (say, `select!`
/// on `&mut load`, then other work for a long while) therefore holds a slot after its answer
/// has come; with every slot so held, new loads are at capacity: they wait for room, get
/// `Overloaded` or run alone, as [`Overflow`] says. Futures that are awaited, or dropped when
/// abandoned (as `tokio::time::timeout` does), never hold one.
#[must_use = "a `Load` does nothing unless awaited (or polled)"]
pub struct Load<'a, K, V, E>(Ticket<'a, K, V, E, ByKey>);

/// The future of [`Batcher::load_shared`](crate::Batcher::load_shared): the whole map the batch
/// function returned for this request's batch, one `Arc` shared by every caller of that batch.
///
/// # Cancel safety
///
/// As for [`Load`].
#[must_use = "a `LoadShared` does nothing unless awaited (or polled)"]
pub struct LoadShared<'a, K, V, E>(Ticket<'a, K, V, E, WholeMap>);

impl<'a, K, V, E> Load<'a, K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn new(shared: &'a Shared<K, V, E>, key: K) -> Self {
        Load(Ticket::new(shared, key))
    }
}

impl<'a, K, V, E> LoadShared<'a, K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    pub(crate) fn new(shared: &'a Shared<K, V, E>, key: K) -> Self {
        LoadShared(Ticket::new(shared, key))
    }
}

impl<K, V, E> Future for Load<'_, K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Output = Result<Option<V>, Error<E>>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll(cx)
    }
}

impl<K, V, E> Future for LoadShared<'_, K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    type Output = Result<StdArc<HashMap<K, V>>, Error<E>>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll(cx)
    }
}

impl<K, V, E> fmt::Debug for Load<'_, K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Load").field(&self.0.stage_name()).finish()
    }
}

impl<K, V, E> fmt::Debug for LoadShared<'_, K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LoadShared").field(&self.0.stage_name()).finish()
    }
}

/// One request's journey: board (claim a seat and write the key), wait for the outcome, read
/// it, release the seat. Lazy: nothing happens until the first poll.
struct Ticket<'a, K, V, E, R> {
    shared: &'a Shared<K, V, E>,
    stage: Stage<'a, K, V, E>,
    /// How the answer is read (`ByKey`, `WholeMap`).
    reader: PhantomData<fn() -> R>,
    /// The caller's `busline.load` span, linked to the batch that serves it.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// Every variant holds at most one word beside the key, so that the future is the key, the
/// tag and the `shared` reference (24 bytes for a `u64` key, `Load`'s size test): a task moves
/// and polls its futures whole, and the first poll (boarding) writes the stage it ends in.
/// The rare stages keep their parts in a box.
enum Stage<'a, K, V, E> {
    /// Not yet boarded.
    Boarding(K),
    /// Seated; waiting for the outcome.
    Seated(Seat),
    /// The bus was full: waiting for the next one.
    WaitingForRoom(Box<Waiting<'a, K>>),
    /// At capacity under `Overflow::RunAlone`: the batch function runs for this key alone.
    Alone(Box<Solo<'a, K, V, E>>),
    /// Refused at boarding: the same poll answers it.
    Refused(Refusal),
    /// Answered (or refused).
    Done,
}

/// A seat claimed in the ring: its slot and index packed in one word (a slot index takes
/// `SLOT_BITS` bits, a seat index fewer than the other 58).
#[derive(Clone, Copy)]
struct Seat(u64);

impl Seat {
    const SLOT_BITS: u32 = MAX_SLOTS.trailing_zeros();

    #[inline(always)]
    fn new(slot: usize, index: usize) -> Seat {
        debug_assert!(slot < MAX_SLOTS && index <= MAX_SEATS);
        Seat(((index as u64) << Self::SLOT_BITS) | slot as u64)
    }

    #[inline(always)]
    fn slot(self) -> usize {
        (self.0 & ((1 << Self::SLOT_BITS) - 1)) as usize
    }

    #[inline(always)]
    fn index(self) -> usize {
        (self.0 >> Self::SLOT_BITS) as usize
    }
}

const _: () = assert!(MAX_SLOTS.is_power_of_two() && (MAX_SEATS as u64) < 1 << (64 - Seat::SLOT_BITS), "a seat fits one word");

/// A caller waiting for room (`Overflow::Wait` and the bus was full).
struct Waiting<'a, K> {
    key: K,
    /// The `{ epoch, slot }` of the bus that was full.
    boarding: u64,
    /// Created before the announcement (see `Ring::want_room`); pinned, it is boxed apart so
    /// that the key can be taken back out.
    notified: Pin<Box<Notified<'a>>>,
}

/// Why a boarding was refused: the errors that carry no data, so the stage stays one word.
#[derive(Clone, Copy)]
enum Refusal {
    /// `Overflow::Reject` at capacity.
    Overloaded,
    /// Shut down.
    Closed,
    /// A solo run's call panicked.
    Panicked,
}

impl Refusal {
    fn error<E>(self) -> Error<E> {
        match self {
            Refusal::Overloaded => Error::Overloaded,
            Refusal::Closed => Error::Closed,
            Refusal::Panicked => Error::Panicked,
        }
    }
}

/// A solo run under `Overflow::RunAlone`.
struct Solo<'a, K, V, E> {
    key: K,
    /// The batch function's future, polled to completion under the batch timeout.
    run: AwaitedBatch<K, V, E>,
    /// Ends the run for shutdown's count when the run is answered or dropped.
    _admitted: Admitted<'a>,
}

// `Stage` holds no self-references; the pinned parts are boxed.
impl<K, V, E, R> Unpin for Ticket<'_, K, V, E, R> {}

impl<'a, K, V, E, R> Ticket<'a, K, V, E, R>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    R: Reader<K, V, E>,
{
    fn new(shared: &'a Shared<K, V, E>, key: K) -> Self {
        Ticket {
            shared,
            stage: Stage::Boarding(key),
            reader: PhantomData,
            #[cfg(feature = "tracing")]
            span: crate::observe::tracing::load_span(),
        }
    }

    /// The first poll (boarding) is every load's hot path: it is kept small enough to inline
    /// into the caller's future, and a seated boarding returns from here; every other stage
    /// and outcome is out of line (`poll_stage`).
    #[inline(always)]
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<R::Output, Error<E>>> {
        if let Stage::Boarding(_) = self.stage
            && self.board(cx)
        {
            // Seated with our waker in the seat (`Slot::write_placed`): the batch cannot be
            // published before our seat was written, and its publication wakes us.
            return Poll::Pending;
        }
        // The rest runs out of line on a ticket moved out of `self`, not on `self`: so the
        // future's own address is never handed to a call, and a caller holding it in registers
        // (polling a future it has just built, before moving it) keeps it there. A panic below
        // drops the moved ticket, which gives up its seat as dropping `self` would.
        let mut ticket = std::mem::replace(self, Ticket::finished(self.shared));
        let polled = ticket.poll_stage(cx);
        // `self` holds the finished ticket left above: nothing to drop.
        std::mem::forget(std::mem::replace(self, ticket));
        polled
    }

    /// A ticket with nothing left to do, to stand in for one being polled.
    #[inline(always)]
    fn finished(shared: &'a Shared<K, V, E>) -> Self {
        Ticket {
            shared,
            stage: Stage::Done,
            reader: PhantomData,
            #[cfg(feature = "tracing")]
            span: tracing::Span::none(),
        }
    }

    #[inline(never)]
    fn poll_stage(&mut self, cx: &mut Context<'_>) -> Poll<Result<R::Output, Error<E>>> {
        let shared = self.shared;
        loop {
            match &mut self.stage {
                Stage::Boarding(_) => {
                    if self.board(cx) {
                        return Poll::Pending;
                    }
                }
                &mut Stage::Refused(refusal) => {
                    self.stage = Stage::Done;
                    return Poll::Ready(Err(refusal.error()));
                }
                &mut Stage::Seated(seat) => {
                    let (slot, index) = (seat.slot(), seat.index());
                    let seat = shared.ring.slot(slot);
                    ready!(seat.poll_done(index, cx));
                    // The reader runs user code (the key's `Hash` and `Eq`, the value's `Clone`).
                    let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        // SAFETY: we hold seat `index` (not yet released) and `poll_done` is Ready.
                        unsafe {
                            seat.read(index, |held, key| {
                                #[cfg(feature = "tracing")]
                                crate::observe::tracing::served(&self.span, &held.trace().span);
                                if held.refused(index) {
                                    return Err(Error::Panicked);
                                }
                                R::read(held.outcome(), key)
                            })
                        }
                    }))
                    .unwrap_or(Err(Error::Panicked));
                    self.stage = Stage::Done;
                    // SAFETY: our seat's reference, held since the claim; the read above was
                    // its last use, and the stage no longer names the seat.
                    unsafe { shared.release(slot, 1) };
                    return Poll::Ready(answer);
                }
                Stage::WaitingForRoom(waiting) => {
                    // Register, announce ourselves, then check (the driver seals, then checks
                    // the announcement; see `Ring::want_room`).
                    waiting.notified.as_mut().enable();
                    if !shared.ring.want_room(waiting.boarding) {
                        ready!(waiting.notified.as_mut().poll(cx));
                    }
                    let Stage::WaitingForRoom(waiting) = std::mem::replace(&mut self.stage, Stage::Done) else {
                        unreachable!()
                    };
                    self.stage = Stage::Boarding(waiting.key);
                }
                Stage::Alone(solo) => {
                    // In the batcher's runtime context, as the driver runs its batches: a batch
                    // function that uses tokio's timers or I/O works from any caller.
                    let polled = {
                        let _entered = shared.runtime.enter();
                        solo.run.as_mut().poll(cx)
                    };
                    let (outcome, batch) = ready!(polled);
                    let answer = std::panic::catch_unwind(AssertUnwindSafe(|| R::read(&outcome, &solo.key)))
                        .unwrap_or(Err(Error::Panicked));
                    drop_quietly(batch);
                    drop(Held::new(outcome));
                    // The key's `Drop` is user code: it must not panic out of this poll.
                    drop_quietly(std::mem::replace(&mut self.stage, Stage::Done));
                    return Poll::Ready(answer);
                }
                Stage::Done => panic!("`Load` polled after completion"),
            }
        }
    }

    /// The `Boarding` stage: claims a seat and writes the key with `cx`'s waker (waking the
    /// driver when the bus opens or fills), or applies the overflow policy
    /// (`signals::admit_then`). Returns whether it seated the request; if not, the stage says what
    /// comes next (waiting for room, running alone, or refused).
    #[inline(always)]
    fn board(&mut self, cx: &Context<'_>) -> bool {
        // Cloned before the claim: the clone is the caller's executor's code, and a panic in it
        // after the claim would leave a claimed seat unwritten, which the driver waits for.
        // Cloned before the key is taken, too: a panic leaves the key in the stage, and the
        // key is not held in a register across the call (the compiler would store it on the
        // stack, and the claim's locked add waits for every store).
        let waker = cx.waker().clone();
        let key = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Boarding(key) => key,
            other => {
                // Not a drop of the whole stage (which would keep all of it on the stack for
                // this arm): `board` runs only on `Boarding`.
                std::mem::forget(other);
                unreachable!("`board` on a stage other than `Boarding`")
            }
        };
        let shared = self.shared;
        let stamp = |seat: &Slot<K, V, E>| seat.stamp_opened(shared.clock.now().as_nanos());
        // The seat goes into the stage before the claim (the seat the claim will most likely
        // get; corrected after it if another producer came first): the claim's locked add
        // drains that store with the others, and nothing reads the future back right after the
        // claim from a store still in flight (a caller moving the future would stall on it).
        // The stage holds `Done` or a seat, neither of which has anything to drop: replaced
        // without a drop call on the hot path (an assignment would call `drop_in_place`).
        let mark = |seat: Option<(usize, usize)>| {
            let next = match seat {
                Some((slot, index)) => Stage::Seated(Seat::new(slot, index)),
                None => Stage::Done,
            };
            std::mem::forget(std::mem::replace(&mut self.stage, next));
        };
        let refused = signals::admit_then(
            &shared.ring,
            &shared.signals,
            shared.overflow,
            key,
            waker,
            stamp,
            mark,
            |_, _| None,
            Some,
        );
        let Some(admission) = refused else { return true };
        // By value, not through `self`: see `poll`. The stage is `Done` (`mark` was told that
        // the claim got no seat, or not called).
        let next = Self::not_seated(shared, admission);
        std::mem::forget(std::mem::replace(&mut self.stage, next));
        false
    }

    /// The boarding's other outcomes: wait for room, or the overflow policy's answer, as the
    /// next stage.
    #[cold]
    #[inline(never)]
    fn not_seated(shared: &'a Shared<K, V, E>, admission: Admission<K>) -> Stage<'a, K, V, E> {
        match admission {
            Admission::Seated { .. } => unreachable!("a seat goes to `admit_then`'s `seated`"),
            Admission::WaitForRoom { boarding, key } => {
                let notified = Box::pin(shared.room.notified());
                Stage::WaitingForRoom(Box::new(Waiting { key, boarding, notified }))
            }
            Admission::Overloaded(key) => {
                // The caller's own key, handed back: its `Drop` (user code) must not panic
                // out of this poll.
                drop_quietly(key);
                StatsCells::bump(&shared.stats.rejected);
                shared.observer.rejected();
                Stage::Refused(Refusal::Overloaded)
            }
            Admission::RunAlone(key) => Self::run_alone(shared, key),
            Admission::Closed(key) => {
                drop_quietly(key);
                Stage::Refused(Refusal::Closed)
            }
        }
    }

    /// Starts the batch function for this key alone (the run is admitted): the `Alone` stage,
    /// or `Refused` if the call panicked.
    fn run_alone(shared: &'a Shared<K, V, E>, key: K) -> Stage<'a, K, V, E> {
        // Ends the run (for shutdown's count) however it ends.
        let admitted = Admitted(&shared.signals);
        StatsCells::bump(&shared.stats.ran_alone);
        shared.observer.ran_alone();
        // The batcher's runtime context, as for the polls (`poll_stage`): the call, and the
        // batch timeout's timer.
        let _entered = shared.runtime.enter();
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| (shared.batch_fn)(vec![key.clone()])));
        match call {
            Ok(batch) => {
                let run = await_batch(batch, shared.batch_timeout).boxed();
                Stage::Alone(Box::new(Solo { key, run, _admitted: admitted }))
            }
            Err(_) => {
                drop_quietly(key);
                Stage::Refused(Refusal::Panicked)
            }
        }
    }
}

/// A solo run admitted by `Signals::begin_alone`; its drop ends it (`Signals::end_alone`), so
/// that shutdown waits for it and no longer.
struct Admitted<'a>(&'a Signals);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.end_alone();
    }
}

impl<K, V, E, R> Ticket<'_, K, V, E, R> {
    fn stage_name(&self) -> &'static str {
        match self.stage {
            Stage::Boarding(_) => "boarding",
            Stage::Seated(_) => "seated",
            Stage::WaitingForRoom(_) => "waiting for room",
            Stage::Alone { .. } => "running alone",
            Stage::Refused(_) => "refused",
            Stage::Done => "done",
        }
    }
}

impl<K, V, E, R> Drop for Ticket<'_, K, V, E, R> {
    fn drop(&mut self) {
        match self.stage {
            Stage::Seated(seat) => {
                let (slot, index) = (seat.slot(), seat.index());
                // Gave up while seated: tell the driver to leave the key out (if it has not
                // collected it yet), then drop our reference.
                self.shared.ring.slot(slot).cancel(index);
                StatsCells::bump(&self.shared.stats.cancelled);
                self.shared.observer.cancelled();
                // SAFETY: our seat's reference, held since the claim; the ticket is going away.
                unsafe { self.shared.release(slot, 1) };
            }
            Stage::Done => {}
            // The key (and a solo run's batch future) hold user code in their `Drop`: a panic
            // there must not unwind into the caller that gives up.
            _ => {
                drop_quietly(std::mem::replace(&mut self.stage, Stage::Done));
            }
        }
    }
}

#[cfg(all(test, not(busline_loom)))]
mod tests {
    use std::convert::Infallible;
    use std::mem::size_of;

    use super::*;

    #[test]
    fn the_future_is_the_key_a_tag_and_a_reference() {
        // Without the tracing feature's span: the key, the stage's tag and `shared`.
        #[cfg(feature = "tracing")]
        let extra = size_of::<tracing::Span>();
        #[cfg(not(feature = "tracing"))]
        let extra = 0;
        assert_eq!(size_of::<Load<'static, u64, u64, Infallible>>(), 24 + extra);
        assert_eq!(size_of::<Load<'static, u64, u64, std::io::Error>>(), 24 + extra);
        assert_eq!(size_of::<LoadShared<'static, u32, String, String>>(), 24 + extra);
    }
}
