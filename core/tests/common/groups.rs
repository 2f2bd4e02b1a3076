//! Groups that misbehave, for the partition's tests (`Grouped`, the strategies' per-group forms,
//! the memory they keep): shared by the test binaries that include this file.

use std::hash::{Hash, Hasher};

/// A group whose `Drop` panics if `bad`; its clones are `bad` if `bad_clones`. So a test makes
/// the caller's own group panic when dropped ([`Touchy::callers`]), or only the library's copies
/// of it ([`Touchy::copies`]). Equal and hashed by `id` alone.
#[derive(Debug)]
pub(crate) struct Touchy {
    pub(crate) id: u64,
    bad: bool,
    bad_clones: bool,
}

impl Touchy {
    /// The caller's own group panics when dropped; its copies do not.
    pub(crate) fn callers(id: u64) -> Touchy {
        Touchy { id, bad: true, bad_clones: false }
    }

    /// The caller's own group is healthy; every copy of it panics when dropped.
    pub(crate) fn copies(id: u64) -> Touchy {
        Touchy { id, bad: false, bad_clones: true }
    }
}

impl Clone for Touchy {
    fn clone(&self) -> Self {
        Touchy { id: self.id, bad: self.bad_clones, bad_clones: self.bad_clones }
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Touchy {}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        if self.bad && !std::thread::panicking() {
            panic!("injected: the group's drop");
        }
    }
}

/// A group that is never equal to anything, itself included (as a NaN).
#[derive(Clone, Debug)]
pub(crate) struct Nan(pub(crate) u64);

impl PartialEq for Nan {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

impl Eq for Nan {}

impl Hash for Nan {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
