//! The load balancer in front of a fleet: which instance each request reaches.
//!
//! - `random`: an instance drawn at random for every request (its own seeded stream).
//! - `round_robin`: the instances in turn.
//! - `key_affinity`: consistent hashing on the request's key (Karger et al., 1997): every
//!   instance puts `vnodes` points on a ring of 64-bit hashes, and a key goes to the owner of
//!   the first point at or after the key's hash. A key always reaches the same instance, so an
//!   instance's batches deduplicate the key as one instance's would; when an instance leaves or
//!   joins, only the keys of the arcs it owned (or takes) move, about 1/N of them
//!   ([`Ring::owned_share`] measures that exact share on the ring).
//!
//! # Uneven balancers
//!
//! With `instance_skew = s > 0` instance `i` gets the share `w_i ∝ (i + 1)^-s` (a Zipf law over
//! instances): `random` draws by share, `round_robin` walks a golden-ratio sequence through the
//! shares (a deterministic, evenly spread weighted rotation, like a smooth weighted round
//! robin but O(log N) per pick), and `key_affinity` gives instance `i` `round(vnodes N w_i)`
//! points (at least one), as Envoy's ring-hash scales an endpoint's hashes by its weight.
//!
//! Every pick is O(1) (even, random or in turn) or O(log N) (a binary search over shares or
//! ring points): no work per request grows linearly with the fleet. Key affinity remembers
//! each key's owner once found ([`Router::remember_owners`]), so a key's later requests skip
//! the ring's binary search (at 256 instances and 100 vnodes, 15 steps over 200 KiB of
//! points, cache misses mostly).

use rand::Rng;
use rand::rngs::SmallRng;

use crate::rng::{Stream, stream};
use crate::scenario::{Routing, Scenario};

/// The golden ratio's fractional part: consecutive multiples mod 1 are as evenly spread as any
/// sequence can be (Weyl; the three-gap theorem).
const GOLDEN: f64 = 0.618_033_988_749_894_9;

/// Picks an instance for each request.
#[derive(Debug, Clone)]
pub struct Router {
    instances: u32,
    how: How,
}

#[derive(Debug, Clone)]
enum How {
    /// One instance: nothing to pick.
    Single,
    Random { rng: SmallRng, cumulative: Option<Vec<f64>> },
    RoundRobin { next: u64, cumulative: Option<Vec<f64>> },
    KeyAffinity {
        ring: Ring,
        /// Each key's owner once looked up (`UNKNOWN` before), for keys below its length.
        owners: Vec<u32>,
    },
}

/// `How::KeyAffinity::owners` of a key not looked up yet.
const UNKNOWN: u32 = u32::MAX;

impl Router {
    /// The balancer of `scenario`'s `[fleet]`.
    pub fn new(scenario: &Scenario) -> Router {
        let f = &scenario.fleet;
        let n = f.instances.max(1);
        let cumulative = (f.instance_skew > 0.0 && n > 1).then(|| cumulative(&shares(n, f.instance_skew)));
        let how = match f.routing {
            _ if n == 1 => How::Single,
            Routing::Random => How::Random { rng: stream(scenario.seed, Stream::Routing), cumulative },
            Routing::RoundRobin => How::RoundRobin { next: 0, cumulative },
            Routing::KeyAffinity => {
                How::KeyAffinity { ring: Ring::new(&shares(n, f.instance_skew), f.vnodes), owners: Vec::new() }
            }
        };
        Router { instances: n, how }
    }

    /// Key affinity: keeps the owner of each key in `0..key_space` once found (4 bytes a key),
    /// so later requests for it skip the ring. Picks are the same either way.
    pub fn remember_owners(&mut self, key_space: u32) {
        if let How::KeyAffinity { owners, .. } = &mut self.how {
            *owners = vec![UNKNOWN; key_space as usize];
        }
    }

    /// Instances behind the balancer.
    pub fn instances(&self) -> u32 {
        self.instances
    }

    /// The instance for a request with key `key`.
    #[inline]
    pub fn pick(&mut self, key: u32) -> u32 {
        match &mut self.how {
            How::Single => 0,
            How::Random { rng, cumulative: None } => rng.random_range(0..self.instances),
            How::Random { rng, cumulative: Some(c) } => by_share(c, rng.random::<f64>()),
            How::RoundRobin { next, cumulative: None } => {
                let i = (*next % u64::from(self.instances)) as u32;
                *next += 1;
                i
            }
            How::RoundRobin { next, cumulative: Some(c) } => {
                let u = (*next as f64 * GOLDEN).fract();
                *next += 1;
                by_share(c, u)
            }
            How::KeyAffinity { ring, owners } => match owners.get_mut(key as usize) {
                Some(o) if *o != UNKNOWN => *o,
                Some(o) => {
                    *o = ring.owner(key_hash(key));
                    *o
                }
                None => ring.owner(key_hash(key)),
            },
        }
    }
}

/// Zipf shares of `n` instances with exponent `skew` (0: even), summing to 1.
pub fn shares(n: u32, skew: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|i| f64::from(i).powf(-skew)).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|x| x / total).collect()
}

fn cumulative(shares: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    let mut c: Vec<f64> = shares.iter().map(|s| {
        acc += s;
        acc
    }).collect();
    if let Some(last) = c.last_mut() {
        *last = f64::INFINITY; // rounding never sends u past the last instance
    }
    c
}

/// The instance whose cumulative share first exceeds `u` in [0, 1).
#[inline]
fn by_share(cumulative: &[f64], u: f64) -> u32 {
    cumulative.partition_point(|&c| c <= u) as u32
}

/// SplitMix64's finaliser: a key id's position on the ring (the balancer hashes the key).
#[inline]
pub fn key_hash(key: u32) -> u64 {
    mix(u64::from(key) ^ 0x6A09_E667_F3BC_C908)
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A consistent-hash ring: sorted points, each owned by an instance.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<u64>,
    owners: Vec<u32>,
}

impl Ring {
    /// A ring where instance `i` has `round(vnodes × N × shares[i])` points (at least 1); with
    /// even shares, `vnodes` each. A point's position depends only on (instance, replica), so
    /// the rings of N and N + 1 instances share every point of the first N.
    pub fn new(shares: &[f64], vnodes: u32) -> Ring {
        let n = shares.len() as f64;
        let mut pts: Vec<(u64, u32)> = Vec::new();
        for (i, s) in shares.iter().enumerate() {
            let count = ((f64::from(vnodes) * n * s).round() as u64).max(1);
            for r in 0..count {
                pts.push((mix((i as u64) << 32 | r), i as u32));
            }
        }
        pts.sort_unstable();
        Ring { points: pts.iter().map(|p| p.0).collect(), owners: pts.iter().map(|p| p.1).collect() }
    }

    /// The ring of `instances` instances with even shares.
    pub fn even(instances: u32, vnodes: u32) -> Ring {
        Ring::new(&shares(instances, 0.0), vnodes)
    }

    /// The instance owning hash `h`: the owner of the first point at or after it (wrapping).
    #[inline]
    pub fn owner(&self, h: u64) -> u32 {
        let i = self.points.partition_point(|&p| p < h);
        self.owners[if i == self.points.len() { 0 } else { i }]
    }

    /// The exact share of the hash space `instance` owns: the arcs ending at its points.
    /// When that instance leaves, exactly these keys move (to the next point's owner); when it
    /// joins, exactly these keys move to it.
    pub fn owned_share(&self, instance: u32) -> f64 {
        let n = self.points.len();
        if n == 1 {
            return if self.owners[0] == instance { 1.0 } else { 0.0 };
        }
        let owned: u128 = (0..n)
            .filter(|&i| self.owners[i] == instance)
            .map(|i| {
                // The arc (previous point, this point], wrapping around 2^64.
                let prev = self.points[(i + n - 1) % n];
                u128::from(self.points[i].wrapping_sub(prev))
            })
            .sum();
        owned as f64 / 2f64.powi(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_and_fall_with_skew() {
        let s = shares(8, 1.0);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        assert!(shares(8, 0.0).iter().all(|&x| (x - 0.125).abs() < 1e-15));
    }

    #[test]
    fn weighted_picks_follow_the_shares() {
        let c = cumulative(&shares(4, 1.0));
        let mut counts = [0u32; 4];
        for k in 0..100_000u32 {
            counts[by_share(&c, (f64::from(k) * GOLDEN).fract()) as usize] += 1;
        }
        for (i, s) in shares(4, 1.0).iter().enumerate() {
            let got = f64::from(counts[i]) / 100_000.0;
            assert!((got - s).abs() < 1e-3, "instance {i}: {got} vs {s}");
        }
    }

    #[test]
    fn a_ring_splits_the_hash_space_and_keeps_keys_where_they_were() {
        let ring = Ring::even(10, 100);
        let total: f64 = (0..10).map(|i| ring.owned_share(i)).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // Joining: an 11th instance takes keys only for itself.
        let bigger = Ring::even(11, 100);
        let mut moved = 0;
        for k in 0..100_000u32 {
            let (a, b) = (ring.owner(key_hash(k)), bigger.owner(key_hash(k)));
            if a != b {
                assert_eq!(b, 10, "key {k} moved between old instances");
                moved += 1;
            }
        }
        let share = bigger.owned_share(10);
        assert!((f64::from(moved) / 100_000.0 - share).abs() < 0.01, "{moved} vs {share}");
        assert!((share - 1.0 / 11.0).abs() < 0.05, "{share}");
    }
}
