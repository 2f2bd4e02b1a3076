//! Single-flight (use-first): concurrent calls with one key share one execution.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crossbeam_utils::CachePadded;
use hashbrown::{DefaultHashBuilder, HashTable};
use tokio::task::AbortHandle;

use super::rendezvous::Rendezvous;
use super::round::lock;
use super::user::{Quiet, clone_outcome, drop_quietly, guarded, settle};
use crate::Error;
use crate::sync::{AtomicU64, Ordering};

/// Concurrent calls with the same key share one execution; the first caller's function runs,
/// the others wait for its result (Go's `singleflight`, FlowSync's "use first").
///
/// - A call with a key that is not in flight starts an execution: it calls its `f` and runs the
///   future on the tokio runtime, as its own task.
/// - A call with a key in flight joins that execution; its own `f` is dropped uncalled.
/// - When the execution ends, the key is freed *before* the waiters are woken: a call that
///   comes after completion starts afresh, never reads a finished flight.
/// - A caller that gives up leaves the others waiting; the execution is dropped only when every
///   one of its waiters has gone.
/// - An error reaches every waiter as [`Error::Batch`] (one `Arc` for all, the error itself, not
///   wrapped) and frees the key, as a value does; a panic reaches them as
///   [`Error::Panicked`].
/// - [`forget`](SingleFlight::forget) frees a key early: the next call starts afresh while the
///   current waiters keep theirs.
///
/// Cloning is cheap (an `Arc`); clones share the flights. Per-key state exists only while a key
/// is in flight. [`in_flight`](SingleFlight::in_flight) counts it.
///
/// # Per group
///
/// Unlike the other strategies, `SingleFlight` has no [`PerGroup`](crate::PerGroup) form, and
/// needs none: it is keyed already, and a key's state exists only while its flight runs (it is
/// removed when the flight ends or its last waiter leaves), so idle groups cost nothing and
/// there is nothing to reclaim. Put the group in the key, `sf.run((tenant, key), ...)`: flights
/// of different groups never merge, and one group's cancellations and errors stay in its own
/// flights. The function is each call's own closure, so it captures the group's context
/// directly. (To bound the groups in flight, bound the callers.)
///
/// # Locks and user code
///
/// The keys live in a sharded hash table; each shard is a mutex held for a lookup, an insert or
/// a removal, never across user code that does work: `f`, its future, the value's `Clone` and
/// every key's `Drop` run outside it, and the key's `Hash` is computed before it is taken. The
/// key's `Eq` is the one exception, as in every concurrent map: it runs during the lookup. A
/// panicking `Hash` or `Eq` reaches its own caller as [`Error::Panicked`].
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), busline::Error<std::io::Error>> {
/// static QUERIES: AtomicU32 = AtomicU32::new(0);
/// async fn fetch_profile(id: u32) -> Result<String, std::io::Error> {
///     QUERIES.fetch_add(1, Ordering::Relaxed);
///     tokio::task::yield_now().await; // the database round trip
///     Ok(format!("user {id}"))
/// }
///
/// let profiles = busline::SingleFlight::<u32, String, std::io::Error>::new();
/// let (a, b) = tokio::join!(
///     profiles.run(7, || fetch_profile(7)),
///     profiles.run(7, || fetch_profile(7)),
/// );
/// assert_eq!((a?, b?), ("user 7".to_string(), "user 7".to_string()));
/// assert_eq!(QUERIES.load(Ordering::Relaxed), 1, "one query for both callers");
/// assert_eq!(profiles.in_flight(), 0, "nothing stays behind");
/// # Ok(()) }
/// ```
pub struct SingleFlight<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
}

struct Inner<K, V, E> {
    shards: Box<[Shard<K, V, E>]>,
    hasher: DefaultHashBuilder,
}

/// One lock's share of the keys in flight.
type Shard<K, V, E> = CachePadded<Mutex<HashTable<Entry<K, V, E>>>>;

/// A caller's place in a flight.
struct Joined<V, E> {
    hash: u64,
    flight: Arc<Flight<V, E>>,
    /// The caller inserted the flight: it calls its `f`.
    leader: bool,
}

/// A key in flight.
struct Entry<K, V, E> {
    hash: u64,
    key: K,
    flight: Arc<Flight<V, E>>,
}

/// One execution and the callers waiting for it.
struct Flight<V, E> {
    outcome: Rendezvous<Result<V, Error<E>>>,
    /// Callers still waiting. Changed only under the shard's lock (atomic only so that the
    /// flight is `Sync`): joining a flight and leaving it as its last waiter are then never
    /// interleaved, so nobody joins a flight that is being dropped.
    waiters: AtomicU64,
    /// The execution's task, set once it is spawned (before its leader can leave).
    task: OnceLock<AbortHandle>,
}

// # How a call goes
//
// 1. Hash the key (user code, outside every lock).
// 2. Under the shard's lock: find the key's flight by `Eq`, or insert a new one. Either way
//    count this caller as one of its waiters. Unlock.
// 3. The caller that inserted is the leader: it calls `f` and spawns its future, wrapped in an
//    `Execution` that, when the future ends (or is dropped), removes the flight from the table
//    if it is still there (found by pointer, not by key: a forgotten key may have a newer
//    flight) and then publishes the outcome.
// 4. Every caller waits for the outcome and clones the value for itself.
//
// A caller dropped before the outcome (`Waiter::drop`) takes itself off the count under the
// shard's lock; the last one also removes the flight from the table and aborts its task. That
// is the only way an execution is dropped early, and it happens only with nobody left to
// answer.

impl<K, V, E> SingleFlight<K, V, E>
where
    K: Hash + Eq + Send + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// An empty single-flight group.
    pub fn new() -> SingleFlight<K, V, E> {
        // Four shards per core: two cores rarely want the same shard's lock at once. Rounded to
        // a power of two (a mask picks the shard), at most 64.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cores * 4).next_power_of_two().min(64);
        SingleFlight {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| CachePadded::new(Mutex::new(HashTable::new()))).collect(),
                hasher: DefaultHashBuilder::default(),
            }),
        }
    }

    /// Runs `f()` for `key`, or joins the execution already in flight for it, and returns the
    /// execution's value.
    ///
    /// # Errors
    ///
    /// [`Error::Batch`] with the execution's error (shared by all its waiters),
    /// [`Error::Panicked`] if `f`, its future, the key's `Hash` or `Eq` or the value's `Clone`
    /// panicked, [`Error::Closed`] if the runtime shut down before the execution ended.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the execution is spawned on it), as `tokio::spawn` does.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the execution to the other waiters; the last waiter's drop
    /// drops the execution too (and frees the key).
    pub async fn run<F, Fut>(&self, key: K, f: F) -> Result<V, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::current();
        let inner = &self.inner;
        let Joined { hash, flight, leader } = inner.join(key)?;
        // Whoever holds the flight last drops its value (the user's `Drop`): maybe this caller.
        let flight = Quiet::new(flight);
        let mut waiter = Waiter { inner, hash, flight: &flight, answered: false };
        if leader {
            let mut execution = Execution { inner: Arc::clone(inner), hash, flight: Quiet::new(Arc::clone(&flight)) };
            match guarded(f) {
                Ok(fut) => {
                    let task = runtime.spawn(async move {
                        let outcome = settle(fut).await;
                        execution.finish(outcome);
                    });
                    let _ = flight.task.set(task.abort_handle());
                }
                Err(e) => execution.finish(Err(e)),
            }
        } else {
            drop_quietly(f);
        }
        let outcome = flight.outcome.wait().await;
        waiter.answered = true;
        clone_outcome(outcome)
    }

    /// Frees `key`: the next call with it starts a new execution, while the callers waiting
    /// for the current one keep waiting for it. Returns whether the key was in flight.
    ///
    /// A key whose `Hash` or `Eq` panics counts as not in flight.
    pub fn forget(&self, key: &K) -> bool {
        let inner = &self.inner;
        let Ok(hash) = guarded::<_, ()>(|| inner.hasher.hash_one(key)) else {
            return false;
        };
        let mut table = inner.shard(hash);
        let removed = guarded::<_, ()>(|| match table.find_entry(hash, |entry| entry.key == *key) {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        });
        shrink(&mut table);
        drop(table);
        let forgotten = matches!(removed, Ok(Some(_)));
        drop_quietly(removed);
        forgotten
    }

    /// Keys with an execution in flight (not forgotten). Zero when every call has ended: no
    /// state stays behind.
    pub fn in_flight(&self) -> usize {
        self.inner.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

impl<K: Hash + Eq, V, E> Inner<K, V, E> {
    /// Finds `key`'s flight and counts the caller as one of its waiters, or inserts a new one
    /// (the caller then leads).
    fn join(&self, key: K) -> Result<Joined<V, E>, Error<E>> {
        let hash = match guarded(|| self.hasher.hash_one(&key)) {
            Ok(hash) => hash,
            Err(e) => {
                drop_quietly(key);
                return Err(e);
            }
        };
        let mut table = self.shard(hash);
        let found = guarded(|| table.find(hash, |entry| entry.key == key).map(|entry| Arc::clone(&entry.flight)));
        match found {
            Err(e) => {
                drop(table);
                drop_quietly(key);
                Err(e)
            }
            Ok(Some(flight)) => {
                flight.waiters.fetch_add(1, Ordering::Relaxed);
                drop(table);
                drop_quietly(key);
                Ok(Joined { hash, flight, leader: false })
            }
            Ok(None) => {
                let flight = Arc::new(Flight {
                    outcome: Rendezvous::new(),
                    waiters: AtomicU64::new(1),
                    task: OnceLock::new(),
                });
                table.insert_unique(hash, Entry { hash, key, flight: Arc::clone(&flight) }, |e| e.hash);
                Ok(Joined { hash, flight, leader: true })
            }
        }
    }
}

impl<K, V, E> Inner<K, V, E> {
    fn shard(&self, hash: u64) -> MutexGuard<'_, HashTable<Entry<K, V, E>>> {
        // The table uses the hash's low bits and its top 7; the shard index takes bits above
        // the low ones, so it does not reduce the table's spread.
        lock(&self.shards[(hash >> 32) as usize & (self.shards.len() - 1)])
    }

    /// Removes `flight`'s entry if it is still the one in the table (found by pointer: no user
    /// code runs under the lock). The entry, and so the key, is dropped outside the lock.
    fn remove(&self, table: &mut HashTable<Entry<K, V, E>>, hash: u64, flight: &Arc<Flight<V, E>>) -> Option<Entry<K, V, E>> {
        let removed = table.find_entry(hash, |entry| Arc::ptr_eq(&entry.flight, flight)).ok().map(|entry| entry.remove().0);
        shrink(table);
        removed
    }
}

/// Tables of at most this many entries keep their capacity (a few hundred bytes a shard):
/// shrinking them would rehash at every ebb of a lightly loaded shard.
const KEEP_CAPACITY: usize = 16;

/// Memory follows the load: a table a burst grew is given back as it empties. Shrunk to twice
/// its entries once they fall below a quarter of its capacity, so a shrink's rehash (by the
/// stored hashes: no user code under the lock) is paid for by the removals that led to it, and
/// a table refilling to its old size grows at most twice (amortised O(1) per call).
fn shrink<K, V, E>(table: &mut HashTable<Entry<K, V, E>>) {
    if table.capacity() > KEEP_CAPACITY && table.len() < table.capacity() / 4 {
        table.shrink_to(table.len() * 2, |entry| entry.hash);
    }
}

/// The leader's half: frees the key and publishes the outcome, once, when the execution ends,
/// or as [`Error::Closed`] if its task is dropped first (aborted with no waiter left, or its
/// runtime shut down).
struct Execution<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
    hash: u64,
    flight: Quiet<Arc<Flight<V, E>>>,
}

impl<K, V, E> Execution<K, V, E> {
    fn finish(&mut self, outcome: Result<V, Error<E>>) {
        let mut table = self.inner.shard(self.hash);
        let removed = self.inner.remove(&mut table, self.hash, &self.flight);
        drop(table);
        drop_quietly(removed);
        // Freed first, then published: whoever reads this outcome arrived before the key was
        // freed, and whoever arrives after starts afresh.
        // `false` only if already published, which `Drop` checks first: the outcome stands.
        let _ = self.flight.outcome.publish(outcome);
    }
}

impl<K, V, E> Drop for Execution<K, V, E> {
    fn drop(&mut self) {
        if self.flight.outcome.get().is_none() {
            self.finish(Err(Error::Closed));
        }
    }
}

/// A caller's half: leaving before the outcome takes it off the flight's count; the last one
/// out drops the execution.
struct Waiter<'a, K, V, E> {
    inner: &'a Inner<K, V, E>,
    hash: u64,
    flight: &'a Arc<Flight<V, E>>,
    answered: bool,
}

impl<K, V, E> Drop for Waiter<'_, K, V, E> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut table = self.inner.shard(self.hash);
        let last = self.flight.waiters.fetch_sub(1, Ordering::Relaxed) == 1;
        let removed = if last { self.inner.remove(&mut table, self.hash, self.flight) } else { None };
        drop(table);
        if last {
            if let Some(task) = self.flight.task.get() {
                task.abort();
            }
        }
        drop_quietly(removed);
    }
}

impl<K, V, E> Default for SingleFlight<K, V, E>
where
    K: Hash + Eq + Send + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn default() -> Self {
        SingleFlight::new()
    }
}

impl<K, V, E> Clone for SingleFlight<K, V, E> {
    fn clone(&self) -> Self {
        SingleFlight { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V, E> fmt::Debug for SingleFlight<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let in_flight: usize = self.inner.shards.iter().map(|shard| lock(shard).len()).sum();
        f.debug_struct("SingleFlight").field("in_flight", &in_flight).finish()
    }
}
