//! What a batch answers: the values of its keys, and, for a per-key batch function, the keys
//! that failed on their own.
//!
//! A plain batch function (`Batcher::builder`) answers `Result<HashMap<K, V>, E>`: the outer
//! error fails the whole batch. A per-key one (`Batcher::builder_per_key`) answers
//! `Result<HashMap<K, Result<V, E>>, E>`: the outer error still fails the whole batch, and a
//! key's own error reaches only that key's callers, as `Error::Key`, while "not found" (the key
//! missing from the map) stays `Ok(None)`. Both are carried as [`Answered`]: the values in one
//! map, the failures (if any) in another, so that the plain path pays one `None` and
//! `load_shared` keeps handing out the batch's one map of values.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::Error;

/// What a batch function returned, as the engine carries it to the batch's outcome.
#[derive(Debug)]
pub(crate) struct Answered<K, V, E> {
    values: HashMap<K, V>,
    failed: Option<HashMap<K, Arc<E>>>,
}

impl<K, V, E> Answered<K, V, E> {
    /// A plain batch function's map.
    pub(crate) fn plain(values: HashMap<K, V>) -> Self {
        Answered { values, failed: None }
    }

    /// A per-key batch function's map, split into values and failures (one `Arc` per failed
    /// key, shared by all its callers). The keys' `Hash` runs here (in the batch's future, where
    /// a panic is caught).
    pub(crate) fn per_key(answers: HashMap<K, Result<V, E>>) -> Self
    where
        K: Eq + Hash,
    {
        let mut values = HashMap::with_capacity(answers.len());
        let mut failed = HashMap::new();
        for (key, answer) in answers {
            match answer {
                Ok(value) => {
                    values.insert(key, value);
                }
                Err(e) => {
                    failed.insert(key, Arc::new(e));
                }
            }
        }
        Answered { values, failed: (!failed.is_empty()).then_some(failed) }
    }
}

/// What every caller of one batch reads: the one shared map of values, and the one shared map of
/// per-key failures, if any.
#[derive(Debug)]
pub(crate) struct Answers<K, V, E> {
    pub(crate) values: Arc<HashMap<K, V>>,
    failed: Option<Arc<HashMap<K, Arc<E>>>>,
}

impl<K, V, E> Clone for Answers<K, V, E> {
    fn clone(&self) -> Self {
        Answers { values: Arc::clone(&self.values), failed: self.failed.clone() }
    }
}

impl<K, V, E> From<Answered<K, V, E>> for Answers<K, V, E> {
    fn from(answered: Answered<K, V, E>) -> Self {
        Answers { values: Arc::new(answered.values), failed: answered.failed.map(Arc::new) }
    }
}

impl<K: Eq + Hash, V, E> Answers<K, V, E> {
    /// `key`'s own error, if the batch function failed it alone.
    pub(crate) fn failure(&self, key: &K) -> Option<Error<E>> {
        let failed = self.failed.as_ref()?;
        failed.get(key).map(|e| Error::Key(Arc::clone(e)))
    }
}

impl<K: Eq + Hash, V: Clone, E> Answers<K, V, E> {
    /// `key`'s answer: its value, `None` if the batch function left it out, or its own error.
    pub(crate) fn get(&self, key: &K) -> Result<Option<V>, Error<E>> {
        if let Some(failed) = &self.failed {
            if let Some(e) = failed.get(key) {
                return Err(Error::Key(Arc::clone(e)));
            }
        }
        Ok(self.values.get(key).cloned())
    }
}
