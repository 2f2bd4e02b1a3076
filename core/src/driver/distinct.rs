//! The distinct keys of one batch, in the order their first caller boarded.
//!
//! A batch's keys are de-duplicated as the driver reads its seats: each key is hashed once and
//! looked up in an index of the keys already taken; a new one is cloned to the end of the list.
//! The list is the batch's key vector as it stands, so handing it to the batch function is a
//! move (no pass over a hash set to drain it, ~5 ns a key), and the batch function sees the keys
//! in boarding order, the same order for the same arrivals.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// hashbrown's default hasher (foldhash): one hash per seat, several times cheaper than std's
/// SipHash for small keys. Seeded per process; a crafted collision set could at worst make one
/// batch's de-duplication quadratic in its size.
type Hasher = hashbrown::DefaultHashBuilder;

pub(super) struct Distinct<K> {
    /// The distinct keys so far, in the order they were first met.
    keys: Vec<K>,
    /// Each key's hash, beside it: the index grows by these, so that no user `Hash` runs on
    /// the keys already in (a panic there, in the middle of a rehash, is the one that could
    /// leave the index short of a key).
    hashes: Vec<u64>,
    /// Positions in `keys`, by the key's hash.
    index: HashTable<usize>,
    hasher: Hasher,
    /// How many keys the last batch had: the next one's first key reserves as much.
    room: usize,
}

/// What the driver keeps between batches: the index of a batch this large, and room for its
/// keys. The seat pool's bound (`POOL_SEATS`, the default `max_batch_size`): a steady load of
/// batches up to it allocates nothing per batch, and a burst's larger table is freed with the
/// burst, so memory follows the load back down.
const KEEP: usize = crate::seats::POOL_SEATS;

impl<K> Distinct<K> {
    pub(super) fn new() -> Distinct<K> {
        Distinct { keys: Vec::new(), hashes: Vec::new(), index: HashTable::new(), hasher: Hasher::default(), room: 0 }
    }

    /// Takes the keys out. The next batch's vector is allocated by its first key, with room for
    /// as many as this one had, up to `KEEP` (so an idle driver holds no keys).
    pub(super) fn take(&mut self) -> Vec<K> {
        self.forget_index();
        self.room = self.keys.len().min(KEEP);
        std::mem::take(&mut self.keys)
    }

    /// Forgets the keys. Their `Drop` is user code: each is dropped on its own, so a panicking
    /// one neither stops the others nor meets a second panic while unwinding.
    pub(super) fn clear(&mut self) {
        self.forget_index();
        for key in self.keys.drain(..) {
            crate::shared::drop_quietly(key);
        }
        if self.keys.capacity() > KEEP {
            self.keys = Vec::new();
        }
    }

    /// Empties the index, and frees it if a burst grew it past `KEEP` keys.
    fn forget_index(&mut self) {
        if self.index.capacity() > KEEP {
            self.index = HashTable::new();
            self.hashes = Vec::new();
        } else {
            self.index.clear();
            self.hashes.clear();
        }
    }
}

impl<K: Eq + Hash + Clone> Distinct<K> {
    /// Adds `key` unless an equal key is in already. Runs the key's `Hash`, `Eq` and (for a new
    /// key) `Clone`, and no other key's; if one panics, nothing half-added stays behind.
    pub(super) fn insert(&mut self, key: &K) {
        let hash = self.hasher.hash_one(key);
        let (keys, hashes) = (&self.keys, &self.hashes);
        match self.index.entry(hash, |&at| keys[at] == *key, |&at| hashes[at]) {
            Entry::Occupied(_) => {}
            Entry::Vacant(vacant) => {
                // Clone and make room before indexing: a panicking `Clone` (or a failed
                // allocation) leaves the index as it was.
                let key = key.clone();
                if self.keys.capacity() == 0 {
                    self.keys.reserve(self.room.max(1));
                }
                self.keys.reserve(1);
                self.hashes.reserve(1);
                vacant.insert(self.keys.len());
                self.keys.push(key);
                self.hashes.push(hash);
            }
        }
    }
}
