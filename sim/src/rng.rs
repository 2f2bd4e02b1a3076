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
    /// Clients: think times and retry jitter.
    Client = 4,
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
