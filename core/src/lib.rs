//! busline: request coalescing for async Rust.
//!
//! Under burst traffic, N concurrent callers of `get_user_info(id)` make N small queries.
//! busline collects the requests of a short window into one batched call
//! (`WHERE id IN (...)`) and hands every caller its own entry of the one shared result; the
//! caller's API does not change: `users.load(42).await`. And it batches only when that pays:
//! when the road is empty everyone drives (no added latency), when traffic builds up a bus
//! leaves (one query for many callers); see [`policy`].
//!
//! # Where things live
//! - [`Batcher`], [`Builder`]: the handle and its settings (`batcher.rs`, `builder.rs`).
//! - [`policy`]: when a batch departs, as a pure state machine the simulator drives too.
//! - `ring.rs`, `slot.rs`: the wait-free ingestion ring and its batch slots (all the `unsafe`).
//! - `driver.rs`: the tokio task that seals buses, runs batch functions, publishes outcomes.
//! - `load.rs`: the caller's futures. `timer.rs`: sub-millisecond deadlines.
//! - `sync.rs`: the loom facade.
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let squares = busline::Batcher::builder(|keys: Vec<u64>| async move {
//!     Ok::<_, std::convert::Infallible>(keys.into_iter().map(|k| (k, k * k)).collect::<HashMap<_, _>>())
//! })
//! .build()?;
//! assert_eq!(squares.load(7).await?, Some(49));
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

// Layers, each importing only from those below it:
//   builder                    configures and starts: puts the others together
//   batcher                    the handle
//   driver, load               the driver task; the callers' futures
//   shared                     the state all of the above share
//   signals, clock, timer      lock-free signals between them; time
//   ring, slot, sync           the ingestion ring and its slots; the loom facade
//   settings, policy, stats, error
mod batcher;
mod builder;
mod clock;
mod driver;
mod error;
mod load;
pub mod policy;
mod ring;
mod settings;
mod shared;
mod signals;
mod slot;
mod stats;
mod sync;
mod timer;

pub use batcher::Batcher;
pub use builder::Builder;
pub use settings::{DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT, Overflow};
pub use error::{ConfigError, Error};
pub use load::{Load, LoadShared};
pub use policy::Policy;
pub use stats::{Stats, Summary};

/// Bytes one pending request occupies in a batcher's preallocated seats for keys of type `K`,
/// the key included: its state, its key and its caller's waker. (The caller's `Load` future
/// lives in the caller's task and is not counted.) A batcher preallocates, lazily, up to
/// `capacity` seats.
///
/// # Examples
///
/// ```
/// // 8 bytes of key, 32 of bookkeeping.
/// assert_eq!(busline::seat_bytes::<u64>(), 40);
/// ```
pub const fn seat_bytes<K>() -> usize {
    std::mem::size_of::<slot::Entry<K>>()
}

/// The engine's internals, exposed only to the loom model checks (`--cfg busline_loom`).
#[cfg(busline_loom)]
#[doc(hidden)]
pub mod model {
    pub use crate::ring::{Claim, Ring, Sealed};
    pub use crate::signals::{Boarded, Gate, Look, Signals, abandon, board, publish, release};
    pub use crate::slot::Slot;
}
