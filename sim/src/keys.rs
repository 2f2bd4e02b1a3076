//! Which key each request loads, and how many distinct keys a batch holds.
//!
//! The database's cost is per distinct key, so a batch of Zipf-distributed keys is cheaper
//! than its size: with 10^6 keys at θ = 0.99 a batch of 1,000 holds about 710 distinct keys.

use rand::Rng;
use rand::rngs::SmallRng;

use crate::rng::{Stream, stream};
use crate::scenario::{KeysKind, Scenario};
use crate::zipf::FastZipf;

/// Draws request keys from the scenario's `[keys]` model (its own random stream).
#[derive(Debug, Clone)]
pub struct Keys {
    kind: KeysKind,
    rng: SmallRng,
    count: u32,
    zipf: Option<FastZipf>,
    next_unique: u32,
}

impl Keys {
    /// The key model of `scenario` (validated: `count >= 1`, `theta > 0`).
    pub fn new(scenario: &Scenario) -> Keys {
        let c = &scenario.keys;
        let zipf = (c.kind == KeysKind::Zipf)
            .then(|| FastZipf::new(c.count, c.theta));
        Keys {
            kind: c.kind,
            rng: stream(scenario.seed, Stream::Keys),
            count: c.count,
            zipf,
            next_unique: 0,
        }
    }

    /// Keys that appear only once: every batch's distinct count is its size.
    pub fn all_unique(&self) -> bool {
        self.kind == KeysKind::Unique
    }

    /// The number of key ids `next_key` can return (for unique keys, those so far).
    pub fn key_space(&self) -> u32 {
        match self.kind {
            KeysKind::Unique => self.next_unique,
            _ => self.count,
        }
    }

    /// The next request's key id.
    #[inline]
    pub fn next_key(&mut self) -> u32 {
        match self.kind {
            KeysKind::Unique => {
                self.next_unique = self.next_unique.wrapping_add(1);
                self.next_unique - 1
            }
            KeysKind::Uniform => self.rng.random_range(0..self.count),
            KeysKind::Zipf => {
                let z = self.zipf.as_ref().expect("zipf keys have a distribution");
                z.sample(&mut self.rng) - 1
            }
        }
    }
}

/// Counts the distinct keys of a batch in O(batch) time with no allocation per batch: a stamp
/// per key id, and a batch counts a key when its stamp is not yet the batch's number.
///
/// The stamps span the key space (4 MiB at 10^6 keys), so each key of a batch is likely a
/// cache miss there. A batch's first [`SMALL`] distinct keys are compared with each other
/// instead (at most 120 comparisons, in registers); only a batch with more goes to the stamps.
/// Distinct keys a batch may have before [`DistinctCounter`] uses its stamps.
const SMALL: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct DistinctCounter {
    stamps: Vec<u32>,
    epoch: u32,
}

impl DistinctCounter {
    /// A counter for key ids in `0..key_space`.
    pub fn new(key_space: u32) -> DistinctCounter {
        DistinctCounter { stamps: vec![0; key_space as usize], epoch: 0 }
    }

    /// The number of distinct ids among `keys`.
    pub fn count(&mut self, mut keys: impl Iterator<Item = u32>) -> u32 {
        let mut seen = [0u32; SMALL];
        let mut n = 0;
        while let Some(k) = keys.next() {
            if seen[..n].contains(&k) {
                continue;
            }
            if n == SMALL {
                // `seen` holds distinct keys and `k` is none of them: the stamps count on.
                return self.count_stamped(seen.into_iter().chain(std::iter::once(k)).chain(keys));
            }
            seen[n] = k;
            n += 1;
        }
        n as u32
    }

    fn count_stamped(&mut self, keys: impl Iterator<Item = u32>) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
        let mut n = 0;
        for k in keys {
            let k = k as usize;
            if k >= self.stamps.len() {
                self.stamps.resize(k + 1, 0);
            }
            if self.stamps[k] != self.epoch {
                self.stamps[k] = self.epoch;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn keys(kind: &str, count: u32) -> Keys {
        let text = format!(
            "name = \"k\"\nrequests = 1\n[traffic]\nkind = \"poisson\"\nrate_per_s = 1.0\n[keys]\nkind = \"{kind}\"\ncount = {count}\ntheta = 0.99\n"
        );
        Keys::new(&Scenario::parse_with(&text, Path::new("."), &[]).unwrap())
    }

    #[test]
    fn distinct_counts() {
        let mut d = DistinctCounter::new(10);
        assert_eq!(d.count([1, 2, 2, 3, 1].into_iter()), 3);
        assert_eq!(d.count([1, 1].into_iter()), 1);
        assert_eq!(d.count([42].into_iter()), 1);
        // Past the small-batch comparisons, into the stamps: 16 distinct, then repeats and more.
        let big: Vec<u32> = (0..40).map(|i| (i * 7) % 25).collect();
        assert_eq!(d.count(big.into_iter()), 25);
        assert_eq!(d.count((0..17).chain(0..17)), 17);
        assert_eq!(d.count(std::iter::empty()), 0);
    }

    #[test]
    fn zipf_batches_hold_fewer_distinct_keys() {
        // REFERENCE.md: with 1e6 Zipf(0.99) keys a 1,000-request batch holds ~710 distinct keys.
        let mut k = keys("zipf", 1_000_000);
        let mut d = DistinctCounter::new(k.key_space());
        let mut total = 0;
        for _ in 0..50 {
            let batch: Vec<u32> = (0..1000).map(|_| k.next_key()).collect();
            assert!(batch.iter().all(|&x| x < 1_000_000));
            total += d.count(batch.into_iter());
        }
        let mean = f64::from(total) / 50.0;
        assert!((650.0..770.0).contains(&mean), "{mean}");
    }

    #[test]
    fn uniform_stays_in_range_and_unique_never_repeats() {
        let mut k = keys("uniform", 10);
        let mut d = DistinctCounter::new(10);
        let batch: Vec<u32> = (0..1000).map(|_| k.next_key()).collect();
        assert_eq!(d.count(batch.into_iter()), 10);
        let mut u = keys("unique", 10);
        let batch: Vec<u32> = (0..1000).map(|_| u.next_key()).collect();
        assert_eq!(d.count(batch.into_iter()), 1000);
    }
}
