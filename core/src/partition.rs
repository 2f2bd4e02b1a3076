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
//! No user code runs inside the map. Its keys are [`GroupKey`]s: the group's hash, computed
//! once per call with the partition's own `RandomState` (outside the map, under the call's
//! panic guard), and the group in an `Arc` shared with its member; the map's hasher passes
//! that hash through. So the map, which re-hashes every key while it grows, never calls the
//! user's `Hash` (a panic there would leave an entry half-copied for ever, and reach whichever
//! caller's insert drove the copy). Keys compare by identity first, then by the user's `Eq`
//! under a panic guard: a panic reads as "not equal" inside the map and is reported to the call
//! that ran the operation, as [`Error::Panicked`], once the operation is over (the call then
//! leaves whatever member it got unused). A lookup borrows the caller's group (no clone per
//! call); a member's own entry is removed by identity ([`Identity`]), with no user code: a
//! group whose `Eq` is not reflexive (a NaN in it) gets a member per call, each of them removed
//! when it retires, never a dead entry left behind. The partition's copies of a group, and its
//! instances, drop quietly ([`Quiet`]): the map frees them in whichever thread's guard
//! reclaims them, and a panicking `Drop` must not unwind through the collector or into an
//! unrelated caller.
//!
//! # Reclaiming idle groups: the activity word
//!
//! What this module adds is one word per member, [`Activity`]: it counts the *occupants*
//! (the calls between entering the group and leaving it, and whatever the instance runs on the
//! group's behalf: `UseLast`'s spawned execution, a `Batcher`'s batch call through the member's
//! [`Presence`]), and its top bit, `DEAD`, is set once and for all when the member is retired.
//!
//! - *Enter*: `fetch_add(1)`. If the previous value had `DEAD`, the member is gone: the caller
//!   retries with a fresh one (the increment on a dead word is harmless: nothing reads it
//!   again).
//! - *Leave*: `fetch_sub(1)`; whoever brings the count to zero tries to retire the member with
//!   a CAS `0 → DEAD`. The CAS fails if someone entered meanwhile (the member lives on); if it
//!   succeeds, nobody is in the member and nobody can enter it again, so the retirer gives the
//!   member's place back (below) and removes it from the map (only if the map still holds this
//!   very member).
//! - *Hold*: an occupant may add another (`fetch_add` while it is itself counted, so the word
//!   cannot be `DEAD`) and hand it to a task it spawns: the member then lives until that task
//!   ends too. A batch call enters through the member's `Presence` when it starts (a plain
//!   enter: if the member is already retired, nobody of the group waits on the batch, which
//!   then answers its abandoned requests with nothing instead of calling the backend), and
//!   leaves when its future completes or is dropped. So a group with a batch running is not
//!   reclaimed, and its `max_in_flight` holds across callers that give up.
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
//!   that finds it removes it itself (by identity) and creates a new one; the retirer's own
//!   removal then finds the new member and leaves it alone.
//!
//! # `max_groups`, exactly
//!
//! `live` counts *places*: one per member in the map and not retired, one per creator's
//! reservation. A call is refused with [`Error::Overloaded`] only if, at one instant, its group
//! has no member and no place (none in a creator's hands, none being given back), and all
//! `max_groups` places are taken by other groups: by their members, or by calls creating them;
//! when the partition settles within the call's careful look (below), by members only. Past the
//! bound a new group is refused, never merged into another. The one exception is a creation of
//! the caller's own group that hangs (its `Clone` or the factory does not return): after
//! waiting [`OWN_CREATION_FOR`] (about a second) for it, the caller is refused too. Two things
//! would otherwise refuse calls of a group that exists (with `max_groups(1)`, more than half
//! the calls of the only group):
//!
//! - *A retired member's place.* Each member carries a `place` flag, taken by one swap: by its
//!   retirer, right after the retiring CAS and before the removal, which gives the place back;
//!   or by a caller of the group that finds the member dead, which inherits the place for the
//!   group's next member without reserving. Whoever swaps first has it; the other does
//!   nothing.
//! - *A place in a creator's hands* (reserved or inherited, the member not yet inserted), and
//!   a creator of the same group racing it. A reservation takes a place only below the bound
//!   (a CAS loop, so a failed attempt never inflates the count). When one fails, the call does
//!   not refuse at once: it looks again, carefully.
//!
//! `creating` counts the places in creators' hands (from before the place is taken until the
//! member is inserted or the place given back); `changes` is bumped after every insertion and
//! every place given back, before the creator leaves `creating`. A retirer giving its place
//! back also counts in `creating` while it does (the swap, the decrement, the bump). Both are
//! kept twice: in total, and in one of [`STRIPES`] stripes by the group's hash, so that a call
//! can tell its own group's creations from others'. A careful round reads `changes` (`seen`)
//! and its stripe's (`seen_own`) before its lookup; if the lookup finds no member and the
//! reservation fails, then:
//!
//! 1. it refuses if `creating` is 0, `live` still at the bound and `changes` still `seen` (the
//!    partition settled: every place is a member's);
//! 2. otherwise, if its stripe was *quiet* over the round (the stripe's `creating` is 0, and
//!    its `changes` still `seen_own`), it refuses once it has looked for `CAREFUL_ROUNDS`
//!    (1,024) rounds and `CAREFUL_FOR` (10 ms): other groups' creators, preempted, hung or in a
//!    churn that never pauses, have had their time, and the call is not kept waiting on them;
//! 3. if its stripe is not quiet, a creation or a give-back of its own group (or of one sharing
//!    its stripe) is under way: it waits for it, up to `OWN_CREATION_FOR`, then is refused.
//!
//! Between rounds it yields (a creator runs no await between taking a place and inserting);
//! past `CAREFUL_ROUNDS` it naps instead, 10 µs doubling to 1 ms, so that a long wait does not
//! burn a core (it still holds its thread: the wait is synchronous).
//!
//! Why the first is exact (all these operations are `SeqCst`; a group counts as live until its
//! member's place is given back): take the instant `t` at which `creating` reads 0. No place
//! was given back between the failed reservation's read of `live` and `t`: a return happens in
//! a window counted in `creating`, which must then have closed before `t`, and it bumps
//! `changes` inside that window, so the last read of `changes` would differ from `seen`. No
//! place is in a creator's hands at `t`, so each of the `max_groups` places counted then is a
//! member's; none is of the caller's group: a member inserted before the lookup would have been
//! found (live, or dead with its place still on it, which the lookup takes over), and an
//! insertion after it bumps `changes` before its creator leaves `creating`. So at `t` the
//! group is new and `max_groups` other groups are live: the refusal is right at `t`.
//!
//! Why the second never refuses a call whose own group has a member or a place (its group's
//! creators and retirers count in its stripe): take the interval from the lookup to the read
//! of the stripe's `creating` (`t`). At the lookup the group had no member in the map (a live
//! one is entered, a dead one's place taken over or waited out). A member of the group
//! inserted, or a place of it given back or lapsed, after `seen_own` was read bumps the
//! stripe's `changes` inside a window counted in the stripe's `creating`: that window is open
//! at `t` (the count is not 0) or closed before it (the later read of `changes` differs from
//! `seen_own`). A place of the group in a creator's or a retirer's hands at the lookup ends
//! the same way, with a bump (a bump before `seen_own` means the member was in the map at the
//! lookup, or the place already back). So throughout the interval the group had no member and
//! no place, and within it the failed reservation read `live` at the bound: at that instant
//! all `max_groups` places were other groups', their members' or their creators'. (Two calls
//! racing to create one other group each hold a place until one of them inserts: then fewer
//! than `max_groups` groups hold the places for a moment; the first check, which waits for
//! creators, never refuses on that.) A stripe shared with another group only makes its calls
//! wait. The second needs no quiet partition, only a quiet stripe, so a churn of other groups
//! cannot make it refuse the only group of a `max_groups(1)` partition while that group's own
//! creator is preempted, which waiting a fixed time did on a loaded machine.
//!
//! The careful round costs a failed reservation (the stripe's `creating` counted in and out)
//! and, past `CAREFUL_ROUNDS`, a nap; the path of a call that finds its group touches none of
//! these counters; a creation and a retirement each add four increments of `creating` (two in
//! total, two in the stripe) and two of `changes`.
//!
//! # Memory
//!
//! The map does not shrink: after a burst of N distinct groups it keeps a table sized for N
//! (10 to 20 bytes a group of the burst: 0.3 or 0.6 MB after 30,000 groups, as the map last
//! resized; measured by `core/tests/grouped_memory.rs`) for the partition's life, though every
//! group is reclaimed. Replacing an empty, oversized map under lock-free readers would need a
//! hand-over protocol of our own on top of papaya's (readers pinned in the old map, creators
//! racing into the new); we have not built it. The bound is the table of the largest burst,
//! not the traffic: bursts of as many other groups after it keep no more.
//!
//! User code runs here: the group's `Hash` (once per call, before the map), `Eq` (in the map,
//! guarded), `Clone` (once per new member) and `Drop` (quietly), and the factory itself. A
//! panic in it reaches the one caller that ran it, as [`Error::Panicked`], and leaves the map
//! consistent (nothing is half-inserted: the reservation lapses). A `Clone` or factory that
//! hangs holds its caller's thread and its group's place: calls of groups found live are not
//! touched, a new group at the bound is refused after the careful look, and a caller of the
//! hung group itself, at the bound, waits up to `OWN_CREATION_FOR` (napping, not spinning) and
//! is refused with [`Error::Overloaded`].

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};

use papaya::Equivalent;

use crate::Error;
use crate::shared::{Quiet, drop_quietly};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// How long, and how many rounds, a call of a new group at the bound looks carefully while
/// other groups' creators hold places before it is refused anyway: both must have passed. A
/// creator holds a place for a few microseconds (it builds the instance, no await), so only a
/// churn of groups that never pauses, or a creator preempted or hung, keeps the check from
/// settling; the call is then refused rather than waiting on other groups. (Before the
/// per-stripe check, either bound alone refused calls of the only group of a `max_groups(1)`
/// partition churned by two tasks: 64 or 1,024 rounds, about a microsecond each on an idle
/// machine, and 10 ms in CI, where parallel tests made each yield a time slice.) The first
/// `CAREFUL_ROUNDS` rounds yield; later ones sleep (from [`NAP_FIRST`] doubling to
/// [`NAP_MOST`]), so that a long wait does not burn a core.
const CAREFUL_FOR: std::time::Duration = std::time::Duration::from_millis(10);
const CAREFUL_ROUNDS: u32 = 1024;

/// How long a call waits for a creation or a give-back of its own group (or of a group sharing
/// its stripe) before it is refused as if the group were new: counted in naps slept (see
/// [`Careful::wait`]), not read from a clock, so that a process stopped and resumed does not
/// find the wait over before the creator, stopped with it, has run again. A creator runs no
/// await and microseconds of work, so only a preempted thread or hung user code (the group's
/// `Clone`, the factory) holds the place longer; a preempted thread runs again within a
/// scheduler period (CFS's is 24 ms by default on 8 or more cores, stretched by the load), and
/// a second is forty of those while bounding what a hung creation costs each caller of its
/// group.
const OWN_CREATION_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The first and the longest sleep of a careful round past `CAREFUL_ROUNDS`: a creator preempted
/// for a time slice is waited for with a few naps, a hung one at a millisecond per round.
const NAP_FIRST: std::time::Duration = std::time::Duration::from_micros(10);
const NAP_MOST: std::time::Duration = std::time::Duration::from_millis(1);

/// The stripes of the creation counters: a group's creators and retirers count in the stripe of
/// its hash as well as in the partition's totals, so a careful call tells its own group's
/// creations from other groups'. 64 makes a collision (which only makes a call wait) unlikely
/// for the few creations ever in flight at once, at 1 KB a partition.
const STRIPES: usize = 64;

/// Inserts a call may lose before its group's `Eq` is taken to contradict itself. A lost insert
/// means another member of the group is in the map, which the next lookup finds, unless that
/// member's whole life (its creation, its calls, its retirement) fits between our two steps:
/// several in a row do not happen with an `Eq` that agrees with itself. A group whose copies
/// are equal and whose caller's group is not would otherwise loop for ever, building and
/// dropping an instance each round.
const LOST_INSERTS: usize = 16;

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

thread_local! {
    /// Set when the group's `Eq` panicked inside a map operation of this thread's (which reads
    /// it as "not equal"); the call that ran the operation reports it.
    static EQ_PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// The group's `Eq`, a panic in it recorded (see [`EQ_PANICKED`]) and read as "not equal".
fn user_eq<G: Eq>(a: &G, b: &G) -> bool {
    catch_unwind(AssertUnwindSafe(|| a == b)).unwrap_or_else(|payload| {
        drop_quietly(payload);
        EQ_PANICKED.with(|p| p.set(true));
        false
    })
}

/// A key of the map: the group, shared by its member, with its hash computed once by the
/// partition (no user `Hash` ever runs inside the map, which re-hashes every key as it grows).
struct GroupKey<G> {
    hash: u64,
    group: Arc<Quiet<G>>,
}

impl<G> Hash for GroupKey<G> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<G: Eq> PartialEq for GroupKey<G> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.group, &other.group) || (self.hash == other.hash && user_eq(&**self.group, &**other.group))
    }
}

impl<G: Eq> Eq for GroupKey<G> {}

/// A caller's lookup: its hash and its own group, borrowed (no clone per call).
struct Query<'a, G> {
    hash: u64,
    group: &'a G,
}

impl<G> Hash for Query<'_, G> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<G: Eq> Equivalent<GroupKey<G>> for Query<'_, G> {
    fn equivalent(&self, key: &GroupKey<G>) -> bool {
        self.hash == key.hash && user_eq(self.group, &**key.group)
    }
}

/// A removal of one member's own entry: by identity, no user code (a group unequal to itself
/// is still found).
struct Identity<'a, G>(&'a GroupKey<G>);

impl<G> Hash for Identity<'_, G> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl<G> Equivalent<GroupKey<G>> for Identity<'_, G> {
    fn equivalent(&self, key: &GroupKey<G>) -> bool {
        Arc::ptr_eq(&self.0.group, &key.group)
    }
}

/// The map's hasher: passes on the hash the partition computed (the only thing written to it).
#[derive(Clone, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = Passed;

    fn build_hasher(&self) -> Passed {
        Passed(0)
    }
}

struct Passed(u64);

impl Hasher for Passed {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One group's instance in a [`Partition`].
struct Member<G, T> {
    /// The map's key of this member (the same `Arc` of the group), for removal by identity.
    key: GroupKey<G>,
    value: Quiet<T>,
    activity: Activity,
    /// Whether this member still holds its place among `max_groups`: taken by a swap, by its
    /// retirer (which gives it back) or by a caller of its group that finds it retired (which
    /// inherits it for the group's next member).
    place: AtomicBool,
}

/// Live instances by group, reclaimed when idle, at most `max_groups` at once.
pub(crate) struct Partition<G, T> {
    members: papaya::HashMap<GroupKey<G>, Arc<Member<G, T>>, PassThrough>,
    /// Hashes the groups (once per call, outside the map).
    hasher: RandomState,
    /// Places taken: by members in the map and not yet retired, and by creators' reservations.
    live: AtomicU64,
    /// Places in a creator's hands (reserved or inherited, the member not yet inserted or the
    /// place not yet given back): a refusal waits until there are none (see the essay).
    creating: AtomicU64,
    /// Bumped after every insertion and every place given back: a refusal is decided only over
    /// an interval in which it did not move.
    changes: AtomicU64,
    /// `creating` and `changes` again, per stripe of the groups' hashes (see [`STRIPES`]).
    stripes: Box<[Stripe]>,
    max_groups: usize,
}

/// A stripe's share of `creating` and `changes`: the creations and give-backs of the groups
/// whose hash falls in it.
struct Stripe {
    creating: AtomicU64,
    changes: AtomicU64,
}

impl Stripe {
    /// Whether no creation or give-back of the stripe's groups is under way now, and none ended
    /// since `seen` was read (see the essay).
    fn quiet_since(&self, seen: u64) -> bool {
        self.creating.load(Ordering::SeqCst) == 0 && self.changes.load(Ordering::SeqCst) == seen
    }
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
            members: papaya::HashMap::builder()
                .hasher(PassThrough)
                .collector(seize::Collector::new().batch_size(1))
                .build(),
            hasher: RandomState::new(),
            live: AtomicU64::new(0),
            creating: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Stripe { creating: AtomicU64::new(0), changes: AtomicU64::new(0) }).collect(),
            max_groups,
        }
    }

    /// Enters `group`'s member, creating it with `make` if the group has none (or only a
    /// retired one). `make` receives the new member's [`Presence`], through which work the
    /// instance runs on the group's behalf can occupy it.
    ///
    /// # Errors
    ///
    /// [`Error::Overloaded`] if the group is new and `max_groups` places are taken by other
    /// groups, or if the group's own creation, holding the last place, has not ended within
    /// [`OWN_CREATION_FOR`] (about a second: its `Clone` or `make` hangs);
    /// [`Error::Panicked`] if the group's `Hash`, `Eq` or `Clone`, or `make`, panicked; what
    /// `make` returns.
    pub(crate) fn enter<E>(
        self: &Arc<Self>,
        group: &G,
        make: impl FnMut(&G, Presence<G, T>) -> Result<T, Error<E>>,
    ) -> Result<Entered<'_, G, T>, Error<E>> {
        // Only this call's own map operations may report to it.
        EQ_PANICKED.with(|p| p.set(false));
        // User code runs in here: a panic reaches this caller only. The map's guard, and any
        // member it frees, drop inside too (their drops are quiet anyway).
        let found = catch_unwind(AssertUnwindSafe(|| self.find_or_create(group, make))).unwrap_or(Err(Error::Panicked));
        let eq_panicked = EQ_PANICKED.with(|p| p.replace(false));
        let entered = Entered { partition: self, member: found? };
        if eq_panicked {
            // The group's `Eq` panicked in the map: the member found (or created beside one the
            // panic hid) is left unused, and the caller told.
            drop(entered);
            return Err(Error::Panicked);
        }
        Ok(entered)
    }

    fn find_or_create<E>(
        self: &Arc<Self>,
        group: &G,
        mut make: impl FnMut(&G, Presence<G, T>) -> Result<T, Error<E>>,
    ) -> Result<Arc<Member<G, T>>, Error<E>> {
        let query = Query { hash: self.hasher.hash_one(group), group };
        let members = self.members.pin();
        // Set once a reservation failed: the next rounds decide a refusal carefully.
        let mut careful: Option<Careful> = None;
        let mut lost_inserts = 0;
        loop {
            // Read before the lookup: what moved since is seen by the refusal's check.
            let seen = careful
                .as_ref()
                .map(|_| (self.changes.load(Ordering::SeqCst), self.stripe(query.hash).changes.load(Ordering::SeqCst)));
            let place = match members.get(&query) {
                Some(member) if member.activity.enter() => return Ok(Arc::clone(member)),
                Some(member) => {
                    // Retired, its retirer not yet done: inherit its place unless the retirer
                    // gave it back first, and take the member out ourselves.
                    let dead = Arc::clone(member);
                    let place = Reservation::inherit(self, &dead);
                    let _ = members.remove_if(&Identity(&dead.key), |_, m| Arc::ptr_eq(m, &dead));
                    match place {
                        Some(place) => place,
                        None => continue,
                    }
                }
                // The group's `Eq` panicked in the lookup: its member may be there, hidden;
                // creating another beside it would give the group two.
                None if EQ_PANICKED.with(Cell::get) => return Err(Error::Panicked),
                None => match Reservation::take(self, query.hash) {
                    Some(place) => place,
                    None => match (careful.as_mut(), seen) {
                        (Some(careful), Some((seen, seen_own))) => {
                            if self.refusal_holds(seen) || careful.gives_up(self.stripe(query.hash).quiet_since(seen_own)) {
                                return Err(Error::Overloaded);
                            }
                            // A place is in a creator's hands, or the partition moved: let it
                            // settle (creators run no awaits between reserving and inserting).
                            careful.wait();
                            continue;
                        }
                        _ => {
                            careful = Some(Careful::new());
                            continue;
                        }
                    },
                },
            };
            let member = self.build(group, query.hash, &mut make)?;
            if members.try_insert(GroupKey { hash: member.key.hash, group: Arc::clone(&member.key.group) }, Arc::clone(&member)).is_ok() {
                place.keep();
                return Ok(member);
            }
            // Another call created it first: ours was never seen (its place lapses as `place`
            // drops, and it drops quietly); enter theirs.
            lost_inserts += 1;
            if lost_inserts >= LOST_INSERTS {
                // The map holds a member our lookups never find: the group's `Eq` contradicts
                // itself (its copies equal, the caller's group not). Its caller is told.
                return Err(Error::Panicked);
            }
        }
    }

    /// A refusal stands if no place is in a creator's hands and nothing was inserted or given
    /// back since `seen` (read before the lookup that found no member): see the essay.
    fn refusal_holds(&self, seen: u64) -> bool {
        self.creating.load(Ordering::SeqCst) == 0
            && self.live.load(Ordering::SeqCst) >= self.max_groups as u64
            && self.changes.load(Ordering::SeqCst) == seen
    }

    /// A new member for `group`, born entered (its creator counts in before anyone can see
    /// it), its instance made with a [`Presence`] of it.
    fn build<E>(
        self: &Arc<Self>,
        group: &G,
        hash: u64,
        make: &mut impl FnMut(&G, Presence<G, T>) -> Result<T, Error<E>>,
    ) -> Result<Arc<Member<G, T>>, Error<E>> {
        let key = GroupKey { hash, group: Arc::new(Quiet::new(group.clone())) };
        let mut failed = None;
        let member = Arc::new_cyclic(|weak| {
            let presence = Presence { partition: Arc::downgrade(self), member: Weak::clone(weak) };
            let value = match make(group, presence) {
                Ok(value) => Some(value),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            };
            Member { key, value: value.map_or_else(Quiet::empty, Quiet::new), activity: Activity::entered(), place: AtomicBool::new(true) }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(member),
        }
    }

    /// Counts an occupant of `member` out, and takes the member out of the map and gives its
    /// place back if it retired as a result.
    fn leave(&self, member: &Arc<Member<G, T>>) {
        if !member.activity.leave() {
            return;
        }
        // The place first (unless a caller of the group found the member dead and inherited
        // it), so that the group's next member never waits for this removal.
        let stripe = self.stripe(member.key.hash);
        self.creating.fetch_add(1, Ordering::SeqCst);
        stripe.creating.fetch_add(1, Ordering::SeqCst);
        if member.place.swap(false, Ordering::SeqCst) {
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.changes.fetch_add(1, Ordering::SeqCst);
            stripe.changes.fetch_add(1, Ordering::SeqCst);
        }
        stripe.creating.fetch_sub(1, Ordering::SeqCst);
        self.creating.fetch_sub(1, Ordering::SeqCst);
        // By identity: no user code runs, and drops in here are quiet; the catch is for the
        // map's own failures (an allocation), which must not unwind out of a drop.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let members = self.members.pin();
            let _ = members.remove_if(&Identity(&member.key), |_, m| Arc::ptr_eq(m, member));
        }));
    }
}

impl<G, T> Partition<G, T> {
    /// The stripe of the groups of this hash.
    fn stripe(&self, hash: u64) -> &Stripe {
        // `RandomState` mixes every bit of the hash: its low ones spread the groups evenly.
        &self.stripes[(hash % STRIPES as u64) as usize]
    }

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

/// One place among `max_groups` in a creator's hands, given back when dropped unless kept
/// (also when user code panics between taking it and inserting the member).
struct Reservation<'a> {
    live: &'a AtomicU64,
    creating: &'a AtomicU64,
    changes: &'a AtomicU64,
    /// The stripe of the group the place is for.
    stripe: &'a Stripe,
    kept: bool,
}

impl<'a> Reservation<'a> {
    /// Counts a creator of a group of this hash in `creating`, in the partition's total and in
    /// its stripe: in hand from before the place is taken until it is kept or given back.
    fn count_in<G, T>(partition: &'a Partition<G, T>, hash: u64) -> Reservation<'a> {
        let stripe = partition.stripe(hash);
        partition.creating.fetch_add(1, Ordering::SeqCst);
        stripe.creating.fetch_add(1, Ordering::SeqCst);
        Reservation { live: &partition.live, creating: &partition.creating, changes: &partition.changes, stripe, kept: false }
    }

    /// Counts out a creator that got no place (nothing moved: `changes` stays).
    fn count_out(self) {
        self.stripe.creating.fetch_sub(1, Ordering::SeqCst);
        self.creating.fetch_sub(1, Ordering::SeqCst);
        std::mem::forget(self);
    }

    /// A free place for a group of this hash, if there is one.
    fn take<G, T>(partition: &'a Partition<G, T>, hash: u64) -> Option<Reservation<'a>> {
        let reservation = Reservation::count_in(partition, hash);
        let mut live = partition.live.load(Ordering::SeqCst);
        while live < partition.max_groups as u64 {
            match partition.live.compare_exchange_weak(live, live + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(reservation),
                Err(now) => live = now,
            }
        }
        reservation.count_out();
        None
    }

    /// The place of a retired `dead` member, unless its retirer gave it back first.
    fn inherit<G, T>(partition: &'a Partition<G, T>, dead: &Member<G, T>) -> Option<Reservation<'a>> {
        let reservation = Reservation::count_in(partition, dead.key.hash);
        if dead.place.swap(false, Ordering::SeqCst) {
            return Some(reservation);
        }
        reservation.count_out();
        None
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
        // An insertion or a place given back: either moves the partition, and the stripe.
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.stripe.changes.fetch_add(1, Ordering::SeqCst);
        self.stripe.creating.fetch_sub(1, Ordering::SeqCst);
        self.creating.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call's careful look at the bound (see the essay): since when, how many rounds, and its
/// wait between rounds.
struct Careful {
    since: std::time::Instant,
    rounds: u32,
    /// The next nap, and the naps slept so far.
    nap: std::time::Duration,
    napped: std::time::Duration,
}

impl Careful {
    fn new() -> Careful {
        Careful { since: std::time::Instant::now(), rounds: 0, nap: NAP_FIRST, napped: std::time::Duration::ZERO }
    }

    /// Whether the call is refused anyway, the exact check not having settled. `own_quiet`:
    /// no creation or give-back of the call's stripe was under way or ended during this round.
    /// With it, the call's own group had no member and no place throughout the round: refused
    /// once other groups' creators have been waited for long enough. Without it, the call
    /// waits for its own group's creation, up to [`OWN_CREATION_FOR`].
    fn gives_up(&self, own_quiet: bool) -> bool {
        if own_quiet { self.rounds >= CAREFUL_ROUNDS && self.since.elapsed() >= CAREFUL_FOR } else { self.napped >= OWN_CREATION_FOR }
    }

    /// Lets the partition settle before the next round: a yield for the first rounds, then
    /// naps growing to `NAP_MOST`, so that a long wait does not burn the core.
    fn wait(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        if self.rounds <= CAREFUL_ROUNDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.nap);
            self.napped += self.nap;
            self.nap = (self.nap * 2).min(NAP_MOST);
        }
    }
}

/// A member's presence, given to its instance when it is made: work the instance runs on the
/// group's behalf (a `Batcher`'s batch call) occupies the member through it, so the group is
/// not reclaimed, and a second instance not made, while that work runs.
#[allow(unreachable_pub, reason = "named by the sealed `Partitioned` trait")]
pub struct Presence<G, T> {
    partition: Weak<Partition<G, T>>,
    member: Weak<Member<G, T>>,
}

impl<G, T> Presence<G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// Occupies the member until the returned handle drops; `None` if the member is retired
    /// (then nobody of the group is waiting on this instance).
    pub(crate) fn occupy(&self) -> Option<Held<G, T>> {
        let partition = self.partition.upgrade()?;
        let member = self.member.upgrade()?;
        if !member.activity.enter() {
            return None;
        }
        Some(Held { partition, member })
    }
}

impl<G, T> fmt::Debug for Presence<G, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

impl<G, T> Clone for Presence<G, T> {
    fn clone(&self) -> Self {
        Presence { partition: Weak::clone(&self.partition), member: Weak::clone(&self.member) }
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

impl<G, T> Held<G, T>
where
    G: Eq + Hash + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    /// `work`, holding this occupancy until it completes or is dropped (a batch call run on the
    /// group's behalf).
    pub(crate) async fn over<F: std::future::Future>(self, work: F) -> F::Output {
        let out = work.await;
        drop(self);
        out
    }
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
