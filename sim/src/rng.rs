//! Seeded random streams: one independent stream per source of randomness.
//!
//! Every source (arrivals, keys, service times) draws from its own generator, seeded from the
//! scenario seed and the stream's number. So changing the policy, which changes how many
//! service times are drawn, never changes the arrival trace: every policy and window of a
//! sweep sees exactly the same requests.

use rand::SeedableRng;
use rand::rngs::SmallRng;

/// The stream numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Arrival times.
    Arrivals = 1,
    /// Request keys.
    Keys = 2,
    /// Database service times.
    Service = 3,
    /// The load balancer's random picks (`[fleet] routing = "random"`).
    Routing = 4,
    /// Clients: think times and retry jitter.
    Client = 5,
    /// The batcher driver's delays (`[driver]`).
    Driver = 6,
}

/// The generator of `stream` for `seed`, re-seeded for `key` (one draw per key: common random
/// numbers across policies).
pub fn keyed_stream(seed: u64, stream: Stream, key: u64) -> SmallRng {
    let mut z = seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    SmallRng::seed_from_u64(z ^ (z >> 31))
}

/// The generator of `stream` for `seed`.
pub fn stream(seed: u64, stream: Stream) -> SmallRng {
    // SplitMix64 finaliser of (seed, stream): well-separated 64-bit seeds for nearby inputs.
    let mut z = seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    SmallRng::seed_from_u64(z ^ (z >> 31))
}

/// `x.round() as u64` for `x` in [0, 2^53), without the libm call `f64::round` compiles to on
/// baseline x86-64 (no SSE4.1): the same result, bit for bit, on the hot path of every event.
#[inline]
pub fn round_ns(x: f64) -> u64 {
    debug_assert!((0.0..9.007_199_254_740_992e15).contains(&x), "{x} out of range");
    let i = x as u64; // truncates
    // x - i is exact here (both within one binade of each other or x < 1).
    i + u64::from(x - i as f64 >= 0.5)
}

/// `x.ceil() as u64` for `x` in [0, 2^53), without a libm call.
#[inline]
pub fn ceil_ns(x: f64) -> u64 {
    debug_assert!((0.0..9.007_199_254_740_992e15).contains(&x), "{x} out of range");
    // Through i64, which x fits: one instruction each way on x86-64, a u64's several.
    let i = x as i64;
    (i + i64::from((i as f64) < x)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_the_std_functions() {
        let mut rng = stream(5, Stream::Arrivals);
        let edge = [0.0, 0.5, 1.5, 2.5, 0.499_999_999_999_999_94, 1e15 + 0.5, 4_503_599_627_370_495.5];
        let random = (0..100_000).map(|_| {
            let e: f64 = rand::Rng::random::<f64>(&mut rng);
            e * 10f64.powi((e * 1e6) as i32 % 15)
        });
        for x in edge.into_iter().chain(random) {
            assert_eq!(round_ns(x), x.round() as u64, "round {x}");
            assert_eq!(ceil_ns(x), x.ceil() as u64, "ceil {x}");
        }
    }
}
