//! A partition: one live instance per group (a tenant, a shard, a table, an auth context),
//! created on a group's first call, reclaimed when the group is idle, at most `max_groups` at
//! once. [`Grouped`](crate::Grouped) keeps a [`Batcher`](crate::Batcher) per group in one;
//! the strategies' per-group forms ([`PerGroup`](crate::strategy::PerGroup)) keep a
//! `Coalescer`, `Serial`, `UseLast` or `Debounce` per group in one.
//!
//! # The map
//!
//! The groups sit in a lock-free concurrent map (`papaya`): finding an existing group takes no
//! lock, only an epoch pin and two atomic increments (the member's `Arc` and its activity
//! count). Removed members are freed by the map's epoch reclamation (`seize`) once no reader
//! can still see them; the map's and the collector's correctness are theirs, tested by them.
//!
//! # Reclaiming idle groups: the activity word
//!
//! What this module adds is one word per member, [`Activity`]: it counts the *occupants*
//! (the calls between entering the group and leaving it, and whatever a strategy keeps running
//! on the group's behalf, such as `UseLast`'s spawned execution), and its top bit, `DEAD`, is
//! set once and for all when the member is retired.
//!
//! - *Enter*: `fetch_add(1)`. If the previous value had `DEAD`, the member is gone: the caller
//!   retries with a fresh one (the increment on a dead word is harmless: nothing reads it
//!   again).
//! - *Leave*: `fetch_sub(1)`; whoever brings the count to zero tries to retire the member with
//!   a CAS `0 → DEAD`. The CAS fails if someone entered meanwhile (the member lives on); if it
//!   succeeds, nobody is in the member and nobody can enter it again, so the retirer removes it
//!   from the map (only if the map still holds this very member) and drops the count of live
//!   groups.
//! - *Hold*: an occupant may add another (`fetch_add` while it is itself counted, so the word
//!   cannot be `DEAD`) and hand it to a task it spawns: the member then lives until that task
//!   ends too.
//!
//! Enter and retire both act on the word by read-modify-write, so one precedes the other in its
//! modification order: if the enter comes first the CAS from 0 fails; if the retire comes first
//! the enter sees `DEAD`. Hence the two guarantees the strategies build on: **a call is never
//! lost** (it enters a live member, or a new one), and **two members of one group never have
//! occupants at once** (a new member is created only once the old one is `DEAD`, which it
//! becomes only with no occupant). A strategy whose work is all done by its occupants (`Serial`:
//! each call runs in its caller's task) therefore never runs two instances of one group at
//! once. The model check `loom-tests/tests/partition_activity.rs` explores the word's races,
//! with a broken variant (a plain store of `DEAD` instead of the CAS) that it must catch.
//!
//! # The other races
//!
//! - Two calls creating the same group: both build a member; `try_insert` lets one win; the
//!   loser drops its unused instance (never entered, never seen) and enters the winner's.
//! - A dead member still in the map (its retirer between the CAS and the removal): a caller
//!   that finds it removes it itself (`remove_if` on pointer identity) and creates a new one;
//!   the retirer's own removal then finds the new member, leaves it alone, and still uncounts
//!   its own.
//! - `max_groups`: a creator reserves a place (`fetch_add` on the live count, undone if over
//!   the bound, or if its member loses the insert, or if user code panics before it is
//!   inserted), so at most `max_groups` members are ever counted live; past it a new group is
//!   refused with [`Error::Overloaded`], never merged into another.
//!
//! User code runs here: the group's `Hash`, `Eq` and `Clone` (in the map and in the factory),
//! and the factory itself. A panic in it reaches the one caller that ran it, as
//! [`Error::Panicked`], and leaves the map consistent (nothing is half-inserted: the reservation
//! lapses).

use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::Error;
use crate::sync::{AtomicU64, Ordering};

/// Set in an [`Activity`] word once its member is retired. Grants nothing: a caller that sees
/// it must find or create another member.
const DEAD: u64 = 1 << 63;

/// A member's occupants, and whether it is retired (see the module's essay).
#[cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]
#[derive(Debug)]
pub struct Activity(AtomicU64);

#[cfg_attr(not(busline_loom), allow(unreachable_pub, reason = "pub only for the loom re-export in `crate::model`"))]
impl Activity {
    /// A word with one occupant: its creator, counted before anyone else can see it.
    pub fn entered() -> Activity {
        Activity(AtomicU64::new(1))
    }

    /// Counts an occupant in. `false` if the member is retired.
    pub fn enter(&self) -> bool {
        // Acquire: pairs with the Release of `leave`, so an occupant sees the work of those
        // that left before it came.
        self.0.fetch_add(1, Ordering::Acquire) & DEAD == 0
    }

    /// Counts one more occupant in on behalf of one that is in (so the member cannot be
    /// retired meanwhile).
    pub fn hold(&self) {
        let before = self.0.fetch_add(1, Ordering::Relaxed);
        debug_assert!(before & DEAD == 0 && before > 0, "hold() by an occupant only");
    }

    /// Counts an occupant out. `true` if the member retired as a result: the caller must
    /// remove it.
    pub fn leave(&self) -> bool {
        // Release: pairs with the Acquire of `enter` and of the retiring CAS.
        if self.0.fetch_sub(1, Ordering::Release) != 1 {
            return false;
        }
        #[cfg(busline_loom)]
        if crate::sync::broken(crate::sync::Bug::Retire) {
            // Broken on purpose: retire by a plain store, blind to an occupant that entered
            // after our decrement. The model must catch it.
            self.0.store(DEAD, Ordering::Release);
            return true;
        }
        // AcqRel: the retirer sees every occupant's leave before it retires the member.
        self.0.compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

/// One group's instance in a [`Partition`].
struct Member<G, T> {
    /// The group, for the retirer's removal (an owned [`Held`] has no other copy of it).
    group: G,
    value: T,
    activity: Activity,
}

/// Live instances by group, reclaimed when idle, at most `max_groups` at once.
pub(crate) struct Partition<G, T> {
    members: papaya::HashMap<G, Arc<Member<G, T>>>,
    /// Members in the map (created and not yet retired), and creators' reservations.
    live: AtomicU64,
    max_groups: usize,
}

impl<G, T> Partition<G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// An empty partition of at most `max_groups` live groups.
    pub(crate) fn new(max_groups: usize) -> Partition<G, T> {
        Partition {
            // Retired members are freed in batches once no reader can still see them; the
            // smallest batch (seize lifts it to the number of threads) keeps what a burst of
            // retirements leaves waiting to a few members, not 32 per thread.
            members: papaya::HashMap::builder().collector(seize::Collector::new().batch_size(1)).build(),
            live: AtomicU64::new(0),
            max_groups,
        }
    }

    /// Enters `group`'s member, creating it with `make` if the group has none (or only a
    /// retired one).
    ///
    /// # Errors
    ///
    /// [`Error::Overloaded`] if the group is new and `max_groups` groups are live;
    /// [`Error::Panicked`] if the group's `Hash`, `Eq` or `Clone`, or `make`, panicked; what
    /// `make` returns.
    pub(crate) fn enter<E>(
        &self,
        group: &G,
        make: impl FnMut(&G) -> Result<T, Error<E>>,
    ) -> Result<Entered<'_, G, T>, Error<E>> {
        // User code runs in here: a panic reaches this caller only.
        let member = catch_unwind(AssertUnwindSafe(|| self.find_or_create(group, make))).unwrap_or(Err(Error::Panicked))?;
        Ok(Entered { partition: self, member })
    }

    fn find_or_create<E>(
        &self,
        group: &G,
        mut make: impl FnMut(&G) -> Result<T, Error<E>>,
    ) -> Result<Arc<Member<G, T>>, Error<E>> {
        let members = self.members.pin();
        loop {
            if let Some(member) = members.get(group) {
                if member.activity.enter() {
                    return Ok(Arc::clone(member));
                }
                // Retired, its retirer not yet done: take it out ourselves and start afresh.
                let dead = Arc::clone(member);
                let _ = members.remove_if(group, |_, m| Arc::ptr_eq(m, &dead));
                continue;
            }
            let place = Reservation::take(&self.live, self.max_groups)?;
            // Born entered: our call counts in before anyone can see the member.
            let member = Arc::new(Member { group: group.clone(), value: make(group)?, activity: Activity::entered() });
            if members.try_insert(group.clone(), Arc::clone(&member)).is_ok() {
                place.keep();
                return Ok(member);
            }
            // Another call created it first: ours was never seen (its reservation lapses as
            // `place` drops); enter theirs.
        }
    }

    /// Counts an occupant of `member` out, and takes the member out of the map and out of
    /// the count if it retired as a result.
    fn leave(&self, member: &Arc<Member<G, T>>) {
        if !member.activity.leave() {
            return;
        }
        let members = self.members.pin();
        // The group's `Hash` and `Eq` run again here; a panic in them must not unwind out of a
        // drop. (The member then stays in the map, dead, until a caller of its group finds it
        // and removes it; it no longer counts.)
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _ = members.remove_if(&member.group, |_, m| Arc::ptr_eq(m, member));
        }));
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<G, T> Partition<G, T> {
    /// Groups now live: with an occupant, or not yet reclaimed.
    pub(crate) fn live_groups(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// The bound given to [`new`](Partition::new).
    pub(crate) fn max_groups(&self) -> usize {
        self.max_groups
    }
}

impl<G, T> fmt::Debug for Partition<G, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("live_groups", &self.live.load(Ordering::Relaxed))
            .field("max_groups", &self.max_groups)
            .finish_non_exhaustive()
    }
}

/// One place among `max_groups`, given back when dropped unless kept (also when user code
/// panics between taking it and inserting the member).
struct Reservation<'a> {
    live: &'a AtomicU64,
    kept: bool,
}

impl<'a> Reservation<'a> {
    fn take<E>(live: &'a AtomicU64, max_groups: usize) -> Result<Reservation<'a>, Error<E>> {
        // Relaxed: the count is a bound, not a hand-off. The reservation exists (and gives its
        // place back) whether or not it fits.
        let reservation = Reservation { live, kept: false };
        if live.fetch_add(1, Ordering::Relaxed) >= max_groups as u64 {
            return Err(Error::Overloaded);
        }
        Ok(reservation)
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A call's occupancy of its group's member: derefs to the group's instance; dropping it
/// counts the call out (and reclaims the member if it was the last occupant).
pub(crate) struct Entered<'p, G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    partition: &'p Partition<G, T>,
    member: Arc<Member<G, T>>,
}

impl<G, T> Entered<'_, G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// One more occupancy of the same member, owned, for a task the call spawns on the group's
    /// behalf: the member lives until it is dropped too.
    pub(crate) fn hold(&self, partition: &Arc<Partition<G, T>>) -> Held<G, T> {
        debug_assert!(std::ptr::eq(self.partition, Arc::as_ptr(partition)), "the same partition");
        self.member.activity.hold();
        Held { partition: Arc::clone(partition), member: Arc::clone(&self.member) }
    }
}

impl<G, T> Deref for Entered<'_, G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    type Target = T;

    fn deref(&self) -> &T {
        &self.member.value
    }
}

impl<G, T> Drop for Entered<'_, G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.partition.leave(&self.member);
    }
}

/// An owned occupancy (see [`Entered::hold`]).
pub(crate) struct Held<G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    partition: Arc<Partition<G, T>>,
    member: Arc<Member<G, T>>,
}

impl<G, T> Drop for Held<G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.partition.leave(&self.member);
    }
}

impl<G, T> fmt::Debug for Held<G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}
