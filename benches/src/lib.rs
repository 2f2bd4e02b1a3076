//! busline's benchmarks: the peers a user would pick instead, each behind one adapter, and the
//! scenarios every contender runs. The criterion benches (`benches/*.rs`) and the `compare`
//! runner (`src/bin/compare/`, which writes `reports/bench/`) share this code.
//! See `benches/README.md` for the scenarios, one line each.
//!
//! The peer crates are behind the `peers` feature (on by default): without it, only busline and
//! the naive port are built, which is what `make test` does to spare compiling the peers.

pub mod adapters;
pub mod clock;
pub mod floor;
#[cfg(feature = "peers")]
pub mod peers;
pub mod placement;
pub mod report;
pub mod scenarios;

pub use adapters::{Contender, Counters, Loader, NO_LIMIT, Setup};

/// The windows every contender is configured with in `throughput`.
pub const THROUGHPUT_WINDOWS_US: [u64; 3] = [0, 100, 1_000];

/// The windows `window_precision` measures.
pub const PRECISION_WINDOWS_US: [u64; 6] = [50, 100, 500, 1_000, 5_000, 10_000];
